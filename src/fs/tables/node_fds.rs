//! Descriptors for file I/O addressed by node rather than by open handle.
//!
//! A mount that answers OPEN with ENOSYS gets no OPEN and no RELEASE from the kernel: READ and
//! WRITE name only the inode. This table keeps one descriptor for each recently used node
//! (bounded; the oldest half of a shard goes when it fills), and a pinned location for each
//! node whose last name was removed while the kernel may still hold it open: the file's own
//! descriptor for an upper file (the name is gone, the inode lives on), the lower directory
//! and name for a lower file (lower layers never change, so it can be opened again later).

use std::ffi::OsStr;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};

use parking_lot::Mutex;
use rustc_hash::FxHashMap;

use crate::fs::tables::node::Node;

/// What a cached descriptor may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Read,
    Write,
    ReadWrite,
}

impl Access {
    /// Whether a descriptor opened with `self` serves a request that needs `want`.
    pub fn serves(self, want: Access) -> bool {
        self == Access::ReadWrite || self == want
    }
}

/// Where the data of a node whose last name was removed still is.
#[derive(Debug, Clone)]
pub enum Pinned {
    /// An open descriptor of the (upper, or private) file.
    Fd(Arc<OwnedFd>, Access),
    /// A lower layer's directory and the name in it.
    Lower(Arc<OwnedFd>, Arc<OsStr>),
}

#[derive(Debug)]
struct Slot {
    node: Weak<Node>,
    fd: Arc<OwnedFd>,
    /// The descriptor is on the upper layer (the node's data was there when it was opened).
    upper: bool,
    access: Access,
    /// Use stamp, for eviction.
    used: u64,
}

const SHARDS: usize = 16;
/// Descriptors kept per shard.
const PER_SHARD: usize = 32;

/// The per-node descriptors of a mount.
#[derive(Debug)]
pub struct NodeFds {
    /// The kernel sends no OPEN on this mount: I/O is addressed by node.
    enabled: AtomicBool,
    clock: AtomicU64,
    shards: Vec<Mutex<FxHashMap<u64, Slot>>>,
    pinned: Mutex<FxHashMap<u64, (Weak<Node>, Pinned)>>,
}

impl Default for NodeFds {
    fn default() -> Self {
        NodeFds {
            enabled: AtomicBool::new(false),
            clock: AtomicU64::new(0),
            shards: (0..SHARDS)
                .map(|_| Mutex::new(FxHashMap::default()))
                .collect(),
            pinned: Mutex::new(FxHashMap::default()),
        }
    }
}

fn same_node(w: &Weak<Node>, node: &Arc<Node>) -> bool {
    std::ptr::eq(w.as_ptr(), Arc::as_ptr(node))
}

impl NodeFds {
    /// Whether I/O on this mount is addressed by node.
    pub fn enabled(&self) -> bool {
        self.enabled.load(Ordering::Relaxed)
    }

    pub fn set_enabled(&self, on: bool) {
        self.enabled.store(on, Ordering::Relaxed);
    }

    fn shard(&self, id: u64) -> &Mutex<FxHashMap<u64, Slot>> {
        &self.shards[(id as usize) % SHARDS]
    }

    /// The cached descriptor of `node` if it is on the layer the data is on now (`upper`) and
    /// serves `want`.
    pub fn get(&self, node: &Arc<Node>, upper: bool, want: Access) -> Option<Arc<OwnedFd>> {
        let mut shard = self.shard(node.id).lock();
        let slot = shard.get_mut(&node.id)?;
        if !same_node(&slot.node, node) || slot.upper != upper || !slot.access.serves(want) {
            return None;
        }
        slot.used = self.clock.fetch_add(1, Ordering::Relaxed);
        Some(slot.fd.clone())
    }

    /// Keep `fd` as the descriptor of `node` (replacing any other), and hand it back.
    pub fn put(&self, node: &Arc<Node>, fd: OwnedFd, upper: bool, access: Access) -> Arc<OwnedFd> {
        let fd = Arc::new(fd);
        let mut shard = self.shard(node.id).lock();
        if shard.len() >= PER_SHARD && !shard.contains_key(&node.id) {
            // Drop the least recently used half of the shard.
            let mut stamps: Vec<u64> = shard.values().map(|s| s.used).collect();
            stamps.sort_unstable();
            let cut = stamps[stamps.len() / 2];
            shard.retain(|_, s| s.used > cut);
        }
        shard.insert(
            node.id,
            Slot {
                node: Arc::downgrade(node),
                fd: fd.clone(),
                upper,
                access,
                used: self.clock.fetch_add(1, Ordering::Relaxed),
            },
        );
        fd
    }

    /// The node's name is gone: keep where its data is until the kernel forgets it.
    pub fn pin(&self, node: &Arc<Node>, p: Pinned) {
        self.pinned
            .lock()
            .insert(node.id, (Arc::downgrade(node), p));
    }

    /// Where the data of `node` is kept since its last name was removed.
    pub fn pinned(&self, node: &Arc<Node>) -> Option<Pinned> {
        let pinned = self.pinned.lock();
        let (w, p) = pinned.get(&node.id)?;
        same_node(w, node).then(|| p.clone())
    }

    /// The kernel forgot node `id`: drop what is kept for it once nothing else holds it.
    pub fn forgotten(&self, id: u64) {
        if !self.enabled() {
            return;
        }
        {
            let mut shard = self.shard(id).lock();
            if shard.get(&id).is_some_and(|s| s.node.strong_count() == 0) {
                shard.remove(&id);
            }
        }
        let mut pinned = self.pinned.lock();
        if pinned.get(&id).is_some_and(|(w, _)| w.strong_count() == 0) {
            pinned.remove(&id);
        }
    }

    /// Descriptors held now (cached and pinned).
    #[cfg(test)]
    pub fn held(&self) -> usize {
        self.shards.iter().map(|s| s.lock().len()).sum::<usize>() + self.pinned.lock().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn access_serves_only_what_it_was_opened_for() {
        assert!(Access::ReadWrite.serves(Access::Read));
        assert!(Access::ReadWrite.serves(Access::Write));
        assert!(Access::Read.serves(Access::Read));
        assert!(!Access::Read.serves(Access::Write));
        assert!(!Access::Write.serves(Access::Read));
    }
}
