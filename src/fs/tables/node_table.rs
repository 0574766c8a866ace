//! The inode table: FUSE node ids -> nodes, and the name index (parent id, name) -> node,
//! both sharded, with kernel lookup counts and forget.

use std::ffi::OsStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;

use crate::fs::tables::node::{DETACHED, Link, Node, ROOT_ID};

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
    use crate::fs::tables::node_state::NodeState;
    use fuser::FileType;
    use std::ffi::OsString;

    fn child(ino: u64, name: &OsStr) -> Node {
        let link = Link::new(ROOT_ID, name);
        Node::new(FileType::RegularFile, ino, link, NodeState::default())
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
