//! kill -9 at arbitrary moments.
//!
//! - strata-fuse killed while files are written, lower files copied up (a 48 MiB one in
//!   flight), a lower directory renamed and a hard-linked lower file copied up: after a
//!   remount every file whose `fsync` completed is there with its data, the file whose
//!   copy-up was cut shows its whole lower data (no half file), nothing of the work dir shows
//!   in the merged tree, and kernel overlayfs mounts the upper and shows the same.
//! - strata-fuse killed at many moments around the rename of a lower directory of 2,000 files
//!   (a redirect directory in the upper), to the same parent and to another one: after a
//!   remount exactly one name shows the whole tree with the lower data (the new one if the
//!   rename returned and the parents were fsynced), nothing of the work dir shows, kernel
//!   overlayfs shows the same tree, and the lower layer is unchanged.
//! - `strata commit` killed at many points (including while it holds the mount paused): the
//!   store stays fsck-clean, the mount is not left paused (a write completes within seconds),
//!   an image that got in is usable, and a later commit works.
//! - `strata rmi`, `strata prune` and `strata import` killed at many points: fsck-clean, and
//!   every image still listed can be inspected. (`load` is covered by cli_atomic, `pull` by
//!   registry_hostile.)
//! - The mount daemon killed during a commit: fsck-clean, the container and the image keep
//!   every fsynced file.

mod common;
mod faultkit;

use faultkit::*;
use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const MIB: usize = 1 << 20;

struct Expect {
    /// Files whose fsync completed, with their data.
    synced: Vec<(PathBuf, Vec<u8>)>,
    /// Lower files whose data must be whole whatever happened to their copy-up.
    whole: Vec<(PathBuf, Vec<u8>)>,
    /// Names the merged root may show.
    root_names: BTreeSet<String>,
}

fn check_tree(mnt: &Path, ex: &Expect, who: &str) {
    for (p, data) in &ex.synced {
        let got = std::fs::read(mnt.join(p))
            .unwrap_or_else(|e| panic!("{who}: fsynced {} is gone: {e}", p.display()));
        assert!(
            got == *data,
            "{who}: fsynced {} has {} bytes, not its {} bytes",
            p.display(),
            got.len(),
            data.len()
        );
    }
    for (p, data) in &ex.whole {
        let got = std::fs::read(mnt.join(p))
            .unwrap_or_else(|e| panic!("{who}: {} is gone: {e}", p.display()));
        assert!(
            got == *data,
            "{who}: {} is a half file ({} of {} bytes)",
            p.display(),
            got.len(),
            data.len()
        );
    }
    for e in std::fs::read_dir(mnt).unwrap() {
        let name = e.unwrap().file_name().to_string_lossy().into_owned();
        assert!(
            ex.root_names.contains(&name),
            "{who}: stray entry {name:?} in the merged root"
        );
    }
}

