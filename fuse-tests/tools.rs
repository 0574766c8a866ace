//! Real tools on a strata mount: tar, cp -a, rm -rf, mv, ln, find, git, sqlite3, xattrs, and
//! the mount program's own behaviour (daemonising, read-only mounts).

mod common;

use common::{FuseMount, Kind, Layer, SnapOpts, Workspace, diff, sh, shq, snapshot_with};
use std::fs;
use std::path::{Path, PathBuf};

/// A strata mount over one lower layer with its own upper and work dirs.
struct Fixture {
    // fields drop in order: the mount goes before its workspace
    mount: Option<FuseMount>,
    ws: Workspace,
    lower: PathBuf,
    upper: PathBuf,
    work: PathBuf,
    mnt: PathBuf,
}

impl Fixture {
    fn new(lower: Layer) -> Self {
        let ws = Workspace::new();
        let l = ws.join("lower");
        lower.build(&l);
        let upper = ws.mkdir("upper");
        let work = ws.mkdir("work");
        let mnt = ws.mkdir("mnt");
        let mut f = Fixture {
            mount: None,
            ws,
            lower: l,
            upper,
            work,
            mnt,
        };
        f.mount();
        f
    }
    fn mount(&mut self) {
        let m = FuseMount::mount(
            std::slice::from_ref(&self.lower),
            Some((&self.upper, &self.work)),
            &self.mnt,
            &[],
        )
        .unwrap_or_else(|e| panic!("strata mount failed: {e}"));
        self.mount = Some(m);
    }
    fn unmount(&mut self) {
        if let Some(m) = self.mount.take() {
            m.unmount().unwrap_or_else(|e| panic!("unmount: {e}"));
        }
    }
    fn remount(&mut self) {
        self.unmount();
        self.mount();
    }
    fn m(&self, p: &str) -> PathBuf {
        self.mnt.join(p)
    }
    /// Run a shell command with cwd = mount root; panics (with the daemon log) on failure.
    fn sh(&self, cmd: &str) -> String {
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(cmd)
            .current_dir(&self.mnt)
            .output()
            .expect("spawn sh");
        assert!(
            out.status.success(),
            "`{cmd}` failed ({}): {}\ndaemon log:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr),
            self.mount
                .as_ref()
                .map(|m| m.log_text())
                .unwrap_or_default()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

fn p(path: &Path) -> String {
    shq(&path.display().to_string())
}

/// A source tree exercising what archivers must keep.
fn sample_tree(root: &Path) {
    Layer::new()
        .file("a.txt", "alpha\n")
        .file_mode("bin/run", "#!/bin/sh\necho run\n", 0o755)
        .file_mode("bin/suid", "x", 0o4755)
        .file("deep/er/still/file", vec![7u8; 100_000])
        .dir("sticky", 0o1777)
        .dir("private", 0o700)
        .file("private/secret", "s")
        .owner("private/secret", 1234, 4321)
        .symlink("link", "a.txt")
        .symlink("dangling", "nowhere")
        .hardlink("a-hardlink", "a.txt")
        .fifo("pipe")
        .mtime("a.txt", 1_500_000_000)
        .mtime("deep/er", 1_400_000_000)
        .build(root);
}

fn opts_mtime() -> SnapOpts {
    SnapOpts {
        mtime: true,
        ..Default::default()
    }
}

/// Snapshot equality, mtimes compared to the second, except on directories and symlinks.
fn assert_trees_equal(a: &Path, b: &Path, what: &str) {
    let mut sa = snapshot_with(a, opts_mtime());
    let mut sb = snapshot_with(b, opts_mtime());
    for s in [&mut sa, &mut sb] {
        for n in s.nodes.values_mut() {
            if n.kind == Kind::Dir || n.kind == Kind::Symlink {
                n.mtime = None;
            }
            // tar's default format keeps whole seconds only
            if let Some((s, _)) = n.mtime {
                n.mtime = Some((s, 0));
            }
        }
    }
    let d = diff(&sa, &sb, "source", what);
    assert!(
        d.is_empty(),
        "{what} differs from the source:\n{}",
        d.join("\n")
    );
}

#[test]
fn tar_extract_onto_mount_and_create_back_round_trips() {
    if !common::ready() {
        return;
    }
    let mut f = Fixture::new(Layer::new().file("base/keep", "k"));
    let src = f.ws.mkdir("src");
    sample_tree(&src);
    let tarball = f.ws.join("src.tar");
    sh(&format!("tar -C {} -cpf {} .", p(&src), p(&tarball)));
    f.sh(&format!(
        "mkdir x && tar -C x --xattrs -xpf {}",
        p(&tarball)
    ));
    assert_trees_equal(&src, &f.m("x"), "tree extracted onto the mount");
    let back = f.ws.join("back.tar");
    f.sh(&format!("tar -C x -cpf {} .", p(&back)));
    let out = f.ws.mkdir("out");
    sh(&format!("tar -C {} -xpf {}", p(&out), p(&back)));
    assert_trees_equal(&src, &out, "tree archived back from the mount");
    f.remount();
    assert_trees_equal(&src, &f.m("x"), "extracted tree after remount");
}

#[test]
fn cp_a_into_and_within_mount_preserves_everything() {
    if !common::ready() {
        return;
    }
    let ws_src = Workspace::new();
    let lower = Layer::new()
        .file("tree/a", "a")
        .file_mode("tree/b", "b", 0o600)
        .owner("tree/b", 77, 88)
        .symlink("tree/l", "a")
        .mtime("tree/a", 1_000_000_000);
    let f = Fixture::new(lower);
    let src = ws_src.mkdir("src");
    sample_tree(&src);
    f.sh(&format!("cp -a {} copy", p(&src)));
    assert_trees_equal(&src, &f.m("copy"), "cp -a onto the mount");
    // copying a lower tree within the mount
    f.sh("cp -a tree tree2");
    assert_trees_equal(&f.m("tree"), &f.m("tree2"), "cp -a of a lower tree");
    assert_eq!(
        f.sh("stat -c '%n %a %u %g %Y' tree2/a tree2/b"),
        "tree2/a 644 0 0 1000000000\ntree2/b 600 77 88 ".to_string() + &f.sh("stat -c %Y tree/b")
    );
}

#[test]
fn rm_rf_of_lower_tree_leaves_whiteout_and_stays_deleted() {
    if !common::ready() {
        return;
    }
    let mut lower = Layer::new().file("keep", "k");
    for i in 0..50 {
        lower = lower.file(&format!("tree/d{}/f{i}", i % 5), format!("{i}"));
    }
    let mut f = Fixture::new(lower.symlink("tree/link", "d0"));
    f.sh("rm -rf tree");
    assert!(!f.m("tree").exists(), "tree still visible after rm -rf");
    assert_eq!(f.sh("ls -A"), "keep\n");
    f.remount();
    assert_eq!(
        f.sh("ls -A"),
        "keep\n",
        "deleted tree reappeared after remount"
    );
    f.unmount();
    let up = common::upper_snapshot(&f.upper);
    assert_eq!(
        up.get("/tree").map(|n| n.kind),
        Some(Kind::Whiteout),
        "upper: {:?}",
        up.paths()
    );
    assert!(
        f.lower.join("tree/d0/f0").exists(),
        "lower layer was modified"
    );
}

#[test]
fn mv_of_lower_files_and_dirs() {
    if !common::ready() {
        return;
    }
    let f = Fixture::new(
        Layer::new()
            .file("a", "a\n")
            .file("dir/x", "x\n")
            .file("dir/sub/y", "y\n")
            .dir("to", 0o755),
    );
    f.sh("mv a to/a2");
    f.sh("mv dir to/dir2");
    assert_eq!(f.sh("cat to/a2 to/dir2/x to/dir2/sub/y"), "a\nx\ny\n");
    assert_eq!(f.sh("ls -A"), "to\n");
    f.sh("mv to/dir2 dir");
    assert_eq!(f.sh("find dir | sort"), "dir\ndir/sub\ndir/sub/y\ndir/x\n");
}

#[test]
fn ln_hard_and_symbolic() {
    if !common::ready() {
        return;
    }
    let f = Fixture::new(Layer::new().file("lower", "L\n"));
    f.sh(
        "echo U > upper; ln upper upper2; ln lower lower2; ln -s lower sym; ln -s missing dangling",
    );
    assert_eq!(
        f.sh("stat -c '%n %h' upper upper2 lower lower2"),
        "upper 2\nupper2 2\nlower 2\nlower2 2\n"
    );
    assert_eq!(f.sh("readlink sym dangling"), "lower\nmissing\n");
    assert_eq!(f.sh("cat sym lower2"), "L\nL\n");
    f.sh("echo more >> upper2");
    assert_eq!(f.sh("cat upper"), "U\nmore\n");
    assert_eq!(
        f.sh("test -e dangling || echo dangling-ok"),
        "dangling-ok\n"
    );
}

#[test]
fn find_lists_merged_tree_with_types() {
    if !common::ready() {
        return;
    }
    let f = Fixture::new(
        Layer::new()
            .file("a/b/c", "c")
            .symlink("a/l", "b")
            .fifo("a/p")
            .whiteout("a/gone")
            .dir("e", 0o700),
    );
    f.sh("mkdir a/new; touch a/new/f");
    assert_eq!(
        f.sh("find . -printf '%y %p\\n' | sort"),
        "d .\nd ./a\nd ./a/b\nd ./a/new\nd ./e\nf ./a/b/c\nf ./a/new/f\nl ./a/l\np ./a/p\n"
    );
    assert_eq!(f.sh("find . -name c -type f"), "./a/b/c\n");
}

#[test]
fn git_init_add_commit_in_mount() {
    if !common::ready() {
        return;
    }
    let mut f = Fixture::new(
        Layer::new()
            .file("proj/README", "hello\n")
            .file("proj/src/main.c", "int main(){}\n"),
    );
    let git = "git -c user.name=Strata -c user.email=t@example.invalid -c init.defaultBranch=main -c core.fsyncMethod=fsync";
    f.sh(&format!(
        "cd proj && {git} init -q && {git} add -A && {git} commit -q -m first"
    ));
    f.sh(&format!(
        "cd proj && echo change >> README && {git} commit -q -am second"
    ));
    assert_eq!(f.sh("cd proj && git log --format=%s"), "second\nfirst\n");
    assert_eq!(f.sh("cd proj && git status --porcelain"), "");
    f.sh("cd proj && git fsck --strict --no-progress");
    f.remount();
    assert_eq!(
        f.sh("cd proj && git log --format=%s && git status --porcelain"),
        "second\nfirst\n"
    );
    assert_eq!(f.sh("cd proj && git show HEAD:README"), "hello\nchange\n");
}

#[test]
fn sqlite3_create_insert_and_read_back() {
    if !common::ready() {
        return;
    }
    let mut f = Fixture::new(Layer::new().dir("db", 0o755));
    f.sh(
        "sqlite3 db/test.db 'CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT); \
         BEGIN; WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c WHERE x<5000) \
         INSERT INTO t(v) SELECT printf(\"row%d\", x) FROM c; COMMIT;'",
    );
    f.sh("sqlite3 db/test.db \"PRAGMA journal_mode=WAL; INSERT INTO t(v) VALUES('wal');\"");
    assert_eq!(
        f.sh("sqlite3 db/test.db 'SELECT count(*), max(id) FROM t'"),
        "5001|5001\n"
    );
    f.remount();
    assert_eq!(
        f.sh("sqlite3 db/test.db 'SELECT v FROM t WHERE id IN (1, 5001) ORDER BY id'"),
        "row1\nwal\n"
    );
    assert_eq!(f.sh("sqlite3 db/test.db 'PRAGMA integrity_check'"), "ok\n");
}

#[test]
fn setfattr_getfattr_user_xattrs() {
    if !common::ready() {
        return;
    }
    let mut f = Fixture::new(
        Layer::new()
            .file("f", "f")
            .xattr("f", "user.lower", "L")
            .dir("d", 0o755),
    );
    f.sh("setfattr -n user.a -v 1 f && setfattr -n user.b -v two d && echo n > n && setfattr -n user.c -v 3 n");
    assert_eq!(
        f.sh("getfattr --absolute-names -d f d n | grep -v '^#' | grep ."),
        "user.a=\"1\"\nuser.lower=\"L\"\nuser.b=\"two\"\nuser.c=\"3\"\n"
    );
    f.sh("setfattr -x user.lower f");
    f.remount();
    assert_eq!(
        f.sh("getfattr --absolute-names -d f | grep -v '^#' | grep ."),
        "user.a=\"1\"\n"
    );
    assert_eq!(
        common::get_xattr(&f.lower.join("f"), "user.lower").as_deref(),
        Some(&b"L"[..]),
        "lower modified"
    );
}

#[test]
fn daemon_mode_returns_once_mount_is_live_and_exits_on_unmount() {
    if !common::ready() {
        return;
    }
    let ws = Workspace::new();
    let lower = ws.join("lower");
    Layer::new().file("hello", "hi\n").build(&lower);
    let (upper, work, mnt) = (ws.mkdir("upper"), ws.mkdir("work"), ws.mkdir("mnt"));
    let opts = common::fuse_options(&[lower], Some((&upper, &work)), &[]);
    let st = std::process::Command::new(common::strata_fuse_bin())
        .arg("-o")
        .arg(&opts)
        .arg(&mnt)
        .stdin(std::process::Stdio::null())
        .status()
        .expect("spawn");
    assert!(st.success(), "daemonising mount exited with {st}");
    assert!(
        common::mounted_fstype(&mnt).is_some_and(|t| t.starts_with("fuse")),
        "not mounted when the program returned"
    );
    assert_eq!(fs::read_to_string(mnt.join("hello")).expect("read"), "hi\n");
    sh(&format!("fusermount3 -u {}", p(&mnt)));
    let mntname = mnt.display().to_string();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let alive = sh("ps -eo args=")
            .lines()
            .any(|l| l.contains(&mntname) && !l.starts_with("ps "));
        if !alive {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "daemon still running 10 s after unmount"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

#[test]
fn read_only_mount_without_upperdir_rejects_writes() {
    if !common::ready() {
        return;
    }
    let ws = Workspace::new();
    let (l1, l2) = (ws.join("l1"), ws.join("l2"));
    Layer::new().file("a", "top\n").build(&l1);
    Layer::new()
        .file("a", "bottom\n")
        .file("b", "b\n")
        .build(&l2);
    let mnt = ws.mkdir("mnt");
    let m = FuseMount::mount(&[l1, l2], None, &mnt, &[]).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(sh(&format!("cat {}/a {}/b", p(&mnt), p(&mnt))), "top\nb\n");
    let err = fs::write(mnt.join("new"), "x").expect_err("write on a read-only mount succeeded");
    assert_eq!(err.raw_os_error(), Some(libc::EROFS), "{err}");
    let err = fs::remove_file(mnt.join("a")).expect_err("unlink on a read-only mount succeeded");
    assert_eq!(err.raw_os_error(), Some(libc::EROFS), "{err}");
    m.unmount().unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn version_flag_prints_a_version_and_exits_zero() {
    if !common::ready() {
        return;
    }
    let out = std::process::Command::new(common::strata_fuse_bin())
        .arg("--version")
        .output()
        .expect("spawn");
    assert!(out.status.success(), "--version exited with {}", out.status);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.split(|c: char| !c.is_ascii_digit() && c != '.')
            .any(|w| w.contains('.') && w.len() >= 3),
        "no version number in {text:?}"
    );
}

#[test]
fn unknown_mount_options_are_warned_and_ignored() {
    if !common::ready() {
        return;
    }
    let ws = Workspace::new();
    let lower = ws.join("lower");
    Layer::new().file("f", "f\n").build(&lower);
    let (upper, work, mnt) = (ws.mkdir("upper"), ws.mkdir("work"), ws.mkdir("mnt"));
    let m = FuseMount::mount(
        &[lower],
        Some((&upper, &work)),
        &mnt,
        &["noatime", "strata_bogus_option=1"],
    )
    .unwrap_or_else(|e| panic!("mount with an unknown option failed: {e}"));
    assert_eq!(fs::read_to_string(mnt.join("f")).expect("read"), "f\n");
    let log = m.log_text();
    m.unmount().unwrap_or_else(|e| panic!("{e}"));
    assert!(
        log.contains("strata_bogus_option"),
        "no warning naming the unknown option; log: {log:?}"
    );
}

#[test]
fn lowerdir_paths_with_escaped_colons() {
    if !common::ready() {
        return;
    }
    let ws = Workspace::new();
    let (l1, l2) = (ws.join("lay:er1"), ws.join("layer:2"));
    Layer::new().file("a", "from 1\n").build(&l1);
    Layer::new()
        .file("a", "from 2\n")
        .file("b", "b from 2\n")
        .build(&l2);
    let (upper, work, mnt) = (ws.mkdir("upper"), ws.mkdir("work"), ws.mkdir("mnt"));
    let m = FuseMount::mount(&[l1, l2], Some((&upper, &work)), &mnt, &[])
        .unwrap_or_else(|e| panic!("mount with escaped colons failed: {e}"));
    assert_eq!(
        sh(&format!("cat {0}/a {0}/b", p(&mnt))),
        "from 1\nb from 2\n"
    );
    fs::write(mnt.join("c"), "c\n").expect("write");
    m.unmount().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(fs::read_to_string(upper.join("c")).expect("upper"), "c\n");
}

/// Run strata-fuse with `-o OPTS MNT` (daemon mode) and return (exit success, stderr).
fn run_mount_program(opts: &str, mnt: &Path) -> (bool, String) {
    let out = std::process::Command::new(common::strata_fuse_bin())
        .arg("-o")
        .arg(opts)
        .arg(mnt)
        .output()
        .expect("spawn strata-fuse");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn bad_arguments_fail_before_mounting_with_a_message_naming_the_problem() {
    if !common::ready() {
        return;
    }
    let d = |x: &Path| x.display().to_string();
    let ws = Workspace::new();
    let lower = ws.mkdir("lower");
    let (upper, work, mnt) = (ws.mkdir("upper"), ws.mkdir("work"), ws.mkdir("mnt"));
    let shm_work =
        std::path::PathBuf::from(format!("/dev/shm/strata-test-work-{}", std::process::id()));
    fs::create_dir_all(&shm_work).expect("work dir on tmpfs");
    let inner_upper = ws.mkdir("lower/inner-upper");
    let cases: Vec<(String, &str)> = vec![
        (format!("lowerdir={}/missing", d(ws.path())), "missing"),
        (
            format!(
                "lowerdir={},upperdir={}/nope,workdir={}",
                d(&lower),
                d(ws.path()),
                d(&work)
            ),
            "nope",
        ),
        (
            format!("lowerdir={},upperdir={}", d(&lower), d(&upper)),
            "workdir",
        ),
        (
            format!(
                "lowerdir={},upperdir={},workdir={}",
                d(&lower),
                d(&upper),
                d(&shm_work)
            ),
            "same filesystem",
        ),
        (
            format!(
                "lowerdir={},upperdir={},workdir={}",
                d(&lower),
                d(&inner_upper),
                d(&work)
            ),
            "overlap",
        ),
    ];
    for (opts, needle) in &cases {
        let (ok, err) = run_mount_program(opts, &mnt);
        assert!(!ok, "strata-fuse -o {opts} succeeded");
        assert!(
            err.contains(needle),
            "error for -o {opts} does not say {needle:?}: {err:?}"
        );
        assert_eq!(
            common::mounted_fstype(&mnt),
            None,
            "-o {opts} left a mount behind"
        );
    }
    // A mountpoint that is already mounted.
    let m = FuseMount::mount(
        std::slice::from_ref(&lower),
        Some((&upper, &work)),
        &mnt,
        &[],
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let (w2, u2) = (ws.mkdir("work2"), ws.mkdir("upper2"));
    let (ok, err) = run_mount_program(
        &format!(
            "lowerdir={},upperdir={},workdir={}",
            d(&lower),
            d(&u2),
            d(&w2)
        ),
        &mnt,
    );
    m.unmount().unwrap_or_else(|e| panic!("{e}"));
    let _ = fs::remove_dir_all(&shm_work);
    assert!(!ok, "mounting over a live mount succeeded");
    assert!(err.contains("already mounted"), "{err:?}");
}

#[test]
fn debug_option_traces_operations_with_result_and_latency() {
    if !common::ready() {
        return;
    }
    let ws = Workspace::new();
    let lower = ws.join("lower");
    Layer::new().file("traced-file", "x\n").build(&lower);
    let (upper, work, mnt) = (ws.mkdir("upper"), ws.mkdir("work"), ws.mkdir("mnt"));
    let m = FuseMount::mount(&[lower], Some((&upper, &work)), &mnt, &["debug"])
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        fs::read_to_string(mnt.join("traced-file")).expect("read"),
        "x\n"
    );
    let _ = fs::metadata(mnt.join("absent-name"));
    let log = m.log_text();
    m.unmount().unwrap_or_else(|e| panic!("{e}"));
    let line = log
        .lines()
        .find(|l| l.contains("lookup") && l.contains("\"traced-file\"") && l.contains("-> ok"))
        .unwrap_or_else(|| panic!("no traced lookup of traced-file in {log:?}"));
    assert!(
        line.contains("µs") || line.contains("ms") || line.contains("ns"),
        "no latency: {line}"
    );
    assert!(
        log.lines()
            .any(|l| l.contains("\"absent-name\"") && l.contains("errno 2")),
        "failed lookup not traced with its errno"
    );
}

#[test]
fn parallel_creates_links_renames_and_removes_stay_consistent() {
    if !common::ready() {
        return;
    }
    let mut f = Fixture::new(Layer::new().file("d0/lower", "l\n").file("d1/lower", "l\n"));
    // Four writers, each in its own directory and across to its neighbour's, plus a reader
    // walking the tree, all at once.
    let script = r#"
        set -e
        k=$1; n=$(( (k + 1) % 4 ))
        mkdir -p d$k d$n
        for i in $(seq 150); do
            echo $i > d$k/f$i
            ln d$k/f$i d$k/h$i
            mv d$k/f$i d$n/m${k}_$i
            [ "$(cat d$k/h$i)" = "$i" ]
            rm d$k/h$i
        done
    "#;
    let dir = f.mnt.clone();
    let children: Vec<_> = (0..4)
        .map(|k| {
            std::process::Command::new("sh")
                .arg("-c")
                .arg(script)
                .arg("sh")
                .arg(k.to_string())
                .current_dir(&dir)
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("spawn writer")
        })
        .collect();
    let walker = std::process::Command::new("sh")
        .arg("-c")
        .arg("for i in $(seq 40); do find . -type f > /dev/null 2>&1 || true; done")
        .current_dir(&dir)
        .spawn()
        .expect("spawn walker");
    for c in children {
        let out = c.wait_with_output().expect("wait writer");
        assert!(
            out.status.success(),
            "writer failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let _ = walker.wait_with_output();
    let before = sh(&format!(
        "cd {} && find . | sort && cat d*/m* | sort -n | uniq | wc -l",
        p(&f.mnt)
    ));
    assert!(
        before.trim_end().ends_with("150"),
        "moved files lost: {before}"
    );
    f.remount();
    let after = sh(&format!(
        "cd {} && find . | sort && cat d*/m* | sort -n | uniq | wc -l",
        p(&f.mnt)
    ));
    assert_eq!(before, after, "the tree changed across a remount");
    assert_eq!(
        sh(&format!("ls {} | wc -l", p(&f.mnt.join("d0")))).trim(),
        "151",
        "d0: lower + 150 moved in"
    );
}

/// Lines of a debug trace that show the daemon serving a read of inode `ino`.
fn traced_reads(log: &str, ino: u64) -> usize {
    let tag = format!("read ino={ino} ");
    log.lines().filter(|l| l.contains(&tag)).count()
}

fn ino_of(p: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    fs::metadata(p)
        .unwrap_or_else(|e| panic!("stat {}: {e}", p.display()))
        .ino()
}

#[test]
fn passthrough_serves_upper_files_and_every_file_of_a_read_only_mount() {
    if !common::ready() {
        return; // (as root: FUSE passthrough needs CAP_SYS_ADMIN in the daemon)
    }
    let ws = Workspace::new();
    let lower = ws.join("lower");
    let data: Vec<u8> = (0..(1u32 << 20)).map(|i| (i % 251) as u8).collect();
    Layer::new().file("big", &data).build(&lower);

    // Writable mount: a lower file is read through the daemon (so that an fd opened before a
    // copy-up can follow it); a file whose data is in the upper layer goes straight through.
    let (upper, work, mnt) = (ws.mkdir("upper"), ws.mkdir("work"), ws.mkdir("mnt"));
    let m = FuseMount::mount(
        std::slice::from_ref(&lower),
        Some((&upper, &work)),
        &mnt,
        &["debug"],
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(fs::read(mnt.join("big")).expect("read lower"), data);
    fs::write(mnt.join("new"), &data).expect("write new");
    assert_eq!(fs::read(mnt.join("new")).expect("read new"), data);
    let (big_ino, new_ino) = (ino_of(&mnt.join("big")), ino_of(&mnt.join("new")));
    let log = m.log_text();
    m.unmount().unwrap_or_else(|e| panic!("{e}"));
    assert!(
        traced_reads(&log, big_ino) > 0,
        "lower file not read through the daemon on a writable mount"
    );
    assert_eq!(
        traced_reads(&log, new_ino),
        0,
        "upper file read through the daemon, not passthrough"
    );

    // Read-only mount: nothing can be copied up, so lower files go straight through too.
    let mnt2 = ws.mkdir("mnt2");
    let m = FuseMount::mount(&[lower], None, &mnt2, &["debug"]).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(fs::read(mnt2.join("big")).expect("read lower"), data);
    let ino = ino_of(&mnt2.join("big"));
    let log = m.log_text();
    m.unmount().unwrap_or_else(|e| panic!("{e}"));
    assert!(
        log.lines()
            .any(|l| l.contains("open ino=") && l.contains("-> ok")),
        "no traced open in {log:?}"
    );
    assert_eq!(
        traced_reads(&log, ino),
        0,
        "read-only mount read a lower file through the daemon"
    );
}

#[test]
fn fsync_and_directory_fsync_succeed_on_copied_up_files_with_and_without_volatile() {
    if !common::ready() {
        return;
    }
    let ws = Workspace::new();
    let lower = ws.join("lower");
    Layer::new()
        .file("f", "lower\n")
        .dir("d", 0o755)
        .build(&lower);
    for (opts, honoured) in [(&["debug"][..], true), (&["debug", "volatile"][..], false)] {
        let tag = if honoured { "default" } else { "volatile" };
        let (upper, work, mnt) = (
            ws.mkdir(&format!("{tag}-upper")),
            ws.mkdir(&format!("{tag}-work")),
            ws.mkdir(&format!("{tag}-mnt")),
        );
        let m = FuseMount::mount(
            std::slice::from_ref(&lower),
            Some((&upper, &work)),
            &mnt,
            opts,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        // Appending copies the file up; fsync and a directory fsync both succeed either way.
        sh(&format!(
            "python3 -c 'import os\nfd = os.open({f:?}, os.O_WRONLY | os.O_APPEND)\nos.write(fd, b\"more\\n\")\nos.fsync(fd)\nos.close(fd)\nd = os.open({d:?}, os.O_RDONLY)\nos.fsync(d)\nos.close(d)'",
            f = mnt.join("f").display().to_string(),
            d = mnt.join("d").display().to_string(),
        ));
        let log = m.log_text();
        m.unmount().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            fs::read_to_string(upper.join("f")).expect("upper copy"),
            "lower\nmore\n"
        );
        assert!(
            log.lines()
                .any(|l| l.contains("fsync ino=") && l.contains("-> ok")),
            "{tag}: fsync not traced: {log:?}"
        );
        assert!(
            log.lines()
                .any(|l| l.contains("fsyncdir ino=") && l.contains("-> ok")),
            "{tag}: fsyncdir not traced: {log:?}"
        );
    }
}

/// A cached Debian minbase root filesystem (a tar), built once by `scripts/debian-minbase.sh`.
fn debian_minbase() -> Option<PathBuf> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/debian-minbase.sh");
    let out = std::process::Command::new("bash")
        .arg(&script)
        .output()
        .expect("run scripts/debian-minbase.sh");
    if !out.status.success() {
        common::skip(&format!(
            "no Debian minbase rootfs: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
        return None;
    }
    Some(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
}

/// Run `script` in a chroot at `root` with /proc, /dev and /sys mounted, in a private mount
/// namespace; returns (status, stdout+stderr).
fn in_chroot(root: &Path, script: &str) -> (bool, String) {
    let setup = format!(
        "set -e\nR={r}\nmount -t proc proc $R/proc\nmount --rbind /dev $R/dev\n\
         mount --rbind /sys $R/sys\nexec chroot $R /bin/sh -c {s}",
        r = shq(&root.display().to_string()),
        s = shq(&format!(
            "export DEBIAN_FRONTEND=noninteractive LC_ALL=C\n{script}"
        ))
    );
    let out = std::process::Command::new("unshare")
        .args(["-m", "--propagation", "private", "sh", "-c", &setup])
        .output()
        .expect("spawn unshare");
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

#[test]
fn apt_installs_runs_verifies_and_purges_packages_in_a_chroot_on_a_strata_mount() {
    if !common::ready() {
        return;
    }
    let Some(tar) = debian_minbase() else { return };
    let ws = Workspace::new();
    let lower = ws.mkdir("debian");
    sh(&format!(
        "tar --numeric-owner -xpf {} -C {}",
        shq(&tar.display().to_string()),
        shq(&lower.display().to_string())
    ));
    let (upper, work, mnt) = (ws.mkdir("upper"), ws.mkdir("work"), ws.mkdir("mnt"));
    let m = FuseMount::mount(
        std::slice::from_ref(&lower),
        Some((&upper, &work)),
        &mnt,
        &[],
    )
    .unwrap_or_else(|e| panic!("strata mount failed: {e}"));
    fs::copy("/etc/resolv.conf", mnt.join("etc/resolv.conf")).expect("resolv.conf");
    let (ok, log) = in_chroot(&mnt, "apt-get update -q");
    if !ok {
        drop(m);
        common::skip(&format!(
            "the machine's Debian package source is unreachable:\n{log}"
        ));
        return;
    }
    // dpkg syncs every directory it unpacks into (new ones, copied-up ones, renamed ones).
    let (ok, log) = in_chroot(
        &mnt,
        "set -e\n\
         apt-get install -y -q --no-install-recommends jq tree\n\
         jq --version\n\
         printf '{\"answer\": 42}' | jq .answer\n\
         dpkg --verify jq && echo jq-verified\n\
         tree -d /usr/share/doc/jq | tail -1\n\
         apt-get purge -y -q tree\n\
         if dpkg -s tree >/dev/null 2>&1; then echo tree-still-installed; else echo tree-purged; fi\n\
         dpkg --audit && echo audit-clean",
    );
    let log_text = m.log_text();
    assert!(
        ok,
        "apt-get on strata failed:\n{log}\ndaemon log:\n{log_text}"
    );
    for want in [
        "jq-1.6",
        "\n42\n",
        "jq-verified",
        "tree-purged",
        "audit-clean",
    ] {
        assert!(log.contains(want), "missing {want:?} in:\n{log}");
    }
    assert!(!log.contains("unable to sync"), "{log}");
    m.unmount().unwrap_or_else(|e| panic!("{e}"));

    // The kernel, with its default options, mounts the same upper and shows the package.
    let kmnt = ws.mkdir("kernel-mnt");
    let k = common::KernelOverlay::mount_with(
        std::slice::from_ref(&lower),
        Some((&upper, &work)),
        &kmnt,
        "",
        &[],
    )
    .unwrap_or_else(|e| panic!("kernel overlayfs refuses strata's upper: {e}"));
    let (ok, log) = in_chroot(
        &kmnt,
        "dpkg -s jq | grep '^Status'\n\
         printf '[1,2]' | jq -c 'map(.*2)'\n\
         dpkg --verify jq && echo jq-verified\n\
         dpkg -s tree >/dev/null 2>&1 || echo tree-absent",
    );
    k.unmount();
    assert!(ok, "under kernel overlayfs:\n{log}");
    for want in [
        "Status: install ok installed",
        "[2,4]",
        "jq-verified",
        "tree-absent",
    ] {
        assert!(
            log.contains(want),
            "kernel overlayfs over strata's upper: missing {want:?} in:\n{log}"
        );
    }
    // Lower layers are never modified.
    assert!(
        !lower.join("usr/bin/jq").exists(),
        "jq landed in the lower layer"
    );
}

/// OPEN requests in a debug trace.
fn traced_open_requests(log: &str) -> usize {
    log.lines()
        .filter(|l| l.contains("fuser::request") && l.contains(" OPEN "))
        .count()
}

/// I/O through descriptors opened before a copy-up, an unlink, a rename over the file and a
/// write after the unlink, then O_TRUNC, a shared writable mapping and O_APPEND; asserts
/// what each saw. `d` is the mount: `lower`, `victim`, `wlow`, `trunc` and `mapped` are lower
/// files (4 MiB, pattern A), `up` is a file written through the mount before (pattern B).
const NODE_IO_SCRIPT: &str = r#"
import os, sys
d = sys.argv[1]
MB = 1 << 20
A = bytes(i % 251 for i in range(4 * MB))
B = bytes(i % 241 for i in range(4 * MB))
# 1. A read-only descriptor opened before a copy-up reads the copied-up data after it.
r = os.open(f"{d}/lower", os.O_RDONLY)
assert os.pread(r, 4096, 0) == A[:4096]
w = os.open(f"{d}/lower", os.O_WRONLY)
os.pwrite(w, b"NEW", 3 * MB)
os.close(w)
assert os.pread(r, 3, 3 * MB) == b"NEW", "old descriptor missed the copy-up"
os.close(r)
# 2. An upper file unlinked while open: the rest of it is still read, and fstat works.
u = os.open(f"{d}/up", os.O_RDONLY)
assert os.pread(u, 4096, 0) == B[:4096]
os.unlink(f"{d}/up")
assert os.pread(u, MB, 3 * MB) == B[3 * MB:], "unlinked upper file lost its data"
assert os.fstat(u).st_size == 4 * MB
os.close(u)
# 3. A lower file unlinked while open (a whiteout now hides it): still read.
v = os.open(f"{d}/victim", os.O_RDONLY)
assert os.pread(v, 4096, 0) == A[:4096]
os.unlink(f"{d}/victim")
assert os.pread(v, MB, 3 * MB) == A[3 * MB:], "unlinked lower file lost its data"
os.close(v)
# 4. Renaming a new file over an open one (how dpkg replaces a running binary).
open(f"{d}/up2", "wb").write(B)
o = os.open(f"{d}/up2", os.O_RDONLY)
assert os.pread(o, 4096, 0) == B[:4096]
open(f"{d}/up2.new", "wb").write(b"replacement")
os.rename(f"{d}/up2.new", f"{d}/up2")
assert os.pread(o, MB, 3 * MB) == B[3 * MB:], "replaced file lost its data"
os.close(o)
# 5. A lower file written after its name was removed: a private copy takes the write.
x = os.open(f"{d}/wlow", os.O_RDWR)
os.unlink(f"{d}/wlow")
os.pwrite(x, b"XYZ", 0)
assert os.pread(x, 6, 0) == b"XYZ" + A[3:6]
os.close(x)
# 6. Opening a lower file with O_TRUNC empties its copy (a SETATTR, with no OPEN to tell).
t = os.open(f"{d}/trunc", os.O_WRONLY | os.O_TRUNC)
os.write(t, b"short")
os.close(t)
assert open(f"{d}/trunc", "rb").read() == b"short"
# 7. A shared writable mapping of a lower file: its writeback copies the file up.
import mmap
mfd = os.open(f"{d}/mapped", os.O_RDWR)
mm = mmap.mmap(mfd, 4096)
mm[0:6] = b"MAPPED"
mm.flush()
mm.close()
os.close(mfd)
assert open(f"{d}/mapped", "rb").read(8) == b"MAPPED" + A[6:8]
# 8. O_APPEND appends at the end the kernel knows.
with open(f"{d}/trunc", "ab") as f:
    f.write(b"+more")
assert open(f"{d}/trunc", "rb").read() == b"short+more"
print("node io ok")
"#;

#[test]
fn with_open_handles_off_the_kernel_sends_no_open_and_reads_keep_kernel_semantics() {
    if !common::ready() {
        return;
    }
    let ws = Workspace::new();
    let lower = ws.join("lower");
    let a: Vec<u8> = (0..(4u32 << 20)).map(|i| (i % 251) as u8).collect();
    let b: Vec<u8> = (0..(4u32 << 20)).map(|i| (i % 241) as u8).collect();
    Layer::new()
        .file("lower", &a)
        .file("victim", &a)
        .file("wlow", &a)
        .file("trunc", &a)
        .file("mapped", &a)
        .build(&lower);
    let lower_sum = sh(&format!("cd {} && md5sum *", p(&lower)));
    let (upper, work, mnt) = (ws.mkdir("upper"), ws.mkdir("work"), ws.mkdir("mnt"));
    let m = FuseMount::mount(
        std::slice::from_ref(&lower),
        Some((&upper, &work)),
        &mnt,
        &["debug", "open_handles=0"],
    )
    .unwrap_or_else(|e| panic!("{e}"));
    fs::write(mnt.join("up"), &b).expect("write up");
    let script = ws.join("node_io.py");
    fs::write(&script, NODE_IO_SCRIPT).expect("write script");
    let out = std::process::Command::new("python3")
        .arg(&script)
        .arg(&mnt)
        .output()
        .expect("spawn python3");
    let log = m.log_text();
    assert!(
        out.status.success(),
        "{}\n{}\ndaemon log tail:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        log.lines().rev().take(40).collect::<Vec<_>>().join("\n")
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "node io ok");
    // The first OPEN is answered with ENOSYS; the kernel sends no other.
    assert_eq!(traced_open_requests(&log), 1, "OPEN requests in the trace");
    // The data after the unmount: the copy-up and the replacement are in the upper layer,
    // the lower layer is untouched, and the unlinked files are gone from both views.
    m.unmount().unwrap_or_else(|e| panic!("{e}"));
    let copied = fs::read(upper.join("lower")).expect("copied-up file");
    assert_eq!(&copied[3 << 20..(3 << 20) + 3], b"NEW");
    assert_eq!(fs::read(upper.join("up2")).expect("up2"), b"replacement");
    assert!(!upper.join("up").exists());
    assert_eq!(fs::read(upper.join("trunc")).expect("trunc"), b"short+more");
    assert_eq!(
        &fs::read(upper.join("mapped")).expect("mapped")[..6],
        b"MAPPED"
    );
    assert_eq!(
        sh(&format!("cd {} && md5sum *", p(&lower))),
        lower_sum,
        "the lower layer changed"
    );

    // A read-only mount with the same option reads every file through the daemon, by node.
    let mnt2 = ws.mkdir("mnt2");
    let m = FuseMount::mount(
        std::slice::from_ref(&lower),
        None,
        &mnt2,
        &["debug", "open_handles=0"],
    )
    .unwrap_or_else(|e| panic!("{e}"));
    for name in ["lower", "victim", "wlow", "trunc", "mapped"] {
        assert_eq!(fs::read(mnt2.join(name)).expect("read"), a, "{name}");
    }
    let ino = ino_of(&mnt2.join("victim"));
    let log = m.log_text();
    m.unmount().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(traced_open_requests(&log), 1, "OPEN requests in the trace");
    assert!(traced_reads(&log, ino) > 0, "no read by node in the trace");
}

/// A strata mount of `lowers` with an upper, work and mount directory of its own (`TAG-upper`,
/// `TAG-work`, `TAG-mnt`), and the mount's path.
fn mount_fresh(
    ws: &Workspace,
    lowers: &[PathBuf],
    tag: &str,
    opts: &[&str],
) -> (FuseMount, PathBuf) {
    let upper = ws.mkdir(&format!("{tag}-upper"));
    let work = ws.mkdir(&format!("{tag}-work"));
    let mnt = ws.mkdir(&format!("{tag}-mnt"));
    let m = FuseMount::mount(lowers, Some((&upper, &work)), &mnt, opts)
        .unwrap_or_else(|e| panic!("strata mount failed: {e}"));
    (m, mnt)
}

/// Successful LOOKUPs of regular entries (names `f...`) in a debug trace.
fn traced_file_lookups(log: &str) -> usize {
    log.lines()
        .filter(|l| l.contains("lookup ino=") && l.contains(" \"f") && l.contains("-> ok"))
        .count()
}

/// Every entry below `root` as `path inode type` lines, read with `os.scandir` (the listing's
/// d_ino and d_type, no stat), sorted.
fn scandir_listing(root: &Path) -> String {
    let script = r#"
import os, sys
out = []
def walk(d, rel):
    for e in os.scandir(d):
        kind = "d" if e.is_dir(follow_symlinks=False) else "f"
        out.append(f"{rel}{e.name} {e.inode()} {kind}")
        if kind == "d":
            walk(e.path, f"{rel}{e.name}/")
walk(sys.argv[1], "")
print("\n".join(sorted(out)))
"#;
    let out = std::process::Command::new("python3")
        .args(["-c", script])
        .arg(root)
        .output()
        .expect("spawn python3");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Listings answer READDIRPLUS with attributes for every entry once walks are seen to stat
/// them (no LOOKUP per entry, even past the first reply of a directory too big for one), and
/// with names only (node id 0: no inode, no lookup) for walks that never stat; both show the
/// names, inode numbers and types of the layers.
#[test]
fn listings_carry_attributes_for_stat_walks_and_names_only_for_plain_walks() {
    if !common::ready() {
        return;
    }
    let ws = Workspace::new();
    let lower = ws.join("lower");
    // 12 directories of 400 files: a directory's entries with attributes take more than the
    // 32 KiB a getdents asks for, so its listing takes several READDIRPLUS.
    let (dirs, files) = (12, 400);
    let mut layer = Layer::new();
    for d in 0..dirs {
        for f in 0..files {
            layer = layer.file(&format!("d{d:02}/f{f:03}"), "x".repeat(f % 7).as_str());
        }
    }
    layer.build(&lower);
    let listing = |root: &Path| {
        sh(&format!(
            "find {} -mindepth 1 -printf '%P %s %i\\n' | sort",
            p(root)
        ))
    };
    let want = listing(&lower);

    // A walk that stats every entry: after the first directory or two it is learnt.
    let lowers = std::slice::from_ref(&lower);
    let (m, mnt) = mount_fresh(&ws, lowers, "stat", &["debug"]);
    assert_eq!(listing(&mnt), want, "stat walk through the mount");
    let lookups = traced_file_lookups(&m.log_text());
    m.unmount().unwrap_or_else(|e| panic!("{e}"));
    assert!(
        lookups <= 2 * files,
        "{lookups} LOOKUPs of files for a stat walk of {} files",
        dirs * files
    );

    // A walk that never stats: names, inode numbers and types, and no LOOKUP of a file.
    let (m, mnt) = mount_fresh(&ws, lowers, "names", &["debug"]);
    assert_eq!(scandir_listing(&mnt), scandir_listing(&lower), "names walk");
    let log = m.log_text();
    m.unmount().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        traced_file_lookups(&log),
        0,
        "LOOKUPs of files for a names walk"
    );
    assert!(
        log.lines().any(|l| l.contains("readdirplus")),
        "the trace shows no READDIRPLUS"
    );
}

/// A name whose lookup fails (a metadata-only file on a mount without `metacopy=on`: EPERM)
/// is still listed once listings carry attributes, as kernel overlayfs lists it, and its
/// stat fails there too.
#[test]
fn a_name_whose_lookup_fails_is_listed_as_kernel_overlayfs_lists_it() {
    if !common::ready() {
        return;
    }
    let ws = Workspace::new();
    let (top, bottom) = (ws.join("top"), ws.join("bottom"));
    Layer::new()
        .file("m/meta", "data")
        .file("m/plain", "p")
        .build(&bottom);
    // Directories whose files are stat'd after listing them: the listings that follow
    // (`m`'s) carry attributes.
    let mut layer =
        Layer::new()
            .sparse("m/meta", 4, &[])
            .xattr("m/meta", "trusted.overlay.metacopy", b"");
    for d in 0..8 {
        for f in 0..8 {
            layer = layer.file(&format!("s{d}/f{f}"), "x");
        }
    }
    layer.build(&top);
    let lowers = [top, bottom];
    let walk_then_list = |m: &Path| {
        sh(&format!(
            "find {m}/s0 {m}/s1 {m}/s2 {m}/s3 {m}/s4 {m}/s5 {m}/s6 {m}/s7 -printf '%s\\n' \
             >/dev/null; ls -1 {m}/m; stat {m}/m/meta >/dev/null 2>&1 && echo stat-ok \
             || echo stat-failed",
            m = p(m)
        ))
    };
    let (ku, kw, kmnt) = (ws.mkdir("ku"), ws.mkdir("kw"), ws.mkdir("kmnt"));
    let k = common::KernelOverlay::mount_with(&lowers, Some((&ku, &kw)), &kmnt, "", &[])
        .unwrap_or_else(|e| panic!("{e}"));
    let want = walk_then_list(&kmnt);
    k.unmount();
    assert_eq!(want, "meta\nplain\nstat-failed\n", "kernel overlayfs");
    let (m, mnt) = mount_fresh(&ws, &lowers, "strata", &[]);
    let got = walk_then_list(&mnt);
    m.unmount().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(got, want, "strata (left) and kernel overlayfs (right)");
}
