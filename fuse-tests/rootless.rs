//! Rootless mounts: strata-fuse run by an unprivileged user on layers that user owns.
//! Setup needs root (create the user, open /dev/fuse to everyone); the mount and every
//! operation then run as that user (setpriv). Results are compared with kernel overlayfs
//! mounted with `userxattr` over copies of the same layers, with the same user doing the
//! same operations; strata's upper must use the rootless on-disk format (char 0/0 whiteouts,
//! `user.overlay.opaque`, no `trusted.*` xattrs).

mod common;

use common::{
    FuseMount, KernelOverlay, Kind, Layer, SnapOpts, Workspace, diff, get_xattr, list_xattrs,
    normalised_upper, run_step_as, sh, snapshot_with,
};
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

const USER: &str = "strata-test";

/// Create the test user if missing (falling back to `nobody`) and make /dev/fuse usable by
/// everyone. Returns (uid, gid).
fn test_user() -> (u32, u32) {
    let id = |u: &str| -> Option<(u32, u32)> {
        let out = std::process::Command::new("id")
            .arg("-u")
            .arg(u)
            .output()
            .ok()?;
        let uid = String::from_utf8_lossy(&out.stdout).trim().parse().ok()?;
        let out = std::process::Command::new("id")
            .arg("-g")
            .arg(u)
            .output()
            .ok()?;
        let gid = String::from_utf8_lossy(&out.stdout).trim().parse().ok()?;
        Some((uid, gid))
    };
    if id(USER).is_none() {
        let _ = std::process::Command::new("useradd")
            .args(["-m", "-U", "-s", "/bin/sh", USER])
            .status();
    }
    sh("chmod 666 /dev/fuse");
    id(USER)
        .or_else(|| id("nobody"))
        .expect("no unprivileged user available")
}

fn chown_r(p: &Path, (uid, gid): (u32, u32)) {
    sh(&format!(
        "chown -hR {uid}:{gid} {}",
        common::shq(&p.display().to_string())
    ));
}

/// Layers owned by the user: a lower file to modify, a dir to delete, a dir to replace, an
/// existing char 0/0 whiteout and a `user.overlay.opaque` dir.
fn layers() -> (Layer, Layer) {
    let top = Layer::new()
        .file("top", "top\n")
        .whiteout("hidden")
        .user_opaque("op")
        .file("op/new", "new\n");
    let low = Layer::new()
        .file("hidden", "should not show\n")
        .file("file", "lower file\n")
        .file("ro", "ro\n")
        .file("dir/a", "a\n")
        .file("dir/sub/b", "b\n")
        .file("gone/x", "x\n")
        .file("op/old", "old\n")
        .file("mv/src", "src\n");
    (top, low)
}

const OPS: &[&str] = &[
    "id -u >/dev/null; ls -A; ls -A op",
    "cat top file op/new",
    "cat hidden op/old",
    "echo more >> file; cat file",
    "rm ro",
    "rm -rf gone",
    "rm -rf dir; mkdir dir; ls -A dir",
    "mkdir -p newdir/deep; echo n > newdir/deep/f",
    // an owner may remove its empty directory without search permission on it (stress-ng dir)
    "mkdir -m 0600 nox && rmdir nox && echo removed; ls -A",
    "mv mv/src mv/dst; cat mv/dst",
    "chmod 600 file; stat -c '%n %a' file",
    "ln -s file sym; readlink sym",
    "mkfifo fifo; stat -c '%F' fifo",
    "setfattr -n user.k -v v file; getfattr --only-values -n user.k file; echo",
    "ls -lAn . | awk 'NR>1{print $1, $3, $4, $NF}'",
    // the merged tree as the user sees it (root cannot enter a user's FUSE mount)
    "find . -printf '%y %m %U %G %s %l %p\\n' | sort",
    "find . -type f | sort | xargs md5sum",
    "find . -print0 | sort -z | xargs -0 getfattr -h -d -m user. 2>&1 | grep -v '^#'; true",
];

struct Side {
    lowers: Vec<PathBuf>,
    upper: PathBuf,
    work: PathBuf,
    mnt: PathBuf,
}

fn side(ws: &Workspace, name: &str, user: (u32, u32)) -> Side {
    let root = ws.mkdir(name);
    let (top, low) = layers();
    let lowers = vec![root.join("l0"), root.join("l1")];
    top.build(&lowers[0]);
    low.build(&lowers[1]);
    let upper = root.join("upper");
    let work = root.join("work");
    let mnt = root.join("mnt");
    for d in [&upper, &work, &mnt] {
        fs::create_dir(d).expect("mkdir");
    }
    chown_r(&root, user);
    Side {
        lowers,
        upper,
        work,
        mnt,
    }
}

fn workspace() -> Workspace {
    let ws = Workspace::new();
    // the temp dir is 0700 root: let the user traverse it
    fs::set_permissions(ws.path(), fs::Permissions::from_mode(0o755)).expect("chmod");
    ws
}

