//! Differential tests: each scenario runs on kernel overlayfs (the reference) and on strata
//! over identical copies of the same layers; per-step results, merged trees, normalised upper
//! dirs and cross-mounts must all agree. Skips (with a printed reason) only when not root or
//! when kernel overlayfs is unavailable.

mod common;

use common::{Kind, Layer, Scenario, differential, py};

/// Run a scenario, assert strata matched the kernel, and return the outcome for extra checks.
fn check(sc: Scenario) -> Option<common::Outcome> {
    if !common::ready() {
        return None;
    }
    let o = differential(&sc);
    o.assert_same();
    Some(o)
}

/// Assert the kernel step for `cmd` printed exactly `want` (guards the scenario itself).
fn kernel_prints(o: &common::Outcome, cmd: &str, want: &str) {
    let st = o.kernel_step(cmd);
    assert_eq!(
        st.stdout, want,
        "kernel output of `{cmd}` (stderr {:?})",
        st.stderr
    );
}

#[test]
fn lookup_topmost_layer_wins_across_three_layers() {
    let top = Layer::new().file("a", "top a\n").file("d/x", "top x\n");
    let mid = Layer::new()
        .file("a", "mid a\n")
        .file("b", "mid b\n")
        .file("d/y", "mid y\n")
        .file("d/x", "mid x\n");
    let bottom = Layer::new()
        .file("a", "bottom a\n")
        .file("b", "bottom b\n")
        .file("c", "bottom c\n")
        .file("d/z", "bottom z\n")
        .file_mode("d/exe", "#!/bin/sh\n", 0o755);
    let sc = Scenario::new(vec![top, mid, bottom]).ops([
        "cat a b c",
        "cat d/x d/y d/z",
        "ls -a d",
        "stat -c '%n %a %s' a b c d/exe",
    ]);
    if let Some(o) = check(sc) {
        kernel_prints(&o, "cat a b c", "top a\nmid b\nbottom c\n");
    }
}

#[test]
fn root_listing_includes_dot_and_dotdot() {
    let low = Layer::new().file("a", "a").whiteout("gone");
    let sc = Scenario::new(vec![low]).ops(["ls -a", "mkdir n; ls -a"]);
    if let Some(o) = check(sc) {
        kernel_prints(&o, "ls -a", ".\n..\na\n");
    }
}

#[test]
fn char_device_whiteouts_hide_lower_files_and_dirs() {
    let top = Layer::new().whiteout("x").whiteout("dd").whiteout("sub/y");
    let low = Layer::new()
        .file("x", "x\n")
        .file("keep", "k\n")
        .file("dd/f", "f\n")
        .file("sub/y", "y\n")
        .file("sub/z", "z\n");
    let sc = Scenario::new(vec![top, low]).ops([
        "ls -A",
        "ls -a sub",
        "cat x",
        "test -e dd; echo $?",
        "cat dd/f",
    ]);
    if let Some(o) = check(sc) {
        kernel_prints(&o, "ls -a sub", ".\n..\nz\n");
        assert_ne!(o.kernel_step("cat x").status, 0);
    }
}

/// Mount strata read-only over `layers` (topmost first) and return `sh -c cmd`'s output.
fn strata_view(layers: Vec<Layer>, cmds: &[&str]) -> Option<Vec<String>> {
    if !common::ready() {
        return None;
    }
    let ws = common::Workspace::new();
    let lowers: Vec<std::path::PathBuf> = layers
        .iter()
        .enumerate()
        .map(|(i, l)| {
            let p = ws.join(&format!("l{i}"));
            l.build(&p);
            p
        })
        .collect();
    let mnt = ws.mkdir("mnt");
    let m = common::FuseMount::mount(&lowers, None, &mnt, &[]).expect("strata mount");
    let out = cmds
        .iter()
        .map(|c| {
            common::sh(&format!(
                "cd {} && {c} 2>&1; true",
                common::shq(&mnt.display().to_string())
            ))
        })
        .collect();
    m.unmount().expect("unmount");
    Some(out)
}

#[test]
fn wh_prefixed_whiteout_files_hide_lower_names_and_never_show() {
    // fuse-overlayfs and OCI unpackers write `.wh.NAME` files: strata reads them as
    // whiteouts (kernel overlayfs does not, so this is checked against the expected view).
    let top = Layer::new().wh_file("x").wh_file("sub/y");
    let low = Layer::new()
        .file("x", "x\n")
        .file("sub/y", "y\n")
        .file("sub/z", "z\n");
    if let Some(out) = strata_view(vec![top, low], &["ls -A", "ls -A sub", "cat x sub/y sub/z"]) {
        assert_eq!(out[0], "sub\n", "root listing");
        assert_eq!(out[1], "z\n", "sub listing");
        assert!(
            out[2].contains("No such file") && out[2].ends_with("z\n"),
            "reads: {:?}",
            out[2]
        );
    }
}

