//! Union lookup, as kernel overlayfs does it (fs/overlayfs/namei.c): the upper layer first,
//! then the parent's lower directories topmost first. Whiteouts hide what is below them,
//! opaque directories stop the descent, redirects (relative or absolute, in any layer)
//! continue it elsewhere, and metadata-only files (metacopy, in any layer) continue it to the
//! layer that holds their data. A copied-up file takes its inode number from its recorded
//! origin, so numbers stay what the session showed across remounts and renames.

use std::ffi::{OsStr, OsString};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::sync::Arc;

use fuser::Errno;

use crate::fs::format::index::IndexKey;
use crate::fs::format::override_stat;
use crate::fs::format::whiteout::{self, Marks};
use crate::fs::tables::layer::Place;
use crate::fs::tables::node::{Link, Node};
use crate::fs::tables::node_state::{DataLoc, LowerDir, NodeState};
use crate::fs::union::FsError;
use crate::fs::union::getattr;
use crate::fs::union::{FsResult, Union, errno};
use crate::sys::{at, handle, xattr};

/// The longest name a layer's filesystem holds (every Linux filesystem strata runs on).
const NAME_MAX: usize = 255;

/// What one layer holds at a name.
enum Found {
    Nothing,
    Whiteout,
    Object(libc::stat64),
}

fn probe(dir: BorrowedFd<'_>, name: &OsStr) -> FsResult<Found> {
    match at::stat_at_opt(dir, name) {
        Ok(Some(st)) if whiteout::is_whiteout_dev(&st) => Ok(Found::Whiteout),
        Ok(Some(st)) => Ok(Found::Object(st)),
        Ok(None) => {
            if whiteout::has_wh_file(dir, name)? {
                Ok(Found::Whiteout)
            } else {
                Ok(Found::Nothing)
            }
        }
        // A name too long for a layer's filesystem is absent there (the kernel's lookup).
        Err(e) if e.raw_os_error() == Some(libc::ENAMETOOLONG) => Ok(Found::Nothing),
        Err(e) => Err(errno(e)),
    }
}

/// [`probe`] for a lower directory, answering from its cached name list where it can.
fn probe_lower(ld: &LowerDir, name: &OsStr) -> FsResult<Found> {
    if ld.may_hold(name.as_bytes()) {
        return probe(ld.fd.as_fd(), name);
    }
    if ld.may_hold(whiteout::wh_name(name).as_bytes()) {
        return Ok(Found::Whiteout);
    }
    Ok(Found::Nothing)
}

fn open_dir(dir: BorrowedFd<'_>, name: &OsStr) -> FsResult<Arc<OwnedFd>> {
    at::open_at(dir, name, libc::O_PATH | libc::O_DIRECTORY, 0)
        .map(Arc::new)
        .map_err(errno)
}

/// `base/name` (just `name` at the root).
pub(in crate::fs) fn join(base: &OsStr, name: &OsStr) -> OsString {
    if base.is_empty() {
        return name.to_os_string();
    }
    let mut p = base.to_os_string();
    p.push("/");
    p.push(name);
    p
}

/// Where to look in one layer: the parent's directory there, or (absolute names) its root.
#[derive(Clone)]
enum Base {
    /// A lower directory of the parent, with its cached name list.
    Cached(LowerDir),
    /// A directory fd (the upper parent, a layer root, a directory met on a path walk).
    Dir(Arc<OwnedFd>),
}

impl Base {
    fn fd(&self) -> &Arc<OwnedFd> {
        match self {
            Base::Cached(ld) => &ld.fd,
            Base::Dir(d) => d,
        }
    }
    fn probe(&self, name: &OsStr) -> FsResult<Found> {
        match self {
            Base::Cached(ld) => probe_lower(ld, name),
            Base::Dir(d) => probe(d.as_fd(), name),
        }
    }
}

/// The state of one lookup going down the layers (the kernel's `ovl_lookup_data`).
struct Walk {
    /// What to find in the next layer: a name in the parent's directory there, or (leading
    /// `/`) a path from the layer's root.
    name: Vec<u8>,
    /// A directory was found: only directories merge below it.
    is_dir: bool,
    /// Nothing below the last layer looked at is to be merged.
    stop: bool,
    /// The last directory found is opaque (or a whiteout was found).
    opaque: bool,
    /// The last object found is a metadata-only file: its data is further down.
    metacopy: bool,
}

