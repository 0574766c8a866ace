//! Union semantics, kernel overlayfs's: lookup, listings, copy-up, rename, attributes, file
//! I/O, hard links and passthrough, one module each; here the union itself (layers, node
//! table, open handles) and the shared helpers every operation uses (finding nodes, their
//! real objects, their attributes).

pub mod copyup;
pub mod data;
pub mod getattr;
pub mod index;
pub mod lookup;
pub mod names;
pub mod nodeio;
pub mod passthrough;
pub mod rdplus;
pub mod readdir;
pub mod rename;
pub mod setattr;

use std::ffi::OsStr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Arc;
use std::time::Duration;

use fuser::{Errno, FileType};

use crate::fs::format::whiteout::{self, Format};
use crate::fs::tables::gate::Gate;
use crate::fs::tables::handles::HandleTable;
use crate::fs::tables::layer::{Layers, Place};
use crate::fs::tables::node::{Link, Node, ROOT_ID};
use crate::fs::tables::node_state::{LowerDir, NodeState};
use crate::fs::tables::node_table::NodeTable;
use crate::sys::{at, xattr};

/// Result of a union operation: an errno goes back to the kernel as is.
pub type FsResult<T> = Result<T, FsError>;

/// The error of a union operation: the errno the kernel gets. `?` turns the `io::Error` of a
/// system call into it (its errno, or EIO when it has none).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FsError(pub Errno);

impl FsError {
    /// The errno number.
    pub fn code(&self) -> i32 {
        self.0.code()
    }
}

impl From<std::io::Error> for FsError {
    fn from(e: std::io::Error) -> Self {
        FsError(Errno::from_i32(e.raw_os_error().unwrap_or(libc::EIO)))
    }
}

impl From<Errno> for FsError {
    fn from(e: Errno) -> Self {
        FsError(e)
    }
}

impl From<FsError> for Errno {
    fn from(e: FsError) -> Self {
        e.0
    }
}

impl PartialEq<Errno> for FsError {
    fn eq(&self, other: &Errno) -> bool {
        self.0 == *other
    }
}

/// Turn an io::Error into the error the kernel should see (for `map_err` where `?` cannot
/// be used).
pub fn errno(e: std::io::Error) -> FsError {
    FsError::from(e)
}

/// Behaviour switches of a mounted union.
#[derive(Debug, Clone)]
pub struct Settings {
    pub timeout: Duration,
    /// The daemon runs as root: it may chown, and creates files owned by the caller.
    pub privileged: bool,
    /// Report owners and modes from `user.containers.override_stat`.
    pub override_stat: bool,
    /// Which opens use FUSE passthrough.
    pub passthrough: crate::fs::union::passthrough::Mode,
    /// Changes may be paused through the control socket: writes must reach the daemon.
    pub pausable: bool,
    /// fsync copied-up data before renaming it into place.
    pub sync_copy_up: bool,
    /// Carry out fsync requests (off with `fsync=0` / `volatile`).
    pub honor_fsync: bool,
    /// Copy metadata only on chmod/chown/utimes/xattr changes, links and renames of lower
    /// files, and follow metadata-only files (kernel `metacopy=on`; off by default).
    pub metacopy: bool,
    /// `open_handles=`: `None` decides at FUSE init (see `StrataFs::init`).
    pub open_handles: Option<bool>,
}

/// A mounted union.
#[derive(Debug)]
pub struct Union {
    pub layers: Layers,
    pub nodes: NodeTable,
    pub handles: HandleTable,
    /// Descriptors for I/O addressed by node (mounts where the kernel sends no OPEN).
    pub node_fds: crate::fs::tables::node_fds::NodeFds,
    pub listings: crate::fs::tables::listings::Listings,
    pub fmt: Format,
    pub settings: Settings,
    pub gate: Gate,
}

/// A borrowed location of a directory entry: a directory fd and a name in it.
pub struct Entry {
    pub dir: Arc<OwnedFd>,
    pub name: Arc<std::ffi::OsStr>,
}

impl Entry {
    pub fn dir(&self) -> BorrowedFd<'_> {
        self.dir.as_fd()
    }
}