#[test]
fn trusted_overlay_opaque_dir_hides_lower_children() {
    let top = Layer::new().opaque("d").file("d/new", "new\n");
    let low = Layer::new()
        .file("d/old", "old\n")
        .file("d/sub/deep", "deep\n")
        .file("other", "o\n");
    let sc = Scenario::new(vec![top, low]).ops(["ls -a d", "cat d/old", "ls -A"]);
    if let Some(o) = check(sc) {
        kernel_prints(&o, "ls -a d", ".\n..\nnew\n");
    }
}

#[test]
fn user_overlay_opaque_xattr_hides_lower_children() {
    // Rootless kernel overlayfs (userxattr) and fuse-overlayfs mark opaque dirs with
    // user.overlay.opaque: strata honours it in every mode.
    let top = Layer::new().user_opaque("d").file("d/new", "new\n");
    let low = Layer::new().file("d/old", "old\n");
    if let Some(out) = strata_view(vec![top, low], &["ls -A d", "cat d/old"]) {
        assert_eq!(out[0], "new\n");
        assert!(out[1].contains("No such file"), "{:?}", out[1]);
    }
}

#[test]
fn wh_opq_marker_file_hides_lower_children_and_never_shows() {
    let top = Layer::new().opq_file("d").file("d/new", "new\n");
    let low = Layer::new().file("d/old", "old\n");
    if let Some(out) = strata_view(vec![top, low], &["ls -A d", "cat d/old"]) {
        assert_eq!(out[0], "new\n");
        assert!(out[1].contains("No such file"), "{:?}", out[1]);
    }
}

#[test]
fn opaque_dir_in_middle_layer_stops_descent() {
    let top = Layer::new().file("d/t", "t\n");
    let mid = Layer::new().opaque("d").file("d/m", "m\n");
    let bottom = Layer::new().file("d/b", "b\n").file("d/m", "bottom m\n");
    let sc = Scenario::new(vec![top, mid, bottom]).ops(["ls -a d", "cat d/m"]);
    if let Some(o) = check(sc) {
        kernel_prints(&o, "ls -a d", ".\n..\nm\nt\n");
    }
}

#[test]
fn nested_whiteouts_across_layers() {
    let l0 = Layer::new().whiteout("a/b/d").file("a/b/n0", "0\n");
    let l1 = Layer::new()
        .whiteout("a/b/c")
        .file("a/b/e", "e\n")
        .file("a/b/d/dd", "dd\n");
    let l2 = Layer::new()
        .file("a/b/c/file", "c\n")
        .file("a/b/d/x", "x\n")
        .file("a/f", "f\n");
    check(Scenario::new(vec![l0, l1, l2]).ops(["find . | sort", "rm -rf a/b/e; find . | sort"]));
}

#[test]
fn readdir_of_merged_dirs_lists_union_once() {
    let l0 = Layer::new()
        .file("d/a", "")
        .file("d/same", "0")
        .symlink("d/link", "a")
        .dir("d/sub", 0o755);
    let l1 = Layer::new()
        .file("d/b", "")
        .file("d/same", "1")
        .fifo("d/fifo")
        .dir("d/sub/inner", 0o700);
    let l2 = Layer::new()
        .file("d/c", "")
        .file("d/same", "2")
        .whiteout("d/gone");
    let sc = Scenario::new(vec![l0, l1, l2]).ops([
        "ls -a d | sort",
        "ls -la d | awk 'NR>1{print $1, $NF}' | sort",
        "find d -printf '%y %p\\n' | sort",
    ]);
    if let Some(o) = check(sc) {
        kernel_prints(
            &o,
            "ls -a d | sort",
            ".\n..\na\nb\nc\nfifo\nlink\nsame\nsub\n",
        );
    }
}

#[test]
fn read_lower_files_whole_and_partial() {
    let big: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let low = Layer::new()
        .file("big", &big)
        .file("small", "hello world\n")
        .file("empty", "");
    check(Scenario::new(vec![low]).ops([
        "md5sum big small empty",
        "head -c 5 small; echo",
        "dd if=big bs=1000 skip=123 count=7 status=none | md5sum",
        "tail -c 100 big | md5sum",
    ]));
}