/// One object found in one layer.
struct Hit {
    /// Its parent directory in that layer, and its name there.
    dir: Arc<OwnedFd>,
    name: OsString,
    st: libc::stat64,
    marks: Marks,
    /// Directories: an O_PATH fd of the directory itself.
    fd: Option<Arc<OwnedFd>>,
}

/// A regular file that is surely not metadata-only without reading its xattrs: one whose
/// blocks cover its size (a metacopy file is a hole of its full size; its blocks, if any,
/// hold xattrs).
fn has_its_data(st: &libc::stat64) -> bool {
    !at::is_reg(st) || st.st_size == 0 || st.st_blocks.saturating_mul(512) >= st.st_size
}

/// Apply a redirect found on a directory or metacopy file at component `prelen..` of the
/// walk's name, followed by `post` (the rest of the path): absolute replaces the whole
/// prefix, relative replaces that component.
fn apply_redirect(w: &mut Walk, r: &[u8], prelen: usize, post: &[u8]) {
    if r.first() == Some(&b'/') {
        if r[1..].split(|b| *b == b'/').any(|c| c.is_empty()) && r.len() > 1 {
            log::warn!("invalid redirect {:?}", OsStr::from_bytes(r));
            return;
        }
        let mut n = r.to_vec();
        n.extend_from_slice(post);
        w.name = n;
        // An absolute redirect below an opaque ancestor still continues the lookup.
        w.stop = false;
    } else {
        if r.contains(&b'/') {
            log::warn!("invalid redirect {:?}", OsStr::from_bytes(r));
            return;
        }
        let mut n = w.name[..prelen.min(w.name.len())].to_vec();
        n.extend_from_slice(r);
        n.extend_from_slice(post);
        w.name = n;
    }
}

impl Union {
    /// Look for one path component `comp` in `base` (the kernel's `ovl_lookup_single`).
    /// `prelen` is where the component starts in the walk's name and `post` what follows it;
    /// `last_element` whether it is the name looked up; `last_layer` whether nothing lies
    /// below (its marks need not be read).
    #[allow(clippy::too_many_arguments)]
    fn lookup_single(
        &self,
        base: &Base,
        comp: &OsStr,
        prelen: usize,
        post: &[u8],
        last_element: bool,
        is_upper: bool,
        last_layer: bool,
        w: &mut Walk,
    ) -> FsResult<Option<Hit>> {
        let st = match base.probe(comp)? {
            Found::Nothing => return Ok(None),
            Found::Whiteout => {
                w.stop = true;
                w.opaque = true;
                return Ok(None);
            }
            Found::Object(st) => st,
        };
        let dir = base.fd().clone();
        if !at::is_dir(&st) {
            if w.is_dir || !last_element {
                w.stop = true;
                return Ok(None);
            }
            // Upper files carry their origin. Lower files may be metadata-only (an upper
            // written with metacopy=on, now a lower layer): read them all when metacopy is on,
            // else only those that look it (to refuse them, as the kernel does).
            let read_lower = !last_layer && (self.settings.metacopy || !has_its_data(&st));
            let marks = if is_upper || read_lower {
                whiteout::marks_at(dir.as_fd(), comp)?
            } else {
                Marks::default()
            };
            w.metacopy = marks.metacopy && at::is_reg(&st);
            w.stop = !w.metacopy;
            if w.metacopy
                && !last_layer
                && let Some(r) = &marks.redirect
            {
                apply_redirect(w, r.as_bytes(), prelen, post);
            }
            return Ok(Some(Hit {
                dir,
                name: comp.to_os_string(),
                st,
                marks,
                fd: None,
            }));
        }
        if last_element {
            w.is_dir = true;
        }
        let fd = open_dir(dir.as_fd(), comp)?;
        if last_layer && !is_upper {
            return Ok(Some(Hit {
                dir,
                name: comp.to_os_string(),
                st,
                marks: Marks::default(),
                fd: Some(fd),
            }));
        }
        let marks = whiteout::marks_at(dir.as_fd(), comp)?;
        let opaque = marks.opaque
            || at::stat_at_opt(fd.as_fd(), OsStr::from_bytes(whiteout::OPAQUE_FILE))?.is_some();
        if opaque {
            w.stop = true;
            if last_element {
                w.opaque = true;
            }
        } else if let Some(r) = &marks.redirect {
            apply_redirect(w, r.as_bytes(), prelen, post);
        }
        Ok(Some(Hit {
            dir,
            name: comp.to_os_string(),
            st,
            marks,
            fd: Some(fd),
        }))
    }

