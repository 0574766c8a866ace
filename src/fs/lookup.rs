//! Union lookup: the topmost layer holding a name wins, whiteouts hide what is below them,
//! opaque directories stop the descent, and redirected directories continue it elsewhere.

use std::ffi::{OsStr, OsString};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::sync::Arc;

use fuser::Errno;

use super::attr;
use super::layer::Place;
use super::node::{Link, LowerDir, Node, NodeState};
use super::sys;
use super::union::{FsResult, Union, errno};
use super::whiteout;

/// What one layer holds at a name.
enum Found {
    Nothing,
    Whiteout,
    Object(libc::stat64),
}

fn probe(dir: &OwnedFd, name: &OsStr) -> FsResult<Found> {
    match sys::stat_at_opt(dir.as_fd(), name).map_err(errno)? {
        Some(st) if whiteout::is_whiteout_dev(&st) => Ok(Found::Whiteout),
        Some(st) => Ok(Found::Object(st)),
        None => {
            if whiteout::has_wh_file(dir.as_fd(), name).map_err(errno)? {
                Ok(Found::Whiteout)
            } else {
                Ok(Found::Nothing)
            }
        }
    }
}

/// [`probe`] for a lower directory, answering from its cached name list where it can.
fn probe_lower(ld: &LowerDir, name: &OsStr) -> FsResult<Found> {
    if ld.may_hold(name.as_bytes()) {
        return probe(&ld.fd, name);
    }
    if ld.may_hold(whiteout::wh_name(name).as_bytes()) {
        return Ok(Found::Whiteout);
    }
    Ok(Found::Nothing)
}

fn open_dir(dir: &OwnedFd, name: &OsStr) -> FsResult<Arc<OwnedFd>> {
    sys::open_at(dir.as_fd(), name, libc::O_PATH | libc::O_DIRECTORY, 0)
        .map(Arc::new)
        .map_err(errno)
}

/// `base/name` (just `name` at the root).
pub(super) fn join(base: &OsStr, name: &OsStr) -> OsString {
    if base.is_empty() {
        return name.to_os_string();
    }
    let mut p = base.to_os_string();
    p.push("/");
    p.push(name);
    p
}

fn parent_path(p: &OsStr) -> &OsStr {
    match p.as_bytes().iter().rposition(|b| *b == b'/') {
        Some(i) => OsStr::from_bytes(&p.as_bytes()[..i]),
        None => OsStr::new(""),
    }
}

/// Where to continue a lookup in the lower layers.
enum LowerSearch {
    /// Look for `name` in each of the parent's lower directories.
    InParentDirs { name: OsString },
    /// Look for `path` from the root of each lower layer from `from_layer` on.
    ByPath { path: OsString, from_layer: usize },
}

impl LowerSearch {
    /// The search for a directory carrying redirect `r`, under a parent at `parent_lower`.
    fn redirected(r: &OsStr) -> LowerSearch {
        if r.as_bytes().starts_with(b"/") {
            LowerSearch::ByPath {
                path: OsStr::from_bytes(r.as_bytes().trim_start_matches_slash()).to_os_string(),
                from_layer: 0,
            }
        } else {
            LowerSearch::InParentDirs {
                name: r.to_os_string(),
            }
        }
    }
}

impl Union {
    /// Look up `name` in directory `parent`; the returned node carries one kernel lookup.
    pub fn lookup(&self, parent: &Arc<Node>, name: &OsStr) -> FsResult<Arc<Node>> {
        if !parent.is_dir() {
            return Err(Errno::ENOTDIR);
        }
        if whiteout::is_reserved_name(name.as_bytes()) {
            return Err(Errno::ENOENT);
        }
        if let Some(n) = self.nodes.find_child(parent, name) {
            return Ok(n);
        }
        let node = self.resolve(parent, name)?.ok_or(Errno::ENOENT)?;
        let same_object = |a: &Node, b: &Node| match (self.real_stat(a), self.real_stat(b)) {
            (Ok(x), Ok(y)) => x.st_dev == y.st_dev && x.st_ino == y.st_ino,
            _ => false,
        };
        Ok(self.nodes.attach_child(parent, name, node, &same_object))
    }

