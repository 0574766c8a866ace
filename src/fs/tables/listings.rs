//! Merged directory listings being read, by directory node: the kernel reads a listing in
//! several requests without a directory handle (OPENDIR is not implemented), so a listing
//! made at offset 0 is kept here until the read that finds its end, and offsets stay stable.

use std::sync::Arc;

use parking_lot::Mutex;
use rustc_hash::FxHashMap as HashMap;

use crate::fs::tables::handles::DirEntry;

/// Listings kept at once; a reader that stops before the end leaves its listing behind,
/// and the oldest one goes when a new one needs the room.
const MAX_KEPT: usize = 64;

#[derive(Debug)]
struct Kept {
    entries: Arc<Vec<DirEntry>>,
    /// When it was made (for eviction).
    seq: u64,
}

/// The listings of directories being read.
#[derive(Debug, Default)]
pub struct Listings {
    kept: Mutex<HashMap<u64, Kept>>,
    seq: std::sync::atomic::AtomicU64,
}

impl Listings {
    /// Keep `entries` as the listing of directory `dir` (replacing an older one).
    pub fn keep(&self, dir: u64, entries: Arc<Vec<DirEntry>>) {
        let seq = self.seq.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut kept = self.kept.lock();
        if kept.len() >= MAX_KEPT
            && !kept.contains_key(&dir)
            && let Some(oldest) = kept.iter().min_by_key(|(_, k)| k.seq).map(|(id, _)| *id)
        {
            kept.remove(&oldest);
        }
        kept.insert(dir, Kept { entries, seq });
    }

    /// The kept listing of directory `dir`, if any.
    pub fn get(&self, dir: u64) -> Option<Arc<Vec<DirEntry>>> {
        self.kept.lock().get(&dir).map(|k| k.entries.clone())
    }

    /// The listing of `dir` was read to its end: forget it.
    pub fn done(&self, dir: u64) {
        self.kept.lock().remove(&dir);
    }

    /// How many listings are kept.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.kept.lock().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(n: usize) -> Arc<Vec<DirEntry>> {
        Arc::new(
            (0..n)
                .map(|i| DirEntry {
                    name: format!("f{i}").into(),
                    ino: i as u64 + 10,
                    kind: fuser::FileType::RegularFile,
                })
                .collect(),
        )
    }

    #[test]
    fn kept_until_done_and_bounded() {
        let l = Listings::default();
        l.keep(1, list(3));
        assert_eq!(l.get(1).map(|v| v.len()), Some(3));
        l.keep(1, list(5));
        assert_eq!(
            l.get(1).map(|v| v.len()),
            Some(5),
            "a new listing replaces the old"
        );
        l.done(1);
        assert!(l.get(1).is_none());
        for d in 0..(MAX_KEPT as u64 + 10) {
            l.keep(d, list(1));
        }
        assert_eq!(l.len(), MAX_KEPT);
        assert!(l.get(0).is_none(), "the oldest listing went first");
        assert!(l.get(MAX_KEPT as u64 + 9).is_some());
    }
}