#[test]
fn write_append_truncate_copy_up_lower_files() {
    let low = Layer::new()
        .file("append", "one\n")
        .file("over", "old content\n")
        .file("trunc", "0123456789")
        .file("zero", "zzzz")
        .file("mid", "abcdefghij")
        .file("d/deep/f", "deep\n");
    check(Scenario::new(vec![low]).ops([
        "echo two >> append; cat append",
        "echo new > over; cat over",
        "truncate -s 3 trunc; cat trunc; echo",
        "truncate -s 0 zero; stat -c %s zero",
        "printf XY | dd of=mid bs=1 seek=4 conv=notrunc status=none; cat mid; echo",
        "echo more >> d/deep/f; cat d/deep/f",
        "truncate -s 10000 trunc; stat -c %s trunc",
    ]));
}

#[test]
fn chmod_chown_utimes_of_lower_files() {
    let low = Layer::new()
        .file("a", "a")
        .file("b", "b")
        .file("c", "c")
        .file_mode("s", "s", 0o755)
        .dir("dir", 0o755)
        .symlink("link", "a");
    check(Scenario::new(vec![low]).ops([
        "chmod 600 a",
        "chown 1234:5678 b",
        "touch -d '2001-02-03 04:05:06' c",
        "chmod 4755 s",
        "chmod 700 dir; chown 42:43 dir",
        "touch -h -d '2002-01-01 00:00:00' link",
        "stat -c '%n %a %u %g %Y' a b c s dir",
        "stat -c '%n %Y' link",
    ]));
}

#[test]
fn copy_up_keeps_parent_dir_modes_owners_and_times() {
    let low = Layer::new()
        .dir("tmp", 0o1777)
        .dir("tmp/sub", 0o755)
        .file("tmp/sub/f", "f\n")
        .dir("priv", 0o700)
        .file("priv/f", "p\n")
        .owner("priv", 1000, 1000)
        .dir("sg", 0o2775)
        .file("sg/f", "g\n")
        .owner("sg", 0, 100)
        .mtime("tmp", 1_000_000_000)
        .mtime("tmp/sub", 1_000_000_001)
        .mtime("priv", 1_000_000_002)
        .mtime("sg", 1_000_000_003);
    let sc = Scenario::new(vec![low]).ops([
        "echo x >> tmp/sub/f",
        "echo x >> priv/f",
        "echo x >> sg/f",
        "stat -c '%n %a %u %g %Y' tmp tmp/sub priv sg",
        "touch sg/new; stat -c '%n %u %g' sg/new",
        "mkdir sg/newdir; stat -c '%n %a %g' sg/newdir",
    ]);
    if let Some(o) = check(sc) {
        kernel_prints(
            &o,
            "stat -c '%n %a %u %g %Y' tmp tmp/sub priv sg",
            "tmp 1777 0 0 1000000000\ntmp/sub 755 0 0 1000000001\npriv 700 1000 1000 1000000002\nsg 2775 0 100 1000000003\n",
        );
    }
}

#[test]
fn create_mkdir_fifo_symlink_hardlink() {
    let low = Layer::new().file("d/existing", "e\n").dir("empty", 0o755);
    check(Scenario::new(vec![low]).ops([
        "echo new > new; cat new",
        "mkdir -p n1/n2/n3; mkdir d/sub",
        "mkfifo fifo; mkfifo d/fifo2; stat -c '%n %F' fifo d/fifo2",
        "ln -s new sym; ln -s ../new d/sym2; readlink sym d/sym2; cat d/sym2",
        "ln new hl; stat -c '%n %h' new hl",
        "ln d/existing d/hl2; stat -c '%n %h' d/existing d/hl2",
        "echo inempty > empty/f",
        "mknod cdev c 1 3; stat -c '%n %t %T' cdev",
        "mkdir d 2>&1; echo $?",
    ]));
}

#[test]
fn unlink_and_rmdir_of_lower_and_upper_entries() {
    let low = Layer::new()
        .file("f", "f\n")
        .file("d/f1", "1\n")
        .file("d/f2", "2\n")
        .dir("emptydir", 0o755)
        .file("full/a", "a\n")
        .symlink("lnk", "f");
    check(Scenario::new(vec![low]).ops([
        "rm f lnk",
        "rmdir emptydir",
        "rm d/f1 d/f2; rmdir d",
        "echo u > upperfile; rm upperfile",
        "mkdir updir; rmdir updir",
        "rmdir full",
        "rm full/a; rmdir full",
        "ls -A",
        "cat f",
    ]));
}