    /// Look the walk's name up in one layer (the kernel's `ovl_lookup_layer`): a name in
    /// `base`, or an absolute path walked from `root` component by component, following the
    /// redirects met on the way for the layers below.
    fn lookup_layer(
        &self,
        base: &Base,
        root: Option<Arc<OwnedFd>>,
        is_upper: bool,
        last_layer: bool,
        w: &mut Walk,
    ) -> FsResult<Option<Hit>> {
        if w.name.first() != Some(&b'/') {
            let name = OsString::from_vec(w.name.clone());
            return self.lookup_single(base, &name, 0, b"", true, is_upper, last_layer, w);
        }
        let Some(root) = root else { return Ok(None) };
        let path = w.name.clone();
        let comps: Vec<(usize, &[u8])> = {
            let mut v = Vec::new();
            let mut start = 0;
            for (i, b) in path.iter().enumerate() {
                if *b == b'/' {
                    if i > start {
                        v.push((start, &path[start..i]));
                    }
                    start = i + 1;
                }
            }
            if start < path.len() {
                v.push((start, &path[start..]));
            }
            v
        };
        if comps.is_empty() {
            return Ok(None);
        }
        let mut cur = Base::Dir(root);
        for (k, (start, comp)) in comps.iter().enumerate() {
            let end = k + 1 == comps.len();
            let post = &path[start + comp.len()..];
            // The prefix may have changed with a redirect met above: count from the end.
            let prelen = w.name.len().saturating_sub(post.len() + comp.len());
            let hit = self.lookup_single(
                &cur,
                OsStr::from_bytes(comp),
                prelen,
                post,
                end,
                is_upper,
                last_layer,
                w,
            )?;
            let Some(hit) = hit else { return Ok(None) };
            if end {
                return Ok(Some(hit));
            }
            match hit.fd {
                Some(fd) => cur = Base::Dir(fd),
                None => return Ok(None),
            }
        }
        Ok(None)
    }

    /// Look up `name` in directory `parent`: the node (carrying one kernel lookup) and its
    /// attributes, built from the stat the lookup made (no second stat for a new node).
    pub fn lookup_attr(
        &self,
        parent: &Arc<Node>,
        name: &OsStr,
    ) -> FsResult<(Arc<Node>, fuser::FileAttr)> {
        if !parent.is_dir() {
            return Err(FsError(Errno::ENOTDIR));
        }
        // Longer than any layer's names (the kernel's `namelen` check comes first).
        if name.len() > NAME_MAX {
            return Err(FsError(Errno::ENAMETOOLONG));
        }
        if whiteout::is_reserved_name(name.as_bytes()) {
            return Err(FsError(Errno::ENOENT));
        }
        if let Some(n) = self.nodes.find_child(parent, name) {
            return match self.attr(&n) {
                Ok(a) => Ok((n, a)),
                Err(e) => {
                    self.nodes.forget(n.id, 1);
                    Err(e)
                }
            };
        }
        let (node, st) = self
            .resolve_with_stat(parent, name)?
            .ok_or(FsError(Errno::ENOENT))?;
        let same_object = |a: &Node, b: &Node| match (self.real_stat(a), self.real_stat(b)) {
            (Ok(x), Ok(y)) => x.st_dev == y.st_dev && x.st_ino == y.st_ino,
            _ => false,
        };
        let (attached, made_here) = self.nodes.attach_child(parent, name, node, &same_object);
        // The node made here, or one another thread attached first (stat that one).
        let a = if made_here {
            self.attr_from_stat(&attached, &st)
        } else {
            match self.attr(&attached) {
                Ok(a) => a,
                Err(e) => {
                    self.nodes.forget(attached.id, 1);
                    return Err(e);
                }
            }
        };
        Ok((attached, a))
    }

