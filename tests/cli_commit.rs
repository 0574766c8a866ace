//! End-to-end tests of `commit` and `diff` on hand-made upper dirs (char 0/0 whiteouts,
//! `.wh.` files, opaque xattrs), read back by skopeo and umoci; and the unprivileged-user
//! variant of load and save.

mod common;
use common::*;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

fn setup(name: &str) -> Option<(&'static Path, std::path::PathBuf)> {
    let fx = fixtures()?;
    Some((fx, tmpdir(name)))
}

fn make_upper(upper: &Path, rootless: bool) {
    use std::os::unix::fs::symlink;
    std::fs::create_dir_all(upper.join("etc")).unwrap();
    std::fs::create_dir_all(upper.join("data")).unwrap();
    std::fs::write(upper.join("etc/greeting"), "changed\n").unwrap();
    std::fs::write(upper.join("hello.txt"), "new file\n").unwrap();
    symlink("hello.txt", upper.join("hello.link")).unwrap();
    // Deletion: a whiteout (char 0/0 as root; `.wh.` file fallback rootless).
    if rootless {
        std::fs::write(upper.join("data/.wh.keep.txt"), "").unwrap();
    } else {
        rustix::fs::mknodat(
            rustix::fs::CWD,
            upper.join("data/keep.txt"),
            rustix::fs::FileType::CharacterDevice,
            rustix::fs::Mode::empty(),
            0,
        )
        .unwrap();
    }
    // Replaced directory: opaque.
    std::fs::create_dir_all(upper.join("usr")).unwrap();
    let opq = if rootless {
        "user.overlay.opaque"
    } else {
        "trusted.overlay.opaque"
    };
    strata::image::fsutil::set_xattr(&upper.join("usr"), opq, b"y").unwrap();
    std::fs::write(upper.join("usr/only"), "only\n").unwrap();
    // A long path (GNU long-name records) and a user xattr (PAX SCHILY.xattr).
    let long = upper.join(LONG);
    std::fs::create_dir_all(long.parent().unwrap()).unwrap();
    std::fs::write(&long, "deep\n").unwrap();
    strata::image::fsutil::set_xattr(&upper.join("hello.txt"), "user.note", b"kept").unwrap();
}

const LONG: &str = "long/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa/bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb/file-with-a-long-name.txt";

fn commit_roundtrip(rootless: bool) {
    let Some((fx, work)) = setup(if rootless {
        "commit-rootless"
    } else {
        "commit"
    }) else {
        return;
    };
    let root = work.join("store");
    let env: &[(&str, &str)] = if rootless {
        &[("STRATA_ROOTLESS", "1")]
    } else {
        &[]
    };
    let o = strata_env(
        &root,
        &["load", "-i", fx.join("img.docker.tar").to_str().unwrap()],
        env,
    );
    assert!(o.status.success());
    let store = strata::store::Store::open(&root).unwrap();
    let c = store
        .create_container("localhost/strata-test:two", Some("c1"), None)
        .unwrap();
    make_upper(&store.container_dir(&c).join("upper"), rootless);
    let diff = ok(&root, &["diff", "c1"]);
    for line in [
        "C /etc",
        "C /etc/greeting",
        "A /hello.txt",
        "A /hello.link",
        "D /data/keep.txt",
        "C /usr",
        "D /usr/local",
    ] {
        assert!(
            diff.lines().any(|l| l == line),
            "missing {line:?} in diff:\n{diff}"
        );
    }
    let id1 = ok(
        &root,
        &[
            "commit",
            "-m",
            "my change",
            "-a",
            "Tester",
            "-c",
            r#"CMD ["/bin/echo","hi"]"#,
            "-c",
            "ENV FOO=bar",
            "-c",
            "LABEL stage=three",
            "c1",
            "example/committed:1",
        ],
    );
    let id2 = ok(&root, &["commit", "c1", "example/committed:2"]);
    // Same upper -> same layer digest.
    let i1: serde_json::Value =
        serde_json::from_str(&ok(&root, &["inspect", "example/committed:1"])).unwrap();
    let i2: serde_json::Value =
        serde_json::from_str(&ok(&root, &["inspect", "example/committed:2"])).unwrap();
    assert_eq!(i1[0]["RootFS"]["Layers"][2], i2[0]["RootFS"]["Layers"][2]);
    assert_eq!(i1[0]["RootFS"]["Layers"].as_array().unwrap().len(), 3);
    assert_eq!(i1[0]["Id"].as_str().unwrap(), id1.trim());
    assert_ne!(id1.trim(), id2.trim());
    assert_eq!(i1[0]["Author"], "Tester");
    assert_eq!(i1[0]["Comment"], "my change");
    assert_eq!(
        i1[0]["Config"]["Cmd"],
        serde_json::json!(["/bin/echo", "hi"])
    );
    assert!(
        i1[0]["Config"]["Env"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e == "FOO=bar")
    );
    assert_eq!(i1[0]["Config"]["Labels"]["stage"], "three");
    let hist = ok(&root, &["history", "example/committed:1"]);
    assert!(hist.lines().nth(1).unwrap().contains("my change"), "{hist}");
    // Save, read with skopeo, unpack with umoci: the change and the deletions are there.
    let rootfs = saved_rootfs(&root, "example/committed:1", &work);
    assert_eq!(
        std::fs::read_to_string(rootfs.join("etc/greeting")).unwrap(),
        "changed\n"
    );
    assert_eq!(
        std::fs::read_to_string(rootfs.join("hello.txt")).unwrap(),
        "new file\n"
    );
    assert_eq!(
        std::fs::read_link(rootfs.join("hello.link")).unwrap(),
        Path::new("hello.txt")
    );
    assert!(!rootfs.join("data/keep.txt").exists(), "whiteout lost");
    assert!(rootfs.join("data/sub/file").exists());
    assert!(!rootfs.join("usr/local").exists(), "opaque dir lost");
    assert!(rootfs.join("usr/only").exists());
    assert!(rootfs.join("bin/busybox").exists());
    assert_eq!(
        std::fs::read_to_string(rootfs.join(LONG)).unwrap(),
        "deep\n"
    );
    let note = strata::image::fsutil::get_xattr(&rootfs.join("hello.txt"), "user.note").unwrap();
    assert_eq!(note.as_deref(), Some(&b"kept"[..]));
    // Our own union of the committed image matches umoci's view.
    assert_eq!(
        union_tree(&image_layers(&root, "example/committed:1")),
        tree(&rootfs)
    );
    assert!(ok(&root, &["fsck"]).contains("clean"));
}