#[test]
fn rmdir_of_non_empty_merged_dir_fails_with_enotempty() {
    let low = Layer::new()
        .file("d/lowerchild", "x\n")
        .file("e/sub/x", "x\n");
    let sc = Scenario::new(vec![low]).ops([
        "rmdir d",
        "echo u > e/upper; rmdir e",
        "rm -rf e/sub; rmdir e",
        "ls -A",
    ]);
    if let Some(o) = check(sc) {
        assert!(
            o.kernel_step("rmdir d")
                .errno
                .contains("Directory not empty")
        );
    }
}

#[test]
fn mkdir_over_deleted_lower_dir_is_opaque() {
    let low = Layer::new().file("d/old1", "1\n").file("d/sub/old2", "2\n");
    let sc =
        Scenario::new(vec![low]).ops(["rm -rf d", "mkdir d", "ls -a d", "echo n > d/new; ls -a d"]);
    if let Some(o) = check(sc) {
        kernel_prints(&o, "ls -a d", ".\n..\n");
        let n = o.kernel_upper.get("/d").expect("kernel upper has d");
        assert!(
            n.kind == Kind::Dir && n.opaque,
            "kernel marks the new dir opaque"
        );
    }
}

#[test]
fn rename_files_lower_upper_over_existing_across_dirs() {
    let low = Layer::new()
        .file("a", "a\n")
        .file("b", "b\n")
        .file("c", "c\n")
        .file("d1/x", "x\n")
        .dir("d2", 0o755)
        .file("victim", "v\n");
    check(Scenario::new(vec![low]).ops([
        "mv a a2",
        "mv b victim",
        "mv c d2/",
        "mv d1/x d2/x2",
        "echo u > up; mv up d1/up2",
        "mv a2 a; cat a",
        "mv nonexistent z",
        "ls -A .; ls -a d1 d2",
    ]));
}

const RENAMEAT2: &str = r#"
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
def r2(a, b, flags):
    res = libc.renameat2(-100, a.encode(), -100, b.encode(), flags)
    if res != 0:
        e = ctypes.get_errno()
        print(a, b, "error", os.strerror(e))
    else:
        print(a, b, "ok")
"#;

#[test]
fn renameat2_noreplace_and_exchange() {
    let low = Layer::new()
        .file("a", "a\n")
        .file("b", "b\n")
        .file("c", "c\n")
        .file("d/x", "x\n")
        .file("e/y", "y\n");
    let code = format!(
        "{RENAMEAT2}\nr2('a','b',1)\nr2('a','new',1)\nr2('b','c',2)\nr2('c','missing',2)\nr2('d','e',2)\nr2('new','d/x',2)\n"
    );
    let sc =
        Scenario::new(vec![low]).ops([py(&code), "cat b c d/x new e/y".into(), "ls -a d e".into()]);
    if let Some(o) = check(sc) {
        assert!(
            o.kernel_steps[0].stdout.contains("a b error File exists"),
            "{}",
            o.kernel_steps[0].stdout
        );
    }
}

#[test]
fn rename_lower_directory_succeeds_and_survives_remount() {
    let low = Layer::new()
        .file("dir/f", "f\n")
        .file("dir/sub/g", "g\n")
        .dir("dir/empty", 0o700)
        .file("other/h", "h\n");
    let sc = Scenario::new(vec![low]).ops([
        "mv dir moved",
        "ls -aR moved",
        "test -e dir; echo $?",
        "mv other/ moved/other2",
        "mkdir dir; echo new > dir/n; ls -a dir",
        common::REMOUNT,
        "ls -aR moved dir",
        "cat moved/f moved/sub/g moved/other2/h",
    ]);
    if let Some(o) = check(sc) {
        assert_eq!(
            o.kernel_step("mv dir moved").status,
            0,
            "kernel (redirect_dir=on) renames lower dirs"
        );
    }
}

#[test]
fn hardlinked_lower_files_stay_linked_after_copy_up() {
    let low = Layer::new()
        .file("a", "shared\n")
        .hardlink("b", "a")
        .file("d/c", "c\n")
        .hardlink("d/c2", "d/c");
    let sc = Scenario::new(vec![low]).ops([
        "stat -c '%n %h' a b",
        "echo more >> a",
        "cat b; stat -c '%n %h' a b",
        &py("import os; print(os.stat('a').st_ino == os.stat('b').st_ino)"),
        "chmod 600 d/c; stat -c '%n %a %h' d/c d/c2",
        common::REMOUNT,
        "cat a b; stat -c '%n %h' a b",
        &py("import os; print(os.stat('a').st_ino == os.stat('b').st_ino)"),
    ]);
    // The cross-mounts (on by default) check that each implementation follows the other's
    // index: `b` and `d/c2` exist only in the lower layer and in WORKDIR/index.
    if let Some(o) = check(sc) {
        kernel_prints(&o, "cat b; stat -c '%n %h' a b", "shared\nmore\na 2\nb 2\n");
    }
}

