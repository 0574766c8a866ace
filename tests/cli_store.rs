//! End-to-end tests of the `strata` CLI that need no FUSE mount: load (docker-archive, OCI
//! layout, stdin), verification and tampering, save read back by skopeo and umoci, commit of
//! a hand-made upper, diff, import, tags, prune, fsck, explain, and the rootless variants.

mod common;
use common::*;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

fn setup(name: &str) -> Option<(&'static Path, std::path::PathBuf)> {
    let fx = fixtures()?;
    Some((fx, tmpdir(name)))
}

#[test]
fn load_docker_archive_equals_umoci_unpack() {
    let Some((fx, work)) = setup("load-docker") else {
        return;
    };
    let root = work.join("store");
    let out = ok(
        &root,
        &["load", "-i", fx.join("img.docker.tar").to_str().unwrap()],
    );
    assert!(
        out.contains("Loaded image: localhost/strata-test:two"),
        "{out}"
    );
    let ours = union_tree(&image_layers(&root, "localhost/strata-test:two"));
    let theirs = tree(&umoci_rootfs(
        &fx.join("img.oci"),
        "two",
        &work.join("bundle"),
    ));
    assert!(
        theirs.len() >= 12 && theirs.iter().any(|l| l.starts_with("etc/added ")),
        "{theirs:?}"
    );
    assert_eq!(ours, theirs);
    // The second layer really has both whiteout kinds in overlay format.
    let layers = image_layers(&root, "localhost/strata-test:two");
    let top = &layers[0];
    assert!(strata::image::fsutil::is_whiteout_dev(
        &top.join("data/gone.txt").symlink_metadata().unwrap()
    ));
    if fx.join("buildah/root/overlay").exists() {
        assert!(
            strata::image::fsutil::is_opaque_dir(&top.join("olddir")),
            "olddir should be opaque"
        );
    }
    assert!(
        ours.iter()
            .any(|l| l.starts_with("bin/busybox file:") && l.contains(" 4755 0:0")),
        "{ours:?}"
    );
    assert!(
        !ours
            .iter()
            .any(|l| l.starts_with("data/gone.txt") || l.starts_with("olddir/a"))
    );
    assert_eq!(
        ok(&root, &["fsck"])
            .lines()
            .last()
            .unwrap()
            .split(':')
            .next(),
        Some("clean")
    );
}

