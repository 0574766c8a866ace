//! Many containers at once: N mounts of one image (one FUSE daemon each, through `strata
//! mount`), each writing its own files, then all committed while mounted; every committed
//! image holds exactly its container's files, the store stays fsck-clean, and the memory per
//! mount (daemon RSS) is printed. N is 12 by default; `STRATA_MANY_MOUNTS=50` for the issue's
//! run.

mod common;
mod faultkit;

use faultkit::*;
use std::path::PathBuf;

#[test]
fn many_mounts_of_one_image_write_and_commit() {
    if let Err(why) = mount_ready() {
        return skip(&why);
    }
    let Some(fx) = common::fixtures() else {
        return skip("the fixture images cannot be built");
    };
    let n: usize = std::env::var("STRATA_MANY_MOUNTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(12);
    let work = common::tmpdir("many-mounts");
    let root = work.join("store");
    common::ok(
        &root,
        &["load", "-i", fx.join("img.docker.tar").to_str().unwrap()],
    );
    let t0 = std::time::Instant::now();
    let mnts: Vec<PathBuf> = (0..n)
        .map(|i| {
            let m = common::ok(
                &root,
                &[
                    "mount",
                    "--name",
                    &format!("c{i}"),
                    "localhost/strata-test:two",
                ],
            );
            PathBuf::from(m.trim())
        })
        .collect();
    let mounted = t0.elapsed();
    // Each writes its own files, in parallel.
    let writers: Vec<_> = mnts
        .iter()
        .cloned()
        .enumerate()
        .map(|(i, m)| {
            std::thread::spawn(move || {
                for j in 0..20 {
                    write_synced(&m.join(format!("c{i}-f{j}")), &pattern(i * 100 + j, 8192))
                        .unwrap();
                }
                std::fs::remove_file(m.join("etc/greeting")).unwrap();
            })
        })
        .collect();
    for w in writers {
        w.join().unwrap();
    }
    let pids = store_daemons(&root);
    let (daemons, rss) = (pids.len(), pids.iter().map(|p| vm_rss_kib(*p)).sum::<u64>());
    eprintln!(
        "{n} mounts in {mounted:.1?}; {daemons} daemons, RSS {} KiB in all, {} KiB per mount",
        rss,
        rss / daemons.max(1) as u64
    );
    assert_eq!(daemons, n, "not one daemon per mount");
    for i in 0..n {
        common::ok(&root, &["commit", &format!("c{i}"), &format!("many:{i}")]);
    }
    let f = common::ok(&root, &["fsck"]);
    assert!(f.contains("clean"), "{f}");
    for i in 0..n {
        common::ok(&root, &["umount", &format!("c{i}")]);
    }
    // Each committed image has its own files and none of the others'.
    for i in [0, n / 2, n - 1] {
        let m = common::ok(
            &root,
            &["mount", "--name", &format!("v{i}"), &format!("many:{i}")],
        );
        let m = PathBuf::from(m.trim());
        for j in 0..20 {
            assert!(
                std::fs::read(m.join(format!("c{i}-f{j}"))).unwrap() == pattern(i * 100 + j, 8192)
            );
        }
        assert!(
            !m.join("etc/greeting").exists(),
            "the deletion of c{i} is lost"
        );
        let other = (i + 1) % n;
        assert!(
            !m.join(format!("c{other}-f0")).exists(),
            "c{other}'s file is in many:{i}"
        );
        common::ok(&root, &["umount", &format!("v{i}")]);
    }
}