#[test]
fn user_xattrs_set_get_remove_on_lower_files() {
    let low = Layer::new()
        .file("f", "f")
        .xattr("f", "user.orig", "o")
        .file("g", "g")
        .dir("d", 0o755);
    check(Scenario::new(vec![low]).ops([
        "getfattr -n user.orig --only-values f; echo",
        "setfattr -n user.new -v value f",
        "setfattr -n user.dirattr -v dv d",
        "setfattr -x user.orig f",
        "getfattr -d f d",
        "getfattr -n user.orig f",
        "setfattr -x user.missing g",
    ]));
}

#[test]
fn internal_overlay_xattrs_are_invisible() {
    let top = Layer::new().opaque("op").file("op/x", "x").whiteout("gone");
    let low = Layer::new()
        .file("op/y", "y")
        .file("gone", "g")
        .file("dir/f", "f")
        .file("cu", "c")
        .file("chm", "m");
    let sc = Scenario::new(vec![top, low]).ops([
        "mv dir dir2",
        "chmod 600 chm",
        "echo x >> cu",
        "rm -rf op; mkdir op",
        "getfattr -h -d -m - -R . 2>&1 | grep -v '^# file' | grep . ; true",
        "getfattr -h -d -m - -R . 2>/dev/null | grep -c overlay; true",
    ]);
    if let Some(o) = check(sc) {
        kernel_prints(
            &o,
            "getfattr -h -d -m - -R . 2>/dev/null | grep -c overlay; true",
            "0\n",
        );
    }
}

#[test]
fn ten_thousand_entry_directory_listing() {
    let mut l0 = Layer::new();
    let mut l1 = Layer::new();
    for i in 0..5000 {
        l0 = l0.file(&format!("big/top-{i:05}"), "");
        l1 = l1.file(&format!("big/low-{i:05}"), "");
    }
    for i in 0..200 {
        l0 = l0.whiteout(&format!("big/low-{i:05}"));
    }
    let sc = Scenario::new(vec![l0, l1]).ops([
        "ls big | wc -l",
        "ls big | md5sum",
        "ls -f big | sort | md5sum",
    ]);
    if let Some(o) = check(sc) {
        kernel_prints(&o, "ls big | wc -l", "9800\n");
    }
}

const INO_CHECK: &str = r#"
import os
bad = []
n = 0
for root, dirs, files in os.walk('.'):
    for e in os.scandir(root):
        n += 1
        st = os.lstat(e.path)
        if e.inode() != st.st_ino:
            bad.append(e.path)
print(n, 'entries', 'mismatches:', sorted(bad))
"#;

#[test]
fn stat_st_ino_equals_readdir_d_ino() {
    let top = Layer::new()
        .file("a", "a")
        .file("d/x", "x")
        .symlink("s", "a");
    let low = Layer::new()
        .file("b", "b")
        .file("d/y", "y")
        .file("a", "old")
        .dir("e/f", 0o755);
    check(Scenario::new(vec![top, low]).ops([
        py(INO_CHECK),
        "echo w >> b; mkdir n; touch d/z".into(),
        py(INO_CHECK),
    ]));
}

#[test]
fn st_ino_stable_across_copy_up_and_remount() {
    let low = Layer::new()
        .file("a", "a")
        .file("b", "b")
        .file("d/c", "c")
        .dir("e", 0o755);
    check(Scenario::new(vec![low]).ops([
        "stat -c %i a b d d/c e > $STATE/ino1",
        "echo x >> a; chmod 600 b; touch d/c; touch e/new",
        "stat -c %i a b d d/c e > $STATE/ino2; cmp $STATE/ino1 $STATE/ino2 && echo same-after-copy-up",
        common::REMOUNT,
        "stat -c %i a b d d/c e > $STATE/ino3; cmp $STATE/ino1 $STATE/ino3 && echo same-after-remount",
    ]));
}