#[test]
fn load_oci_layout_dir_tar_and_stdin_with_already_exists() {
    let Some((fx, work)) = setup("load-oci") else {
        return;
    };
    let root = work.join("store");
    let o = strata(&root, &["load", "-i", fx.join("img.oci").to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("Loaded image: img:two") && out.contains("Loaded image: img:one"),
        "{out}"
    );
    // Same image from a docker-archive through stdin: layers already exist.
    let f = std::fs::File::open(fx.join("img.docker.tar")).unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_strata"))
        .arg("--root")
        .arg(&root)
        .arg("load")
        .stdin(f)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(err.matches("Already exists").count(), 2, "{err}");
    // OCI layout as a gzipped tar.
    let tgz = work.join("layout.tar.gz");
    run(Command::new("sh").arg("-c").arg(format!(
        "tar -C {} -czf {} .",
        fx.join("img.oci").display(),
        tgz.display()
    )));
    let o = strata(&work.join("store2"), &["load", "-i", tgz.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let images = ok(&root, &["images", "--format", "json"]);
    let v: serde_json::Value = serde_json::from_str(&images).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 3, "{images}");
    let layers_dir = std::fs::read_dir(root.join("layers")).unwrap().count();
    assert_eq!(layers_dir, 2, "a shared layer is stored once");
    let fsck = ok(&root, &["fsck"]);
    assert!(fsck.contains("clean"), "{fsck}");
}

#[test]
fn tampered_archives_fail_and_leave_the_store_unchanged() {
    let Some((fx, work)) = setup("tamper") else {
        return;
    };
    let root = work.join("store");
    ok(&root, &["load", "-i", fx.join("img.oci").to_str().unwrap()]);
    ok(&root, &["rmi", "img:one"]);
    let before = snapshot(&root);
    // docker-archive: flip a byte inside the second layer's file content.
    let x = work.join("x");
    std::fs::create_dir_all(&x).unwrap();
    run(Command::new("tar")
        .arg("-xf")
        .arg(fx.join("img.docker.tar"))
        .arg("-C")
        .arg(&x));
    let m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(x.join("manifest.json")).unwrap()).unwrap();
    let layer = m[0]["Layers"][0].as_str().unwrap().to_string();
    let lp = x.join(&layer);
    let mut perm = std::fs::metadata(&lp).unwrap().permissions();
    perm.set_mode(0o644);
    std::fs::set_permissions(&lp, perm).unwrap();
    let mut data = std::fs::read(&lp).unwrap();
    let pos = data
        .windows(5)
        .position(|w| w == b"hello")
        .expect("greeting in layer");
    data[pos] = b'j';
    std::fs::write(&lp, &data).unwrap();
    let bad = work.join("bad.tar");
    run(Command::new("sh").arg("-c").arg(format!(
        "cd {} && tar -cf {} *",
        x.display(),
        bad.display()
    )));
    let o = strata(&root, &["load", "-i", bad.to_str().unwrap()]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains(&layer) && err.contains("mismatch"),
        "error must name the layer: {err}"
    );
    assert_eq!(
        snapshot(&root),
        before,
        "a failed load left something in the store"
    );
    // OCI layout: a blob whose content no longer matches its digest.
    let oci = work.join("oci");
    run(Command::new("cp")
        .arg("-a")
        .arg(fx.join("img.oci"))
        .arg(&oci));
    let idx: serde_json::Value =
        serde_json::from_slice(&std::fs::read(oci.join("index.json")).unwrap()).unwrap();
    let mdg = idx["manifests"][0]["digest"]
        .as_str()
        .unwrap()
        .trim_start_matches("sha256:")
        .to_string();
    let man: serde_json::Value =
        serde_json::from_slice(&std::fs::read(oci.join("blobs/sha256").join(&mdg)).unwrap())
            .unwrap();
    let ldg = man["layers"][1]["digest"].as_str().unwrap().to_string();
    let bp = oci
        .join("blobs/sha256")
        .join(ldg.trim_start_matches("sha256:"));
    let mut perm = std::fs::metadata(&bp).unwrap().permissions();
    perm.set_mode(0o644);
    std::fs::set_permissions(&bp, perm).unwrap();
    let mut b = std::fs::read(&bp).unwrap();
    b.push(0);
    std::fs::write(&bp, &b).unwrap();
    let o = strata(
        &work.join("store-oci"),
        &["load", "-i", oci.to_str().unwrap()],
    );
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains(&ldg), "error must name the layer {ldg}: {err}");
    assert!(
        ok(&work.join("store-oci"), &["images", "-q"])
            .trim()
            .is_empty()
    );
    assert!(ok(&root, &["fsck"]).contains("clean"));
}

