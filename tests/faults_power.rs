//! A power cut under the upper layer loses nothing that was fsynced.
//!
//! The upper and work dirs are on ext4 on a loop device whose backing file is a disk with a
//! volatile write cache served by the test itself (`faultkit/volatile_disk.rs`): a write stays
//! in the cache until the next flush, and the cut keeps a pseudo-random part of the cache
//! (none of it, or half) and drops every write after it. A workload runs on strata-fuse, by
//! default (copy-ups fsynced, as on the kernel) and with `sync_copyup=0`, until the cut:
//! fsynced creates, copy-ups by append + fsync, chmod copy-ups never fsynced, renames of lower
//! directories with the parents fsynced, same-size overwrites with fsync, unsynced appends. The
//! cut comes at set times into the workload or while a given copy-up is in flight or just after
//! it returned, some rounds first waiting for the cache to hold a few blocks. Then strata-fuse is killed, the ext4 is
//! mounted again (journal replay) and `e2fsck -fn` must find it clean, and strata-fuse mounts
//! the same layers:
//!
//! - every operation whose fsync returned before the cut shows its data exactly;
//! - no other file shows content the workload never wrote (a file in flight shows a version
//!   or a prefix of what was written), a renamed lower directory shows whole under exactly
//!   one name, and nothing of the work dir shows in the merged tree;
//! - by default, a copy-up that was not fsynced (a chmod, or an append in flight) shows the
//!   whole lower file, or the lower file itself, never a short or zero-filled one; with
//!   `sync_copyup=0` anything of that kind is allowed (a copy-up is then as durable as an
//!   unsynced write): how such files came back (whole, not copied up, short, zero-filled) is
//!   counted and printed;
//! - kernel overlayfs (`redirect_dir=on,index=on`) mounts the upper and shows the same tree;
//!   the lower layer is unchanged.

mod common;
mod faultkit;
#[path = "faultkit/volatile_disk.rs"]
mod volatile_disk;

use faultkit::*;
use parking_lot::Mutex;
use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::os::unix::fs::{FileExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};
use volatile_disk::{CutReport, DiskHandle, Image, VolatileDisk};

const MIB: usize = 1 << 20;
/// The volatile disk (ext4 with 4 KiB blocks).
const DISK_SIZE: u64 = 160 << 20;
/// Lower files copied up by an append + fsync.
const N_APPEND: usize = 32;
/// Lower files copied up by chmod, never fsynced.
const N_CHMOD: usize = 40;
/// Lower directories renamed (and the parents fsynced).
const N_RENAME: usize = 10;
/// New files created and fsynced.
const N_NEW: usize = 300;
/// Files overwritten in place (one 4 KiB block) and fsynced.
const N_OVERWRITE: usize = 4;
/// Files appended to without fsync, and their size limit.
const N_UNSYNCED: usize = 2;
const UNSYNCED_MAX: usize = MIB;
const UNSYNCED_CHUNK: usize = 16 * 1024;
/// The mode chmod gives (lower files are 0644).
const CHMOD_MODE: u32 = 0o640;
/// How long a round may take before the watchdog kills strata-fuse, and then before it gives
/// up on the test.
const ROUND_LIMIT: Duration = Duration::from_secs(60);
const GRACE: Duration = Duration::from_secs(30);

fn lower_data(name: &str) -> Vec<u8> {
    let (kind, i) = name.split_at(1);
    let i: usize = i.parse().expect("a numbered lower file");
    match kind {
        "a" => pattern(1000 + i, 3000 + i * 211),
        // Every tenth chmod file is large (a copy-up the cut may catch in flight).
        "m" if i % 10 == 9 => pattern(2000 + i, 3 * MIB + i),
        "m" => pattern(2000 + i, 24 * 1024 + i * 5 * 1024),
        _ => panic!("no lower data for {name}"),
    }
}

/// The lower layer: `a{i}` (appended to), `m{i}` (chmod'ed), `ld{j}/` (renamed: even ones
/// to `ld{j}.moved`, odd ones into `dst/`), `dst/keep` and `keep`.
fn make_lower(lower: &Path) {
    std::fs::create_dir_all(lower.join("dst")).expect("mkdir lower/dst");
    let w = |p: PathBuf, data: &[u8]| {
        std::fs::write(&p, data).unwrap_or_else(|e| panic!("write {}: {e}", p.display()));
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644))
            .unwrap_or_else(|e| panic!("chmod {}: {e}", p.display()));
    };
    for i in 0..N_APPEND {
        let n = format!("a{i}");
        w(lower.join(&n), &lower_data(&n));
    }
    for i in 0..N_CHMOD {
        let n = format!("m{i}");
        w(lower.join(&n), &lower_data(&n));
    }
    for j in 0..N_RENAME {
        let d = lower.join(format!("ld{j}"));
        std::fs::create_dir_all(d.join("sub")).expect("mkdir lower/ld*/sub");
        w(d.join("f1"), &pattern(3000 + j, 5000 + j * 333));
        w(d.join("f2"), b"");
        w(d.join("sub/g"), &pattern(3100 + j, 700 + j));
    }
    w(lower.join("dst/keep"), b"beside the moved directories");
    w(lower.join("keep"), &pattern(4000, 9000));
}