/// Hole placement after copy-up depends on the copy's granularity (the kernel copies in
/// 1 MiB chunks), so this prints facts that must hold for any sparse-preserving copy-up.
const SEEK_CHECK: &str = r#"
import errno, os
MiB = 1024 * 1024
fd = os.open('sparse', os.O_RDWR)
os.pwrite(fd, b'Z', 3 * MiB)
size = os.fstat(fd).st_size
def seek(off, whence):
    try:
        return os.lseek(fd, off, whence)
    except OSError as e:
        return errno.errorcode[e.errno]
hole0 = seek(0, os.SEEK_HOLE)
print('data at 0:', seek(0, os.SEEK_DATA) == 0)
print('a hole before the end:', isinstance(hole0, int) and hole0 < size)
print('data after the first hole at or before 2 MiB:', seek(hole0, os.SEEK_DATA) <= 2 * MiB)
print('data at 2 MiB:', seek(2 * MiB, os.SEEK_DATA) == 2 * MiB)
print('new byte is data:', seek(3 * MiB, os.SEEK_DATA) == 3 * MiB)
print('hole after the new byte:', 3 * MiB < seek(3 * MiB, os.SEEK_HOLE) < size)
print('no data in the tail:', seek(size - 1, os.SEEK_DATA))
print('SEEK_HOLE at the end:', seek(size - 1, os.SEEK_HOLE) == size - 1)
print('size', size, 'sparse on disk:', os.fstat(fd).st_blocks * 512 < 2 * MiB + 4 * 4096 + MiB)
"#;

#[test]
fn lseek_data_hole_on_sparse_copied_up_file() {
    let low = Layer::new().sparse(
        "sparse",
        4 * 1024 * 1024,
        &[(0, b"head"), (2 * 1024 * 1024, b"middle")],
    );
    let sc = Scenario::new(vec![low]).ops([py(SEEK_CHECK), "md5sum sparse".into()]);
    if let Some(o) = check(sc) {
        assert!(
            !o.kernel_steps[0].stdout.contains("False"),
            "{}",
            o.kernel_steps[0].stdout
        );
    }
}

#[test]
fn fallocate_allocate_and_punch_hole() {
    let data: Vec<u8> = vec![b'x'; 64 * 1024];
    let low = Layer::new().file("f", &data);
    check(Scenario::new(vec![low]).ops([
        "fallocate -l 1M newfile; stat -c %s newfile",
        "fallocate -o 0 -l 128KiB f; stat -c %s f",
        "fallocate -p -o 4096 -l 8192 f; md5sum f",
        "fallocate -n -o 1M -l 4096 f; stat -c %s f",
    ]));
}

const MMAP_CHECK: &str = r#"
import mmap, os
fd = os.open('f', os.O_RDWR)
m = mmap.mmap(fd, 4096, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
m[0:5] = b'MMAP!'
m.flush()
with open('f', 'rb') as g:
    print(g.read(12))
m.close()
os.close(fd)
"#;

#[test]
fn shared_writable_mmap_write_visible_via_read() {
    let low = Layer::new().file("f", vec![b'.'; 8192]);
    let sc = Scenario::new(vec![low]).ops([py(MMAP_CHECK), "head -c 8 f; echo".into()]);
    if let Some(o) = check(sc) {
        assert!(o.kernel_steps[0].stdout.contains("MMAP!"));
    }
}

const LOCK_CHECK: &str = r#"
import fcntl, os
fd = os.open('f', os.O_RDWR)
fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
fcntl.flock(fd, fcntl.LOCK_UN)
fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 10, 0)
fcntl.lockf(fd, fcntl.LOCK_UN, 10, 0)
g = os.open('new', os.O_RDWR | os.O_CREAT, 0o644)
fcntl.flock(g, fcntl.LOCK_SH)
fcntl.fcntl(g, fcntl.F_SETLKW, __import__('struct').pack('hhqqi', fcntl.F_WRLCK, 0, 0, 0, 0))
print('locks ok')
"#;

#[test]
fn flock_and_fcntl_locks_succeed() {
    let low = Layer::new().file("f", "f");
    let sc = Scenario::new(vec![low]).ops([py(LOCK_CHECK)]);
    if let Some(o) = check(sc) {
        assert_eq!(o.kernel_steps[0].stdout, "locks ok\n");
    }
}

const RO_FD_CHECK: &str = r#"
import os
ro = os.open('f', os.O_RDONLY)
print(os.pread(ro, 20, 0))
rw = os.open('f', os.O_RDWR)
os.pwrite(rw, b'NEW DATA', 0)
os.close(rw)
print(os.pread(ro, 20, 0))
os.close(ro)
"#;