    /// Find what the union shows at `parent/name`, as a new (unregistered) node.
    pub fn resolve(&self, parent: &Arc<Node>, name: &OsStr) -> FsResult<Option<Node>> {
        Ok(self.resolve_with_stat(parent, name)?.map(|(n, _)| n))
    }

    /// [`Union::resolve`], with the stat of the node's real object (what
    /// [`Union::real_stat`] would return).
    fn resolve_with_stat(
        &self,
        parent: &Arc<Node>,
        name: &OsStr,
    ) -> FsResult<Option<(Node, libc::stat64)>> {
        let pst = parent.state.read().clone();
        let nlowers = self.layers.lowers.len();
        let mut w = Walk {
            name: name.as_bytes().to_vec(),
            is_dir: false,
            stop: false,
            opaque: false,
            metacopy: false,
        };

        // The upper layer.
        let mut upper = None;
        if let Some(udir) = pst.upper_dir() {
            upper = self.lookup_single(
                &Base::Dir(udir.clone()),
                name,
                0,
                b"",
                true,
                true,
                nlowers == 0,
                &mut w,
            )?;
        }
        let upper_metacopy = upper.is_some() && w.metacopy;
        let upper_opaque = upper.is_some() && w.opaque;
        let upper_redirect = upper.as_ref().and_then(|h| h.marks.redirect.clone());

        // The lower layers: the parent's lower directories, or every layer's root once the
        // name became an absolute path.
        let roots = || -> Vec<(usize, Base)> {
            self.layers
                .lowers
                .iter()
                .enumerate()
                .map(|(i, l)| (i, Base::Dir(l.fd.clone())))
                .collect()
        };
        let mut on_roots = w.name.first() == Some(&b'/');
        let mut stack: Vec<(usize, Base)> = if on_roots {
            roots()
        } else {
            pst.lower_dirs()
                .iter()
                .map(|d| (d.layer, Base::Cached(d.clone())))
                .collect()
        };
        let mut hits: Vec<(usize, Hit)> = Vec::new();
        let mut i = 0;
        while !w.stop && i < stack.len() {
            if (w.metacopy || upper_metacopy) && !self.settings.metacopy {
                return Err(self.refuse_metacopy(name).into());
            }
            let (layer, base) = stack[i].clone();
            i += 1;
            let root = self.layers.lowers.get(layer).map(|l| l.fd.clone());
            let last_layer = layer + 1 == nlowers;
            let Some(hit) = self.lookup_layer(&base, root, false, last_layer, &mut w)? else {
                continue;
            };
            hits.push((layer, hit));
            if w.stop {
                break;
            }
            if w.name.first() == Some(&b'/') && !on_roots {
                on_roots = true;
                stack = roots();
                i = layer + 1;
            }
        }
        if (w.metacopy || upper_metacopy) && !self.settings.metacopy {
            return Err(self.refuse_metacopy(name).into());
        }
        if w.metacopy || (upper_metacopy && hits.is_empty()) {
            log::warn!(
                "metacopy with no lower data found: {}",
                name.to_string_lossy()
            );
            return Err(FsError(Errno::EIO));
        }

        let mut state = NodeState::default();
        let kind;
        let ino;
        let mut real_st;
        match (&upper, hits.first()) {
            (None, None) => return Ok(None),
            (Some(u), _) if at::is_dir(&u.st) => {
                kind = fuser::FileType::Directory;
                real_st = u.st;
                state.in_upper = true;
                state.set_upper_dir(u.fd.clone());
                state.opaque = upper_opaque;
                state.impure = u.marks.impure;
                state.set_lower_dirs(self.lower_dirs_of(&hits));
                // A merged directory shows the inode number of its topmost lower directory.
                ino = match hits.first() {
                    Some((l, h)) => self.layers.ino(Place::Lower(*l), h.st.st_ino),
                    None => self.layers.ino(Place::Upper, u.st.st_ino),
                };
            }
            (Some(u), _) => {
                kind = getattr::file_type(u.st.st_mode);
                real_st = u.st;
                state.in_upper = true;
                let key = u
                    .marks
                    .origin
                    .as_deref()
                    .and_then(IndexKey::from_origin_value);
                if u.st.st_nlink > 1
                    && let Some(key) = &key
                    && let Some(ist) = self.index_lookup(key)?
                    && ist.st_ino == u.st.st_ino
                    && ist.st_dev == u.st.st_dev
                {
                    state.set_indexed(Some(key.clone()));
                    real_st = ist;
                }
                let upper_ino = self.layers.ino(Place::Upper, u.st.st_ino);
                if upper_metacopy {
                    state.metacopy = true;
                    let (l, h) = &hits[0];
                    state.set_lower_layer(Some(*l));
                    state.set_data(Some(self.data_of(&hits)));
                    ino = self
                        .origin_ino_if_unbroken(&state, Place::Lower(*l), &h.st)
                        .unwrap_or(upper_ino);
                } else {
                    ino = match u.marks.origin.as_deref() {
                        Some(o) => self
                            .origin_ino(o, state.indexed().is_some())
                            .unwrap_or(upper_ino),
                        None => upper_ino,
                    };
                }
            }
            (None, Some((l, h))) => {
                kind = getattr::file_type(h.st.st_mode);
                real_st = h.st;
                ino = self.layers.ino(Place::Lower(*l), h.st.st_ino);
                if kind == fuser::FileType::Directory {
                    state.set_lower_dirs(self.lower_dirs_of(&hits));
                } else {
                    state.set_lower_layer(Some(*l));
                    if h.marks.metacopy {
                        state.metacopy = true;
                        state.set_data(Some(self.data_of(&hits)));
                    }
                    if h.st.st_nlink > 1 && self.index_in_use() {
                        // A lower hard link whose inode was copied up under another name.
                        if let Some(key) = self.index_key(*l, h.dir.as_fd(), &h.name)
                            && let Some(ist) = self.index_lookup(&key)?
                        {
                            real_st = ist;
                            // (kernel overlayfs may have indexed a metadata-only copy)
                            if self.index_is_metacopy(&key)? {
                                state.metacopy = true;
                                if state.data().is_none() {
                                    state.set_data(Some(DataLoc {
                                        dir: h.dir.clone(),
                                        name: Arc::from(h.name.as_os_str()),
                                    }));
                                }
                            } else {
                                state.metacopy = false;
                            }
                            state.set_indexed(Some(key));
                        }
                    }
                }
            }
        }
        // Only directories (their children's paths) and metadata-only files (their redirect
        // when moved) use the lower path: the others do not keep it.
        let may_become_metacopy = self.settings.metacopy && !state.in_upper;
        if kind == fuser::FileType::Directory || state.metacopy || may_become_metacopy {
            // The path of the object in the lower namespace (what a redirect of it would say).
            let path = match upper_redirect.as_deref().map(OsStr::as_bytes) {
                Some([b'/', rest @ ..]) => Some(Arc::from(OsStr::from_bytes(rest))),
                Some(r) => pst
                    .lower_path()
                    .map(|p| join(p, OsStr::from_bytes(r)).into()),
                None => pst.lower_path().map(|p| join(p, name).into()),
            };
            state.set_lower_path(kind == fuser::FileType::Directory, path);
        }
        state.from_lower =
            !hits.is_empty() || upper.as_ref().is_some_and(|u| u.marks.origin.is_some());
        if self.settings.override_stat {
            let over = self.read_override(&state, parent, name, kind)?;
            state.set_over(over);
        }
        let node = Node::new(kind, ino, Link::new(parent.id, name), state);
        Ok(Some((node, real_st)))
    }

