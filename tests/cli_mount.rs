//! End to end through a real FUSE mount: load -> mount -> the tree equals `umoci unpack`;
//! change files -> commit (paused through the control socket) -> save -> skopeo/umoci see
//! the change; umount, mount again keeps the changes; ps, rm. Also as an unprivileged user.
//! Skips (with the reason printed) when /dev/fuse is missing or the driver is the stub.

mod common;
use common::*;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

/// Mount; `None` with a printed reason when mounting is impossible here.
fn try_mount(root: &Path, args: &[&str], env_as: Option<&[&str]>) -> Option<String> {
    if !Path::new("/dev/fuse").exists() {
        skip("/dev/fuse is missing");
        return None;
    }
    let o = match env_as {
        None => strata(root, args),
        Some(prefix) => Command::new(prefix[0])
            .args(&prefix[1..])
            .arg(env!("CARGO_BIN_EXE_strata"))
            .args(args)
            .output()
            .unwrap(),
    };
    let err = String::from_utf8_lossy(&o.stderr);
    if !o.status.success() && err.contains("not implemented yet") {
        skip(&format!("the FUSE driver is not in this build ({err})"));
        return None;
    }
    assert!(o.status.success(), "mount failed: {err}");
    Some(String::from_utf8_lossy(&o.stdout).trim().to_string())
}