#[test]
fn read_only_fd_opened_before_copy_up_sees_new_data() {
    let low = Layer::new().file("f", "old data here\n");
    let sc = Scenario::new(vec![low]).ops([py(RO_FD_CHECK)]);
    if let Some(o) = check(sc) {
        assert!(
            o.kernel_steps[0].stdout.contains("NEW DATA here"),
            "{}",
            o.kernel_steps[0].stdout
        );
    }
}

#[test]
fn metadata_only_copy_up_keeps_file_mtime_owner_and_xattrs() {
    let low = Layer::new()
        .file_mode("chmodded", "1", 0o640)
        .file_mode("xattred", "2", 0o640)
        .file_mode("opened", "3", 0o640)
        .file_mode("chowned", "4", 0o640)
        .xattr("chmodded", "user.keep", "k1")
        .xattr("opened", "user.keep", "k3")
        .owner("chmodded", 1000, 1001)
        .owner("xattred", 1000, 1001)
        .owner("opened", 1000, 1001)
        .mtime("chmodded", 1_111_111_111)
        .mtime("xattred", 1_111_111_112)
        .mtime("opened", 1_111_111_113)
        .mtime("chowned", 1_111_111_114);
    let stat = "stat -c '%n %a %u %g %Y %s' chmodded xattred opened chowned";
    let sc = Scenario::new(vec![low.clone()]).metacopy().ops([
        "chmod 604 chmodded".to_string(),
        "setfattr -n user.new -v n xattred".to_string(),
        py("open('opened', 'r+').close()"),
        "chown 2000 chowned".to_string(),
        stat.to_string(),
        "getfattr -d chmodded xattred opened | grep -v '^#'".to_string(),
    ]);
    let want = "chmodded 604 1000 1001 1111111111 1\nxattred 640 1000 1001 1111111112 1\nopened 640 1000 1001 1111111113 1\nchowned 640 2000 0 1111111114 1\n";
    // Without metacopy (both defaults) the whole file is copied, with the same metadata.
    let full = Scenario {
        metacopy: false,
        ..sc.clone()
    };
    if let Some(o) = check(sc) {
        kernel_prints(&o, stat, want);
    }
    if let Some(o) = check(full) {
        kernel_prints(&o, stat, want);
    }
}

/// `fsync` of an open directory, as dpkg does after unpacking into it.
fn fsync_dir(d: &str) -> String {
    py(&format!(
        "import os\nfd = os.open({d:?}, os.O_RDONLY | os.O_DIRECTORY)\nos.fsync(fd)\nos.fdatasync(fd)\nos.close(fd)\nprint('synced', {d:?})"
    ))
}

#[test]
fn directory_fsync_of_every_kind_of_directory() {
    let low = Layer::new()
        .file("child/a", "a")
        .dir("chmodded", 0o755)
        .file("renamed/b", "b")
        .file("lower-only/c", "c");
    check(Scenario::new(vec![low]).ops([
        "mkdir new".to_string(),
        fsync_dir("new"),
        "touch child/x".to_string(),
        fsync_dir("child"),
        "chmod 700 chmodded".to_string(),
        fsync_dir("chmodded"),
        "mv renamed moved".to_string(),
        fsync_dir("moved"),
        fsync_dir("lower-only"),
        fsync_dir("."),
        "mkdir -p new/deep/er; mv new/deep new/deep2".to_string(),
        fsync_dir("new/deep2/er"),
    ]));
}

#[test]
fn subdir_moved_out_of_a_renamed_lower_dir_survives_remount() {
    // d is renamed, a new d made over its whiteout (opaque), and d2/sub moved into it: the
    // moved dir's absolute redirect must be followed under the opaque parent.
    let low = Layer::new()
        .file("d/sub/x", "x\n")
        .file("d/sub/y", "y\n")
        .file("d/z", "z\n");
    let sc = Scenario::new(vec![low]).ops([
        "mv d d2",
        "mkdir d",
        "mv d2/sub d/sub2",
        "ls -a d d/sub2 d2; cat d/sub2/x",
        common::REMOUNT,
        "ls -a d d/sub2 d2; cat d/sub2/x d/sub2/y d2/z",
    ]);
    if let Some(o) = check(sc) {
        kernel_prints(
            &o,
            "ls -a d d/sub2 d2; cat d/sub2/x",
            "d:\n.\n..\nsub2\n\nd/sub2:\n.\n..\nx\ny\n\nd2:\n.\n..\nz\nx\n",
        );
    }
}

