//! The inode table: FUSE node ids -> nodes (where the object lives in the layers, its name
//! and parent, its stable inode number), with kernel lookup counts and forget.

use std::ffi::OsStr;
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
    /// Hashes of the names it holds, read once on first use (lower layers never change while
    /// mounted), so lookups of absent names and whiteout-file checks cost no system call.
    /// Hashes, not names: 8 bytes a name, and a collision only costs the system call.
    names: Arc<std::sync::OnceLock<Option<NameHashes>>>,
}

/// The sorted 64-bit hashes of a directory's names.
#[derive(Debug)]
struct NameHashes(Box<[u64]>);

impl NameHashes {
    fn of<'a>(names: impl Iterator<Item = &'a [u8]>) -> NameHashes {
        let mut hashes: Vec<u64> = names.map(name_hash).collect();
        hashes.sort_unstable();
        hashes.dedup();
        NameHashes(hashes.into_boxed_slice())
    }

    fn may_hold(&self, name: &[u8]) -> bool {
        self.0.binary_search(&name_hash(name)).is_ok()
    }
}

fn name_hash(name: &[u8]) -> u64 {
    use std::hash::BuildHasher;
    rustc_hash::FxBuildHasher.hash_one(name)
}

impl LowerDir {
    pub fn new(layer: usize, fd: Arc<OwnedFd>) -> LowerDir {
        LowerDir {
            layer,
            fd,
            names: Default::default(),
        }
    }

    /// Record the names of the directory, read by someone listing it (lower layers never
    /// change while mounted); a no-op once known.
    pub fn learn_names<'a>(&self, names: impl Iterator<Item = &'a [u8]>) {
        let _ = self.names.set(Some(NameHashes::of(names)));
    }

    /// Whether the directory's names are known already.
    pub fn names_known(&self) -> bool {
        self.names.get().is_some()
    }

    /// Whether the directory may hold `name` (false only when it surely does not).
    pub fn may_hold(&self, name: &[u8]) -> bool {
        let names = self.names.get_or_init(|| {
            use std::os::fd::AsFd;
            crate::sys::dir::read_dir(self.fd.as_fd())
                .ok()
                .map(|entries| NameHashes::of(entries.iter().map(|e| e.name.as_slice())))
        });
        match names {
            Some(set) => set.may_hold(name),
            None => true,
        }
    }
}

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

/// Where a node's object lives. Changes only under the node's write lock.
#[derive(Debug, Clone, Default)]
pub struct NodeState {
    /// The object exists in the upper layer (a non-dir at its parent's upper dir + name).
    pub in_upper: bool,
    /// Directories: their upper and lower directories (boxed: most nodes are files).
    dirs: Option<Box<DirLayers>>,
    /// Non-directories not yet copied up: the lower layer that holds the object (an index
    /// of the union's lower layers, which are far fewer than 2^32: each holds an fd).
    lower_layer: Option<u32>,
    /// The upper directory is opaque (nothing below shows through).
    pub opaque: bool,
    /// What few nodes have: a stat override, a hard-link index key, a metacopy's data and
    /// lower path.
    extras: Option<Box<Extras>>,
    /// The object that holds the metadata (the upper one, or else the topmost lower one) has
    /// no data of its own: it is at [`NodeState::data`] (kernel overlayfs `metacopy`).
    pub metacopy: bool,
    /// Directories: the upper directory is marked `impure` (it may hold entries copied up
    /// from lower layers, whose inode numbers come from their origin).
    pub impure: bool,
    /// The object came from a lower layer (it has lower objects, or an upper copy with an
    /// origin): a directory it is moved into becomes impure.
    pub from_lower: bool,
}

/// The directories a union directory merges.
#[derive(Debug, Clone, Default)]
struct DirLayers {
    /// O_PATH fd of the upper directory once it exists.
    upper: Option<Arc<OwnedFd>>,
    /// Lower directories merged under it, topmost first.
    lowers: Box<[LowerDir]>,
    /// See [`NodeState::lower_path`].
    lower_path: Option<Arc<OsStr>>,
}

/// The rarer parts of a node's state, boxed together (most nodes have none of them).
#[derive(Debug, Clone, Default)]
struct Extras {
    /// Values recorded by a rootless unpack, shown instead of the real ones.
    over: Option<crate::fs::format::override_stat::StatOverride>,
    /// Non-directories with hard links: the object is the hard-link index entry of this key.
    indexed: Option<crate::fs::format::index::IndexKey>,
    /// Metadata-only objects: where their data is, in a lower layer.
    data: Option<DataLoc>,
    /// Files that are or may become metadata-only: see [`NodeState::lower_path`].
    lower_path: Option<Arc<OsStr>>,
}