#[test]
fn mount_change_commit_save_umount_mount_again_rm() {
    let Some(fx) = fixtures() else { return };
    let work = tmpdir("mount");
    let root = work.join("store");
    ok(
        &root,
        &["load", "-i", fx.join("img.docker.tar").to_str().unwrap()],
    );
    let mp = work.join("mnt");
    let Some(out) = try_mount(
        &root,
        &[
            "mount",
            "--name",
            "m1",
            "localhost/strata-test:two",
            mp.to_str().unwrap(),
        ],
        None,
    ) else {
        assert!(
            ok(&root, &["ps", "-q"]).trim().is_empty(),
            "a failed mount left a container"
        );
        return;
    };
    assert_eq!(out, mp.to_str().unwrap());
    let theirs = tree(&umoci_rootfs(
        &fx.join("img.oci"),
        "two",
        &work.join("bundle"),
    ));
    assert_eq!(tree(&mp), theirs);
    std::fs::write(mp.join("etc/greeting"), "mounted change\n").unwrap();
    std::fs::remove_file(mp.join("data/keep.txt")).unwrap();
    std::fs::remove_dir_all(mp.join("usr")).unwrap();
    std::fs::create_dir(mp.join("usr")).unwrap();
    std::fs::write(mp.join("usr/new"), "n\n").unwrap();
    assert!(
        ok(&root, &["ps"])
            .lines()
            .any(|l| l.contains("m1") && l.contains(" yes "))
    );
    let d = ok(&root, &["diff", "m1"]);
    for l in ["C /etc/greeting", "D /data/keep.txt", "A /usr/new"] {
        assert!(d.lines().any(|x| x == l), "{l} missing in {d}");
    }
    let o = strata(&root, &["commit", "m1", "example/mounted:1"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(
        !String::from_utf8_lossy(&o.stderr).contains("without pausing"),
        "commit did not pause"
    );
    let rootfs = saved_rootfs(&root, "example/mounted:1", &work);
    assert_eq!(
        std::fs::read_to_string(rootfs.join("etc/greeting")).unwrap(),
        "mounted change\n"
    );
    assert!(!rootfs.join("data/keep.txt").exists());
    assert!(!rootfs.join("usr/local").exists() && rootfs.join("usr/new").exists());
    ok(&root, &["umount", "m1"]);
    assert!(
        ok(&root, &["ps"])
            .lines()
            .any(|l| l.contains("m1") && l.contains(" no "))
    );
    ok(&root, &["mount", "m1"]);
    assert_eq!(
        std::fs::read_to_string(mp.join("etc/greeting")).unwrap(),
        "mounted change\n"
    );
    assert!(ok(&root, &["ps", "--format", "json"]).contains("\"Mounted\": true"));
    // The committed image mounts as a new container with the same tree.
    let mp2 = work.join("mnt2");
    ok(
        &root,
        &["mount", "example/mounted:1", mp2.to_str().unwrap()],
    );
    assert_eq!(tree(&mp2), tree(&rootfs));
    assert!(
        !strata(&root, &["rm", "m1"]).status.success(),
        "rm of a mounted container"
    );
    ok(&root, &["rm", "-f", "m1"]);
    for c in ok(&root, &["ps", "-q"]).lines() {
        ok(&root, &["rm", "-f", c]);
    }
    assert!(ok(&root, &["ps", "-q"]).trim().is_empty());
    assert!(ok(&root, &["fsck"]).contains("clean"));
}

#[test]
fn unprivileged_mount_shows_the_image_owners_and_modes() {
    let Some(fx) = fixtures() else { return };
    if !rustix::process::geteuid().is_root() || !have("setpriv") || !have("fusermount3") {
        skip("needs root with setpriv and fusermount3 to run as nobody");
        return;
    }
    // As distributions ship it, /dev/fuse is usable by everyone; this machine has it 0600.
    std::fs::set_permissions("/dev/fuse", std::fs::Permissions::from_mode(0o666))
        .expect("make /dev/fuse usable by the unprivileged user");
    let work = tmpdir("mount-unpriv");
    std::fs::set_permissions(&work, std::fs::Permissions::from_mode(0o777)).unwrap();
    let archive = work.join("img.tar");
    std::fs::copy(fx.join("img.docker.tar"), &archive).unwrap();
    std::fs::set_permissions(&archive, std::fs::Permissions::from_mode(0o644)).unwrap();
    let root = work.join("store");
    let nobody = [
        "setpriv",
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
    ];
    let as_nobody = |args: &[&str]| {
        let o = Command::new(nobody[0])
            .args(&nobody[1..])
            .arg(env!("CARGO_BIN_EXE_strata"))
            .arg("--root")
            .arg(&root)
            .args(args)
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    as_nobody(&["load", "-i", archive.to_str().unwrap()]);
    let mp = work.join("mnt");
    let root_s = root.to_str().unwrap().to_string();
    let Some(_) = try_mount(
        &root,
        &[
            "--root",
            &root_s,
            "mount",
            "--name",
            "u1",
            "localhost/strata-test:two",
            mp.to_str().unwrap(),
        ],
        Some(&nobody),
    ) else {
        return;
    };
    // Read through the mount as nobody (no allow_other): stat of the setuid busybox.
    let o = Command::new(nobody[0])
        .args(&nobody[1..])
        .args([
            "stat",
            "-c",
            "%u:%g:%a",
            mp.join("bin/busybox").to_str().unwrap(),
        ])
        .output()
        .unwrap();
    let seen = String::from_utf8_lossy(&o.stdout).trim().to_string();
    as_nobody(&["umount", "u1"]);
    as_nobody(&["rm", "u1"]);
    assert_eq!(seen, "0:0:4755", "{}", String::from_utf8_lossy(&o.stderr));
}

#[test]
fn renaming_a_lower_dir_in_the_mount_commits_its_contents() {
    let Some(fx) = fixtures() else { return };
    let work = tmpdir("mount-rename");
    let root = work.join("store");
    ok(
        &root,
        &["load", "-i", fx.join("img.docker.tar").to_str().unwrap()],
    );
    let mp = work.join("mnt");
    let Some(_) = try_mount(
        &root,
        &[
            "mount",
            "--name",
            "mv",
            "localhost/strata-test:two",
            mp.to_str().unwrap(),
        ],
        None,
    ) else {
        return;
    };
    std::fs::rename(mp.join("data"), mp.join("moved")).unwrap();
    std::fs::rename(mp.join("moved/sub"), mp.join("moved/sub2")).unwrap();
    std::fs::remove_file(mp.join("moved/keep.txt")).unwrap();
    let d = ok(&root, &["diff", "mv"]);
    ok(&root, &["commit", "mv", "example/moved:1"]);
    ok(&root, &["umount", "mv"]);
    ok(&root, &["rm", "mv"]);
    assert_eq!(
        d.lines().collect::<Vec<_>>(),
        ["D /data", "A /moved", "A /moved/sub2", "A /moved/sub2/file"],
        "{d}"
    );
    let rootfs = saved_rootfs(&root, "example/moved:1", &work);
    assert!(!rootfs.join("data").exists());
    assert_eq!(
        std::fs::read_to_string(rootfs.join("moved/sub2/file")).unwrap(),
        "sub\n"
    );
    assert!(!rootfs.join("moved/keep.txt").exists() && !rootfs.join("moved/sub").exists());
}

/// A lower file with several hard links whose one name is changed in a mount: every name shows
/// the change (the driver's hard-link index), and so does the committed image.
#[test]
fn commit_carries_the_other_names_of_a_changed_hard_linked_file() {
    use std::os::unix::fs::MetadataExt;
    if fixtures().is_none() {
        return;
    }
    let work = tmpdir("mount-hardlinks");
    let root = work.join("store");
    let src = work.join("rootfs");
    std::fs::create_dir_all(src.join("d")).unwrap();
    std::fs::write(src.join("a"), "shared\n").unwrap();
    std::fs::hard_link(src.join("a"), src.join("b")).unwrap();
    std::fs::hard_link(src.join("a"), src.join("d/c")).unwrap();
    std::fs::write(src.join("other"), "other\n").unwrap();
    std::fs::hard_link(src.join("other"), src.join("other2")).unwrap();
    ok(&root, &["import", src.to_str().unwrap(), "example/links:1"]);
    let mp = work.join("mnt");
    let Some(_) = try_mount(
        &root,
        &[
            "mount",
            "--name",
            "h1",
            "example/links:1",
            mp.to_str().unwrap(),
        ],
        None,
    ) else {
        return;
    };
    run(Command::new("sh").arg("-c").arg(format!(
        "echo more >> {}/a && rm {}/d/c",
        mp.display(),
        mp.display()
    )));
    assert_eq!(
        std::fs::read_to_string(mp.join("b")).unwrap(),
        "shared\nmore\n"
    );
    assert_eq!(std::fs::metadata(mp.join("b")).unwrap().nlink(), 2);
    let diff = ok(&root, &["diff", "h1"]);
    let lines: Vec<&str> = diff.lines().collect();
    assert_eq!(lines, ["C /a", "C /b", "C /d", "D /d/c"], "{diff}");
    ok(&root, &["commit", "h1", "example/links:2"]);
    ok(&root, &["rm", "-f", "h1"]);

    // The committed image, read back by umoci from a skopeo copy of the saved archive.
    let rootfs = saved_rootfs(&root, "example/links:2", &work);
    for name in ["a", "b"] {
        assert_eq!(
            std::fs::read_to_string(rootfs.join(name)).unwrap(),
            "shared\nmore\n",
            "{name} in the committed image"
        );
    }
    assert!(!rootfs.join("d/c").exists(), "removed name came back");
    let (a, b) = (
        std::fs::metadata(rootfs.join("a")).unwrap(),
        std::fs::metadata(rootfs.join("b")).unwrap(),
    );
    assert_eq!(a.ino(), b.ino(), "a and b are no longer one file");
    assert_eq!(
        std::fs::read_to_string(rootfs.join("other2")).unwrap(),
        "other\n"
    );
    assert_eq!(
        union_tree(&image_layers(&root, "example/links:2")),
        tree(&rootfs)
    );
}