    /// Find what the union shows at `parent/name`, as a new (unregistered) node.
    pub fn resolve(&self, parent: &Arc<Node>, name: &OsStr) -> FsResult<Option<Node>> {
        let pst = parent.state.read().clone();
        let mut state = NodeState::default();
        let mut kind = None;
        let mut ino = 0u64;
        let mut search = Some(LowerSearch::InParentDirs {
            name: name.to_os_string(),
        });

        if let Some(udir) = &pst.upper_dir {
            match probe(udir, name)? {
                Found::Whiteout => return Ok(None),
                Found::Nothing => {}
                Found::Object(st) => {
                    state.in_upper = true;
                    ino = self.layers.ino(Place::Upper, st.st_ino);
                    let k = attr::file_type(st.st_mode);
                    kind = Some(k);
                    if sys::is_dir(&st) {
                        let fd = open_dir(udir, name)?;
                        let (opaque, redirect) = whiteout::dir_marks(fd.as_fd()).map_err(errno)?;
                        state.opaque = opaque
                            || sys::stat_at_opt(
                                fd.as_fd(),
                                OsStr::from_bytes(whiteout::OPAQUE_FILE),
                            )
                            .map_err(errno)?
                            .is_some();
                        state.upper_dir = Some(fd);
                        search = if state.opaque {
                            None
                        } else {
                            redirect.as_deref().map(LowerSearch::redirected).or(search)
                        };
                    } else {
                        search = None;
                        // A copied-up file keeps its origin's inode number while a lower
                        // layer still holds an object of the same type under this name.
                        if !pst.opaque {
                            ino = self
                                .upper_file_origin(&pst, udir, name, &st, k, &mut state)?
                                .unwrap_or(ino);
                        }
                    }
                }
            }
        }
        if pst.opaque || (pst.lower_dirs.is_empty() && pst.lower_path.is_none()) {
            search = None;
        }
        if let Some(search) = search {
            self.search_lowers(&pst, search, &mut state, &mut kind, &mut ino)?;
        }
        let Some(kind) = kind else { return Ok(None) };
        if self.settings.override_stat {
            state.over = self.read_override(&state, parent, name, kind)?;
        }
        Ok(Some(Node::new(
            kind,
            ino,
            Link {
                parent: parent.id,
                name: name.to_os_string(),
            },
            state,
        )))
    }

    /// Walk the lower layers for a name under `pst` (or for a redirected path), filling in the
    /// lower part of `state`. `kind` is already set when an upper directory was found.
    fn search_lowers(
        &self,
        pst: &NodeState,
        mut search: LowerSearch,
        state: &mut NodeState,
        kind: &mut Option<fuser::FileType>,
        ino: &mut u64,
    ) -> FsResult<()> {
        let above_is_dir = *kind == Some(fuser::FileType::Directory);
        let base = pst.lower_path.clone().unwrap_or_default();
        // Candidate (layer, parent dir fd, name in it), resolved lazily for ByPath.
        let mut layer_iter: Vec<usize> = match &search {
            LowerSearch::InParentDirs { .. } => pst.lower_dirs.iter().map(|d| d.layer).collect(),
            LowerSearch::ByPath { from_layer, .. } => {
                (*from_layer..self.layers.lowers.len()).collect()
            }
        };
        let mut idx = 0;
        while idx < layer_iter.len() {
            let layer = layer_iter[idx];
            idx += 1;
            let (dir, fname, lower_path): (LowerDir, OsString, OsString) = match &search {
                LowerSearch::InParentDirs { name } => {
                    let Some(d) = pst.lower_dirs.iter().find(|d| d.layer == layer) else {
                        continue;
                    };
                    (d.clone(), name.clone(), join(&base, name))
                }
                LowerSearch::ByPath { path, .. } => {
                    let ppath = parent_path(path).to_os_string();
                    let fname = OsStr::from_bytes(
                        path.as_bytes()
                            .rsplit(|b| *b == b'/')
                            .next()
                            .unwrap_or_default(),
                    )
                    .to_os_string();
                    match sys::open_beneath(
                        self.layers.lowers[layer].fd(),
                        &ppath,
                        libc::O_PATH | libc::O_DIRECTORY,
                    ) {
                        Ok(fd) => (LowerDir::uncached(layer, Arc::new(fd)), fname, path.clone()),
                        Err(_) => continue,
                    }
                }
            };
            if fname.is_empty() {
                continue;
            }
            let st = match probe_lower(&dir, &fname)? {
                Found::Nothing => continue,
                Found::Whiteout => break,
                Found::Object(st) => st,
            };
            let is_dir = sys::is_dir(&st);
            if kind.is_some() && !(is_dir && *kind == Some(fuser::FileType::Directory)) {
                // Only directories merge under a directory found above; anything else ends it.
                break;
            }
            if kind.is_none() {
                *kind = Some(attr::file_type(st.st_mode));
                *ino = self.layers.ino(Place::Lower(layer), st.st_ino);
            } else if above_is_dir && state.lower_dirs.is_empty() {
                // A merged directory shows the inode number of its topmost lower directory.
                *ino = self.layers.ino(Place::Lower(layer), st.st_ino);
            }
            if state.lower_path.is_none() {
                state.lower_path = Some(lower_path.clone());
            }
            if !is_dir {
                state.lower_layer = Some(layer);
                if st.st_nlink > 1 && self.index_in_use() {
                    // A lower hard link whose inode was copied up under another name.
                    if let Some(key) = self.index_key(layer, dir.fd.as_fd(), &fname)
                        && self.index_lookup(&key)?.is_some()
                    {
                        // (kernel overlayfs may have indexed a metadata-only copy)
                        state.metacopy = self.index_is_metacopy(&key)?;
                        state.indexed = Some(key);
                    }
                }
                break;
            }
            let fd = open_dir(&dir.fd, &fname)?;
            let (opaque, redirect) = whiteout::dir_marks(fd.as_fd()).map_err(errno)?;
            let child = LowerDir::new(layer, fd);
            let opaque = opaque || child.may_hold(whiteout::OPAQUE_FILE);
            state.lower_dirs.push(child);
            if opaque {
                break;
            }
            if let Some(r) = redirect {
                // Layers below continue at the redirected place, by path from their roots.
                let path = if r.as_bytes().starts_with(b"/") {
                    OsStr::from_bytes(r.as_bytes().trim_start_matches_slash()).to_os_string()
                } else {
                    join(parent_path(&lower_path), &r)
                };
                search = LowerSearch::ByPath {
                    path,
                    from_layer: layer + 1,
                };
                layer_iter = (layer + 1..self.layers.lowers.len()).collect();
                idx = 0;
            } else if let LowerSearch::ByPath { .. } = search {
                // Keep following the same path in lower layers.
            }
        }
        Ok(())
    }