impl NodeState {
    /// Directories: O_PATH fd of the upper directory once it exists.
    pub fn upper_dir(&self) -> Option<&Arc<OwnedFd>> {
        self.dirs.as_ref()?.upper.as_ref()
    }

    /// Directories: lower directories merged under it, topmost first.
    pub fn lower_dirs(&self) -> &[LowerDir] {
        self.dirs.as_deref().map_or(&[], |d| &d.lowers)
    }

    pub fn set_upper_dir(&mut self, fd: Option<Arc<OwnedFd>>) {
        self.change_dirs(|d| d.upper = fd);
    }

    pub fn set_lower_dirs(&mut self, lowers: Box<[LowerDir]>) {
        self.change_dirs(|d| d.lowers = lowers);
    }

    /// Change the directories, boxing them when one appears and dropping the box when none is
    /// left.
    fn change_dirs(&mut self, change: impl FnOnce(&mut DirLayers)) {
        let mut dirs = self.dirs.take().unwrap_or_default();
        change(&mut dirs);
        if dirs.upper.is_some() || !dirs.lowers.is_empty() || dirs.lower_path.is_some() {
            self.dirs = Some(dirs);
        }
    }

    /// Directories and (possibly) metadata-only files: the path of the object in the union's
    /// lower namespace (relative to the lower roots), its parent's lower path and its name or
    /// what its upper `redirect` says. A redirect written when the object moves names this
    /// path, as kernel overlayfs does. Other files do not keep it.
    pub fn lower_path(&self) -> Option<&Arc<OsStr>> {
        self.dirs
            .as_ref()
            .and_then(|d| d.lower_path.as_ref())
            .or_else(|| self.extras.as_ref()?.lower_path.as_ref())
    }

    /// Set the lower path of a directory (`dir`) or of a file.
    pub fn set_lower_path(&mut self, dir: bool, path: Option<Arc<OsStr>>) {
        if dir {
            self.change_dirs(|d| d.lower_path = path);
        } else {
            self.change_extras(|e| e.lower_path = path);
        }
    }

    /// Values recorded by a rootless unpack, shown instead of the real ones.
    pub fn over(&self) -> Option<&crate::fs::format::override_stat::StatOverride> {
        self.extras.as_ref()?.over.as_ref()
    }

    /// Non-directories with hard links: the hard-link index key of the object.
    pub fn indexed(&self) -> Option<&crate::fs::format::index::IndexKey> {
        self.extras.as_ref()?.indexed.as_ref()
    }

    /// Metadata-only objects: where their data is, in a lower layer.
    pub fn data(&self) -> Option<&DataLoc> {
        self.extras.as_ref()?.data.as_ref()
    }

    pub fn set_over(&mut self, over: Option<crate::fs::format::override_stat::StatOverride>) {
        self.change_extras(|e| e.over = over);
    }

    pub fn set_indexed(&mut self, key: Option<crate::fs::format::index::IndexKey>) {
        self.change_extras(|e| e.indexed = key);
    }

    pub fn set_data(&mut self, data: Option<DataLoc>) {
        self.change_extras(|e| e.data = data);
    }

    /// Change the extras, boxing them when one appears and dropping the box when none is left.
    fn change_extras(&mut self, change: impl FnOnce(&mut Extras)) {
        let mut extras = self.extras.take().unwrap_or_default();
        change(&mut extras);
        if extras.over.is_some()
            || extras.indexed.is_some()
            || extras.data.is_some()
            || extras.lower_path.is_some()
        {
            self.extras = Some(extras);
        }
    }

    /// Non-directories not yet copied up: the lower layer that holds the object.
    pub fn lower_layer(&self) -> Option<usize> {
        self.lower_layer.map(|l| l as usize)
    }

    pub fn set_lower_layer(&mut self, layer: Option<usize>) {
        self.lower_layer = layer.map(|l| l as u32);
    }
}

/// Where the data of a metadata-only file lives: a name in a directory of a lower layer.
#[derive(Debug, Clone)]
pub struct DataLoc {
    pub dir: Arc<OwnedFd>,
    pub name: Arc<OsStr>,
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

