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
        eprintln!("SKIP: {why}");
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
