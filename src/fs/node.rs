//! The inode table: FUSE node ids -> nodes (where the object lives in the layers, its name
//! and parent, its stable inode number), with kernel lookup counts and forget.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use fuser::FileType;
use parking_lot::{Mutex, RwLock};

/// Node id of the root directory.
pub const ROOT_ID: u64 = 1;
/// Parent id of a node whose name was removed (still open, or not yet forgotten).
pub const DETACHED: u64 = 0;

/// A lower directory merged into a union directory.
#[derive(Debug, Clone)]
pub struct LowerDir {
    pub layer: usize,
    pub fd: Arc<OwnedFd>,
}

/// Owner and mode recorded by an unprivileged unpacker (`user.containers.override_stat`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatOverride {
    pub uid: u32,
    pub gid: u32,
    /// Permission bits including suid/sgid/sticky.
    pub perm: u32,
    /// Device type and number for device nodes stored as empty files.
    pub dev: Option<(FileType, u64)>,
}

/// Where a node's object lives. Changes only under the node's write lock.
#[derive(Debug, Clone, Default)]
pub struct NodeState {
    /// The object exists in the upper layer (a non-dir at its parent's upper dir + name).
    pub in_upper: bool,
    /// Directories: O_PATH fd of the upper directory once it exists.
    pub upper_dir: Option<Arc<OwnedFd>>,
    /// Directories: lower directories merged under it, topmost first.
    pub lower_dirs: Vec<LowerDir>,
    /// Non-directories not yet copied up: the lower layer that holds the object.
    pub lower_layer: Option<usize>,
    /// Path of the object in the lower layers (relative to a layer root), where it has one.
    pub lower_path: Option<OsString>,
    /// The upper directory is opaque (nothing below shows through).
    pub opaque: bool,
    /// Values recorded by a rootless unpack, shown instead of the real ones.
    pub over: Option<StatOverride>,
}

/// Name and parent of a node.
#[derive(Debug, Clone)]
pub struct Link {
    pub parent: u64,
    pub name: OsString,
}

/// One object of the union as the kernel knows it.
#[derive(Debug)]
pub struct Node {
    /// The FUSE node id, which fuser also reports as st_ino: the origin's inode number
    /// (stable across copy-up and remounts) unless another live node holds that number.
    pub id: u64,
    pub kind: FileType,
    /// The preferred inode number (equal to `id` unless that was taken).
    pub ino: u64,
    pub link: Mutex<Link>,
    pub state: RwLock<NodeState>,
    pub lookups: AtomicU64,
    /// Directories: looked-up children by name.
    pub children: Mutex<HashMap<OsString, u64>>,
    /// Serialises copy-up of this node.
    pub copyup_lock: Mutex<()>,
}

impl Node {
    /// A node that prefers `ino` as its id.
    pub fn new(kind: FileType, ino: u64, link: Link, state: NodeState) -> Node {
        Node {
            id: ino,
            kind,
            ino,
            link: Mutex::new(link),
            state: RwLock::new(state),
            lookups: AtomicU64::new(0),
            children: Mutex::new(HashMap::new()),
            copyup_lock: Mutex::new(()),
        }
    }

    pub fn is_dir(&self) -> bool {
        self.kind == FileType::Directory
    }

    pub fn link(&self) -> Link {
        self.link.lock().clone()
    }

    pub fn in_upper(&self) -> bool {
        self.state.read().in_upper
    }
}

const SHARDS: usize = 64;

/// All live nodes, sharded by id.
#[derive(Debug)]
pub struct NodeTable {
    shards: Vec<Mutex<HashMap<u64, Arc<Node>>>>,
    next_id: AtomicU64,
}

impl Default for NodeTable {
    fn default() -> Self {
        NodeTable {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            next_id: AtomicU64::new(1),
        }
    }
}

impl NodeTable {
    fn shard(&self, id: u64) -> &Mutex<HashMap<u64, Arc<Node>>> {
        &self.shards[(id as usize) % SHARDS]
    }