fn daemon_killed_round(work: &Path, delay: Duration, extra: &str) {
    let t0 = Instant::now();
    let phase = |what: &str| eprintln!("  {:>8.2?} {what}", t0.elapsed());
    let lower = work.join("lower");
    std::fs::create_dir_all(lower.join("ldir/sub")).unwrap();
    std::fs::write(lower.join("ldir/a"), b"lower a").unwrap();
    std::fs::write(lower.join("ldir/sub/b"), b"lower b").unwrap();
    let big = pattern(9, 48 * MIB);
    std::fs::write(lower.join("big"), &big).unwrap();
    std::fs::write(lower.join("hl1"), b"linked").unwrap();
    std::fs::hard_link(lower.join("hl1"), lower.join("hl2")).unwrap();
    for i in 0..8 {
        std::fs::write(lower.join(format!("c{i}")), pattern(i, 4096)).unwrap();
    }
    let upper = work.join("upper");
    let wdir = work.join("work");
    std::fs::create_dir_all(&upper).unwrap();
    std::fs::create_dir_all(&wdir).unwrap();
    let lower_before = tree_digest(&lower);
    let mnt = work.join("mnt");
    let mut m = Fuse::mount(&[&lower], &upper, &wdir, &mnt, extra);
    phase("mounted");

    let mut ex = Expect {
        synced: Vec::new(),
        whole: vec![(PathBuf::from("big"), big.clone())],
        root_names: ["ldir2", "big", "hl1", "hl2", "new", "unsynced"]
            .iter()
            .map(|s| s.to_string())
            .chain((0..8).map(|i| format!("c{i}")))
            .collect(),
    };
    // New files, each fsynced.
    std::fs::create_dir(mnt.join("new")).unwrap();
    for i in 0..30 {
        let p = PathBuf::from(format!("new/f{i}"));
        let data = pattern(100 + i, 1000 + i * 97);
        write_synced(&mnt.join(&p), &data).unwrap();
        ex.synced.push((p, data));
    }
    // Copy-ups by appending, each fsynced.
    for i in 0..8 {
        let p = PathBuf::from(format!("c{i}"));
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(mnt.join(&p))
            .unwrap();
        f.write_all(b"+appended").unwrap();
        f.sync_all().unwrap();
        let mut data = pattern(i, 4096);
        data.extend_from_slice(b"+appended");
        ex.synced.push((p, data));
    }
    // A lower directory renamed (redirect), the parent fsynced.
    std::fs::rename(mnt.join("ldir"), mnt.join("ldir2")).unwrap();
    std::fs::File::open(&mnt).unwrap().sync_all().unwrap();
    ex.synced.push(("ldir2/a".into(), b"lower a".to_vec()));
    ex.synced.push(("ldir2/sub/b".into(), b"lower b".to_vec()));
    // A hard-linked lower file copied up through one name.
    {
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(mnt.join("hl1"))
            .unwrap();
        f.write_all(b" and changed").unwrap();
        f.sync_all().unwrap();
    }
    ex.synced
        .push(("hl1".into(), b"linked and changed".to_vec()));
    ex.synced
        .push(("hl2".into(), b"linked and changed".to_vec()));

    phase("fsynced work done");
    // In flight at the kill: an unsynced writer and the copy-up of the 48 MiB file (chmod
    // copies the whole file up without metacopy).
    let mnt2 = mnt.clone();
    let writer = std::thread::spawn(move || {
        if let Ok(mut f) = std::fs::File::create(mnt2.join("unsynced")) {
            let chunk = vec![1u8; 64 * 1024];
            // Bounded, in case the kill does not stop it.
            for _ in 0..(256 * MIB / chunk.len()) {
                if f.write_all(&chunk).is_err() {
                    break;
                }
            }
        }
    });
    let mnt3 = mnt.clone();
    let copier = std::thread::spawn(move || {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(mnt3.join("big"), std::fs::Permissions::from_mode(0o600));
    });
    std::thread::sleep(delay);
    m.kill9();
    phase("killed");
    let _ = writer.join();
    let _ = copier.join();
    phase("writers stopped");

    // Remount strata: everything fsynced is there, nothing is half.
    let mut m = Fuse::mount(&[&lower], &upper, &wdir, &mnt, extra);
    check_tree(&mnt, &ex, &format!("strata after kill at {delay:?}"));
    phase("checked on strata");
    m.unmount();
    match Kernel::mount(&[&lower], &upper, &wdir, &work.join("kmnt")) {
        Ok(k) => check_tree(&k.mnt, &ex, &format!("kernel after kill at {delay:?}")),
        Err(e) => skip(&format!("kernel overlayfs refuses the upper: {e}")),
    }
    assert!(
        tree_digest(&lower) == lower_before,
        "the lower layer changed (kill at {delay:?})"
    );
}

#[test]
fn strata_fuse_killed_mid_work_keeps_every_fsynced_file() {
    if let Err(why) = mount_ready() {
        return skip(&why);
    }
    let work = common::tmpdir("faults-kill-fuse");
    for (i, (ms, extra)) in [(5u64, ""), (60, "sync_copyup=0"), (250, "")]
        .into_iter()
        .enumerate()
    {
        let round = work.join(format!("r{i}"));
        daemon_killed_round(&round, Duration::from_millis(ms), extra);
        let _ = std::fs::remove_dir_all(&round);
    }
}

// ---- A lower directory of 2,000 files renamed while strata-fuse gets kill -9 ----