#[test]
fn rootless_ops_match_kernel_userxattr_overlay() {
    if !common::ready() {
        return;
    }
    let user = test_user();
    let ws = workspace();
    let k = side(&ws, "kernel", user);
    let s = side(&ws, "strata", user);
    let km = KernelOverlay::mount(&k.lowers, Some((&k.upper, &k.work)), &k.mnt, &["userxattr"])
        .unwrap_or_else(|e| panic!("kernel overlay (userxattr) mount failed: {e}"));
    let sm = FuseMount::mount_as(
        Some(user),
        &s.lowers,
        Some((&s.upper, &s.work)),
        &s.mnt,
        &[],
    )
    .unwrap_or_else(|e| panic!("rootless strata mount failed: {e}"));
    let mut problems = Vec::new();
    let mut report = String::new();
    for cmd in OPS {
        let kr = run_step_as(&k.mnt, cmd, Some(user), None);
        let sr = run_step_as(&s.mnt, cmd, Some(user), None);
        if (kr.status, &kr.errno, &kr.stdout) != (sr.status, &sr.errno, &sr.stdout) {
            problems.push(format!(
                "`{cmd}`: kernel status {} [{}] {:?} vs strata status {} [{}] {:?} {:?}",
                kr.status, kr.errno, kr.stdout, sr.status, sr.errno, sr.stdout, sr.stderr
            ));
        }
        report.push_str(&format!("$ {cmd}\n{}", kr.stdout));
    }
    // the kernel's view is the reference; a few facts guard the scenario itself
    assert!(
        report.contains("top\nlower file\nnew\n"),
        "kernel run unexpected:\n{report}"
    );
    assert!(
        !k.mnt.join("op/old").exists(),
        "kernel (userxattr) should honour user.overlay.opaque"
    );
    km.unmount();
    let log = sm.log_text();
    if let Err(e) = sm.unmount() {
        problems.push(format!("unmount: {e}"));
    }
    let ku = normalised_upper(&k.upper, &k.lowers);
    let su = normalised_upper(&s.upper, &s.lowers);
    problems.extend(
        diff(&ku, &su, "kernel", "strata")
            .into_iter()
            .map(|d| format!("upper {d}")),
    );
    assert!(
        problems.is_empty(),
        "rootless strata differs from kernel overlayfs:\n{}\nlog:\n{log}",
        problems.join("\n")
    );
}

#[test]
fn rootless_upper_uses_char_whiteouts_and_user_opaque_xattrs() {
    if !common::ready() {
        return;
    }
    let user = test_user();
    let ws = workspace();
    let s = side(&ws, "strata", user);
    let sm = FuseMount::mount_as(
        Some(user),
        &s.lowers,
        Some((&s.upper, &s.work)),
        &s.mnt,
        &[],
    )
    .unwrap_or_else(|e| panic!("rootless strata mount failed: {e}"));
    for cmd in [
        "rm ro",
        "rm -rf gone",
        "rm -rf dir && mkdir dir && touch dir/n",
        "echo w >> file",
    ] {
        let r = run_step_as(&s.mnt, cmd, Some(user), None);
        assert_eq!(
            r.status,
            0,
            "`{cmd}` failed as the user: {}\n{}",
            r.stderr,
            sm.log_text()
        );
    }
    let owner = run_step_as(&s.mnt, "stat -c '%u %g' file dir/n", Some(user), None);
    assert_eq!(
        owner.stdout,
        format!("{0} {1}\n{0} {1}\n", user.0, user.1),
        "owners of new/copied-up files"
    );
    sm.unmount().unwrap_or_else(|e| panic!("{e}"));

    let raw = snapshot_with(
        &s.upper,
        SnapOpts {
            raw_xattrs: true,
            ..Default::default()
        },
    );
    for name in ["/ro", "/gone"] {
        let n = raw
            .get(name)
            .unwrap_or_else(|| panic!("no whiteout {name} in upper: {:?}", raw.paths()));
        assert!(
            n.kind == Kind::Char && n.rdev == Some((0, 0)),
            "{name} is not a char 0/0 whiteout: {n:?}"
        );
    }
    for (p, n) in &raw.nodes {
        assert!(
            n.kind != Kind::File || !p.rsplit('/').next().unwrap_or("").starts_with(".wh."),
            "rootless upper holds a .wh. whiteout file: {p}"
        );
    }
    let dir = s.upper.join("dir");
    assert_eq!(
        get_xattr(&dir, "user.overlay.opaque").as_deref(),
        Some(&b"y"[..]),
        "xattrs of dir: {:?}",
        list_xattrs(&dir)
    );
    for (p, n) in &raw.nodes {
        for x in n.xattrs.keys() {
            assert!(!x.starts_with("trusted."), "rootless upper {p} carries {x}");
        }
    }
    assert_eq!(
        raw.get("/file").and_then(|n| n.content.clone()).as_deref(),
        Some(&b"lower file\nw\n"[..])
    );
}
