//! Whether a directory listing should carry every entry's attributes (READDIRPLUS) or only
//! names, learnt from what the listings are followed by.
//!
//! The kernel asks for READDIRPLUS for every read of a listing (`FUSE_READDIRPLUS_AUTO` is
//! off). An entry with attributes costs a lookup in the daemon and an inode in the kernel,
//! which a walk that never stats (`find`, `du --inodes`, globbing) throws away, while a walk
//! that stats every entry (`ls -l`, `tar`, `find -printf %s`, `rm -rf`) would otherwise pay
//! one LOOKUP round trip per entry. An entry of node id 0 carries only its name, inode number
//! and type. So a listing is either all attributes or names only (but for subdirectories);
//! which one is decided when it starts by whether the regular entries of recent names-only
//! listings were then looked up. Names-only listings keep being tried now and then, so the
//! choice follows the workload.

use std::sync::atomic::{AtomicI32, AtomicU32, AtomicUsize, Ordering};

use parking_lot::Mutex;
use rustc_hash::FxHashMap;

/// How far the evidence may lean either way (so a change of workload is followed quickly).
const MAX_SCORE: i32 = 4;
/// In full mode, one listing in this many is given names only, to see whether it still pays.
const PROBE_EVERY: u32 = 64;
/// A names-only listing votes only when it listed at least this many regular entries.
const MIN_FILES: u32 = 4;
/// Directories watched at once; beyond this the oldest evidence is judged early.
const MAX_WATCHED: usize = 256;

/// What was seen of one names-only listing.
#[derive(Debug, Default, Clone, Copy)]
struct Watch {
    /// Non-directory entries handed out as names only.
    files: u32,
    /// Lookups of non-directory children since.
    lookups: u32,
    /// The directory handle was released: the listing can be judged.
    released: bool,
}

/// The learnt preference, shared by every request thread.
#[derive(Debug, Default)]
pub struct ReaddirPlus {
    /// > 0: listings are followed by stats (send attributes); <= 0: they are not.
    score: AtomicI32,
    listings: AtomicU32,
    watched: Mutex<FxHashMap<u64, Watch>>,
    watched_len: AtomicUsize,
}

impl ReaddirPlus {
    /// At offset 0 of a READDIRPLUS of directory `dir`: whether to send the whole listing with
    /// attributes (true) or names only (false; the directory is then watched).
    pub fn full_listing(&self, dir: u64) -> bool {
        if self.watched_len.load(Ordering::Relaxed) > 0 {
            self.judge_released(dir);
        }
        let n = self.listings.fetch_add(1, Ordering::Relaxed);
        let full = self.score.load(Ordering::Relaxed) > 0 && !n.is_multiple_of(PROBE_EVERY);
        if !full {
            let mut w = self.watched.lock();
            if w.len() >= MAX_WATCHED {
                let ids: Vec<u64> = w.keys().take(MAX_WATCHED / 2).copied().collect();
                for id in ids {
                    if let Some(v) = w.remove(&id) {
                        self.vote(v);
                    }
                }
            }
            // Listed again before it was judged (rm lists a directory twice): the lookups
            // that followed the first listing count for the new one.
            let v = w.entry(dir).or_default();
            v.files = 0;
            v.released = false;
            self.watched_len.store(w.len(), Ordering::Relaxed);
        }
        full
    }

    /// Whether the listing of `dir` being read (at an offset past 0) was started names-only.
    pub fn names_only(&self, dir: u64) -> bool {
        self.watched_len.load(Ordering::Relaxed) > 0
            && self.watched.lock().get(&dir).is_some_and(|v| !v.released)
    }

    /// A names-only listing of `dir` handed out `files` non-directory entries.
    pub fn listed(&self, dir: u64, files: u32) {
        if files == 0 || self.watched_len.load(Ordering::Relaxed) == 0 {
            return;
        }
        if let Some(v) = self.watched.lock().get_mut(&dir) {
            v.files = v.files.saturating_add(files);
        }
    }

    /// A LOOKUP of a non-directory child of `dir` reached the daemon.
    pub fn looked_up(&self, dir: u64) {
        if self.watched_len.load(Ordering::Relaxed) == 0 {
            return;
        }
        if let Some(v) = self.watched.lock().get_mut(&dir) {
            v.lookups = v.lookups.saturating_add(1);
        }
    }

    /// The directory's handle was released: its listing is judged when the next one starts.
    pub fn released(&self, dir: u64) {
        if self.watched_len.load(Ordering::Relaxed) == 0 {
            return;
        }
        if let Some(v) = self.watched.lock().get_mut(&dir) {
            v.released = true;
        }
    }

    /// Judge every watched listing whose directory was released, but that of `relisted`
    /// (listed again now: its evidence carries on).
    fn judge_released(&self, relisted: u64) {
        let mut w = self.watched.lock();
        let done: Vec<u64> = w
            .iter()
            .filter(|(k, v)| v.released && **k != relisted)
            .map(|(k, _)| *k)
            .collect();
        let votes: Vec<Watch> = done.iter().filter_map(|k| w.remove(k)).collect();
        self.watched_len.store(w.len(), Ordering::Relaxed);
        drop(w);
        for v in votes {
            self.vote(v);
        }
    }

    fn vote(&self, v: Watch) {
        if v.files < MIN_FILES {
            return;
        }
        let delta = if v.lookups.saturating_mul(2) >= v.files {
            1
        } else {
            -1
        };
        let _ = self
            .score
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |s| {
                Some((s + delta).clamp(-MAX_SCORE, MAX_SCORE))
            });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn learns_from_what_listings_are_followed_by() {
        let r = ReaddirPlus::default();
        // No evidence yet: names only, and the directory is watched.
        assert!(!r.full_listing(10));
        r.listed(10, 100);
        // (programs close the directory, then stat its entries)
        r.released(10);
        for _ in 0..90 {
            r.looked_up(10);
        }
        // Its entries were stat'd: listings now carry attributes (but for the probes).
        let n = 2 * PROBE_EVERY as usize;
        let full: usize = (0..n as u64).filter(|i| r.full_listing(100 + i)).count();
        assert!((n - 3..n).contains(&full), "{full} of {n} full");
        // Probes whose entries are not looked up turn it back.
        for i in 0..8u64 {
            let d = 1000 + i;
            while r.full_listing(d) {}
            r.listed(d, 50);
            r.looked_up(d);
            r.released(d);
        }
        assert!(!r.full_listing(5000));
        assert!(!r.full_listing(5001));
    }

    #[test]
    fn small_listings_and_unwatched_dirs_do_not_vote() {
        let r = ReaddirPlus::default();
        assert!(!r.full_listing(1));
        r.listed(1, 2);
        r.looked_up(1);
        r.looked_up(1);
        r.released(1);
        r.looked_up(77);
        r.released(77);
        assert!(!r.full_listing(2), "no vote was cast");
    }
}