    /// The override recorded on the object a new node will show, if any.
    fn read_override(
        &self,
        state: &NodeState,
        parent: &Arc<Node>,
        name: &OsStr,
        kind: fuser::FileType,
    ) -> FsResult<Option<super::node::StatOverride>> {
        let fd: Option<OwnedFd> = if kind == fuser::FileType::Directory {
            let d = state
                .upper_dir
                .clone()
                .or_else(|| state.lower_dirs.first().map(|l| l.fd.clone()));
            match d {
                Some(d) => sys::open_at(d.as_fd(), OsStr::new("."), libc::O_PATH, 0).ok(),
                None => None,
            }
        } else if kind == fuser::FileType::Symlink {
            None
        } else {
            let pst = parent.state.read();
            let dir = if state.in_upper {
                pst.upper_dir.clone()
            } else {
                state.lower_layer.and_then(|l| {
                    pst.lower_dirs
                        .iter()
                        .find(|d| d.layer == l)
                        .map(|d| d.fd.clone())
                })
            };
            match dir {
                Some(d) => sys::open_at(d.as_fd(), name, libc::O_PATH, 0).ok(),
                None => None,
            }
        };
        let Some(fd) = fd else { return Ok(None) };
        match sys::get_xattr(fd.as_fd(), whiteout::OVERRIDE_STAT_XATTR) {
            Ok(Some(v)) => Ok(attr::parse_override(&v)),
            _ => Ok(None),
        }
    }

    /// For upper non-directory `name` (stat `st`, type `k`): the inode number of the lower
    /// object it was copied up from, if a lower layer still holds one of the same type under
    /// this name; records in `state` its lower path, a metadata-only copy, and a hard-link
    /// index entry.
    fn upper_file_origin(
        &self,
        pst: &NodeState,
        udir: &OwnedFd,
        name: &OsStr,
        st: &libc::stat64,
        k: fuser::FileType,
        state: &mut NodeState,
    ) -> FsResult<Option<u64>> {
        if sys::is_reg(st)
            && self.is_metacopy(udir, name)?
            && let Some(found) =
                self.metacopy_by_redirect(udir, name, pst.lower_path.as_deref(), state)?
        {
            return Ok(Some(found));
        }
        for ld in &pst.lower_dirs {
            let lst = match probe_lower(ld, name)? {
                Found::Nothing => continue,
                Found::Whiteout => return Ok(None),
                Found::Object(lst) => lst,
            };
            if attr::file_type(lst.st_mode) != k {
                return Ok(None);
            }
            state.lower_path = Some(join(pst.lower_path.as_deref().unwrap_or_default(), name));
            if sys::is_reg(st) && self.is_metacopy(udir, name)? {
                state.metacopy = true;
                state.lower_layer = Some(ld.layer);
            }
            if st.st_nlink > 1
                && lst.st_nlink > 1
                && self.index_in_use()
                && let Some(key) = self.index_key(ld.layer, ld.fd.as_fd(), name)
                && let Some(ist) = self.index_lookup(&key)?
                && ist.st_ino == st.st_ino
                && ist.st_dev == st.st_dev
            {
                state.indexed = Some(key);
            }
            return Ok(Some(self.layers.ino(Place::Lower(ld.layer), lst.st_ino)));
        }
        Ok(None)
    }

