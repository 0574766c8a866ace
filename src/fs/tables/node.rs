//! One object of the union as the kernel knows it: its node id and stable inode number, its
//! names (parent and name, several for hard links), its state in the layers, kernel lookup
//! count and open files.

use std::ffi::OsStr;
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use fuser::FileType;
use parking_lot::{Mutex, RwLock};

use crate::fs::tables::node_state::NodeState;

/// Node id of the root directory.
pub const ROOT_ID: u64 = 1;
/// Parent id of a node whose name was removed (still open, or not yet forgotten).
pub const DETACHED: u64 = 0;

/// Per node: the fd of an open handle (to stat the object once its last name is gone), its
/// FUSE passthrough backing id while passthrough opens exist, and how many opens of each kind
/// are live (the kernel refuses to mix cached and passthrough opens of one inode). Managed by
/// the union's open and passthrough code.
#[derive(Debug, Default)]
pub struct Opens {
    pub fd: std::sync::Weak<OwnedFd>,
    pub backing: Option<Arc<fuser::BackingId>>,
    pub passthrough_opens: u32,
    pub cached_opens: u32,
}

/// The empty name (an object reached through its own fd), shared: no allocation per use.
pub fn empty_name() -> Arc<OsStr> {
    static EMPTY: std::sync::LazyLock<Arc<OsStr>> =
        std::sync::LazyLock::new(|| Arc::from(OsStr::new("")));
    EMPTY.clone()
}

/// Name and parent of a node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub parent: u64,
    pub name: Arc<OsStr>,
}

impl Link {
    pub fn new(parent: u64, name: &OsStr) -> Link {
        Link {
            parent,
            name: Arc::from(name),
        }
    }

    pub(super) fn is(&self, parent: u64, name: &OsStr) -> bool {
        self.parent == parent && *self.name == *name
    }
}

/// The names of a node: nearly always one, kept inline (a node is as small as one name).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Links {
    One(Link),
    /// None (an empty slice allocates nothing), or several: the hard links of one object.
    Many(Box<[Link]>),
}

impl Links {
    pub(super) fn empty() -> Links {
        Links::Many(Box::new([]))
    }

    pub(super) fn as_slice(&self) -> &[Link] {
        match self {
            Links::One(l) => std::slice::from_ref(l),
            Links::Many(ls) => ls,
        }
    }

    pub(super) fn as_mut_slice(&mut self) -> &mut [Link] {
        match self {
            Links::One(l) => std::slice::from_mut(l),
            Links::Many(ls) => ls,
        }
    }

    pub(super) fn first(&self) -> Option<&Link> {
        self.as_slice().first()
    }

    pub(super) fn from_vec(mut v: Vec<Link>) -> Links {
        match v.len() {
            1 => Links::One(v.remove(0)),
            _ => Links::Many(v.into_boxed_slice()),
        }
    }

    pub(super) fn push(&mut self, link: Link) {
        let mut v = std::mem::replace(self, Links::empty()).as_slice().to_vec();
        v.push(link);
        *self = Links::from_vec(v);
    }

    pub(super) fn retain(&mut self, keep: impl Fn(&Link) -> bool) {
        if self.as_slice().iter().all(&keep) {
            return;
        }
        let v = self
            .as_slice()
            .iter()
            .filter(|l| keep(l))
            .cloned()
            .collect();
        *self = Links::from_vec(v);
    }

    /// Take every name out, leaving none.
    pub(super) fn take(&mut self) -> Links {
        std::mem::replace(self, Links::empty())
    }
}