    fn is(&self, parent: u64, name: &OsStr) -> bool {
        self.parent == parent && *self.name == *name
    }
}

/// The names of a node: nearly always one, kept inline (a node is as small as one name).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Links {
    One(Link),
    /// None (an empty slice allocates nothing), or several: the hard links of one object.
    Many(Box<[Link]>),
}

impl Links {
    fn empty() -> Links {
        Links::Many(Box::new([]))
    }

    fn as_slice(&self) -> &[Link] {
        match self {
            Links::One(l) => std::slice::from_ref(l),
            Links::Many(ls) => ls,
        }
    }

    fn as_mut_slice(&mut self) -> &mut [Link] {
        match self {
            Links::One(l) => std::slice::from_mut(l),
            Links::Many(ls) => ls,
        }
    }

    fn first(&self) -> Option<&Link> {
        self.as_slice().first()
    }

    fn from_vec(mut v: Vec<Link>) -> Links {
        match v.len() {
            1 => Links::One(v.remove(0)),
            _ => Links::Many(v.into_boxed_slice()),
        }
    }

    fn push(&mut self, link: Link) {
        let mut v = std::mem::replace(self, Links::empty()).as_slice().to_vec();
        v.push(link);
        *self = Links::from_vec(v);
    }

    fn retain(&mut self, keep: impl Fn(&Link) -> bool) {
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
    fn take(&mut self) -> Links {
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
    names: Mutex<Links>,
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
    fn has_link(&self, parent: u64, name: &OsStr) -> bool {
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

const SHARDS: usize = 64;

/// All live nodes, sharded by id, and the name index (parent id, name) -> node id, sharded by
/// parent: no lock covers the whole filesystem.
#[derive(Debug)]
pub struct NodeTable {
    shards: Vec<Mutex<Shard>>,
    /// Which node each known name shows, by parent. A shard also guards the `names` of the
    /// nodes it names (lock order: tree shards by index, then a node's `names`, then a node
    /// shard).
    trees: Vec<Mutex<Tree>>,
    next_id: AtomicU64,
    /// Nodes dropped since the mount (memory is given back every so many).
    dropped: AtomicU64,
}

impl Default for NodeTable {
    fn default() -> Self {
        NodeTable {
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
            trees: (0..SHARDS).map(|_| Mutex::new(Tree::default())).collect(),
            next_id: AtomicU64::new(1),
            dropped: AtomicU64::new(0),
        }
    }
}

/// The nodes of one shard, by id. A table of the nodes alone (the id is in the node): 8 bytes a
/// slot, where a map from id would take 16.
#[derive(Debug, Default)]
struct Shard(hashbrown::HashTable<Arc<Node>>);

impl Shard {
    fn hash(id: u64) -> u64 {
        use std::hash::BuildHasher;
        rustc_hash::FxBuildHasher.hash_one(id)
    }

    fn get(&self, id: u64) -> Option<&Arc<Node>> {
        self.0.find(Self::hash(id), |n| n.id == id)
    }

    /// Insert `node`, replacing the node of the same id if there is one.
    fn insert(&mut self, node: Arc<Node>) {
        match self.0.entry(
            Self::hash(node.id),
            |n| n.id == node.id,
            |n| Self::hash(n.id),
        ) {
            hashbrown::hash_table::Entry::Occupied(mut e) => *e.get_mut() = node,
            hashbrown::hash_table::Entry::Vacant(e) => {
                e.insert(node);
            }
        }
    }

    /// Insert `node` unless a node of its id is there.
    fn insert_if_absent(&mut self, node: &Arc<Node>) {
        if let hashbrown::hash_table::Entry::Vacant(e) = self.0.entry(
            Self::hash(node.id),
            |n| n.id == node.id,
            |n| Self::hash(n.id),
        ) {
            e.insert(node.clone());
        }
    }

    fn remove(&mut self, id: u64) {
        if let Ok(e) = self.0.find_entry(Self::hash(id), |n| n.id == id) {
            e.remove();
        }
    }

    /// Hand back the room of a mostly empty table.
    fn shrink(&mut self) {
        if self.0.len() * 4 < self.0.capacity() {
            let len = self.0.len();
            self.0.shrink_to(len * 2, |n| Self::hash(n.id));
        }
    }
}

/// The name index of one shard: (parent id, name) -> node. A slot holds the hash of the name
/// and the node, 16 bytes: the name itself is the node's [`Link`], compared when the hashes
/// match (under the tree shard, which guards the names of the nodes it names).
#[derive(Debug, Default)]
struct Tree(hashbrown::HashTable<Named>);

/// One name of a node in the name index.
#[derive(Debug)]
struct Named {
    hash: u64,
    node: Arc<Node>,
}

fn child_hash(parent: u64, name: &OsStr) -> u64 {
    use std::hash::BuildHasher;
    use std::os::unix::ffi::OsStrExt;
    rustc_hash::FxBuildHasher.hash_one((parent, name.as_bytes()))
}

impl Tree {
    /// The node that name `name` of `parent` shows. Locks the names of the nodes whose name
    /// hashes match: call with no node's names locked.
    fn get(&self, parent: u64, name: &OsStr) -> Option<&Arc<Node>> {
        let hash = child_hash(parent, name);
        self.0
            .find(hash, |e| e.hash == hash && e.node.has_link(parent, name))
            .map(|e| &e.node)
    }

    /// Take name `name` of `parent` out of the index (same locking as [`Tree::get`]).
    fn remove(&mut self, parent: u64, name: &OsStr) -> Option<Arc<Node>> {
        let hash = child_hash(parent, name);
        let entry = self
            .0
            .find_entry(hash, |e| e.hash == hash && e.node.has_link(parent, name))
            .ok()?;
        Some(entry.remove().0.node)
    }

    /// Take the entry of `node` for name `name` of `parent` out, if it is `node`'s (compared
    /// by identity: `node`'s names may be locked).
    fn remove_if_of(&mut self, parent: u64, name: &OsStr, node: &Arc<Node>) {
        let hash = child_hash(parent, name);
        if let Ok(e) = self
            .0
            .find_entry(hash, |e| e.hash == hash && Arc::ptr_eq(&e.node, node))
        {
            e.remove();
        }
    }

    /// Index `node` under name `name` of `parent`, which must not be indexed already.
    fn insert(&mut self, parent: u64, name: &OsStr, node: Arc<Node>) {
        let hash = child_hash(parent, name);
        self.0.insert_unique(hash, Named { hash, node }, |e| e.hash);
    }

    /// Hand back the room of a mostly empty table.
    fn shrink(&mut self) {
        if self.0.len() * 4 < self.0.capacity() {
            let len = self.0.len();
            self.0.shrink_to(len * 2, |e| e.hash);
        }
    }
}

/// Tree shards locked together, in index order.
struct Trees<'a> {
    held: Vec<(usize, parking_lot::MutexGuard<'a, Tree>)>,
}

impl Trees<'_> {
    fn of(&mut self, parent: u64) -> &mut Tree {
        let idx = (parent as usize) % SHARDS;
        let pos = self.held.iter().position(|(i, _)| *i == idx).unwrap_or(0);
        &mut self.held[pos].1
    }
}

impl NodeTable {
    fn shard(&self, id: u64) -> &Mutex<Shard> {
        &self.shards[(id as usize) % SHARDS]
    }

    /// Lock the tree shard of one parent.
    fn lock_tree(&self, parent: u64) -> parking_lot::MutexGuard<'_, Tree> {
        self.trees[(parent as usize) % SHARDS].lock()
    }

    /// Lock the tree shards of the given parents (each once, in index order).
    fn lock_trees(&self, parents: &[u64]) -> Trees<'_> {
        let mut idx: Vec<usize> = parents.iter().map(|p| (*p as usize) % SHARDS).collect();
        idx.sort_unstable();
        idx.dedup();
        Trees {
            held: idx.into_iter().map(|i| (i, self.trees[i].lock())).collect(),
        }
    }

    /// An id no inode number uses: the high bit set (taken when a node's own inode number is
    /// already the id of another live node).
    fn synthetic_id(&self) -> u64 {
        (1u64 << 63) | self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    pub fn get(&self, id: u64) -> Option<Arc<Node>> {
        self.shard(id).lock().get(id).cloned()
    }

    pub fn insert(&self, node: Arc<Node>) {
        self.shard(node.id).lock().insert(node);
    }

    /// Register a new node under its preferred id (its inode number), or under a synthetic
    /// id when that one is held by another live node. fuser reports a node's id as st_ino.
    fn insert_new(&self, mut node: Node) -> Arc<Node> {
        {
            let mut shard = self.shard(node.id).lock();
            if node.id != DETACHED && shard.get(node.id).is_none() {
                let node = Arc::new(node);
                shard.insert(node.clone());
                return node;
            }
        }
        node.id = self.synthetic_id();
        let node = Arc::new(node);
        self.insert(node.clone());
        node
    }

    /// Count one more kernel lookup of `node`, putting it back in the table if a concurrent
    /// forget of its last lookup took it out. Call with `node.names` locked.
    fn count_lookup(&self, node: &Arc<Node>) {
        node.lookups.fetch_add(1, Ordering::Relaxed);
        self.shard(node.id).lock().insert_if_absent(node);
    }

    /// Remove name `name` of `parent` from whatever node it showed (its tree shard must be
    /// held).
    fn unlink_name(&self, tree: &mut Tree, parent: u64, name: &OsStr) -> Option<Arc<Node>> {
        let node = tree.remove(parent, name)?;
        node.names.lock().retain(|l| !l.is(parent, name));
        Some(node)
    }

    /// The node id of child `name` of `parent`, if the kernel knows it.
    pub fn child_id(&self, parent: u64, name: &OsStr) -> Option<u64> {
        self.lock_tree(parent).get(parent, name).map(|n| n.id)
    }

    /// The child `name` of `parent` if the kernel already knows it; counts one lookup.
    pub fn find_child(&self, parent: &Node, name: &OsStr) -> Option<Arc<Node>> {
        let tree = self.lock_tree(parent.id);
        let node = tree.get(parent.id, name)?.clone();
        let _names = node.names.lock();
        node.lookups.fetch_add(1, Ordering::Relaxed);
        drop(_names);
        Some(node)
    }

    /// Insert `node` as child `name` of `parent`, unless another thread got there first, in
    /// which case that node is returned (and false: not the given one). A non-directory whose id is held by a live node
    /// that `same_object` accepts joins it as one more name (a hard link). Counts one lookup.
    pub fn attach_child(
        &self,
        parent: &Node,
        name: &OsStr,
        node: Node,
        same_object: &dyn Fn(&Node, &Node) -> bool,
    ) -> (Arc<Node>, bool) {
        let mut tree = self.lock_tree(parent.id);
        if let Some(existing) = tree.get(parent.id, name).cloned() {
            let _names = existing.names.lock();
            existing.lookups.fetch_add(1, Ordering::Relaxed);
            drop(_names);
            return (existing, false);
        }
        if !node.is_dir()
            && let Some(existing) = self.get(node.id)
            && existing.kind == node.kind
            && same_object(&existing, &node)
        {
            let mut names = existing.names.lock();
            names.push(Link::new(parent.id, name));
            self.count_lookup(&existing);
            drop(names);
            tree.insert(parent.id, name, existing.clone());
            return (existing, false);
        }
        let node = self.insert_new(node);
        {
            // (a node made for another name is given this one)
            let mut names = node.names.lock();
            if !names.as_slice().iter().any(|l| l.is(parent.id, name)) {
                names.push(Link::new(parent.id, name));
            }
        }
        node.lookups.fetch_add(1, Ordering::Relaxed);
        tree.insert(parent.id, name, node.clone());
        (node, true)
    }

    /// Make `node` (new) child `name` of `parent`, replacing whatever was there. Counts one
    /// lookup.
    pub fn replace_child(&self, parent: &Node, name: &OsStr, node: Node) -> Arc<Node> {
        let node = self.insert_new(node);
        self.add_name(parent, name, &node);
        node
    }

    /// Give `node` one more name (a new hard link), replacing whatever was there. Counts one
    /// lookup.
    pub fn add_name(&self, parent: &Node, name: &OsStr, node: &Arc<Node>) {
        let mut tree = self.lock_tree(parent.id);
        self.unlink_name(&mut tree, parent.id, name);
        {
            let mut names = node.names.lock();
            if !names.as_slice().iter().any(|l| l.is(parent.id, name)) {
                names.push(Link::new(parent.id, name));
            }
            self.count_lookup(node);
        }
        tree.insert(parent.id, name, node.clone());
    }

    /// Forget child `name` of `parent` (after unlink): the node stays until the kernel forgets it.
    pub fn detach_child(&self, parent: &Node, name: &OsStr) {
        let mut tree = self.lock_tree(parent.id);
        self.unlink_name(&mut tree, parent.id, name);
    }

    /// Move the child entry `name` of `from` to `to_name` in `to` (after a rename). The entry
    /// that was at the target loses that name.
    pub fn move_child(&self, from: &Node, name: &OsStr, to: &Node, to_name: &OsStr) {
        let mut trees = self.lock_trees(&[from.id, to.id]);
        self.unlink_name(trees.of(to.id), to.id, to_name);
        if let Some(node) = trees.of(from.id).remove(from.id, name) {
            let dst = Link::new(to.id, to_name);
            for l in node.names.lock().as_mut_slice() {
                if l.is(from.id, name) {
                    *l = dst.clone();
                }
            }
            trees.of(to.id).insert(to.id, to_name, node);
        }
    }

    /// Swap two child entries (after RENAME_EXCHANGE).
    pub fn exchange_children(&self, a: &Node, an: &OsStr, b: &Node, bn: &OsStr) {
        let mut trees = self.lock_trees(&[a.id, b.id]);
        let la = Link::new(a.id, an);
        let lb = Link::new(b.id, bn);
        let na = trees.of(a.id).remove(a.id, an);
        let nb = trees.of(b.id).remove(b.id, bn);
        for (n, from, to) in [(na, &la, &lb), (nb, &lb, &la)] {
            if let Some(n) = n {
                for l in n.names.lock().as_mut_slice() {
                    if l.is(from.parent, &from.name) {
                        *l = to.clone();
                    }
                }
                trees.of(to.parent).insert(to.parent, &to.name, n);
            }
        }
    }

    /// One more node was dropped: after many, give the freed memory back to the system (the
    /// allocator keeps it otherwise, and a walk of a million files leaves hundreds of MiB).
    fn forgotten(&self) {
        const EVERY: u64 = 1 << 15;
        if self.dropped.fetch_add(1, Ordering::Relaxed) % EVERY == EVERY - 1 {
            // Hash tables keep the room of their largest size: hand back what is mostly empty.
            for shard in &self.shards {
                shard.lock().shrink();
            }
            for tree in &self.trees {
                tree.lock().shrink();
            }
            crate::sys::limits::release_free_memory();
        }
    }

    /// Drop `n` kernel lookups of node `id`; the node goes when none remain.
    pub fn forget(&self, id: u64, n: u64) {
        if id == ROOT_ID {
            return;
        }
        let Some(node) = self.get(id) else { return };
        loop {
            // Lock the tree shards of every name, then check the names did not change.
            let before = node.names.lock().clone();
            let parents: Vec<u64> = before.as_slice().iter().map(|l| l.parent).collect();
            let mut trees = self.lock_trees(&parents);
            let mut names = node.names.lock();
            if *names != before {
                continue;
            }
            let left = node.lookups.load(Ordering::Relaxed).saturating_sub(n);
            node.lookups.store(left, Ordering::Relaxed);
            if left == 0 {
                for l in names.take().as_slice() {
                    trees.of(l.parent).remove_if_of(l.parent, &l.name, &node);
                }
                self.shard(id).lock().remove(id);
                drop(names);
                drop(trees);
                // With no lock held: giving memory back locks every shard.
                self.forgotten();
            }
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsString;

    fn child(ino: u64, name: &OsStr) -> Node {
        let link = Link::new(ROOT_ID, name);
        Node::new(FileType::RegularFile, ino, link, NodeState::default())
    }

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

    /// Forgetting more nodes than the memory-return interval must not hang (giving memory
    /// back locks every shard) and must leave only the root.
    #[test]
    fn forgetting_many_nodes_gives_memory_back_without_hanging() {
        let (done, finished) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let table = NodeTable::default();
            let root = Arc::new(child(ROOT_ID, OsStr::new("")));
            table.insert(root.clone());
            let count = (1u64 << 15) * 2 + 10;
            for i in 0..count {
                let name = OsString::from(format!("f{i}"));
                let (node, fresh) =
                    table.attach_child(&root, &name, child(i + 2, &name), &|_, _| false);
                assert!(fresh);
                table.forget(node.id, 1);
                assert!(table.child_id(ROOT_ID, &name).is_none());
            }
            let left: usize = table.shards.iter().map(|s| s.lock().0.len()).sum();
            let _ = done.send(left);
        });
        let left = finished
            .recv_timeout(std::time::Duration::from_secs(60))
            .map_err(|e| format!("forget did not finish: {e}"));
        assert_eq!(left, Ok(1));
    }
}