#[test]
fn save_is_read_by_skopeo_and_umoci() {
    let Some((fx, work)) = setup("save") else {
        return;
    };
    let root = work.join("store");
    ok(
        &root,
        &["load", "-i", fx.join("img.docker.tar").to_str().unwrap()],
    );
    ok(
        &root,
        &["tag", "localhost/strata-test:two", "example/saved:v1"],
    );
    let pol = policy(&work);
    let da = work.join("out.tar");
    ok(
        &root,
        &["save", "-o", da.to_str().unwrap(), "example/saved:v1"],
    );
    run(Command::new("skopeo")
        .arg("--policy")
        .arg(&pol)
        .arg("copy")
        .arg("-q")
        .arg(format!("docker-archive:{}:example/saved:v1", da.display()))
        .arg(format!("oci:{}:v1", work.join("sk").display())));
    let theirs = tree(&umoci_rootfs(&work.join("sk"), "v1", &work.join("b1")));
    let orig = tree(&umoci_rootfs(&fx.join("img.oci"), "two", &work.join("b0")));
    assert_eq!(theirs, orig);
    // OCI layout tar, and stdout.
    let ot = work.join("out.oci.tar");
    ok(
        &root,
        &[
            "save",
            "--format",
            "oci",
            "-o",
            ot.to_str().unwrap(),
            "example/saved:v1",
        ],
    );
    let od = work.join("od");
    std::fs::create_dir_all(&od).unwrap();
    run(Command::new("tar").arg("-xf").arg(&ot).arg("-C").arg(&od));
    let inspect = run(Command::new("skopeo")
        .arg("--policy")
        .arg(&pol)
        .arg("inspect")
        .arg(format!("oci:{}:v1", od.display())));
    assert!(inspect.contains("sha256:"), "{inspect}");
    assert_eq!(tree(&umoci_rootfs(&od, "v1", &work.join("b2"))), orig);
    // podman load accepts it too (isolated vfs storage), with the same image ID.
    if have("podman") {
        let pd = work.join("podman");
        let out = run(Command::new("podman")
            .arg("--root")
            .arg(pd.join("root"))
            .arg("--runroot")
            .arg(pd.join("run"))
            .args([
                "--storage-driver",
                "vfs",
                "--cgroup-manager",
                "cgroupfs",
                "--events-backend",
                "none",
                "load",
                "-i",
            ])
            .arg(&da)
            .env("HOME", &pd));
        assert!(out.contains("example/saved:v1"), "{out}");
        let id = run(Command::new("podman")
            .arg("--root")
            .arg(pd.join("root"))
            .arg("--runroot")
            .arg(pd.join("run"))
            .args([
                "--storage-driver",
                "vfs",
                "--events-backend",
                "none",
                "image",
                "inspect",
                "--format",
                "{{.Id}}",
                "example/saved:v1",
            ])
            .env("HOME", &pd));
        let ours = ok(&root, &["images", "--format", "json"]);
        assert!(
            ours.contains(&format!("sha256:{}", id.trim())),
            "podman id {id} not in {ours}"
        );
    } else {
        skip("podman is not installed (the podman part of this test)");
    }
    let o = strata(&root, &["save", "example/saved:v1"]);
    assert!(o.status.success());
    let root2 = work.join("store2");
    let f = work.join("stdout.tar");
    std::fs::write(&f, &o.stdout).unwrap();
    ok(&root2, &["load", "-i", f.to_str().unwrap()]);
    assert!(ok(&root2, &["images"]).contains("example/saved"));
}