/// One object of the union as the kernel knows it. A non-directory may have several names
/// (hard links); the first is the one used to reach its object.
#[derive(Debug)]
pub struct Node {
    /// The FUSE node id, which fuser also reports as st_ino: the origin's inode number
    /// (stable across copy-up and remounts) unless another live node holds that number.
    pub id: u64,
    pub kind: FileType,
    /// The preferred inode number (equal to `id` unless that was taken).
    pub ino: u64,
    /// Names of the node (changed with the tree shards of its parents held).
    pub(super) names: Mutex<Links>,
    pub state: RwLock<NodeState>,
    pub lookups: AtomicU64,
    /// Serialises copy-up of this node.
    pub copyup_lock: Mutex<()>,
    /// Its open files (boxed on the first open: most nodes are never opened).
    opens: Mutex<Option<Box<Opens>>>,
}

impl Node {
    /// A node that prefers `ino` as its id.
    pub fn new(kind: FileType, ino: u64, link: Link, state: NodeState) -> Node {
        Node {
            id: ino,
            kind,
            ino,
            names: Mutex::new(Links::One(link)),
            state: RwLock::new(state),
            lookups: AtomicU64::new(0),
            copyup_lock: Mutex::new(()),
            opens: Mutex::new(None),
        }
    }

    pub fn is_dir(&self) -> bool {
        self.kind == FileType::Directory
    }

    /// The name used to reach the object (parent DETACHED once every name is gone).
    pub fn link(&self) -> Link {
        self.names.lock().first().cloned().unwrap_or_else(|| Link {
            parent: DETACHED,
            name: empty_name(),
        })
    }

    pub fn in_upper(&self) -> bool {
        self.state.read().in_upper
    }

    /// Whether `parent`'s name `name` is one of the node's names.
    pub(super) fn has_link(&self, parent: u64, name: &OsStr) -> bool {
        self.names
            .lock()
            .as_slice()
            .iter()
            .any(|l| l.is(parent, name))
    }

    /// Its open files, locked.
    pub fn opens(&self) -> parking_lot::MappedMutexGuard<'_, Opens> {
        parking_lot::MutexGuard::map(self.opens.lock(), |o| &mut **o.get_or_insert_default())
    }

    /// How many names the node has (0 once the last one was removed).
    pub fn name_count(&self) -> usize {
        self.names.lock().as_slice().len()
    }

    /// Whether the file's data is in the upper layer (copied up and not metadata-only).
    pub fn data_in_upper(&self) -> bool {
        let s = self.state.read();
        s.in_upper && !s.metacopy
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Names of a node: added, removed and taken, one kept inline, none and several in a
    /// slice.
    #[test]
    fn a_nodes_names_are_kept_in_order_through_changes() {
        let l = |p: u64, n: &str| Link::new(p, OsStr::new(n));
        let mut names = Links::One(l(1, "a"));
        names.push(l(2, "b"));
        names.push(l(1, "c"));
        assert_eq!(names.as_slice(), &[l(1, "a"), l(2, "b"), l(1, "c")]);
        names.retain(|x| !x.is(2, OsStr::new("b")));
        assert_eq!(names.as_slice(), &[l(1, "a"), l(1, "c")]);
        names.retain(|x| x.parent == 1 && &*x.name == OsStr::new("c"));
        assert!(matches!(names, Links::One(_)), "one name is kept inline");
        assert_eq!(names.first(), Some(&l(1, "c")));
        let taken = names.take();
        assert_eq!(taken.as_slice(), &[l(1, "c")]);
        assert!(names.as_slice().is_empty() && names.first().is_none());
        names.push(l(3, "d"));
        assert!(matches!(names, Links::One(_)));
        names.retain(|_| false);
        assert!(names.as_slice().is_empty());
    }

    /// A node lives for every name the kernel holds (a million after a walk of a million
    /// files): with its reference counts it must fit a 144-byte allocation (glibc rounds a
    /// request plus 8 up to 16).
    #[test]
    fn a_node_stays_small() {
        let node = std::mem::size_of::<Node>();
        let state = std::mem::size_of::<NodeState>();
        assert!(
            node + 16 + 8 <= 144,
            "Node is {node} bytes (NodeState {state})"
        );
        assert!(state <= 32, "NodeState is {state} bytes");
    }
}
