//! `strata push` and `strata pull` against a real `docker-registry` on 127.0.0.1: an image
//! loaded from a buildah/skopeo archive goes up and comes back into another store with the
//! same ID and tree; a second pull finds every layer already there; skopeo reads the push.

mod common;
#[path = "registry_support/mod.rs"]
mod support;

use common::*;
use std::process::Command;

#[test]
fn push_then_pull_into_another_store() {
    let Some(fx) = fixtures() else { return };
    if let Some(why) = support::skip_reason() {
        skip(&why);
        return;
    }
    let work = tmpdir("registry");
    let reg = support::Registry::start(&work, None).expect("start docker-registry");
    let host = reg.host();
    let net = [
        "--tls-verify=false",
        "--authfile",
        "/nonexistent/strata-test-auth.json",
    ];
    let a = work.join("a");
    ok(
        &a,
        &["load", "-i", fx.join("img.docker.tar").to_str().unwrap()],
    );
    let dest = format!("{host}/test/img:1");
    let mut args = vec!["push"];
    args.extend(net);
    args.extend(["localhost/strata-test:two", dest.as_str()]);
    let digest = ok(&a, &args);
    assert!(digest.trim().starts_with("sha256:"), "{digest}");
    let pol = policy(&work);
    let inspect = run(Command::new("skopeo")
        .arg("--policy")
        .arg(&pol)
        .args(["inspect", "--tls-verify=false"])
        .arg(format!("docker://{dest}")));
    assert!(inspect.contains(digest.trim()), "{inspect}");

    let b = work.join("b");
    let mut args = vec!["pull"];
    args.extend(net);
    args.push(dest.as_str());
    let id = ok(&b, &args);
    let id_a = ok(&a, &["images", "-q"]);
    assert!(
        id.trim().starts_with("sha256:") && id.trim()[7..19] == *id_a.trim(),
        "{id} vs {id_a}"
    );
    let ins: serde_json::Value = serde_json::from_str(&ok(&b, &["inspect", id.trim()])).unwrap();
    let rd = ins[0]["RepoDigests"][0]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(rd.ends_with(&format!("@{}", digest.trim())), "{ins}");
    let theirs = tree(&umoci_rootfs(
        &fx.join("img.oci"),
        "two",
        &work.join("bundle"),
    ));
    assert_eq!(union_tree(&image_layers(&b, id.trim())), theirs);
    // Again: nothing to transfer.
    let o = strata(&b, &args);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let err = String::from_utf8_lossy(&o.stderr);
    // The registry client skips both layer blobs, and the store unpacks nothing.
    assert!(
        err.matches("Already exists").count() >= 2 && !err.contains(": Loaded"),
        "{err}"
    );
    assert!(ok(&b, &["fsck"]).contains("clean"));
}

/// Size of the whole store's files under `dir` that a pull is writing (its scratch layout).
fn bytes_under(dir: &std::path::Path) -> u64 {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return 0;
    };
    rd.flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => bytes_under(&e.path()),
            Ok(_) => e.metadata().map(|m| m.len()).unwrap_or(0),
            Err(_) => 0,
        })
        .sum()
}

#[test]
fn pull_interrupted_by_a_dead_registry_leaves_the_store_clean_and_a_second_pull_finishes() {
    if let Some(why) = support::skip_reason() {
        skip(&why);
        return;
    }
    let work = tmpdir("registry-kill");
    let images = support::TestImages::build(&work, 160 << 20).expect("build a 160 MiB image");
    let reg = support::Registry::start(&work, None).expect("start docker-registry");
    let dest = format!("{}/test/big:1", reg.host());
    images.skopeo_push("big", &dest, None).expect("skopeo push");

    let root = work.join("store");
    ok(&root, &["images"]);
    let mut child = Command::new(env!("CARGO_BIN_EXE_strata"))
        .arg("--root")
        .arg(&root)
        .args([
            "pull",
            "--tls-verify=false",
            "--authfile",
            "/nonexistent/auth.json",
            &dest,
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn strata pull");
    // Kill the registry once the download is under way.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while bytes_under(&root.join("tmp")) < (8 << 20) {
        assert!(
            std::time::Instant::now() < deadline,
            "the pull never started downloading"
        );
        if child.try_wait().expect("wait").is_some() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    reg.kill();
    let out = child.wait_with_output().expect("wait for strata pull");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "the pull succeeded although the registry died: {err}"
    );
    let last = err.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("strata: "),
        "no one-line error at the end: {err}"
    );
    assert!(
        ok(&root, &["images", "-q"]).trim().is_empty(),
        "an image appeared"
    );
    assert!(ok(&root, &["fsck"]).contains("clean"));
    assert_eq!(
        bytes_under(&root.join("layers")),
        0,
        "a layer was stored half-way"
    );

    eprintln!("first pull: {err}");
    reg.restart().expect("restart docker-registry");
    let id = ok(
        &root,
        &[
            "pull",
            "--tls-verify=false",
            "--authfile",
            "/nonexistent/auth.json",
            &dest,
        ],
    );
    assert!(id.trim().starts_with("sha256:"), "{id}");
    assert!(ok(&root, &["fsck"]).contains("clean"));
    assert_eq!(ok(&root, &["images", "-q"]).lines().count(), 1);
}