    /// EPERM for a metadata-only file on a mount without `metacopy=on`, as the kernel answers.
    fn refuse_metacopy(&self, name: &OsStr) -> Errno {
        log::warn!(
            "refusing to follow metacopy origin for {} (mount with -o metacopy=on)",
            name.to_string_lossy()
        );
        Errno::EPERM
    }

    /// The lower directories merged under a directory: every directory found below.
    fn lower_dirs_of(&self, hits: &[(usize, Hit)]) -> Box<[LowerDir]> {
        hits.iter()
            .filter_map(|(l, h)| h.fd.clone().map(|fd| LowerDir::new(*l, fd)))
            .collect()
    }

    /// Where the data of a metadata-only file is: the last object the walk found.
    fn data_of(&self, hits: &[(usize, Hit)]) -> DataLoc {
        let (_, h) = &hits[hits.len() - 1];
        DataLoc {
            dir: h.dir.clone(),
            name: Arc::from(h.name.as_os_str()),
        }
    }

    /// The inode number of a lower origin at `place` (stat `st`) for an upper object, unless
    /// the origin is a hard link that the copy-up broke (kernel: only an indexed or
    /// single-link origin lends its number).
    fn origin_ino_if_unbroken(
        &self,
        state: &NodeState,
        place: Place,
        st: &libc::stat64,
    ) -> Option<u64> {
        (state.indexed().is_some() || st.st_nlink == 1).then(|| self.layers.ino(place, st.st_ino))
    }