    /// A metadata-only upper file that carries a redirect: find its data by that path (from
    /// the root of each lower layer, topmost first). Returns the data's inode number.
    fn metacopy_by_redirect(
        &self,
        udir: &OwnedFd,
        name: &OsStr,
        parent_lower: Option<&OsStr>,
        state: &mut NodeState,
    ) -> FsResult<Option<u64>> {
        let fd = sys::open_at(udir.as_fd(), name, libc::O_PATH, 0).map_err(errno)?;
        let (_, redirect) = whiteout::dir_marks(fd.as_fd()).map_err(errno)?;
        let Some(r) = redirect else { return Ok(None) };
        // Absolute: from the lower roots; relative: a name in the parent's lower directory.
        let path = match r.as_bytes().strip_prefix(b"/") {
            Some(p) => OsStr::from_bytes(p).to_os_string(),
            None => join(parent_lower.unwrap_or_default(), &r),
        };
        let path = path.as_os_str();
        let (dir, fname) = (
            parent_path(path),
            OsStr::from_bytes(
                path.as_bytes()
                    .rsplit(|b| *b == b'/')
                    .next()
                    .unwrap_or_default(),
            ),
        );
        for (i, l) in self.layers.lowers.iter().enumerate() {
            let Ok(d) = sys::open_beneath(l.fd(), dir, libc::O_PATH | libc::O_DIRECTORY) else {
                continue;
            };
            if let Some(lst) = sys::stat_at_opt(d.as_fd(), fname).map_err(errno)? {
                if !sys::is_reg(&lst) {
                    return Ok(None);
                }
                state.metacopy = true;
                state.lower_layer = Some(i);
                state.lower_path = Some(path.to_os_string());
                return Ok(Some(self.layers.ino(Place::Lower(i), lst.st_ino)));
            }
        }
        Ok(None)
    }

    /// Whether index entry `key` is a metadata-only copy.
    fn index_is_metacopy(&self, key: &super::index::IndexKey) -> FsResult<bool> {
        match &self.layers.index {
            Some(dir) => self.is_metacopy(dir, &key.name),
            None => Ok(false),
        }
    }

    /// Whether upper file `name` in `dir` is a metadata-only copy.
    fn is_metacopy(&self, dir: &OwnedFd, name: &OsStr) -> FsResult<bool> {
        let fd = sys::open_at(dir.as_fd(), name, libc::O_PATH, 0).map_err(errno)?;
        for x in ["trusted.overlay.metacopy", "user.overlay.metacopy"] {
            match sys::get_xattr(fd.as_fd(), x) {
                Ok(Some(_)) => return Ok(true),
                Ok(None) => {}
                Err(e) if e.raw_os_error() == Some(libc::EPERM) => {}
                Err(e) => return Err(errno(e)),
            }
        }
        Ok(false)
    }

    /// Whether any lower layer under `parent` shows something at `name` (so removing the
    /// name from the union needs a whiteout).
    pub fn lower_has(&self, parent: &Node, name: &OsStr) -> FsResult<bool> {
        let pst = parent.state.read();
        if pst.opaque {
            return Ok(false);
        }
        for ld in &pst.lower_dirs {
            match probe_lower(ld, name)? {
                Found::Nothing => continue,
                Found::Whiteout => return Ok(false),
                Found::Object(_) => return Ok(true),
            }
        }
        Ok(false)
    }
}

trait TrimSlash {
    fn trim_start_matches_slash(&self) -> &[u8];
}

impl TrimSlash for [u8] {
    fn trim_start_matches_slash(&self) -> &[u8] {
        let mut s = self;
        while let [b'/', rest @ ..] = s {
            s = rest;
        }
        s
    }
}