    /// An id no inode number uses: the high bit set (taken when a node's own inode number is
    /// already the id of another live node).
    fn synthetic_id(&self) -> u64 {
        (1u64 << 63) | self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Register a new node under its preferred id (its inode number), or under a synthetic
    /// id when that one is held by another live node. fuser reports a node's id as st_ino.
    fn insert_new(&self, mut node: Node) -> Arc<Node> {
        {
            let mut shard = self.shard(node.id).lock();
            if node.id != DETACHED && !shard.contains_key(&node.id) {
                let node = Arc::new(node);
                shard.insert(node.id, node.clone());
                return node;
            }
        }
        node.id = self.synthetic_id();
        let node = Arc::new(node);
        self.insert(node.clone());
        node
    }

    pub fn get(&self, id: u64) -> Option<Arc<Node>> {
        self.shard(id).lock().get(&id).cloned()
    }

    pub fn insert(&self, node: Arc<Node>) {
        self.shard(node.id).lock().insert(node.id, node);
    }

    fn remove(&self, id: u64) {
        self.shard(id).lock().remove(&id);
    }

    /// The child `name` of `parent` if the kernel already knows it; counts one lookup.
    pub fn find_child(&self, parent: &Node, name: &OsStr) -> Option<Arc<Node>> {
        let children = parent.children.lock();
        let id = *children.get(name)?;
        let node = self.get(id)?;
        node.lookups.fetch_add(1, Ordering::Relaxed);
        Some(node)
    }

    /// Insert `node` as child `name` of `parent`, unless another thread got there first, in
    /// which case that node is returned. Counts one lookup either way.
    pub fn attach_child(&self, parent: &Node, name: &OsStr, node: Node) -> Arc<Node> {
        let mut children = parent.children.lock();
        if let Some(id) = children.get(name) {
            if let Some(existing) = self.get(*id) {
                existing.lookups.fetch_add(1, Ordering::Relaxed);
                return existing;
            }
        }
        let node = self.insert_new(node);
        node.lookups.fetch_add(1, Ordering::Relaxed);
        children.insert(name.to_os_string(), node.id);
        node
    }

    /// Make `node` (new) child `name` of `parent`, replacing whatever was there (which becomes
    /// detached). Counts one lookup.
    pub fn replace_child(&self, parent: &Node, name: &OsStr, node: Node) -> Arc<Node> {
        let node = self.insert_new(node);
        node.lookups.fetch_add(1, Ordering::Relaxed);
        let mut children = parent.children.lock();
        if let Some(old) = children.insert(name.to_os_string(), node.id) {
            if let Some(old) = self.get(old) {
                old.link.lock().parent = DETACHED;
            }
        }
        node
    }

    /// Forget child `name` of `parent` (after unlink): the node stays until the kernel forgets it.
    pub fn detach_child(&self, parent: &Node, name: &OsStr) {
        let mut children = parent.children.lock();
        if let Some(id) = children.remove(name) {
            if let Some(node) = self.get(id) {
                let mut link = node.link.lock();
                if link.parent == parent.id {
                    link.parent = DETACHED;
                }
            }
        }
    }

    /// Move the child entry `name` of `from` to `to_name` in `to` (after a rename). The entry
    /// that was at the target becomes detached.
    pub fn move_child(&self, from: &Node, name: &OsStr, to: &Node, to_name: &OsStr) {
        let moved = {
            let mut fc = from.children.lock();
            fc.remove(name)
        };
        let mut tc = to.children.lock();
        if let Some(old) = tc.remove(to_name) {
            if let Some(old) = self.get(old) {
                old.link.lock().parent = DETACHED;
            }
        }
        if let Some(id) = moved {
            if let Some(node) = self.get(id) {
                *node.link.lock() = Link {
                    parent: to.id,
                    name: to_name.to_os_string(),
                };
                tc.insert(to_name.to_os_string(), id);
            }
        }
    }

    /// Swap two child entries (after RENAME_EXCHANGE).
    pub fn exchange_children(&self, a: &Node, an: &OsStr, b: &Node, bn: &OsStr) {
        let ida = a.children.lock().remove(an);
        let idb = b.children.lock().remove(bn);
        if let Some(id) = ida {
            if let Some(n) = self.get(id) {
                *n.link.lock() = Link {
                    parent: b.id,
                    name: bn.to_os_string(),
                };
                b.children.lock().insert(bn.to_os_string(), id);
            }
        }
        if let Some(id) = idb {
            if let Some(n) = self.get(id) {
                *n.link.lock() = Link {
                    parent: a.id,
                    name: an.to_os_string(),
                };
                a.children.lock().insert(an.to_os_string(), id);
            }
        }
    }

    /// Drop `n` kernel lookups of node `id`; the node goes when none remain.
    pub fn forget(&self, id: u64, n: u64) {
        if id == ROOT_ID {
            return;
        }
        let Some(node) = self.get(id) else { return };
        loop {
            let link = node.link();
            let parent = if link.parent == DETACHED {
                None
            } else {
                self.get(link.parent)
            };
            let mut guard = parent.as_ref().map(|p| p.children.lock());
            if node.link.lock().parent != link.parent {
                continue; // renamed meanwhile: retry with the new parent
            }
            let prev = node.lookups.fetch_sub(
                n.min(node.lookups.load(Ordering::Relaxed)),
                Ordering::Relaxed,
            );
            if prev <= n {
                if let Some(children) = guard.as_mut() {
                    if children.get(&link.name) == Some(&id) {
                        children.remove(&link.name);
                    }
                }
                self.remove(id);
            }
            return;
        }
    }
}
