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

/// Writes the test credential helper `docker-credential-strtest` into `dir`: every call is
/// appended to `dir/calls.log`; `get` prints `dir/answer.json` (or fails with the text of
/// `dir/fail`, or says "not found" when neither exists), `store` keeps its input in
/// `dir/stored.json`, `erase` removes it.
fn write_strtest_helper(dir: &std::path::Path) {
    use std::os::unix::fs::PermissionsExt;
    let d = dir.display();
    let script = format!(
        r#"#!/bin/sh
input=$(cat)
echo "$1 $input" >> {d}/calls.log
case "$1" in
get)
  if [ -f {d}/fail ]; then cat {d}/fail; exit 1; fi
  if [ -f {d}/answer.json ]; then cat {d}/answer.json; exit 0; fi
  echo "credentials not found in native keychain"; exit 1 ;;
store) printf %s "$input" > {d}/stored.json ;;
erase)
  if [ -f {d}/stored.json ]; then rm {d}/stored.json; exit 0; fi
  echo "credentials not found in native keychain"; exit 1 ;;
*) echo "unknown verb $1"; exit 2 ;;
esac
"#
    );
    let p = dir.join("docker-credential-strtest");
    std::fs::write(&p, script).expect("write the helper");
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).expect("chmod");
}

#[test]
fn credential_helpers_give_pull_its_credentials_and_keep_logins() {
    if let Some(why) = support::skip_reason() {
        skip(&why);
        return;
    }
    if !have("htpasswd") {
        skip("htpasswd (apache2-utils) is not installed");
        return;
    }
    let work = tmpdir("credhelper");
    let reg = support::Registry::start(&work, Some(("alice", "wonderland")))
        .expect("start docker-registry");
    let host = reg.host();
    let images = support::TestImages::build(&work, 0).expect("build the test image");
    let dest = format!("{host}/test/helped:1");
    images
        .skopeo_push("base", &dest, Some("alice:wonderland"))
        .expect("skopeo push");

    let bin = work.join("helper-bin");
    std::fs::create_dir_all(&bin).expect("mkdir");
    write_strtest_helper(&bin);
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let auth = work.join("auth.json");
    std::fs::write(
        &auth,
        format!(r#"{{"credHelpers":{{"{host}":"strtest"}}}}"#),
    )
    .expect("write the auth file");
    let auth_s = auth.to_string_lossy().into_owned();
    let env = [
        ("PATH", path.as_str()),
        ("REGISTRY_AUTH_FILE", auth_s.as_str()),
    ];
    let calls = || std::fs::read_to_string(bin.join("calls.log")).unwrap_or_default();
    let pull = |store: &str| {
        strata_env(
            &work.join(store),
            &["pull", "--tls-verify=false", &dest],
            &env,
        )
    };

    // The helper has the right credentials: the pull succeeds with them.
    std::fs::write(
        bin.join("answer.json"),
        format!(r#"{{"ServerURL":"{host}","Username":"alice","Secret":"wonderland"}}"#),
    )
    .expect("write the answer");
    let o = pull("a");
    assert!(
        o.status.success(),
        "pull with the helper's credentials: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(
        String::from_utf8_lossy(&o.stdout)
            .trim()
            .starts_with("sha256:")
    );
    assert_eq!(
        calls()
            .lines()
            .filter(|l| *l == format!("get {host}"))
            .count(),
        1,
        "the helper was asked once, for the registry: {}",
        calls()
    );

    // Wrong credentials from the helper: a clear error naming it.
    std::fs::write(
        bin.join("answer.json"),
        format!(r#"{{"ServerURL":"{host}","Username":"alice","Secret":"nope"}}"#),
    )
    .expect("write the answer");
    let o = pull("b");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "pull with wrong credentials succeeded");
    assert!(
        err.contains("wrong username or password")
            && err.contains("docker-credential-strtest")
            && err.contains(&host),
        "{err}"
    );
    assert_eq!(calls().lines().count(), 2, "{}", calls());

    // A helper that fails: its message, and the helper's name.
    std::fs::write(bin.join("fail"), "the keyring is locked\n").expect("write fail");
    let o = pull("c");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(
        err.contains("docker-credential-strtest") && err.contains("the keyring is locked"),
        "{err}"
    );
    std::fs::remove_file(bin.join("fail")).expect("rm fail");

    // No credentials in the helper: anonymous, which this registry refuses.
    std::fs::remove_file(bin.join("answer.json")).expect("rm answer");
    let o = pull("d");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("requires authentication"),
        "{err}"
    );

    // `credsStore`: login stores through the helper (no secret in the file), pull gets
    // them back from it, logout erases them.
    std::fs::write(&auth, r#"{"credsStore":"strtest"}"#).expect("write the auth file");
    let o = strata_env(
        &work.join("e"),
        &[
            "login",
            "--tls-verify=false",
            "-u",
            "alice",
            "-p",
            "wonderland",
            &host,
        ],
        &env,
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "login: {err}");
    assert!(err.contains("docker-credential-strtest"), "{err}");
    let stored: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(bin.join("stored.json")).expect("the helper stored"),
    )
    .expect("stored JSON");
    assert_eq!(stored["ServerURL"], host.as_str());
    assert_eq!(stored["Username"], "alice");
    assert_eq!(stored["Secret"], "wonderland");
    let file = std::fs::read_to_string(&auth).expect("read the auth file");
    assert!(!file.contains("auth\":"), "{file}");
    std::fs::copy(bin.join("stored.json"), bin.join("answer.json")).expect("cp");
    let o = pull("e");
    assert!(
        o.status.success(),
        "pull after login: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let o = strata_env(&work.join("e"), &["logout", &host], &env);
    assert!(
        o.status.success(),
        "logout: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(!bin.join("stored.json").exists(), "logout erased nothing");
    assert!(
        calls().lines().any(|l| l == format!("erase {host}")),
        "{}",
        calls()
    );
    let _ = std::fs::remove_dir_all(&work);
}