/// The lower layer of the rename rounds: `tree/` holds 2,000 files in `d{0..9}/e{0..9}/`
/// (every third one with data), an empty directory and a symlink; `other/` and `keep` sit
/// beside it.
fn make_rename_lower(lower: &Path) {
    for i in 0..10 {
        for j in 0..10 {
            let d = lower.join(format!("tree/d{i}/e{j}"));
            std::fs::create_dir_all(&d).unwrap();
            for k in 0..20 {
                let n = i * 200 + j * 20 + k;
                let data = if n % 3 == 0 {
                    pattern(n, 1 + n * 37 % 8000)
                } else {
                    Vec::new()
                };
                std::fs::write(d.join(format!("f{k}")), data).unwrap();
            }
        }
    }
    std::fs::create_dir_all(lower.join("tree/empty")).unwrap();
    std::os::unix::fs::symlink("d0/e0/f0", lower.join("tree/link")).unwrap();
    std::fs::write(lower.join("tree/top.txt"), b"top of the tree").unwrap();
    std::fs::create_dir_all(lower.join("other")).unwrap();
    std::fs::write(lower.join("other/x"), b"beside the tree").unwrap();
    std::fs::write(lower.join("keep"), pattern(7777, 5000)).unwrap();
}

/// Every entry below `root` (relative path -> type, mode, owner and content digest or link
/// target); no times, sizes of directories or link counts.
fn snapshot(root: &Path) -> std::collections::BTreeMap<String, String> {
    use std::os::unix::fs::MetadataExt;
    fn rec(base: &Path, d: &Path, out: &mut std::collections::BTreeMap<String, String>) {
        let rd = std::fs::read_dir(d).unwrap_or_else(|e| panic!("read_dir {}: {e}", d.display()));
        for e in rd {
            let e = e.unwrap_or_else(|e| panic!("read_dir {}: {e}", d.display()));
            let p = e.path();
            let rel = p.strip_prefix(base).unwrap().display().to_string();
            let m = p
                .symlink_metadata()
                .unwrap_or_else(|e| panic!("lstat {}: {e}", p.display()));
            let owner = format!("{:o} {}:{}", m.mode(), m.uid(), m.gid());
            let v = if m.is_dir() {
                format!("dir {owner}")
            } else if m.is_file() {
                let data =
                    std::fs::read(&p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()));
                format!(
                    "file {owner} {} {}",
                    data.len(),
                    strata::oci::Digest::of(&data)
                )
            } else if m.file_type().is_symlink() {
                format!("link {owner} {}", std::fs::read_link(&p).unwrap().display())
            } else {
                format!("other {owner} rdev {:x}", m.rdev())
            };
            out.insert(rel, v);
            if m.is_dir() {
                rec(base, &p, out);
            }
        }
    }
    let mut out = std::collections::BTreeMap::new();
    rec(root, root, &mut out);
    out
}

/// `lower` (a snapshot of the lower layer) as the merged tree shows it with directory `old`
/// at `at`.
fn tree_at(
    lower: &std::collections::BTreeMap<String, String>,
    old: &str,
    at: &str,
) -> std::collections::BTreeMap<String, String> {
    lower
        .iter()
        .map(|(k, v)| {
            let k = match k.strip_prefix(old) {
                Some(rest) if rest.is_empty() || rest.starts_with('/') => format!("{at}{rest}"),
                _ => k.clone(),
            };
            (k, v.clone())
        })
        .collect()
}

/// The first differences of two snapshots, for a failure message.
fn tree_diff(
    got: &std::collections::BTreeMap<String, String>,
    want: &std::collections::BTreeMap<String, String>,
) -> String {
    let mut out = Vec::new();
    for (k, v) in want {
        match got.get(k) {
            None => out.push(format!("missing {k} ({v})")),
            Some(g) if g != v => out.push(format!("differs {k}: {g} instead of {v}")),
            _ => {}
        }
    }
    for (k, v) in got {
        if !want.contains_key(k) {
            out.push(format!("stray {k} ({v})"));
        }
    }
    let n = out.len();
    out.truncate(12);
    format!("{n} differences, first: {}", out.join("; "))
}

/// The overlay state of upper entry `p`, for the round's log line.
fn upper_entry(p: &Path) -> String {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let Ok(m) = p.symlink_metadata() else {
        return "-".into();
    };
    let t = m.file_type();
    if t.is_char_device() && m.rdev() == 0 {
        return "whiteout".into();
    }
    if !t.is_dir() {
        return format!("{:o}", m.mode());
    }
    let mut s = "dir".to_string();
    for x in ["redirect", "opaque", "origin"] {
        let mut buf = [0u8; 512];
        if let Ok(n) = rustix::fs::lgetxattr(p, format!("trusted.overlay.{x}"), &mut buf) {
            if x == "origin" {
                s.push_str(" +origin");
            } else {
                s.push_str(&format!(" {x}={}", String::from_utf8_lossy(&buf[..n])));
            }
        }
    }
    s
}

