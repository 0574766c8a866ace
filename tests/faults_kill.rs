//! kill -9 at arbitrary moments.
//!
//! - strata-fuse killed while files are written, lower files copied up (a 48 MiB one in
//!   flight), a lower directory renamed and a hard-linked lower file copied up: after a
//!   remount every file whose `fsync` completed is there with its data, the file whose
//!   copy-up was cut shows its whole lower data (no half file), nothing of the work dir shows
//!   in the merged tree, and kernel overlayfs mounts the upper and shows the same.
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
    for (i, (ms, extra)) in [(5u64, ""), (60, ""), (250, "sync_copyup")]
        .into_iter()
        .enumerate()
    {
        let round = work.join(format!("r{i}"));
        daemon_killed_round(&round, Duration::from_millis(ms), extra);
        let _ = std::fs::remove_dir_all(&round);
    }
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
