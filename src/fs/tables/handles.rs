//! Open file handles, and the entry type of merged directory listings. A file handle opened on a lower file follows the file
//! into the upper layer once it is copied up, so it never reads stale data.

use rustc_hash::FxHashMap as HashMap;
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use fuser::FileType;
use parking_lot::{Mutex, RwLock};

use crate::fs::tables::node::Node;

/// An open regular file (or other non-directory).
#[derive(Debug)]
pub struct FileHandle {
    pub node: Arc<Node>,
    pub fd: RwLock<Arc<OwnedFd>>,
    /// The fd is on the upper layer.
    pub on_upper: AtomicBool,
    /// Open flags used for the backing fd.
    pub flags: i32,
    /// The passthrough backing id, when the kernel does this file's I/O itself.
    pub backing: Mutex<Option<Arc<fuser::BackingId>>>,
}

/// One entry of a merged directory listing.
#[derive(Debug, Clone)]
pub struct DirEntry {
    pub name: std::ffi::OsString,
    pub ino: u64,
    pub kind: FileType,
}

const SHARDS: usize = 32;

/// All open handles.
#[derive(Debug)]
pub struct HandleTable {
    next: AtomicU64,
    files: Vec<Mutex<HashMap<u64, Arc<FileHandle>>>>,
}

impl Default for HandleTable {
    fn default() -> Self {
        HandleTable {
            next: AtomicU64::new(1),
            files: (0..SHARDS)
                .map(|_| Mutex::new(HashMap::default()))
                .collect(),
        }
    }
}

impl FileHandle {
    /// The current fd, as a clone of its Arc.
    pub fn fd(&self) -> Arc<OwnedFd> {
        self.fd.read().clone()
    }
}

impl HandleTable {
    pub fn add_file(&self, h: FileHandle) -> u64 {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        self.files[(id as usize) % SHARDS]
            .lock()
            .insert(id, Arc::new(h));
        id
    }

    pub fn file(&self, id: u64) -> Option<Arc<FileHandle>> {
        self.files[(id as usize) % SHARDS].lock().get(&id).cloned()
    }

    pub fn remove_file(&self, id: u64) -> Option<Arc<FileHandle>> {
        self.files[(id as usize) % SHARDS].lock().remove(&id)
    }
}