#[test]
fn rootless_load_keeps_owners_and_modes_in_xattr() {
    let Some((fx, work)) = setup("rootless-load") else {
        return;
    };
    let root = work.join("store");
    let o = strata_env(
        &root,
        &["load", "-i", fx.join("img.oci").to_str().unwrap()],
        &[("STRATA_ROOTLESS", "1")],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let layers = image_layers(&root, "img:two");
    let bb = layers[1].join("bin/busybox");
    let v = strata::image::fsutil::get_xattr(&bb, "user.containers.override_stat")
        .unwrap()
        .unwrap();
    assert_eq!(String::from_utf8(v).unwrap(), "0:0:4755");
    if fx.join("buildah/root/overlay").exists() {
        let opq =
            strata::image::fsutil::get_xattr(&layers[0].join("olddir"), "user.overlay.opaque")
                .unwrap();
        assert_eq!(opq.as_deref(), Some(&b"y"[..]));
    }
    let theirs = tree(&umoci_rootfs(
        &fx.join("img.oci"),
        "two",
        &work.join("bundle"),
    ));
    assert_eq!(union_tree(&layers), theirs);
}

#[test]
fn import_tar_and_dir() {
    let Some((fx, work)) = setup("import") else {
        return;
    };
    let root = work.join("store");
    let rootfs = umoci_rootfs(&fx.join("img.oci"), "two", &work.join("bundle"));
    let id = ok(&root, &["import", rootfs.to_str().unwrap(), "imported:dir"]);
    assert!(id.trim().starts_with("sha256:"));
    assert_eq!(
        union_tree(&image_layers(&root, "imported:dir")),
        tree(&rootfs)
    );
    let tgz = work.join("rootfs.tar.gz");
    run(Command::new("tar")
        .arg("-C")
        .arg(&rootfs)
        .arg("-czf")
        .arg(&tgz)
        .arg("."));
    ok(&root, &["import", tgz.to_str().unwrap(), "imported:tar"]);
    assert_eq!(
        union_tree(&image_layers(&root, "imported:tar")),
        tree(&rootfs)
    );
    let h = ok(&root, &["history", "imported:tar"]);
    assert!(h.contains("strata import"), "{h}");
}

#[test]
fn tags_rmi_prune_explain() {
    let Some((fx, work)) = setup("tags") else {
        return;
    };
    let root = work.join("store");
    ok(&root, &["load", "-i", fx.join("img.oci").to_str().unwrap()]);
    ok(&root, &["tag", "img:two", "other:latest"]);
    let ins: serde_json::Value = serde_json::from_str(&ok(&root, &["inspect", "other"])).unwrap();
    assert_eq!(
        ins[0]["RepoTags"],
        serde_json::json!(["img:two", "other:latest"])
    );
    for k in [
        "Id",
        "RepoTags",
        "RepoDigests",
        "Created",
        "Author",
        "Comment",
        "Config",
        "Architecture",
        "Os",
        "Size",
        "RootFS",
    ] {
        assert!(ins[0].get(k).is_some(), "inspect lacks {k}");
    }
    let ex = ok(&root, &["explain", "img:two", "/data/gone.txt"]);
    assert!(ex.lines().nth(1).unwrap().contains("whiteout"), "{ex}");
    assert!(ex.lines().nth(2).unwrap().contains("hidden"), "{ex}");
    let ex = ok(&root, &["explain", "img:two", "/etc/greeting"]);
    assert!(
        ex.lines().nth(2).unwrap().contains("provides the path"),
        "{ex}"
    );
    if fx.join("buildah/root/overlay").exists() {
        let ex = ok(&root, &["explain", "img:two", "/olddir/a"]);
        assert!(ex.contains("hidden by opaque dir /olddir"), "{ex}");
    }
    let out = ok(&root, &["rmi", "img:two"]);
    assert!(
        out.contains("Untagged: img:two") && !out.contains("Deleted"),
        "{out}"
    );
    let out = ok(&root, &["rmi", "other"]);
    assert!(out.contains("Deleted: sha256:"), "{out}");
    // img:one still needs the bottom layer.
    assert_eq!(std::fs::read_dir(root.join("layers")).unwrap().count(), 1);
    std::fs::create_dir_all(root.join("tmp/tx-leftover")).unwrap();
    let fsck = ok(&root, &["fsck"]);
    assert!(
        fsck.contains("clean") && fsck.contains("leftover"),
        "{fsck}"
    );
    ok(&root, &["prune"]);
    assert_eq!(std::fs::read_dir(root.join("tmp")).unwrap().count(), 0);
    ok(&root, &["rmi", "img:one"]);
    assert_eq!(std::fs::read_dir(root.join("layers")).unwrap().count(), 0);
    assert_eq!(
        std::fs::read_dir(root.join("blobs/sha256"))
            .unwrap()
            .count(),
        0
    );
    let o = strata(&root, &["inspect", "img:one"]);
    assert!(!o.status.success());
}