/// Where lower directory `ld{j}` goes, and the parents fsynced after the rename.
fn rename_target(j: usize) -> (String, String, &'static [&'static str]) {
    if j.is_multiple_of(2) {
        (format!("ld{j}"), format!("ld{j}.moved"), &[""])
    } else {
        (format!("ld{j}"), format!("dst/ld{j}"), &["", "dst"])
    }
}

fn overwrite_data(k: usize, v: usize) -> Vec<u8> {
    pattern(5000 + k * 1000 + v, 4096)
}

fn append_data(i: usize) -> Vec<u8> {
    format!("+appended {i}").into_bytes()
}

fn new_data(i: usize) -> Vec<u8> {
    pattern(10_000 + i, 1000 + (i * 7919) % 60_000)
}

fn unsynced_seed(k: usize) -> usize {
    7000 + k
}

// ---- The workload and its log ----

/// What the workload did, each operation logged before it starts and marked once its fsync
/// returned.
#[derive(Clone, Default)]
struct Log {
    /// `new/f{i}`: data, fsynced (file and directory).
    created: BTreeMap<String, (Vec<u8>, bool)>,
    /// `a{i}`: bytes appended, fsynced.
    appended: BTreeMap<String, (Vec<u8>, bool)>,
    /// `m{i}`: chmod returned (never fsynced).
    chmoded: BTreeMap<String, bool>,
    /// `ow{k}`: the versions written (version 0 by the setup), the last one fsynced.
    overwritten: BTreeMap<String, (Vec<Vec<u8>>, usize)>,
    /// `u{k}`: the size the file reaches once the write in flight is done.
    unsynced: BTreeMap<String, usize>,
    /// `ld{j}`: the new name, the parents fsynced.
    renamed: BTreeMap<String, (String, bool)>,
    /// Operations whose fsync returned.
    durable_ops: usize,
    /// The first error of the workload.
    failed: Option<String>,
}

fn fsync_dir(p: &Path) -> std::io::Result<()> {
    std::fs::File::open(p)?.sync_all()
}

/// Before the workload: `new/`, the files overwritten (version 0) and the unsynced files,
/// all fsynced.
fn setup_merged(mnt: &Path, log: &Mutex<Log>) {
    std::fs::create_dir(mnt.join("new")).expect("mkdir new");
    for k in 0..N_OVERWRITE {
        let n = format!("ow{k}");
        write_synced(&mnt.join(&n), &overwrite_data(k, 0)).expect("write an overwritten file");
        log.lock()
            .overwritten
            .insert(n, (vec![overwrite_data(k, 0)], 0));
    }
    for k in 0..N_UNSYNCED {
        let n = format!("u{k}");
        write_synced(&mnt.join(&n), b"").expect("create an unsynced file");
        log.lock().unsynced.insert(n, 0);
    }
    fsync_dir(mnt).expect("fsync the merged root");
}

/// Runs until `stop` or the first error (the cut kills strata-fuse).
fn run_workload(mnt: &Path, log: &Mutex<Log>, stop: &AtomicBool) -> std::io::Result<()> {
    let mut unsynced: Vec<std::fs::File> = (0..N_UNSYNCED)
        .map(|k| {
            std::fs::OpenOptions::new()
                .append(true)
                .open(mnt.join(format!("u{k}")))
        })
        .collect::<Result<_, _>>()?;
    let mut ow_version = [0usize; N_OVERWRITE];
    for i in 0usize.. {
        if stop.load(Ordering::SeqCst) {
            return Ok(());
        }
        if i < N_NEW {
            let p = format!("new/f{i}");
            let data = new_data(i);
            log.lock().created.insert(p.clone(), (data.clone(), false));
            write_synced(&mnt.join(&p), &data)?;
            let mut l = log.lock();
            l.created.get_mut(&p).expect("logged").1 = true;
            l.durable_ops += 1;
        }
        if i.is_multiple_of(2) && i / 2 < N_APPEND {
            let p = format!("a{}", i / 2);
            let add = append_data(i / 2);
            log.lock().appended.insert(p.clone(), (add.clone(), false));
            let mut f = std::fs::OpenOptions::new()
                .append(true)
                .open(mnt.join(&p))?;
            f.write_all(&add)?;
            f.sync_all()?;
            let mut l = log.lock();
            l.appended.get_mut(&p).expect("logged").1 = true;
            l.durable_ops += 1;
        }
        if i.is_multiple_of(3) && i / 3 < N_CHMOD {
            let p = format!("m{}", i / 3);
            log.lock().chmoded.insert(p.clone(), false);
            std::fs::set_permissions(mnt.join(&p), std::fs::Permissions::from_mode(CHMOD_MODE))?;
            *log.lock().chmoded.get_mut(&p).expect("logged") = true;
        }
        {
            let k = i % N_OVERWRITE;
            let p = format!("ow{k}");
            ow_version[k] += 1;
            let data = overwrite_data(k, ow_version[k]);
            log.lock()
                .overwritten
                .get_mut(&p)
                .expect("set up")
                .0
                .push(data.clone());
            let f = std::fs::OpenOptions::new().write(true).open(mnt.join(&p))?;
            f.write_all_at(&data, 0)?;
            f.sync_all()?;
            let mut l = log.lock();
            l.overwritten.get_mut(&p).expect("set up").1 = ow_version[k];
            l.durable_ops += 1;
        }
        {
            let k = i % N_UNSYNCED;
            let p = format!("u{k}");
            let at = log.lock().unsynced[&p];
            if at < UNSYNCED_MAX {
                let all = pattern(unsynced_seed(k), at + UNSYNCED_CHUNK);
                log.lock().unsynced.insert(p, at + UNSYNCED_CHUNK);
                unsynced[k].write_all(&all[at..])?;
            }
        }
        if i % 5 == 1 && i / 5 < N_RENAME {
            let (old, new, parents) = rename_target(i / 5);
            log.lock().renamed.insert(old.clone(), (new.clone(), false));
            std::fs::rename(mnt.join(&old), mnt.join(&new))?;
            for p in parents {
                fsync_dir(&mnt.join(p))?;
            }
            let mut l = log.lock();
            l.renamed.get_mut(&old).expect("logged").1 = true;
            l.durable_ops += 1;
        }
    }
    Ok(())
}