impl Union {
    /// Build the union and its root node.
    pub fn new(layers: Layers, fmt: Format, settings: Settings) -> std::io::Result<Union> {
        let mut state = NodeState::default();
        let mut root_ino = None;
        if let Some(up) = &layers.upper {
            let fd = at::open_at(
                up.fd(),
                OsStr::new("."),
                libc::O_PATH | libc::O_DIRECTORY,
                0,
            )?;
            state.in_upper = true;
            state.opaque = whiteout::is_opaque_dir(fd.as_fd())?;
            state.impure = whiteout::marks_at(fd.as_fd(), OsStr::new(""))?.impure;
            root_ino = Some(layers.ino(Place::Upper, at::fstat(fd.as_fd())?.st_ino));
            state.set_upper_dir(Some(Arc::new(fd)));
        }
        if !state.opaque {
            let mut lower_dirs = Vec::new();
            for (i, l) in layers.lowers.iter().enumerate() {
                let fd = at::open_at(l.fd(), OsStr::new("."), libc::O_PATH | libc::O_DIRECTORY, 0)?;
                let opaque = whiteout::is_opaque_dir(fd.as_fd())?;
                // (the kernel shows the upper root's number when there is an upper)
                if root_ino.is_none() {
                    root_ino = Some(layers.ino(Place::Lower(i), at::fstat(fd.as_fd())?.st_ino));
                }
                lower_dirs.push(LowerDir::new(i, Arc::new(fd)));
                if opaque {
                    break;
                }
            }
            state.set_lower_dirs(lower_dirs.into());
        }
        state.set_lower_path(true, Some(crate::fs::tables::node::empty_name()));
        let mut root = Node::new(
            FileType::Directory,
            ROOT_ID,
            Link::new(ROOT_ID, std::ffi::OsStr::new("")),
            state,
        );
        root.ino = root_ino.unwrap_or(ROOT_ID);
        let nodes = NodeTable::default();
        nodes.insert(Arc::new(root));
        Ok(Union {
            layers,
            nodes,
            handles: HandleTable::default(),
            node_fds: Default::default(),
            listings: Default::default(),
            fmt,
            settings,
            gate: Gate::default(),
        })
    }

    /// The node the kernel calls `id`.
    pub fn node(&self, id: u64) -> FsResult<Arc<Node>> {
        self.nodes.get(id).ok_or(FsError(Errno::ENOENT))
    }

    /// The parent directory node of `node` (ENOENT once its name was removed).
    pub fn parent_of(&self, node: &Node) -> FsResult<(Arc<Node>, Arc<std::ffi::OsStr>)> {
        let link = node.link();
        if link.parent == crate::fs::tables::node::DETACHED {
            return Err(FsError(Errno::ENOENT));
        }
        Ok((self.node(link.parent)?, link.name))
    }

    /// Where the object of `node` lives now: for a directory its own fd (empty name), for
    /// anything else its parent's directory in the right layer and its name.
    pub fn entry_of(&self, node: &Node) -> FsResult<Entry> {
        let st = node.state.read();
        if node.is_dir() {
            if let Some(u) = st.upper_dir() {
                return Ok(Entry {
                    dir: u.clone(),
                    name: crate::fs::tables::node::empty_name(),
                });
            }
            let l = st.lower_dirs().first().ok_or(FsError(Errno::ENOENT))?;
            return Ok(Entry {
                dir: l.fd.clone(),
                name: crate::fs::tables::node::empty_name(),
            });
        }
        if let (Some(key), Some(idx)) = (st.indexed(), &self.layers.index) {
            return Ok(Entry {
                dir: idx.clone(),
                name: Arc::from(key.name.as_os_str()),
            });
        }
        let in_upper = st.in_upper;
        let lower_layer = st.lower_layer();
        drop(st);
        let (parent, name) = self.parent_of(node)?;
        let pst = parent.state.read();
        if in_upper {
            let dir = pst.upper_dir().cloned().ok_or(FsError(Errno::EIO))?;
            return Ok(Entry { dir, name });
        }
        let layer = lower_layer.ok_or(FsError(Errno::EIO))?;
        let l = pst
            .lower_dirs()
            .iter()
            .find(|d| d.layer == layer)
            .ok_or(FsError(Errno::EIO))?;
        Ok(Entry {
            dir: l.fd.clone(),
            name,
        })
    }

    /// Where the data of non-directory `node` is: its object, or for a metadata-only object
    /// the lower file that holds the data.
    pub fn data_entry_of(&self, node: &Node) -> FsResult<Entry> {
        let st = node.state.read();
        if !st.metacopy {
            drop(st);
            return self.entry_of(node);
        }
        let data = st.data().cloned().ok_or(FsError(Errno::EIO))?;
        Ok(Entry {
            dir: data.dir,
            name: data.name,
        })
    }

    /// Record on metadata-only copy `node` where its data is, once its name no longer says
    /// (kernel overlayfs sets the same absolute `redirect` on moved or linked metacopy files).
    pub fn set_file_redirect(&self, node: &Node) -> FsResult<()> {
        let st = node.state.read();
        if !st.metacopy || st.indexed().is_some() {
            return Ok(());
        }
        let Some(path) = st.lower_path().cloned() else {
            return Ok(());
        };
        drop(st);
        let e = self.entry_of(node)?;
        let fd = at::open_at(e.dir(), &e.name, libc::O_PATH, 0)?;
        let mut value = b"/".to_vec();
        value.extend_from_slice(std::os::unix::ffi::OsStrExt::as_bytes(&*path));
        xattr::set_xattr(
            fd.as_fd(),
            self.fmt
                .xattr(crate::fs::format::whiteout::OvlXattr::Redirect)
                .as_bytes(),
            &value,
            0,
        )
        .map_err(errno)
    }