    /// The inode number an upper non-directory shows from its `overlay.origin` value: the
    /// origin's, when the handle belongs to a lower layer's filesystem (read from the handle
    /// itself where its layout is known, else by opening it, which needs privilege).
    fn origin_ino(&self, value: &[u8], indexed: bool) -> Option<u64> {
        let o = crate::fs::format::index::parse_origin(value)?;
        let (idx, layer) = self
            .layers
            .lowers
            .iter()
            .enumerate()
            .find(|(_, l)| l.uuid == o.uuid)?;
        if let Some(ino) = crate::fs::format::index::ino_in_handle(layer.fs_type, &o) {
            return Some(self.layers.ino(Place::Lower(idx), ino));
        }
        let fd = handle::open_by_handle(layer.fd(), o.handle_type, &o.fid).ok()?;
        let st = at::fstat(fd.as_fd()).ok()?;
        if !indexed && !at::is_dir(&st) && st.st_nlink > 1 {
            return None;
        }
        Some(self.layers.ino(Place::Lower(idx), st.st_ino))
    }

    /// The override recorded on the object a new node will show, if any (one `getxattrat`).
    fn read_override(
        &self,
        state: &NodeState,
        parent: &Arc<Node>,
        name: &OsStr,
        kind: fuser::FileType,
    ) -> FsResult<Option<crate::fs::format::override_stat::StatOverride>> {
        let (dir, name): (Arc<OwnedFd>, &OsStr) = if kind == fuser::FileType::Directory {
            match state
                .upper_dir()
                .cloned()
                .or_else(|| state.lower_dirs().first().map(|l| l.fd.clone()))
            {
                Some(d) => (d, OsStr::new("")),
                None => return Ok(None),
            }
        } else if kind == fuser::FileType::Symlink {
            return Ok(None);
        } else {
            let pst = parent.state.read();
            let dir = if state.in_upper {
                pst.upper_dir().cloned()
            } else {
                state.lower_layer().and_then(|l| {
                    pst.lower_dirs()
                        .iter()
                        .find(|d| d.layer == l)
                        .map(|d| d.fd.clone())
                })
            };
            match dir {
                Some(d) => (d, name),
                None => return Ok(None),
            }
        };
        match xattr::get_xattr_at(dir.as_fd(), name, override_stat::XATTR) {
            Ok(Some(v)) => Ok(override_stat::parse(&v)),
            _ => Ok(None),
        }
    }

    /// Whether index entry `key` is a metadata-only copy.
    fn index_is_metacopy(&self, key: &IndexKey) -> FsResult<bool> {
        match &self.layers.index {
            Some(dir) => Ok(whiteout::marks_at(dir.as_fd(), &key.name)?.metacopy),
            None => Ok(false),
        }
    }

    /// Whether any lower layer under `parent` shows something at `name` (so removing the
    /// name from the union needs a whiteout).
    pub fn lower_has(&self, parent: &Node, name: &OsStr) -> FsResult<bool> {
        let pst = parent.state.read();
        if pst.opaque {
            return Ok(false);
        }
        for ld in pst.lower_dirs() {
            match probe_lower(ld, name)? {
                Found::Nothing => continue,
                Found::Whiteout => return Ok(false),
                Found::Object(_) => return Ok(true),
            }
        }
        Ok(false)
    }
}