#[test]
fn hard_link_group_of_three_lower_names_survives_remount() {
    let low = Layer::new()
        .file("h1", "data\n")
        .hardlink("h2", "h1")
        .hardlink("sub/h3", "h1");
    let stat = "stat -c '%n %h %a' h2 h4 sub/h3; cat h2 h4 sub/h3";
    // FUSE's setattr and link name no path: strata links the copy into the upper under the
    // name first looked up, the kernel under the name used, so the uppers may hold different
    // names of the group; the merged views, the remounts and the cross-mounts must agree.
    let sc = Scenario::new(vec![low]).no_upper_compare().ops([
        "echo more >> h1",
        "chmod 600 h2",
        "rm h1",
        "ln h2 h4",
        stat,
        &py("import os; print(len({os.stat(p).st_ino for p in ('h2', 'h4', 'sub/h3')}))"),
        common::REMOUNT,
        stat,
        &py("import os; print(len({os.stat(p).st_ino for p in ('h2', 'h4', 'sub/h3')}))"),
    ]);
    if let Some(o) = check(sc) {
        kernel_prints(
            &o,
            stat,
            "h2 3 600\nh4 3 600\nsub/h3 3 600\ndata\nmore\ndata\nmore\ndata\nmore\n",
        );
    }
}

#[test]
fn inode_numbers_survive_remount_after_renames_links_exchanges_and_recreation() {
    // (the harness compares every path's st_ino after each implementation remounts, and
    // after the kernel mounts strata's upper, with what the session showed)
    let low = Layer::new()
        .file("renamed", "r\n")
        .file("recreated", "old\n")
        .file("x1", "x1\n")
        .file("x2", "x2\n")
        .file("linked", "l\n")
        .file("appended", "a\n")
        .file("dir/moved", "m\n")
        .file("dir/chmodded", "c\n")
        .symlink("sym", "renamed");
    let pre = Layer::new()
        .file("pre", "pure upper\n")
        .file("dir/pre2", "p2\n");
    let code = format!("{RENAMEAT2}\nr2('x1','x2',2)\n");
    let sc = Scenario::new(vec![low]).upper(pre).ops([
        "mv renamed renamed2".to_string(),
        "rm recreated; echo new > recreated".to_string(),
        py(&code),
        "ln linked linked2".to_string(),
        "echo more >> appended".to_string(),
        "mv dir/moved moved".to_string(),
        "chmod 600 dir/chmodded".to_string(),
        "touch -h sym".to_string(),
        common::REMOUNT.to_string(),
        "cat renamed2 recreated x1 x2 linked2 appended moved pre dir/pre2".to_string(),
    ]);
    check(sc);
}

/// Changes of every kind in a first round, then the upper becomes a lower layer (twice).
fn rotation_scenario() -> Scenario {
    let low = Layer::new()
        .file("f", ":xxx:yyy:zzz")
        .file("g", "g\n")
        .hardlink("g-link", "g")
        .file("dir/a", "a\n")
        .file("dir/sub/b", "b\n")
        .file("keep/c", "c\n")
        .file("gone", "gone\n")
        .file_mode("mode", "m\n", 0o644);
    Scenario::new(vec![low]).ops([
        "mv f f2",
        "ln dir/a a-link",
        "mkdir new; mv dir new/dir",
        "echo x >> g",
        "chmod 600 mode",
        "rm gone",
        "mkdir keep/d; echo d > keep/d/e",
        common::ROTATE,
        "cat f2 a-link g g-link mode; ls -aR new keep; stat -c '%n %a %h' mode g g-link a-link",
        "test -e gone; echo gone=$?",
        // (through the name looked up first: FUSE's setattr names no path, so which name of a
        // hard-link group strata copies up is the first one the kernel looked up)
        "mv new/dir new/dir2; mv f2 f3; ln g g3; chmod 640 a-link",
        "echo y >> new/dir2/sub/b; rm keep/c",
        common::ROTATE,
        "cat f3 g3 new/dir2/a new/dir2/sub/b a-link; ls -aR new keep",
        "stat -c '%n %a %h' g g-link g3 new/dir2/a a-link",
        "echo z >> f3; cat f3; mv new/dir2 top; ls -aR top",
    ])
}

#[test]
fn layer_rotation_follows_renames_links_moves_and_whiteouts_from_any_layer() {
    let sc = rotation_scenario();
    if let Some(o) = check(sc) {
        kernel_prints(&o, "test -e gone; echo gone=$?", "gone=1\n");
    }
}

#[test]
fn layer_rotation_with_metacopy_follows_metadata_only_files_down_the_layers() {
    check(rotation_scenario().metacopy());
}
