//! Atomicity under concurrency and crashes: two `strata` commands at once, and `strata`
//! killed at arbitrary moments, leave a store that `strata fsck` finds clean. Also gzipped
//! docker-archives and several images in one archive.

mod common;
use common::*;
use std::process::{Command, Stdio};
use std::time::Duration;

#[test]
fn concurrent_loads_and_tags_leave_a_clean_store() {
    let Some(fx) = fixtures() else { return };
    let work = tmpdir("concurrent");
    let root = work.join("store");
    let bin = env!("CARGO_BIN_EXE_strata");
    let spawn = |args: &[&str]| {
        Command::new(bin)
            .arg("--root")
            .arg(&root)
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let a = spawn(&["load", "-i", fx.join("img.docker.tar").to_str().unwrap()]);
    let b = spawn(&["load", "-i", fx.join("img.oci").to_str().unwrap()]);
    for c in [a, b] {
        let o = c.wait_with_output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    let tags: Vec<_> = (0..6)
        .map(|i| spawn(&["tag", "img:two", &format!("many:{i}")]))
        .collect();
    for c in tags {
        assert!(c.wait_with_output().unwrap().status.success());
    }
    let images = ok(&root, &["images"]);
    for t in ["localhost/strata-test", "img ", "many"] {
        assert!(images.contains(t), "{images}");
    }
    assert_eq!(
        images.matches("many").count(),
        6,
        "a concurrent tag was lost: {images}"
    );
    let f = ok(&root, &["fsck"]);
    assert!(f.contains("clean"), "{f}");
}

#[test]
fn killed_at_any_moment_the_store_stays_clean() {
    let Some(fx) = fixtures() else { return };
    let work = tmpdir("killed");
    let root = work.join("store");
    let bin = env!("CARGO_BIN_EXE_strata");
    for (i, delay_ms) in [0u64, 2, 5, 10, 20, 40, 80, 160].iter().enumerate() {
        let src = if i % 2 == 0 {
            fx.join("img.docker.tar")
        } else {
            fx.join("img.oci")
        };
        let mut c = Command::new(bin)
            .arg("--root")
            .arg(&root)
            .args(["load", "-i", src.to_str().unwrap()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(*delay_ms));
        let _ = c.kill();
        let _ = c.wait();
        let o = strata(&root, &["fsck"]);
        let out = String::from_utf8_lossy(&o.stdout);
        assert!(
            o.status.success() && out.contains("clean"),
            "after a kill at {delay_ms} ms: {out}"
        );
        // Whatever got in is usable.
        for img in ok(&root, &["images", "-q"]).lines() {
            ok(&root, &["inspect", img]);
        }
    }
    ok(&root, &["prune"]);
    ok(
        &root,
        &["load", "-i", fx.join("img.docker.tar").to_str().unwrap()],
    );
    let f = ok(&root, &["fsck"]);
    assert!(f.contains("clean") && !f.contains("leftover"), "{f}");
}

#[test]
fn gzipped_docker_archive_with_several_images() {
    let Some(fx) = fixtures() else { return };
    let work = tmpdir("multi");
    let root = work.join("store");
    ok(&root, &["load", "-i", fx.join("img.oci").to_str().unwrap()]);
    let multi = work.join("multi.tar");
    ok(
        &root,
        &["save", "-o", multi.to_str().unwrap(), "img:one", "img:two"],
    );
    run(Command::new("gzip").arg("-k").arg(&multi));
    let root2 = work.join("store2");
    let out = ok(
        &root2,
        &["load", "-i", work.join("multi.tar.gz").to_str().unwrap()],
    );
    assert!(
        out.contains("Loaded image: img:one") && out.contains("Loaded image: img:two"),
        "{out}"
    );
    // skopeo reads each image of the multi-image archive.
    let pol = policy(&work);
    for t in ["img:one", "img:two"] {
        let o = run(Command::new("skopeo")
            .arg("--policy")
            .arg(&pol)
            .arg("inspect")
            .arg(format!("docker-archive:{}:{t}", multi.display())));
        assert!(o.contains("\"Layers\""), "{o}");
    }
    assert_eq!(std::fs::read_dir(root2.join("layers")).unwrap().count(), 2);
    assert!(ok(&root2, &["fsck"]).contains("clean"));
}