#[test]
fn commit_hand_made_upper_roundtrips_through_skopeo_and_umoci() {
    commit_roundtrip(false);
}

#[test]
fn commit_rootless_upper_roundtrips() {
    commit_roundtrip(true);
}

/// The real thing: an unprivileged user (nobody, via setpriv when the tests run as root).
#[test]
fn unprivileged_user_load_save_roundtrip() {
    let Some((fx, work)) = setup("unpriv") else {
        return;
    };
    let is_root = rustix::process::geteuid().is_root();
    if is_root && !have("setpriv") {
        skip("running as root without setpriv to drop privileges");
        return;
    }
    std::fs::set_permissions(&work, std::fs::Permissions::from_mode(0o777)).unwrap();
    let archive = work.join("img.docker.tar");
    std::fs::copy(fx.join("img.docker.tar"), &archive).unwrap();
    std::fs::set_permissions(&archive, std::fs::Permissions::from_mode(0o644)).unwrap();
    let xdg = work.join("xdg");
    let run_as = |args: &[&str]| -> std::process::Output {
        let mut c = if is_root {
            let mut c = Command::new("setpriv");
            c.args([
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                env!("CARGO_BIN_EXE_strata"),
            ]);
            c
        } else {
            Command::new(env!("CARGO_BIN_EXE_strata"))
        };
        c.args(args)
            .env("XDG_DATA_HOME", &xdg)
            .env("HOME", &work)
            .env_remove("STRATA_ROOT");
        c.output().unwrap()
    };
    let o = run_as(&["load", "-i", archive.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let root = xdg.join("strata");
    assert!(
        root.join("tags.json").is_file(),
        "store not in $XDG_DATA_HOME/strata"
    );
    let layers = image_layers(&root, "localhost/strata-test:two");
    let bb = layers[1].join("bin/busybox");
    let v = strata::image::fsutil::get_xattr(&bb, "user.containers.override_stat").unwrap();
    assert_eq!(v.as_deref(), Some(&b"0:0:4755"[..]));
    let theirs = tree(&umoci_rootfs(
        &fx.join("img.oci"),
        "two",
        &work.join("bundle"),
    ));
    // Symlinks cannot carry `user.` xattrs: their owner stays the user's (a known limit of
    // rootless unpacking; a user namespace shows them as root's). Everything else matches.
    let ours: Vec<String> = union_tree(&layers)
        .into_iter()
        .map(|l| {
            if l.contains(" symlink->") {
                l.replace(" 65534:65534 ", " 0:0 ")
            } else {
                l
            }
        })
        .collect();
    assert!(
        union_tree(&layers)
            .iter()
            .any(|l| l.starts_with("bin/sh symlink->busybox 0777 65534:65534"))
    );
    assert_eq!(ours, theirs);
    let out = work.join("saved.tar");
    let o = run_as(&[
        "save",
        "-o",
        out.to_str().unwrap(),
        "localhost/strata-test:two",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let pol = policy(&work);
    run(Command::new("skopeo")
        .arg("--policy")
        .arg(&pol)
        .arg("copy")
        .arg("-q")
        .arg(format!("docker-archive:{}", out.display()))
        .arg(format!("oci:{}:u", work.join("sk").display())));
    assert_eq!(
        tree(&umoci_rootfs(&work.join("sk"), "u", &work.join("b2"))),
        theirs
    );
    let o = run_as(&["fsck"]);
    assert!(o.status.success() && String::from_utf8_lossy(&o.stdout).contains("clean"));
}

/// A directory renamed in the mount (the driver records `overlay.redirect`, like the kernel)
/// is committed with its lower contents at the new name, and its old name deleted.
fn renamed_dir_roundtrip(rootless: bool) {
    let Some((fx, work)) = setup(if rootless {
        "rename-rootless"
    } else {
        "rename"
    }) else {
        return;
    };
    let root = work.join("store");
    let env: &[(&str, &str)] = if rootless {
        &[("STRATA_ROOTLESS", "1")]
    } else {
        &[]
    };
    assert!(
        strata_env(
            &root,
            &["load", "-i", fx.join("img.docker.tar").to_str().unwrap()],
            env
        )
        .status
        .success()
    );
    let store = strata::store::Store::open(&root).unwrap();
    let c = store
        .create_container("localhost/strata-test:two", Some("r1"), None)
        .unwrap();
    let up = store.container_dir(&c).join("upper");
    let prefix = if rootless {
        "user.overlay."
    } else {
        "trusted.overlay."
    };
    let whiteout = |dir: &Path, name: &str| {
        if rootless {
            std::fs::write(dir.join(format!(".wh.{name}")), "").unwrap();
        } else {
            rustix::fs::mknodat(
                rustix::fs::CWD,
                dir.join(name),
                rustix::fs::FileType::CharacterDevice,
                rustix::fs::Mode::empty(),
                0,
            )
            .unwrap();
        }
    };
    // mv /data /moved; mv /moved/sub /moved/sub2; rm /moved/keep.txt; echo x > /moved/extra
    whiteout(&up, "data");
    std::fs::create_dir_all(up.join("moved/sub2")).unwrap();
    strata::image::fsutil::set_xattr(&up.join("moved"), &format!("{prefix}redirect"), b"/data")
        .unwrap();
    strata::image::fsutil::set_xattr(&up.join("moved/sub2"), &format!("{prefix}redirect"), b"sub")
        .unwrap();
    whiteout(&up.join("moved"), "sub");
    whiteout(&up.join("moved"), "keep.txt");
    std::fs::write(up.join("moved/extra"), "x").unwrap();
    let diff = ok(&root, &["diff", "r1"]);
    let lines: Vec<&str> = diff.lines().collect();
    assert_eq!(
        lines,
        [
            "D /data",
            "A /moved",
            "A /moved/extra",
            "A /moved/sub2",
            "A /moved/sub2/file"
        ],
        "{diff}"
    );
    // explain follows the rename down to the lower layer that holds the data.
    let ex = ok(&root, &["explain", "r1", "/moved/sub2/file"]);
    let provider = ex
        .lines()
        .find(|l| l.contains("provides the path"))
        .unwrap_or_default();
    assert!(provider.contains("(at /data/sub/file)"), "{ex}");
    ok(&root, &["commit", "r1", "example/renamed:1"]);
    let rootfs = saved_rootfs(&root, "example/renamed:1", &work);
    assert!(!rootfs.join("data").exists(), "old name still there");
    assert_eq!(
        std::fs::read_to_string(rootfs.join("moved/extra")).unwrap(),
        "x"
    );
    assert_eq!(
        std::fs::read_to_string(rootfs.join("moved/sub2/file")).unwrap(),
        "sub\n"
    );
    assert!(!rootfs.join("moved/keep.txt").exists() && !rootfs.join("moved/sub").exists());
    assert!(
        !rootfs.join("moved/gone.txt").exists(),
        "a file deleted in a lower layer came back"
    );
    assert_eq!(
        union_tree(&image_layers(&root, "example/renamed:1")),
        tree(&rootfs)
    );
}

#[test]
fn commit_of_a_renamed_lower_dir_keeps_its_contents() {
    renamed_dir_roundtrip(false);
}

#[test]
fn commit_of_a_renamed_lower_dir_keeps_its_contents_rootless() {
    renamed_dir_roundtrip(true);
}