// ---- Block device, ext4 and the watchdog ----

/// A loop device on a file; detached on drop.
struct LoopDev {
    dev: String,
}

impl LoopDev {
    fn attach(img: &Path) -> LoopDev {
        let o = Command::new("losetup")
            .args(["-f", "--show"])
            .arg(img)
            .output()
            .expect("run losetup");
        assert!(
            o.status.success(),
            "losetup -f --show {}: {}",
            img.display(),
            String::from_utf8_lossy(&o.stderr)
        );
        LoopDev {
            dev: String::from_utf8_lossy(&o.stdout).trim().to_string(),
        }
    }

    fn detach(&mut self) {
        if self.dev.is_empty() {
            return;
        }
        for _ in 0..50 {
            let ok = Command::new("losetup")
                .args(["-d", &self.dev])
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if ok {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        self.dev.clear();
    }
}

impl Drop for LoopDev {
    fn drop(&mut self) {
        self.detach();
    }
}

/// An ext4 mount; unmounted on drop (lazily if it stays busy).
struct Ext4 {
    dir: PathBuf,
    mounted: bool,
}

impl Ext4 {
    fn mount(dev: &str, dir: &Path) -> Ext4 {
        std::fs::create_dir_all(dir).expect("mkdir the ext4 mountpoint");
        let o = Command::new("mount")
            .args(["-t", "ext4", dev])
            .arg(dir)
            .output()
            .expect("run mount");
        assert!(
            o.status.success(),
            "mount -t ext4 {dev}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        Ext4 {
            dir: dir.to_path_buf(),
            mounted: true,
        }
    }

    /// Unmount; retried for 10 s while busy.
    fn unmount(&mut self) -> Result<(), String> {
        if !self.mounted {
            return Ok(());
        }
        let mut last = String::new();
        for _ in 0..100 {
            let o = Command::new("umount")
                .arg(&self.dir)
                .output()
                .map_err(|e| format!("run umount: {e}"))?;
            if o.status.success() {
                self.mounted = false;
                return Ok(());
            }
            last = String::from_utf8_lossy(&o.stderr).trim().to_string();
            std::thread::sleep(Duration::from_millis(100));
        }
        Err(format!("umount {}: {last}", self.dir.display()))
    }
}

impl Drop for Ext4 {
    fn drop(&mut self) {
        if self.mounted && self.unmount().is_err() {
            let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
        }
    }
}

/// What the watchdog may have to stop or detach when a round hangs.
#[derive(Default)]
struct Registry {
    pids: Vec<u32>,
    mounts: Vec<PathBuf>,
}

/// Ends a hung round: after `ROUND_LIMIT` it kills the registered strata-fuse daemons (every
/// request waiting on them fails and the round fails with its own message); if the round
/// still does not end within `GRACE`, it detaches the registered mounts and exits.
struct Watchdog {
    done: Option<mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Watchdog {
    fn arm(what: String, reg: Arc<Mutex<Registry>>, disk_mnt: PathBuf) -> Watchdog {
        let (tx, rx) = mpsc::channel::<()>();
        let thread = std::thread::spawn(move || {
            if rx.recv_timeout(ROUND_LIMIT) != Err(mpsc::RecvTimeoutError::Timeout) {
                return;
            }
            eprintln!("{what}: still running after {ROUND_LIMIT:?}; killing strata-fuse");
            for &pid in &reg.lock().pids {
                let _ = Command::new("kill")
                    .args(["-9", &pid.to_string()])
                    .stderr(Stdio::null())
                    .status();
            }
            if rx.recv_timeout(GRACE) != Err(mpsc::RecvTimeoutError::Timeout) {
                return;
            }
            eprintln!("{what}: hung; detaching its mounts and giving up");
            for m in reg.lock().mounts.iter().rev() {
                let _ = Command::new("umount").arg("-l").arg(m).status();
            }
            let _ = Command::new("umount").arg("-l").arg(&disk_mnt).status();
            std::process::exit(101);
        });
        Watchdog {
            done: Some(tx),
            thread: Some(thread),
        }
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        if let Some(tx) = self.done.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

// ---- Trees ----

/// An entry of a tree: type, mode, owner and (files) size and digest; and a file's data.
struct Entry {
    desc: String,
    data: Option<Vec<u8>>,
    mode: u32,
}

fn snapshot(root: &Path) -> BTreeMap<String, Entry> {
    fn rec(base: &Path, d: &Path, out: &mut BTreeMap<String, Entry>) {
        let rd = std::fs::read_dir(d).unwrap_or_else(|e| panic!("read_dir {}: {e}", d.display()));
        for e in rd {
            let e = e.unwrap_or_else(|e| panic!("read_dir {}: {e}", d.display()));
            let p = e.path();
            let rel = p
                .strip_prefix(base)
                .expect("below the root")
                .display()
                .to_string();
            let m = p
                .symlink_metadata()
                .unwrap_or_else(|e| panic!("lstat {}: {e}", p.display()));
            let owner = format!("{:o} {}:{}", m.mode(), m.uid(), m.gid());
            let mut data = None;
            let desc = if m.is_dir() {
                format!("dir {owner}")
            } else if m.is_file() {
                let d = std::fs::read(&p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()));
                let s = format!("file {owner} {} {}", d.len(), strata::oci::Digest::of(&d));
                data = Some(d);
                s
            } else if m.file_type().is_symlink() {
                let t = std::fs::read_link(&p)
                    .unwrap_or_else(|e| panic!("readlink {}: {e}", p.display()));
                format!("link {owner} {}", t.display())
            } else {
                format!("other {owner} rdev {:x}", m.rdev())
            };
            let is_dir = m.is_dir();
            out.insert(
                rel,
                Entry {
                    desc,
                    data,
                    mode: m.mode() & 0o7777,
                },
            );
            if is_dir {
                rec(base, &p, out);
            }
        }
    }
    let mut out = BTreeMap::new();
    rec(root, root, &mut out);
    out
}

fn under(path: &str, dir: &str) -> Option<String> {
    match path.strip_prefix(dir) {
        Some("") => Some(String::new()),
        Some(rest) if rest.starts_with('/') => Some(rest.to_string()),
        _ => None,
    }
}

fn tree_diff(got: &BTreeMap<String, Entry>, want: &BTreeMap<String, Entry>) -> String {
    let mut out = Vec::new();
    for (k, v) in want {
        match got.get(k) {
            None => out.push(format!("missing {k} ({})", v.desc)),
            Some(g) if g.desc != v.desc => {
                out.push(format!("differs {k}: {} instead of {}", g.desc, v.desc))
            }
            _ => {}
        }
    }
    for (k, v) in got {
        if !want.contains_key(k) {
            out.push(format!("stray {k} ({})", v.desc));
        }
    }
    let n = out.len();
    out.truncate(12);
    format!("{n} differences, first: {}", out.join("; "))
}

// ---- The checks after the reboot ----

/// How a copy-up that was never fsynced came back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Class {
    /// Copied up with the whole lower data (and a prefix of an append).
    Whole,
    /// Not in the upper: the lower file shows.
    Lower,
    /// In the upper with a proper prefix of the lower data, hiding the rest.
    Short,
    /// In the upper with zeros where the lower data was (a hole), hiding it.
    Zeros,
    /// In the upper with other data.
    Other,
}

const CLASSES: [(Class, &str); 5] = [
    (Class::Whole, "whole"),
    (Class::Lower, "not copied up"),
    (Class::Short, "short"),
    (Class::Zeros, "zero-filled"),
    (Class::Other, "other"),
];

#[derive(Clone, Copy, Debug, Default)]
struct Counts([usize; 5]);

impl Counts {
    fn add(&mut self, c: Class) {
        self.0[CLASSES.iter().position(|(k, _)| *k == c).expect("a class")] += 1;
    }

    fn merge(&mut self, o: &Counts) {
        for (a, b) in self.0.iter_mut().zip(o.0) {
            *a += b;
        }
    }

    fn total(&self) -> usize {
        self.0.iter().sum()
    }

    fn show(&self) -> String {
        let parts: Vec<String> = CLASSES
            .iter()
            .zip(self.0)
            .filter(|&((c, _), n)| n > 0 || matches!(c, Class::Whole | Class::Short))
            .map(|((_, name), n)| format!("{n} {name}"))
            .collect();
        format!("{} ({})", self.total(), parts.join(", "))
    }
}

/// The class of merged data `g` of a lower file with data `lower`, copied up (`in_upper`)
/// with `add` appended.
fn classify(g: &[u8], lower: &[u8], add: &[u8], in_upper: bool) -> Class {
    let mut full = lower.to_vec();
    full.extend_from_slice(add);
    if !in_upper {
        Class::Lower
    } else if g.len() >= lower.len() && full.starts_with(g) {
        Class::Whole
    } else if lower.starts_with(g) {
        Class::Short
    } else if g.len() <= full.len() && g.iter().zip(&full).all(|(a, b)| a == b || *a == 0) {
        Class::Zeros
    } else {
        Class::Other
    }
}

struct Checked {
    chmod_done: Counts,
    chmod_in_flight: Counts,
    append_in_flight: Counts,
}

fn data_of<'a>(got: &'a BTreeMap<String, Entry>, p: &str, who: &str) -> &'a [u8] {
    got.get(p)
        .unwrap_or_else(|| panic!("{who}: {p} is missing"))
        .data
        .as_deref()
        .unwrap_or_else(|| panic!("{who}: {p} is not a regular file"))
}

/// Checks the merged tree `got` after the reboot against the log as it was at the cut.
fn check_merged(
    got: &BTreeMap<String, Entry>,
    lower: &BTreeMap<String, Entry>,
    log: &Log,
    upper: &Path,
    sync_copyup: bool,
    who: &str,
) -> Checked {
    let mut allowed: BTreeSet<String> = BTreeSet::new();
    let moved: Vec<(String, String, &[&str])> = (0..N_RENAME).map(rename_target).collect();
    let copied = |k: &str| {
        let (kind, i) = k.split_at(1);
        (kind == "a" || kind == "m") && i.parse::<usize>().is_ok()
    };
    // Lower entries outside the renamed directories and the copied-up files: as they were.
    for (k, v) in lower {
        if moved.iter().any(|(old, _, _)| under(k, old).is_some()) {
            continue;
        }
        allowed.insert(k.clone());
        if copied(k) {
            continue;
        }
        let g = got
            .get(k)
            .unwrap_or_else(|| panic!("{who}: lower {k} is missing"));
        assert!(
            g.desc == v.desc,
            "{who}: lower {k} shows {} instead of {}",
            g.desc,
            v.desc
        );
    }
    // Renamed directories: whole, under exactly one name (the new one if the parents were
    // fsynced), the lower data.
    for (old, new, _) in &moved {
        let (old_there, new_there) = (got.contains_key(old), got.contains_key(new));
        let state = log.renamed.get(old).map(|(_, synced)| *synced);
        assert!(
            old_there != new_there,
            "{who}: {old} -> {new} (renamed and synced: {state:?}): old name there: \
             {old_there}, new name there: {new_there}"
        );
        match state {
            None => assert!(
                old_there,
                "{who}: {old} was never renamed but shows as {new}"
            ),
            Some(true) => assert!(
                new_there,
                "{who}: {old} -> {new} returned and its parents were fsynced, but the old \
                 name shows"
            ),
            Some(false) => {}
        }
        let shown = if old_there { old } else { new };
        for (k, v) in lower {
            let Some(rest) = under(k, old) else { continue };
            let at = format!("{shown}{rest}");
            let g = got
                .get(&at)
                .unwrap_or_else(|| panic!("{who}: {at} (lower {k}) is missing"));
            assert!(
                g.desc == v.desc,
                "{who}: {at} (lower {k}) shows {} instead of {}",
                g.desc,
                v.desc
            );
            allowed.insert(at);
        }
    }
    // Copied-up lower files: an append fsynced shows exactly; an append in flight and a
    // chmod (never fsynced) show the lower file or its whole copy; unless copy-ups are not
    // fsynced (sync_copyup=0), nothing else.
    let mut chmod_done = Counts::default();
    let mut chmod_in_flight = Counts::default();
    let mut append_in_flight = Counts::default();
    for k in (0..N_APPEND)
        .map(|i| format!("a{i}"))
        .chain((0..N_CHMOD).map(|i| format!("m{i}")))
    {
        let l = lower_data(&k);
        let e = got
            .get(&k)
            .unwrap_or_else(|| panic!("{who}: lower {k} is missing"));
        let g = data_of(got, &k, who);
        let in_upper = upper.join(&k).symlink_metadata().is_ok();
        let (add, what, synced, counts) = if k.starts_with('a') {
            match log.appended.get(&k) {
                None => (&b""[..], "never appended to", false, None),
                Some((add, true)) => (&add[..], "appended to and fsynced", true, None),
                Some((add, false)) => (&add[..], "append in flight", false, Some(0)),
            }
        } else {
            match log.chmoded.get(&k) {
                None => (&b""[..], "never chmod'ed", false, None),
                Some(true) => (&b""[..], "chmod returned", false, Some(1)),
                Some(false) => (&b""[..], "chmod in flight", false, Some(2)),
            }
        };
        let class = classify(g, &l, add, in_upper);
        let desc = format!(
            "{k} ({what}) shows a {class:?} file: {} bytes, mode {:o} (lower: {} bytes, \
             mode 644; in the upper: {in_upper})",
            g.len(),
            e.mode,
            l.len()
        );
        if synced {
            let mut full = l.clone();
            full.extend_from_slice(add);
            assert!(g == full, "{who}: {desc}, not the {} fsynced", full.len());
            continue;
        }
        if class == Class::Lower || counts.is_none() {
            assert!(g == l && e.mode == 0o644, "{who}: {desc}");
        }
        let Some(c) = counts else { continue };
        assert!(
            e.mode == 0o644 || (c > 0 && e.mode == CHMOD_MODE),
            "{who}: {desc}"
        );
        if sync_copyup {
            assert!(
                class == Class::Lower || class == Class::Whole,
                "{who}: with copy-ups fsynced, {desc}"
            );
        }
        [&mut append_in_flight, &mut chmod_done, &mut chmod_in_flight][c].add(class);
    }
    // New files: fsynced ones exactly; one in flight absent or a prefix.
    allowed.insert("new".into());
    for (p, (data, synced)) in &log.created {
        match got.get(p) {
            None => assert!(!synced, "{who}: fsynced {p} is gone"),
            Some(e) => {
                let g = e.data.as_deref().unwrap_or_else(|| panic!("{who}: {p}"));
                if *synced {
                    assert!(
                        g == &data[..],
                        "{who}: fsynced {p} shows {} bytes, not its {}",
                        g.len(),
                        data.len()
                    );
                } else {
                    assert!(
                        data.starts_with(g),
                        "{who}: {p} (in flight) shows {} bytes that were never written",
                        g.len()
                    );
                }
                allowed.insert(p.clone());
            }
        }
    }
    // Overwrites: the fsynced version or a later one, never a mix.
    for (p, (versions, synced)) in &log.overwritten {
        let g = data_of(got, p, who);
        assert!(
            versions[*synced..].iter().any(|v| v[..] == *g),
            "{who}: {p} shows none of the versions since the fsynced one (version {synced} of \
             {})",
            versions.len()
        );
        allowed.insert(p.clone());
    }
    // Unsynced appends: a prefix of what was written.
    for (k, (p, at)) in log.unsynced.iter().enumerate() {
        let g = data_of(got, p, who);
        assert!(
            g.len() <= *at && g == &pattern(unsynced_seed(k), g.len())[..],
            "{who}: {p} shows {} bytes that are not a prefix of the {at} written",
            g.len()
        );
        allowed.insert(p.clone());
    }
    // Nothing else: no name from the work dir, no file the workload made after the cut.
    for (k, v) in got {
        assert!(
            allowed.contains(k),
            "{who}: stray entry {k} ({}) in the merged tree",
            v.desc
        );
    }
    Checked {
        chmod_done,
        chmod_in_flight,
        append_in_flight,
    }
}

// ---- A round ----

struct Ctx {
    work: PathBuf,
    disk: DiskHandle,
    img: PathBuf,
    disk_mnt: PathBuf,
    golden: Image,
    lower: PathBuf,
    lower_snap: BTreeMap<String, Entry>,
    kernel_ok: bool,
}

/// When the power goes.
#[derive(Clone, Copy, Debug)]
enum CutAt {
    /// This long into the workload.
    Time(Duration),
    /// Once the chmod of `m{k}` has started (in flight), or returned.
    Chmod(usize, bool),
    /// Once the append to `a{k}` has started (its copy-up and fsync in flight).
    Append(usize),
}

struct Round {
    extra: &'static str,
    at: CutAt,
    /// Then, for up to `PENDING_WAIT`, until the cache holds this many blocks.
    min_pending: usize,
    keep: f64,
    seed: u64,
}

const PENDING_WAIT: Duration = Duration::from_millis(300);

fn e2fsck_clean(dev: &str, who: &str) {
    let o = Command::new("e2fsck")
        .args(["-fn", dev])
        .output()
        .expect("run e2fsck");
    assert!(
        o.status.success(),
        "{who}: e2fsck -fn after the journal replay (exit {:?}):\n{}{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

fn power_round(ctx: &Ctx, n: usize, r: &Round) -> Checked {
    let mode = if r.extra.is_empty() {
        "default"
    } else {
        r.extra
    };
    let at = match r.at {
        CutAt::Time(d) => format!("{} ms in", d.as_millis()),
        CutAt::Chmod(k, false) => format!("in chmod m{k}"),
        CutAt::Chmod(k, true) => format!("after chmod m{k}"),
        CutAt::Append(k) => format!("in append a{k}"),
    };
    let who = format!(
        "round {n} ({mode}, cut {at} with {}+ blocks cached, keep {})",
        r.min_pending, r.keep
    );
    let t0 = Instant::now();
    let reg = Arc::new(Mutex::new(Registry::default()));
    let _dog = Watchdog::arm(who.clone(), reg.clone(), ctx.disk_mnt.clone());
    let d = ctx.work.join("d");
    let upper = d.join("upper");
    let wdir = d.join("work");
    let mnt = ctx.work.join("mnt");
    reg.lock().mounts.extend([d.clone(), mnt.clone()]);

    ctx.disk.restore(&ctx.golden);
    let mut lp = LoopDev::attach(&ctx.img);
    let mut ext = Ext4::mount(&lp.dev, &d);
    std::fs::create_dir_all(&upper).expect("mkdir upper");
    std::fs::create_dir_all(&wdir).expect("mkdir work");
    rustix::fs::syncfs(std::fs::File::open(&d).expect("open the ext4 root")).expect("syncfs");
    let mut m = Fuse::mount(&[&ctx.lower], &upper, &wdir, &mnt, r.extra);
    if let Some(c) = &m.child {
        reg.lock().pids.push(c.id());
    }
    let log = Arc::new(Mutex::new(Log::default()));
    setup_merged(&mnt, &log);

    // The workload, until it fails or is stopped; the cut after `delay`.
    let stop = Arc::new(AtomicBool::new(false));
    let (tx, rx) = mpsc::channel();
    let started = Instant::now();
    {
        let (mnt, log, stop) = (mnt.clone(), log.clone(), stop.clone());
        std::thread::spawn(move || {
            if let Err(e) = run_workload(&mnt, &log, &stop) {
                log.lock().failed = Some(format!("after {:?}: {e}", started.elapsed()));
            }
            let _ = tx.send(());
        });
    }
    // The operation to wait for (its path, whether it must have returned, an append).
    let op = match r.at {
        CutAt::Time(d) => {
            std::thread::sleep(d);
            None
        }
        CutAt::Chmod(k, returned) => Some((format!("m{k}"), returned, false)),
        CutAt::Append(k) => Some((format!("a{k}"), false, true)),
    };
    if let Some((p, returned, append)) = op {
        let t = Instant::now();
        loop {
            let l = log.lock();
            let state = if append {
                l.appended.get(&p).map(|a| a.1)
            } else {
                l.chmoded.get(&p).copied()
            };
            if state.is_some_and(|done| done || !returned) {
                break;
            }
            assert!(
                l.failed.is_none() && t.elapsed() < Duration::from_secs(20),
                "{who}: the operation on {p} does not {} (workload error: {:?})",
                if returned { "return" } else { "start" },
                l.failed
            );
            drop(l);
            std::thread::sleep(Duration::from_micros(20));
        }
    }
    let waiting = Instant::now();
    while ctx.disk.pending_blocks() < r.min_pending && waiting.elapsed() < PENDING_WAIT {
        std::thread::sleep(Duration::from_micros(50));
    }
    let (snap, cut): (Log, CutReport) = {
        let l = log.lock();
        let cut = ctx.disk.cut(r.keep, r.seed);
        (l.clone(), cut)
    };
    let cut_at = started.elapsed();
    let at_cut = ctx.disk.counters();
    m.kill9();
    stop.store(true, Ordering::SeqCst);
    rx.recv_timeout(Duration::from_secs(20))
        .unwrap_or_else(|_| panic!("{who}: the workload does not stop after the cut"));
    assert!(
        snap.failed.is_none(),
        "{who}: the workload failed before the cut: {}",
        snap.failed.as_deref().unwrap_or("")
    );
    ext.unmount()
        .unwrap_or_else(|e| panic!("{who}: unmount the ext4 after the cut: {e}"));
    lp.detach();
    let after_cut = ctx.disk.counters();

    // The reboot: journal replay, fsck, then strata on the same layers.
    ctx.disk.power_on();
    let mut lp = LoopDev::attach(&ctx.img);
    let mut ext = Ext4::mount(&lp.dev, &d);
    ext.unmount()
        .unwrap_or_else(|e| panic!("{who}: unmount after the journal replay: {e}"));
    e2fsck_clean(&lp.dev, &who);
    let mut ext = Ext4::mount(&lp.dev, &d);
    let mut m = Fuse::mount(&[&ctx.lower], &upper, &wdir, &mnt, r.extra);
    if let Some(c) = &m.child {
        reg.lock().pids.push(c.id());
    }
    let got = snapshot(&mnt);
    let checked = check_merged(
        &got,
        &ctx.lower_snap,
        &snap,
        &upper,
        !r.extra.contains("sync_copyup=0"),
        &format!("{who}, strata after the reboot"),
    );
    m.unmount();
    if ctx.kernel_ok {
        let kmnt = ctx.work.join("kmnt");
        reg.lock().mounts.push(kmnt.clone());
        let k = Kernel::mount(&[&ctx.lower], &upper, &wdir, &kmnt).unwrap_or_else(|e| {
            panic!("{who}: kernel overlayfs refuses the upper after the reboot: {e}")
        });
        let kgot = snapshot(&k.mnt);
        let same = kgot.len() == got.len()
            && kgot
                .iter()
                .all(|(p, e)| got.get(p).is_some_and(|g| g.desc == e.desc));
        assert!(
            same,
            "{who}: kernel overlayfs shows another tree than strata: {}",
            tree_diff(&kgot, &got)
        );
    }
    ext.unmount()
        .unwrap_or_else(|e| panic!("{who}: unmount after the checks: {e}"));
    lp.detach();
    assert!(
        snap.durable_ops > 0,
        "{who}: nothing was fsynced before the cut"
    );

    eprintln!(
        "round {n}: {mode:<11} cut {at:<15} ({:>3} ms), keep {:.1}: {} writes, {} flushes \
         before; cache at the cut {} blocks ({} kept, {} lost), {} writes dropped after; {} \
         ops fsynced, all there; chmod copy-ups never fsynced: returned {}, in flight {}; \
         append copy-ups in flight {}; {:.1?}",
        cut_at.as_millis(),
        r.keep,
        at_cut.writes,
        at_cut.flushes,
        cut.kept + cut.lost,
        cut.kept,
        cut.lost,
        after_cut.dropped_writes,
        snap.durable_ops,
        checked.chmod_done.show(),
        checked.chmod_in_flight.show(),
        checked.append_in_flight.show(),
        t0.elapsed()
    );
    checked
}

#[test]
fn a_power_cut_loses_no_fsynced_operation() {
    if let Err(why) = mount_ready() {
        return skip(&why);
    }
    for tool in ["losetup", "mkfs.ext4", "e2fsck"] {
        if !common::have(tool) {
            return skip(&format!("{tool} is not installed"));
        }
    }
    if !Path::new("/dev/loop-control").exists() {
        return skip("no loop devices (/dev/loop-control is missing)");
    }
    let t0 = Instant::now();
    let work = common::tmpdir("faults-power");
    let lower = work.join("lower");
    make_lower(&lower);
    let lower_before = tree_digest(&lower);
    let lower_snap = snapshot(&lower);

    let disk_mnt = work.join("vdisk");
    let disk = VolatileDisk::mount(&disk_mnt, DISK_SIZE).expect("serve the volatile disk");
    // ext4 once; every round starts from this image.
    {
        let _dog = Watchdog::arm(
            "mkfs.ext4 on the volatile disk".into(),
            Arc::new(Mutex::new(Registry::default())),
            disk_mnt.clone(),
        );
        let lp = LoopDev::attach(&disk.img);
        let o = Command::new("mkfs.ext4")
            .args([
                "-q",
                "-F",
                "-b",
                "4096",
                "-E",
                "nodiscard,lazy_itable_init=0,lazy_journal_init=0",
                &lp.dev,
            ])
            .output()
            .expect("run mkfs.ext4");
        assert!(
            o.status.success(),
            "mkfs.ext4 {}: {}",
            lp.dev,
            String::from_utf8_lossy(&o.stderr)
        );
    }
    assert!(
        disk.handle.pending_blocks() == 0,
        "mkfs.ext4 left {} blocks unflushed",
        disk.handle.pending_blocks()
    );
    let golden = disk.handle.image();

    // Kernel overlayfs on a pristine upper: if it works here, it must work after every cut.
    let kernel_ok = {
        let p = work.join("kprobe");
        std::fs::create_dir_all(p.join("upper")).expect("mkdir kprobe/upper");
        std::fs::create_dir_all(p.join("work")).expect("mkdir kprobe/work");
        match Kernel::mount(&[&lower], &p.join("upper"), &p.join("work"), &p.join("mnt")) {
            Ok(_) => true,
            Err(e) => {
                skip(&format!(
                    "kernel overlayfs does not mount here, no comparison: {e}"
                ));
                false
            }
        }
    };
    let ctx = Ctx {
        work: work.clone(),
        disk: disk.handle.clone(),
        img: disk.img.clone(),
        disk_mnt: disk_mnt.clone(),
        golden,
        lower: lower.clone(),
        lower_snap,
        kernel_ok,
    };
    // (options, when, blocks in the cache to wait for, fraction of them kept)
    let ms = |t| CutAt::Time(Duration::from_millis(t));
    let mut rounds = Vec::new();
    for extra in ["", "sync_copyup=0"] {
        // A copy-up that is not fsynced returns before much reaches the disk: cut at once.
        let wait = |n| if extra.is_empty() { n } else { 0 };
        rounds.extend([
            (extra, ms(20), 0, 0.0),
            (extra, ms(80), 4, 0.5),
            (extra, ms(250), 4, 0.5),
            (extra, ms(600), 1, 0.0),
            // The large copy-ups (3 MiB): in flight, and just returned.
            (extra, CutAt::Chmod(9, false), wait(16), 0.5),
            (extra, CutAt::Chmod(19, true), 0, 0.0),
            (extra, CutAt::Chmod(29, false), wait(16), 0.0),
            (extra, CutAt::Chmod(39, false), wait(64), 0.5),
            // Small ones.
            (extra, CutAt::Chmod(12, false), 0, 0.5),
            (extra, CutAt::Chmod(25, true), 0, 0.5),
            // Copy-ups by append, in flight.
            (extra, CutAt::Append(10), 0, 0.5),
            (extra, CutAt::Append(20), wait(2), 0.0),
        ]);
    }
    let mut totals: BTreeMap<&str, [Counts; 3]> = BTreeMap::new();
    for (n, &(extra, at, min_pending, keep)) in rounds.iter().enumerate() {
        let out = power_round(
            &ctx,
            n,
            &Round {
                extra,
                at,
                min_pending,
                keep,
                seed: 0x5eed + n as u64,
            },
        );
        let t = totals
            .entry(if extra.is_empty() { "default" } else { extra })
            .or_default();
        t[0].merge(&out.chmod_done);
        t[1].merge(&out.chmod_in_flight);
        t[2].merge(&out.append_in_flight);
        assert!(
            tree_digest(&lower) == lower_before,
            "the lower layer changed (round {n})"
        );
    }
    for (mode, [done, in_flight, append]) in &totals {
        eprintln!(
            "{mode}: copy-ups never fsynced, after the cut: chmod returned {}, chmod in flight \
             {}, append in flight {}",
            done.show(),
            in_flight.show(),
            append.show()
        );
    }
    assert!(
        totals.values().map(|t| t[0].total()).sum::<usize>() > 0,
        "no chmod copy-up returned before a cut"
    );
    drop(ctx);
    drop(disk);
    eprintln!("{} power-cut rounds in {:.1?}", rounds.len(), t0.elapsed());
    let _ = std::fs::remove_dir_all(&work);
}