#[derive(Clone, Copy, Debug)]
enum KillAt {
    /// This long after the renaming thread was started (busy-waited).
    Delay(Duration),
    /// Right after rename(2) returned.
    Returned,
    /// After rename(2) returned and both parents were fsynced.
    Synced,
    /// At the entry of the `n`-th call of this syscall by the thread serving the rename:
    /// strace injects SIGKILL there (the call is not made). If the rename returns without
    /// making that call, killed then.
    Syscall(&'static str, u16),
}

/// Attach strace to every thread of `pid`, to kill it with SIGKILL on entering the `n`-th
/// call of `syscall` of a thread; returns once every thread is traced.
fn attach_killer(pid: u32, syscall: &str, n: u16) -> std::process::Child {
    let mut tracer = Command::new("strace")
        .args(["-f", "-qq", "-o", "/dev/null", "-p", &pid.to_string()])
        .arg(format!("-etrace={syscall}"))
        .arg(format!("-einject={syscall}:signal=SIGKILL:when={n}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn strace");
    let tracer_pid = format!("TracerPid:\t{}", tracer.id());
    let all_traced = || {
        std::fs::read_dir(format!("/proc/{pid}/task"))
            .unwrap()
            .flatten()
            .all(|t| {
                std::fs::read_to_string(t.path().join("status"))
                    .is_ok_and(|st| st.lines().any(|l| l == tracer_pid))
            })
    };
    let t0 = Instant::now();
    while !all_traced() {
        if t0.elapsed() > Duration::from_secs(10) {
            let _ = tracer.kill();
            let _ = tracer.wait();
            panic!("strace did not attach to strata-fuse");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    tracer
}

fn have_strace() -> bool {
    Command::new("strace")
        .args(["-qq", "-o", "/dev/null", "-etrace=none", "true"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

struct RenameRound {
    old: &'static str,
    new: &'static str,
    kill: KillAt,
    /// A reader walks the tree meanwhile (the daemon has requests queued at the kill).
    busy: bool,
}

/// What the renaming thread saw.
struct RenameSeen {
    renamed: Result<Duration, std::io::Error>,
    synced: Option<Result<(), std::io::Error>>,
}

/// How a round went.
struct RoundOutcome {
    /// How long the rename took from the thread's start, when it returned.
    took: Option<Duration>,
    /// The daemon died of the SIGKILL strace injected.
    injected: bool,
}

fn rename_killed_round(
    dir: &Path,
    lower: &Path,
    lower_snap: &std::collections::BTreeMap<String, String>,
    kernel_ok: bool,
    r: &RenameRound,
) -> RoundOutcome {
    let who = format!("rename {} -> {} killed at {:?}", r.old, r.new, r.kill);
    let upper = dir.join("upper");
    let wdir = dir.join("work");
    std::fs::create_dir_all(&upper).unwrap();
    std::fs::create_dir_all(&wdir).unwrap();
    let mnt = dir.join("mnt");
    let mut m = Fuse::mount(&[lower], &upper, &wdir, &mnt, "");
    // The directory has been looked at (its node known, as in a real workload).
    assert!(
        mnt.join(r.old).join("d0/e0/f0").exists(),
        "{who}: fresh mount"
    );

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = r.busy.then(|| {
        let (stop, mnt, old) = (stop.clone(), mnt.clone(), r.old);
        std::thread::spawn(move || {
            let mut n = 0usize;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let p = mnt.join(format!("{old}/d{}/e{}/f{}", n % 10, n / 10 % 10, n % 20));
                if std::fs::read(&p).is_err() && std::fs::metadata(&mnt).is_err() {
                    break;
                }
                n += 1;
            }
        })
    });

    let tracer = match r.kill {
        KillAt::Syscall(name, n) => {
            let pid = m.child.as_ref().map(|c| c.id()).unwrap();
            Some(attach_killer(pid, name, n))
        }
        _ => None,
    };
    let (from, to) = (mnt.join(r.old), mnt.join(r.new));
    let sync = matches!(r.kill, KillAt::Synced);
    let (tx, rx) = mpsc::channel();
    let t0 = Instant::now();
    let renamer = std::thread::spawn(move || {
        let renamed = std::fs::rename(&from, &to).map(|()| t0.elapsed());
        let ok = renamed.is_ok();
        let _ = tx.send(ok);
        let synced = (ok && sync).then(|| -> std::io::Result<()> {
            std::fs::File::open(to.parent().unwrap())?.sync_all()?;
            std::fs::File::open(from.parent().unwrap())?.sync_all()
        });
        let _ = tx.send(ok);
        RenameSeen { renamed, synced }
    });
    let mut rename_failed = false;
    match r.kill {
        KillAt::Delay(d) => {
            while t0.elapsed() < d {
                std::hint::spin_loop();
            }
        }
        KillAt::Returned => {
            let _ = rx.recv();
        }
        KillAt::Synced => {
            let _ = rx.recv();
            let _ = rx.recv();
        }
        KillAt::Syscall(..) => {
            // The rename returns by itself: done, or failed by the injected kill.
            let renamed = rx.recv().unwrap_or(false);
            rename_failed = !renamed;
        }
    }
    let killed_at = t0.elapsed();
    // Did the injected SIGKILL end the daemon? (Its /dev/fuse closes a moment before it
    // can be waited for.)
    let mut injected = false;
    if let (Some(_), Some(c), true) = (&tracer, m.child.as_mut(), rename_failed) {
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(2) {
            if let Ok(Some(st)) = c.try_wait() {
                use std::os::unix::process::ExitStatusExt;
                injected = st.signal() == Some(libc::SIGKILL);
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    m.kill9();
    let seen = renamer.join().unwrap();
    if let Some(mut t) = tracer {
        let t1 = Instant::now();
        while !matches!(t.try_wait(), Ok(Some(_))) {
            if t1.elapsed() > Duration::from_secs(5) {
                let _ = t.kill();
                let _ = t.wait();
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    if let Some(t) = reader {
        let _ = t.join();
    }
    let synced = matches!(seen.synced, Some(Ok(())));
    assert!(
        !sync || synced,
        "{who}: the fsync of the parents after the rename failed: {:?}",
        seen.synced
    );

    // The new parent too, when it is another directory.
    let ups: Vec<String> = [r.old, r.new]
        .into_iter()
        .chain(r.new.rsplit_once('/').map(|(p, _)| p))
        .map(|n| format!("{n}: {}", upper_entry(&upper.join(n))))
        .collect();
    let mut work_names: Vec<String> = std::fs::read_dir(&wdir)
        .unwrap()
        .chain(std::fs::read_dir(wdir.join("work")).unwrap())
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    work_names.sort();

    // Remounted on the same upper and work: one name shows the whole tree.
    let mut m = Fuse::mount(&[lower], &upper, &wdir, &mnt, "");
    let old_there = mnt.join(r.old).symlink_metadata().is_ok();
    let new_there = mnt.join(r.new).symlink_metadata().is_ok();
    let got = snapshot(&mnt);
    m.unmount();
    let how = match r.kill {
        KillAt::Syscall(name, n) if injected => format!("SIGKILL injected at {name} #{n}"),
        KillAt::Syscall(name, n) => format!("no {name} #{n}, killed after the rename"),
        _ => format!("killed at {killed_at:?}"),
    };
    eprintln!(
        "  {who}: {how}, rename {}, after remount shows {} (upper {}; work {:?})",
        match &seen.renamed {
            Ok(t) => format!(
                "returned at {t:?}{}",
                if synced { " and synced" } else { "" }
            ),
            Err(e) => format!("failed ({e})"),
        },
        match (old_there, new_there) {
            (true, false) => "the old name",
            (false, true) => "the new name",
            (true, true) => "BOTH names",
            (false, false) => "NEITHER name",
        },
        ups.join(", "),
        work_names
    );
    assert!(
        old_there != new_there,
        "{who}: after a remount old name there: {old_there}, new name there: {new_there} \
         (upper {}; rename {:?})",
        ups.join(", "),
        seen.renamed
    );
    assert!(
        !(synced && old_there),
        "{who}: the rename returned and its parent was fsynced, but the remounted tree \
         shows the old name (upper {})",
        ups.join(", ")
    );
    let shown = if old_there { r.old } else { r.new };
    let want = tree_at(lower_snap, r.old, shown);
    assert!(
        got == want,
        "{who}: the remounted strata tree (at {shown}) is not the lower tree: {}",
        tree_diff(&got, &want)
    );

    // Kernel overlayfs on the same layers shows the same tree.
    if kernel_ok {
        match Kernel::mount(&[lower], &upper, &wdir, &dir.join("kmnt")) {
            Ok(k) => {
                let kgot = snapshot(&k.mnt);
                assert!(
                    kgot == got,
                    "{who}: kernel overlayfs shows another tree than strata: {}",
                    tree_diff(&kgot, &got)
                );
            }
            Err(e) => panic!(
                "{who}: kernel overlayfs refuses the upper (upper {}): {e}",
                ups.join(", ")
            ),
        }
    }
    RoundOutcome {
        took: seen.renamed.ok(),
        injected,
    }
}

#[test]
fn strata_fuse_killed_while_renaming_a_big_lower_directory() {
    if let Err(why) = mount_ready() {
        return skip(&why);
    }
    let t0 = Instant::now();
    let work = common::tmpdir("faults-kill-rename");
    let lower = work.join("lower");
    make_rename_lower(&lower);
    let lower_before = tree_digest(&lower);
    let lower_snap = snapshot(&lower);
    assert_eq!(
        lower_snap.keys().filter(|k| k.starts_with("tree/")).count(),
        2000 + 100 + 10 + 3,
        "the lower tree"
    );
    // Kernel overlayfs on a pristine upper: if it works here, it must work after every kill.
    let kernel_ok = {
        let d = work.join("kprobe");
        std::fs::create_dir_all(d.join("upper")).unwrap();
        std::fs::create_dir_all(d.join("work")).unwrap();
        match Kernel::mount(&[&lower], &d.join("upper"), &d.join("work"), &d.join("mnt")) {
            Ok(_) => true,
            Err(e) => {
                skip(&format!("kernel overlayfs does not mount here: {e}"));
                false
            }
        }
    };
    let round = |i: usize, r: RenameRound| {
        let dir = work.join(format!("r{i}"));
        let out = rename_killed_round(&dir, &lower, &lower_snap, kernel_ok, &r);
        let _ = std::fs::remove_dir_all(&dir);
        assert!(
            tree_digest(&lower) == lower_before,
            "the lower layer changed (rename {} -> {} killed at {:?})",
            r.old,
            r.new,
            r.kill
        );
        out
    };
    // First the rename runs to its end (and the parents are fsynced): it gives the span the
    // kills are spread over.
    let mut i = 0;
    let mut span = Duration::ZERO;
    for (new, busy) in [("tree2", false), ("other/moved", false), ("tree2", true)] {
        let took = round(
            i,
            RenameRound {
                old: "tree",
                new,
                kill: KillAt::Synced,
                busy,
            },
        );
        span = span.max(took.took.expect("an uninterrupted rename returns"));
        i += 1;
    }
    eprintln!("an uninterrupted rename takes up to {span:?}");
    // Then killed at delays spread over that span and beyond (to the same parent and to
    // another), and right after it returned.
    let mut rounds: Vec<(&str, KillAt)> = (0u32..=8)
        .map(|k| {
            let new = if k % 2 == 0 { "tree2" } else { "other/moved" };
            (new, KillAt::Delay(span * k / 4))
        })
        .collect();
    rounds.push(("tree2", KillAt::Returned));
    rounds.push(("other/moved", KillAt::Returned));
    // And at each step of the rename, by SIGKILL injected on entering a syscall of the thread
    // serving it. A rename in the same parent: mkdirat (the copy of the directory in the work
    // dir), fchownat and utimensat (its attributes), renameat (into the upper), utimensat (the
    // parent's times given back), setxattr (the redirect), renameat2 (the move, leaving a
    // whiteout). To another parent, the new parent is copied up too: a second mkdirat,
    // fchownat, renameat and times.
    let same: &[(&str, u16)] = &[
        ("mkdirat", 1),
        ("fchownat", 1),
        ("utimensat", 1),
        ("renameat", 1),
        ("utimensat", 2),
        ("setxattr", 1),
        ("renameat2", 1),
    ];
    let cross: &[(&str, u16)] = &[
        ("mkdirat", 1),
        ("fchownat", 1),
        ("renameat", 1),
        ("utimensat", 2),
        ("mkdirat", 2),
        ("fchownat", 2),
        ("renameat", 2),
        ("utimensat", 4),
        ("setxattr", 1),
        ("renameat2", 1),
    ];
    let strace = have_strace();
    if strace {
        for (new, points) in [("tree2", same), ("other/moved", cross)] {
            rounds.extend(points.iter().map(|&(c, n)| (new, KillAt::Syscall(c, n))));
        }
    } else {
        eprintln!("strace is not installed: no kill at the syscalls of the rename");
    }
    let mut injected = 0;
    for (j, (new, kill)) in rounds.into_iter().enumerate() {
        let busy = j % 3 == 2 && !matches!(kill, KillAt::Syscall(..));
        let out = round(
            i,
            RenameRound {
                old: "tree",
                new,
                kill,
                busy,
            },
        );
        injected += usize::from(out.injected);
        i += 1;
    }
    assert!(
        !strace || injected > 0,
        "no SIGKILL injected by strace landed in a rename"
    );
    eprintln!("{injected} rounds killed by an injected SIGKILL");
    eprintln!("{i} rename rounds in {:?}", t0.elapsed());
    let _ = std::fs::remove_dir_all(&work);
}

/// Writes `name` into `mnt` in another thread; fails if it does not finish within 10 s (a
/// mount left paused).
fn write_within(mnt: &Path, name: &str, when: &str) {
    let (tx, rx) = mpsc::channel();
    let p = mnt.join(name);
    std::thread::spawn(move || {
        let _ = tx.send(write_synced(&p, b"written after a kill"));
    });
    match rx.recv_timeout(Duration::from_secs(10)) {
        Ok(r) => r.unwrap_or_else(|e| panic!("write after {when}: {e}")),
        Err(_) => panic!("the mount is still paused 10 s after {when}"),
    }
}

fn kill_after(root: &Path, args: &[&str], delay: Duration) {
    let mut c = strata_command(root, args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn strata");
    std::thread::sleep(delay);
    let _ = c.kill();
    let _ = c.wait();
}

fn listed_images_are_usable(root: &Path, when: &str) {
    for id in common::ok(root, &["images", "-q"]).lines() {
        let o = common::strata(root, &["inspect", id.trim()]);
        assert!(
            o.status.success(),
            "image {id} listed after {when} cannot be inspected: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
}

#[test]
fn strata_killed_during_commit_rmi_and_prune_leaves_a_clean_store() {
    if let Err(why) = mount_ready() {
        return skip(&why);
    }
    let Some(fx) = common::fixtures() else {
        return skip("the fixture images cannot be built");
    };
    let work = common::tmpdir("faults-kill-cli");
    let root = work.join("store");
    common::ok(
        &root,
        &["load", "-i", fx.join("img.docker.tar").to_str().unwrap()],
    );
    let mnt = common::ok(
        &root,
        &["mount", "--name", "c1", "localhost/strata-test:two"],
    );
    let mnt = PathBuf::from(mnt.trim());
    for i in 0..20 {
        write_synced(&mnt.join(format!("f{i}")), &pattern(i, 20_000)).unwrap();
    }
    let t0 = Instant::now();
    common::ok(&root, &["commit", "c1", "img:timed"]);
    let commit_time = t0.elapsed();
    eprintln!("an uninterrupted commit takes {commit_time:?}");
    let span = commit_time.as_millis().max(20) as u64;
    let mut delays: Vec<u64> = vec![0, 1, 3];
    delays.extend((1..=8).map(|k| span * k / 8));
    for (i, d) in delays.iter().enumerate() {
        write_synced(&mnt.join(format!("g{i}")), &pattern(i, 5000)).unwrap();
        let tag = format!("img:k{i}");
        kill_after(&root, &["commit", "c1", &tag], Duration::from_millis(*d));
        let when = format!("commit killed at {d} ms");
        assert_fsck_clean(&root, &when);
        write_within(&mnt, &format!("after{i}"), &when);
        listed_images_are_usable(&root, &when);
    }
    common::ok(&root, &["commit", "c1", "img:final"]);
    common::ok(&root, &["umount", "c1"]);

    // rmi and prune, killed.
    for i in 0..6 {
        common::ok(&root, &["tag", "img:final", &format!("many:{i}")]);
    }
    let t0 = Instant::now();
    common::ok(&root, &["rmi", "img:timed"]);
    let span = t0.elapsed().as_millis().max(10) as u64;
    for (i, d) in [0, span / 4, span / 2, span].iter().enumerate() {
        kill_after(
            &root,
            &["rmi", &format!("many:{i}")],
            Duration::from_millis(*d),
        );
        let when = format!("rmi killed at {d} ms");
        assert_fsck_clean(&root, &when);
        listed_images_are_usable(&root, &when);
    }
    for d in [0u64, 2, 5, 10, 20, 40] {
        kill_after(&root, &["prune"], Duration::from_millis(d));
        let when = format!("prune killed at {d} ms");
        assert_fsck_clean(&root, &when);
        listed_images_are_usable(&root, &when);
    }
    common::ok(&root, &["prune"]);
    assert_fsck_clean(&root, "the last prune");

    // import, killed: a rootfs of 200 files, different each time (else the layer exists).
    let make_rootfs = |n: usize| {
        let p = work.join(format!("rootfs{n}.tar"));
        let mut b = tar::Builder::new(std::fs::File::create(&p).unwrap());
        for i in 0..200 {
            let data = pattern(i + n * 1000, 10_000 + i * 13);
            tar_append_file(&mut b, format!("d{}/f{i}", i % 10), &data);
        }
        b.into_inner().unwrap().sync_all().unwrap();
        p.display().to_string()
    };
    let t0 = Instant::now();
    common::ok(&root, &["import", &make_rootfs(99), "imp:timed"]);
    let span = t0.elapsed().as_millis().max(10) as u64;
    for (i, d) in [0, 1, 3, span / 8, span / 4, span / 2, span * 3 / 4, span]
        .iter()
        .enumerate()
    {
        let rootfs = make_rootfs(i);
        kill_after(
            &root,
            &["import", &rootfs, &format!("imp:{i}")],
            Duration::from_millis(*d),
        );
        let when = format!("import killed at {d} ms");
        assert_fsck_clean(&root, &when);
        listed_images_are_usable(&root, &when);
    }
    // What is left still mounts with its data.
    let mnt = common::ok(&root, &["mount", "--name", "c2", "img:final"]);
    let mnt = PathBuf::from(mnt.trim());
    for i in 0..20 {
        assert!(std::fs::read(mnt.join(format!("f{i}"))).unwrap() == pattern(i, 20_000));
    }
    common::ok(&root, &["umount", "c2"]);
}

#[test]
fn the_daemon_killed_during_a_commit_loses_no_fsynced_file() {
    if let Err(why) = mount_ready() {
        return skip(&why);
    }
    let Some(fx) = common::fixtures() else {
        return skip("the fixture images cannot be built");
    };
    let work = common::tmpdir("faults-kill-pause");
    let root = work.join("store");
    common::ok(
        &root,
        &["load", "-i", fx.join("img.docker.tar").to_str().unwrap()],
    );
    for (round, delay) in [0u64, 10, 40].into_iter().enumerate() {
        let name = format!("p{round}");
        let mnt = common::ok(
            &root,
            &["mount", "--name", &name, "localhost/strata-test:two"],
        );
        let mnt = PathBuf::from(mnt.trim());
        for i in 0..10 {
            write_synced(&mnt.join(format!("f{i}")), &pattern(i, 300_000)).unwrap();
        }
        let pid = *store_daemons(&root).first().expect("find the mount daemon");
        let commit = strata_command(&root, &["commit", &name, &format!("img:{name}")])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay));
        let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
        let o = commit.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!err.contains("panicked"), "commit: {err}");
        eprintln!(
            "daemon killed at {delay} ms: commit {:?} {}",
            o.status.code(),
            err.trim().lines().last().unwrap_or("")
        );
        let when = format!("the daemon killed {delay} ms into a commit");
        let _ = Command::new("umount").arg("-l").arg(&mnt).status();
        assert_fsck_clean(&root, &when);
        listed_images_are_usable(&root, &when);
        // Mounted again, the container has every fsynced file.
        let o = common::strata(&root, &["mount", &name]);
        assert!(
            o.status.success(),
            "remount after {when}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        for i in 0..10 {
            let got = std::fs::read(mnt.join(format!("f{i}"))).unwrap();
            assert!(got == pattern(i, 300_000), "f{i} after {when}");
        }
        // And a commit that got in has them too.
        if o.status.success()
            && common::strata(&root, &["inspect", &format!("img:{name}")])
                .status
                .success()
        {
            let c = format!("{name}-check");
            let m2 = common::ok(&root, &["mount", "--name", &c, &format!("img:{name}")]);
            let m2 = PathBuf::from(m2.trim());
            for i in 0..10 {
                assert!(std::fs::read(m2.join(format!("f{i}"))).unwrap() == pattern(i, 300_000));
            }
            common::ok(&root, &["umount", &c]);
        }
        common::ok(&root, &["umount", &name]);
    }
}