    /// stat of the real object behind `node`.
    pub fn real_stat(&self, node: &Node) -> FsResult<libc::stat64> {
        let e = self.entry_of(node)?;
        at::stat_at(e.dir(), &e.name).map_err(errno)
    }

    /// The attributes the kernel sees for `node` (through an open fd once its names are gone).
    pub fn attr(&self, node: &Node) -> FsResult<fuser::FileAttr> {
        let st = match self.real_stat(node) {
            Err(e) if e == Errno::ENOENT => {
                let fd = node.opens().fd.upgrade().ok_or(e)?;
                at::fstat(fd.as_fd())?
            }
            other => other?,
        };
        Ok(self.attr_from_stat(node, &st))
    }

    /// The inode number shown for `node`: its node id, except for the root, whose node id is
    /// FUSE's fixed 1 and whose number is that of the layer root the kernel would show.
    /// (fuser sends attr.ino as the node id of entries, so only the root may differ.)
    pub fn st_ino(node: &Node) -> u64 {
        if node.id == ROOT_ID {
            node.ino
        } else {
            node.id
        }
    }

    /// Attributes of `node` from a stat of its real object.
    pub fn attr_from_stat(&self, node: &Node, st: &libc::stat64) -> fuser::FileAttr {
        let s = node.state.read();
        let ino = Self::st_ino(node);
        if let Some(key) = s.indexed() {
            // The index entry holds one link of its own; lower names not linked up yet count.
            let mut st = *st;
            st.st_nlink = self.index_nlink(key, &st);
            return getattr::to_file_attr(&st, ino, false, s.over());
        }
        let merged =
            node.is_dir() && (s.lower_dirs().len() + usize::from(s.upper_dir().is_some())) > 1;
        if s.metacopy
            && let Some(d) = s.data()
            && let Ok(dst) = at::stat_at(d.dir.as_fd(), &d.name)
        {
            // A metadata-only file occupies the blocks of its data, as the kernel reports.
            let mut st = *st;
            st.st_blocks = dst.st_blocks;
            return getattr::to_file_attr(&st, ino, merged, s.over());
        }
        getattr::to_file_attr(st, ino, merged, s.over())
    }

    /// An O_PATH fd for the upper directory of dir `node`, copying it (and its parents) up.
    pub fn upper_dir(&self, node: &Arc<Node>) -> FsResult<Arc<OwnedFd>> {
        if let Some(fd) = node.state.read().upper_dir() {
            return Ok(fd.clone());
        }
        if self.layers.upper.is_none() {
            return Err(FsError(Errno::EROFS));
        }
        crate::fs::union::copyup::copy_up(self, node)?;
        node.state
            .read()
            .upper_dir()
            .cloned()
            .ok_or(FsError(Errno::EIO))
    }

    /// The work directory (EROFS on a read-only mount).
    pub fn work(&self) -> FsResult<BorrowedFd<'_>> {
        self.layers
            .work
            .as_ref()
            .map(|w| w.as_fd())
            .ok_or(FsError(Errno::EROFS))
    }

    /// Make a whiteout for `name` in upper directory `dir`. Char 0/0 whiteouts are hard links
    /// of one whiteout in the work dir, as kernel overlayfs makes them (a link allocates no
    /// inode: deleting a tree of lower files costs one `linkat` per file); a new shared one
    /// is made when the old one is missing or has all the links it can take.
    pub fn make_whiteout(
        &self,
        dir: BorrowedFd<'_>,
        name: &std::ffi::OsStr,
    ) -> std::io::Result<()> {
        const SHARED: &str = "#strata-whiteout";
        let (Some(work), true) = (self.layers.work.as_ref(), self.fmt.whiteout_dev) else {
            return self.fmt.make_whiteout(dir, name);
        };
        let shared = std::ffi::OsStr::new(SHARED);
        for _ in 0..3 {
            match at::link_at(work.as_fd(), shared, dir, name) {
                Ok(()) => return Ok(()),
                Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT) | Some(libc::EMLINK)) => {
                    let tmp = self.temp_name();
                    self.fmt.make_whiteout(work.as_fd(), &tmp)?;
                    let flags = if e.raw_os_error() == Some(libc::EMLINK) {
                        0
                    } else {
                        libc::RENAME_NOREPLACE
                    };
                    match at::rename_at(work.as_fd(), &tmp, work.as_fd(), shared, flags) {
                        Ok(()) => {}
                        // another thread made it first
                        Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {
                            let _ = at::unlink_at(work.as_fd(), &tmp, false);
                        }
                        Err(e) => {
                            let _ = at::unlink_at(work.as_fd(), &tmp, false);
                            return Err(e);
                        }
                    }
                }
                // A filesystem without hard links of device nodes: one whiteout each.
                Err(e) if e.raw_os_error() == Some(libc::EEXIST) => return Err(e),
                Err(_) => break,
            }
        }
        self.fmt.make_whiteout(dir, name)
    }

    /// A fresh unique name for a temp file in the work dir.
    pub fn temp_name(&self) -> std::ffi::OsString {
        static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        format!("#strata-{}-{}", std::process::id(), n).into()
    }
}
