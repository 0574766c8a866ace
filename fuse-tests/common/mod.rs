//! Harness shared by the integration tests that mount for real.
//!
//! - [`strata_fuse_bin`]: the mount program under test (`STRATA_FUSE_BIN` overrides it, so the
//!   harness itself can be validated against fuse-overlayfs).
//! - [`Layer`]: a declarative lower (or initial upper) layer.
//! - [`KernelOverlay`] and [`FuseMount`]: mount guards that unmount on drop.
//! - [`snapshot`], [`upper_snapshot`], [`diff`]: tree snapshots and readable diffs.
//! - [`Scenario`] / [`differential`]: run one op sequence on kernel overlayfs and on strata
//!   over identical layer copies and compare everything, then cross-mount the upper dirs.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::ffi::{CString, OsStr};
use std::fmt::Write as _;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------------------------
// Environment
// ---------------------------------------------------------------------------------------------

/// The mount program under test: `STRATA_FUSE_BIN` if set (a path or a name on `PATH`),
/// otherwise the `strata-fuse` binary cargo built for this test run.
pub fn strata_fuse_bin() -> PathBuf {
    match std::env::var_os("STRATA_FUSE_BIN") {
        Some(v) if !v.is_empty() => PathBuf::from(v),
        _ => PathBuf::from(env!("CARGO_BIN_EXE_strata-fuse")),
    }
}

/// Whether the mount program under test is fuse-overlayfs (harness validation runs).
pub fn testing_fuse_overlayfs() -> bool {
    strata_fuse_bin()
        .file_name()
        .map(|n| n.to_string_lossy().contains("fuse-overlayfs"))
        .unwrap_or(false)
}

/// Why these tests cannot run here (not root, no /dev/fuse, no kernel overlayfs), or `None`.
pub fn skip_reason() -> Option<String> {
    static REASON: OnceLock<Option<String>> = OnceLock::new();
    REASON
        .get_or_init(|| {
            if !rustix::process::geteuid().is_root() {
                return Some("not running as root (mounting needs root)".into());
            }
            if !Path::new("/dev/fuse").exists() {
                return Some("/dev/fuse is missing".into());
            }
            let t = tempfile::tempdir().ok()?;
            for d in ["l", "u", "w", "m"] {
                fs::create_dir(t.path().join(d)).ok()?;
            }
            let opts = format!(
                "lowerdir={},upperdir={},workdir={}",
                t.path().join("l").display(),
                t.path().join("u").display(),
                t.path().join("w").display()
            );
            let out = Command::new("mount")
                .args(["-t", "overlay", "overlay", "-o", &opts])
                .arg(t.path().join("m"))
                .output();
            match out {
                Ok(o) if o.status.success() => {
                    let _ = Command::new("umount").arg(t.path().join("m")).status();
                    None
                }
                Ok(o) => Some(format!(
                    "kernel overlayfs is unavailable: {}",
                    String::from_utf8_lossy(&o.stderr).trim()
                )),
                Err(e) => Some(format!("cannot run mount: {e}")),
            }
        })
        .clone()
}

/// True when the environment can run mount tests; otherwise prints why and returns false.
/// Use as `if !common::ready() { return; }` at the top of every test.
pub fn ready() -> bool {
    match skip_reason() {
        None => true,
        Some(r) => skip(&r),
    }
}

/// Say why a test cannot run here and return false (`if skip(..) { return }` reads wrong, so
/// callers write `return skip(..)` or `{ skip(..); return; }`). Under CI (`CI=true`), where
/// every tool is installed and the tests run as root, a skip means a missing install step:
/// it fails the test instead.
pub fn skip(reason: &str) -> bool {
    if std::env::var("CI").is_ok_and(|v| v == "true" || v == "1") {
        panic!("a test would skip under CI (a missing install step?): {reason}");
    }
    eprintln!("SKIPPED: {reason}");
    false
}

/// Run a command line with `sh -c`, panicking if it fails; returns stdout.
pub fn sh(cmd: &str) -> String {
    let out = Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .output()
        .expect("spawn sh");
    assert!(
        out.status.success(),
        "command failed ({}): {cmd}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Quote a string for a POSIX shell.
pub fn shq(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// A shell command line running a python3 program (for ops the coreutils cannot express).
pub fn py(code: &str) -> String {
    format!("python3 -c {}", shq(code))
}

fn cpath(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).expect("path without NUL")
}

fn mkdirs(p: &Path) {
    if let Some(parent) = p.parent() {
        fs::create_dir_all(parent).unwrap_or_else(|e| panic!("mkdir -p {}: {e}", parent.display()));
    }
}

/// Set an xattr on a path without following symlinks.
pub fn set_xattr(p: &Path, name: &str, value: &[u8]) {
    if let Err(e) = rustix::fs::lsetxattr(p, name, value, rustix::fs::XattrFlags::empty()) {
        panic!("setxattr {name} on {}: {e}", p.display());
    }
}

/// Read one xattr (no symlink following); `None` when absent.
pub fn get_xattr(p: &Path, name: &str) -> Option<Vec<u8>> {
    let mut buf = vec![0u8; 65536];
    let n = rustix::fs::lgetxattr(p, name, &mut buf[..]).ok()?;
    buf.truncate(n);
    Some(buf)
}

/// List xattr names of a path (no symlink following).
pub fn list_xattrs(p: &Path) -> Vec<String> {
    let mut buf = vec![0u8; 65536];
    let Ok(n) = rustix::fs::llistxattr(p, &mut buf[..]) else {
        return Vec::new();
    };
    buf[..n]
        .split(|b| *b == 0)
        .filter(|s| !s.is_empty())
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect()
}

fn mknod(p: &Path, mode: u32, major: u32, minor: u32) {
    let dev = libc::makedev(major, minor);
    let kind = rustix::fs::FileType::from_raw_mode(mode);
    let perm = rustix::fs::Mode::from_raw_mode(mode);
    if let Err(e) = rustix::fs::mknodat(rustix::fs::CWD, p, kind, perm, dev) {
        panic!("mknod {}: {e}", p.display());
    }
}

fn set_mtime(p: &Path, secs: i64) {
    let t = rustix::fs::Timespec {
        tv_sec: secs,
        tv_nsec: 0,
    };
    let times = rustix::fs::Timestamps {
        last_access: t,
        last_modification: t,
    };
    if let Err(e) = rustix::fs::utimensat(
        rustix::fs::CWD,
        p,
        &times,
        rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
    ) {
        panic!("utimensat {}: {e}", p.display());
    }
}

// ---------------------------------------------------------------------------------------------
// Layer builder
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Debug)]
enum LayerOp {
    Dir(String, u32),
    File(String, Vec<u8>, u32),
    Sparse(String, u64, Vec<(u64, Vec<u8>)>),
    Symlink(String, String),
    Hardlink(String, String),
    Fifo(String, u32),
    Xattr(String, String, Vec<u8>),
    Whiteout(String),
    WhFile(String),
    OpaqueXattr(String, &'static str),
    OpqFile(String),
    Owner(String, u32, u32),
    Mode(String, u32),
    Mtime(String, i64),
}

/// A declarative layer: a list of entries written in order by [`Layer::build`]. Paths are
/// relative to the layer root; missing parent directories are created with mode 0755.
/// Mode, owner and mtime changes are applied after all entries exist (so a directory's
/// mode/mtime survive the creation of its children).
#[derive(Clone, Debug, Default)]
pub struct Layer {
    ops: Vec<LayerOp>,
}

impl Layer {
    pub fn new() -> Self {
        Self::default()
    }
    /// A directory with the given permission bits (may include setgid/sticky).
    pub fn dir(mut self, p: &str, mode: u32) -> Self {
        self.ops.push(LayerOp::Dir(p.into(), mode));
        self
    }
    /// A regular file, mode 0644.
    pub fn file(self, p: &str, content: impl AsRef<[u8]>) -> Self {
        self.file_mode(p, content, 0o644)
    }
    /// A regular file with the given mode.
    pub fn file_mode(mut self, p: &str, content: impl AsRef<[u8]>, mode: u32) -> Self {
        self.ops
            .push(LayerOp::File(p.into(), content.as_ref().to_vec(), mode));
        self
    }
    /// A sparse file of `size` bytes with data only at the given offsets.
    pub fn sparse(mut self, p: &str, size: u64, chunks: &[(u64, &[u8])]) -> Self {
        let chunks = chunks.iter().map(|(o, d)| (*o, d.to_vec())).collect();
        self.ops.push(LayerOp::Sparse(p.into(), size, chunks));
        self
    }
    pub fn symlink(mut self, p: &str, target: &str) -> Self {
        self.ops.push(LayerOp::Symlink(p.into(), target.into()));
        self
    }
    /// A hard link `p` to the existing entry `existing`.
    pub fn hardlink(mut self, p: &str, existing: &str) -> Self {
        self.ops.push(LayerOp::Hardlink(p.into(), existing.into()));
        self
    }
    pub fn fifo(mut self, p: &str) -> Self {
        self.ops.push(LayerOp::Fifo(p.into(), 0o644));
        self
    }
    pub fn xattr(mut self, p: &str, name: &str, value: impl AsRef<[u8]>) -> Self {
        self.ops.push(LayerOp::Xattr(
            p.into(),
            name.into(),
            value.as_ref().to_vec(),
        ));
        self
    }
    /// A kernel-format whiteout: character device 0/0 named `p`.
    pub fn whiteout(mut self, p: &str) -> Self {
        self.ops.push(LayerOp::Whiteout(p.into()));
        self
    }
    /// An OCI/fuse-overlayfs-style whiteout: empty file `.wh.NAME` beside the hidden `NAME`.
    pub fn wh_file(mut self, p: &str) -> Self {
        self.ops.push(LayerOp::WhFile(p.into()));
        self
    }
    /// Mark directory `p` opaque with `trusted.overlay.opaque=y` (creating it if needed).
    pub fn opaque(mut self, p: &str) -> Self {
        self.ops
            .push(LayerOp::OpaqueXattr(p.into(), "trusted.overlay.opaque"));
        self
    }
    /// Mark directory `p` opaque with `user.overlay.opaque=y` (rootless kernel format).
    pub fn user_opaque(mut self, p: &str) -> Self {
        self.ops
            .push(LayerOp::OpaqueXattr(p.into(), "user.overlay.opaque"));
        self
    }
    /// Mark directory `p` opaque with an empty `.wh..wh..opq` file inside it.
    pub fn opq_file(mut self, p: &str) -> Self {
        self.ops.push(LayerOp::OpqFile(p.into()));
        self
    }
    pub fn owner(mut self, p: &str, uid: u32, gid: u32) -> Self {
        self.ops.push(LayerOp::Owner(p.into(), uid, gid));
        self
    }
    pub fn mode(mut self, p: &str, mode: u32) -> Self {
        self.ops.push(LayerOp::Mode(p.into(), mode));
        self
    }
    /// Set atime and mtime of `p` (applied last).
    pub fn mtime(mut self, p: &str, secs: i64) -> Self {
        self.ops.push(LayerOp::Mtime(p.into(), secs));
        self
    }

    /// Write the layer under `root` (created if missing).
    pub fn build(&self, root: &Path) {
        fs::create_dir_all(root).expect("create layer root");
        let mut late: Vec<&LayerOp> = Vec::new();
        for op in &self.ops {
            match op {
                LayerOp::Dir(p, mode) => {
                    let path = root.join(p);
                    fs::create_dir_all(&path).expect("mkdir");
                    late.push(op);
                    let _ = mode;
                }
                LayerOp::File(p, data, _) => {
                    let path = root.join(p);
                    mkdirs(&path);
                    fs::write(&path, data).unwrap_or_else(|e| panic!("write {p}: {e}"));
                    late.push(op);
                }
                LayerOp::Sparse(p, size, chunks) => {
                    use std::os::unix::fs::FileExt;
                    let path = root.join(p);
                    mkdirs(&path);
                    let f = fs::File::create(&path).expect("create sparse");
                    f.set_len(*size).expect("set_len");
                    for (off, d) in chunks {
                        f.write_all_at(d, *off).expect("write_at");
                    }
                }
                LayerOp::Symlink(p, t) => {
                    let path = root.join(p);
                    mkdirs(&path);
                    std::os::unix::fs::symlink(t, &path).expect("symlink");
                }
                LayerOp::Hardlink(p, t) => {
                    let path = root.join(p);
                    mkdirs(&path);
                    fs::hard_link(root.join(t), &path).expect("hardlink");
                }
                LayerOp::Fifo(p, mode) => {
                    let path = root.join(p);
                    mkdirs(&path);
                    mknod(&path, libc::S_IFIFO | mode, 0, 0);
                    late.push(op);
                }
                LayerOp::Xattr(p, n, v) => set_xattr(&root.join(p), n, v),
                LayerOp::Whiteout(p) => {
                    let path = root.join(p);
                    mkdirs(&path);
                    mknod(&path, libc::S_IFCHR, 0, 0);
                }
                LayerOp::WhFile(p) => {
                    let path = root.join(p);
                    mkdirs(&path);
                    let name = path
                        .file_name()
                        .expect("name")
                        .to_string_lossy()
                        .into_owned();
                    fs::write(path.with_file_name(format!(".wh.{name}")), b"").expect("wh file");
                }
                LayerOp::OpaqueXattr(p, n) => {
                    let path = root.join(p);
                    fs::create_dir_all(&path).expect("mkdir");
                    set_xattr(&path, n, b"y");
                }
                LayerOp::OpqFile(p) => {
                    let path = root.join(p);
                    fs::create_dir_all(&path).expect("mkdir");
                    fs::write(path.join(".wh..wh..opq"), b"").expect("opq file");
                }
                LayerOp::Owner(..) | LayerOp::Mode(..) | LayerOp::Mtime(..) => late.push(op),
            }
        }
        // Owners first (chown clears suid/sgid), then modes, then times, deepest paths first
        // so that setting a child's time does not disturb its parent.
        for op in &late {
            if let LayerOp::Owner(p, u, g) = op {
                std::os::unix::fs::lchown(root.join(p), Some(*u), Some(*g)).expect("chown");
            }
        }
        for op in &late {
            match op {
                LayerOp::Dir(p, m)
                | LayerOp::File(p, _, m)
                | LayerOp::Fifo(p, m)
                | LayerOp::Mode(p, m) => {
                    fs::set_permissions(root.join(p), fs::Permissions::from_mode(*m))
                        .expect("chmod")
                }
                _ => {}
            }
        }
        let mut times: Vec<(&String, i64)> = late
            .iter()
            .filter_map(|op| match op {
                LayerOp::Mtime(p, s) => Some((p, *s)),
                _ => None,
            })
            .collect();
        times.sort_by_key(|(p, _)| std::cmp::Reverse(p.matches('/').count()));
        for (p, s) in times {
            set_mtime(&root.join(p), s);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Mounts
// ---------------------------------------------------------------------------------------------

fn mountinfo_has(mnt: &Path) -> Option<String> {
    let want = fs::canonicalize(mnt).unwrap_or_else(|_| mnt.to_path_buf());
    let want = want.to_string_lossy().replace(' ', "\\040");
    let info = fs::read_to_string("/proc/self/mountinfo").ok()?;
    info.lines()
        .rfind(|l| l.split(' ').nth(4) == Some(want.as_str()))
        .map(|l| {
            // fstype follows the " - " separator
            l.split(" - ")
                .nth(1)
                .and_then(|r| r.split(' ').next())
                .unwrap_or("")
                .to_string()
        })
}

/// Whether `mnt` is a mount point now; returns its fstype.
pub fn mounted_fstype(mnt: &Path) -> Option<String> {
    mountinfo_has(mnt)
}

fn umount(mnt: &Path, fuse: bool) {
    let first = if fuse {
        Command::new("fusermount3")
            .arg("-u")
            .arg(mnt)
            .stderr(Stdio::null())
            .status()
    } else {
        Command::new("umount")
            .arg(mnt)
            .stderr(Stdio::null())
            .status()
    };
    if !matches!(first, Ok(s) if s.success()) && mountinfo_has(mnt).is_some() {
        // busy or gone wrong: try again shortly, then lazily
        std::thread::sleep(Duration::from_millis(200));
        let ok = matches!(Command::new("umount").arg(mnt).stderr(Stdio::null()).status(), Ok(s) if s.success());
        if !ok {
            let _ = Command::new("umount").arg("-l").arg(mnt).status();
        }
    }
}

/// Option sets tried in order for a kernel overlay mount with an upper dir.
const KERNEL_OPTION_SETS: &[&str] = &[
    "redirect_dir=on,index=on",
    "redirect_dir=on,index=on,nfs_export=off",
    "redirect_dir=on",
    "",
];

/// A kernel overlayfs mount, unmounted on drop.
pub struct KernelOverlay {
    pub mnt: PathBuf,
    /// The feature options the mount was made with (after any fallback).
    pub options: String,
    mounted: bool,
}

impl KernelOverlay {
    /// Mount with `redirect_dir=on,index=on`, falling back to fewer options when the kernel
    /// refuses (the workdir is emptied between tries). `extra` is appended (e.g. `userxattr`).
    pub fn mount(
        lowers: &[PathBuf],
        upper: Option<(&Path, &Path)>,
        mnt: &Path,
        extra: &[&str],
    ) -> Result<Self, String> {
        let mut errors = String::new();
        // userxattr (rootless format) excludes redirect_dir/index
        let sets: &[&str] = if upper.is_some() && !extra.contains(&"userxattr") {
            KERNEL_OPTION_SETS
        } else {
            &[""]
        };
        for (i, set) in sets.iter().enumerate() {
            if i > 0
                && let Some((_, w)) = upper
            {
                let _ = fs::remove_dir_all(w);
                let _ = fs::create_dir_all(w);
            }
            match Self::mount_with(lowers, upper, mnt, set, extra) {
                Ok(m) => {
                    if i > 0 {
                        eprintln!(
                            "note: kernel overlay mounted with fallback options [{set}]: {errors}"
                        );
                    }
                    return Ok(m);
                }
                Err(e) => {
                    let _ = writeln!(errors, "[{set}] {e}");
                }
            }
        }
        Err(errors)
    }

    /// Mount with exactly these feature options (no fallback).
    pub fn mount_with(
        lowers: &[PathBuf],
        upper: Option<(&Path, &Path)>,
        mnt: &Path,
        features: &str,
        extra: &[&str],
    ) -> Result<Self, String> {
        let lower: Vec<String> = lowers.iter().map(|p| p.display().to_string()).collect();
        let mut opts = format!("lowerdir={}", lower.join(":"));
        if let Some((u, w)) = upper {
            let _ = write!(opts, ",upperdir={},workdir={}", u.display(), w.display());
        }
        if !features.is_empty() {
            let _ = write!(opts, ",{features}");
        }
        for e in extra {
            let _ = write!(opts, ",{e}");
        }
        fs::create_dir_all(mnt).map_err(|e| e.to_string())?;
        let out = Command::new("mount")
            .args(["-t", "overlay", "overlay", "-o", &opts])
            .arg(mnt)
            .output()
            .map_err(|e| e.to_string())?;
        if !out.status.success() {
            return Err(format!(
                "mount -o {opts}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(KernelOverlay {
            mnt: mnt.to_path_buf(),
            options: features.to_string(),
            mounted: true,
        })
    }

    pub fn unmount(mut self) {
        self.do_unmount();
    }

    fn do_unmount(&mut self) {
        if self.mounted {
            self.mounted = false;
            umount(&self.mnt, false);
        }
    }
}

impl Drop for KernelOverlay {
    fn drop(&mut self) {
        self.do_unmount();
    }
}

/// A mount by the FUSE program under test (`strata_fuse_bin()`), unmounted on drop
/// (`fusermount3 -u`, falling back to `umount -l`), after which the daemon must exit.
pub struct FuseMount {
    pub mnt: PathBuf,
    /// The daemon's stdout+stderr.
    pub log: PathBuf,
    child: Option<Child>,
    mounted: bool,
    /// Set once the mount is being taken down; the watchdog then leaves the daemon alone.
    done: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

/// Kill a daemon still serving after `STRATA_TEST_MOUNT_TIMEOUT` seconds (default 600), so
/// that a hung filesystem fails its test (stuck calls return ENOTCONN) instead of hanging CI.
fn watchdog(pid: u32, mnt: PathBuf, done: std::sync::Arc<std::sync::atomic::AtomicBool>) {
    let secs = std::env::var("STRATA_TEST_MOUNT_TIMEOUT")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(600);
    std::thread::spawn(move || {
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(secs) {
            if done.load(std::sync::atomic::Ordering::SeqCst) {
                return;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        if !done.load(std::sync::atomic::Ordering::SeqCst) {
            eprintln!(
                "watchdog: {} still mounted after {secs} s: killing the daemon",
                mnt.display()
            );
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    });
}

/// Build the `-o` option string of a fuse-overlayfs-compatible mount program.
/// (`:` inside a lower dir path is written `\:`.)
pub fn fuse_options(lowers: &[PathBuf], upper: Option<(&Path, &Path)>, extra: &[&str]) -> String {
    let esc = |p: &Path| p.display().to_string().replace(':', "\\:");
    let lower: Vec<String> = lowers.iter().map(|p| esc(p)).collect();
    let mut opts = format!("lowerdir={}", lower.join(":"));
    if let Some((u, w)) = upper {
        let _ = write!(opts, ",upperdir={},workdir={}", u.display(), w.display());
    }
    for e in extra {
        let _ = write!(opts, ",{e}");
    }
    opts
}

impl FuseMount {
    /// Mount as root, in the foreground (`-f`) so the harness owns the daemon process.
    pub fn mount(
        lowers: &[PathBuf],
        upper: Option<(&Path, &Path)>,
        mnt: &Path,
        extra: &[&str],
    ) -> Result<Self, String> {
        Self::mount_as(None, lowers, upper, mnt, extra)
    }

    /// Mount, optionally as another user (`setpriv --reuid --regid --clear-groups`).
    pub fn mount_as(
        user: Option<(u32, u32)>,
        lowers: &[PathBuf],
        upper: Option<(&Path, &Path)>,
        mnt: &Path,
        extra: &[&str],
    ) -> Result<Self, String> {
        fs::create_dir_all(mnt).map_err(|e| e.to_string())?;
        let log = mnt.with_file_name(format!(
            "{}.fuse.log",
            mnt.file_name()
                .unwrap_or(OsStr::new("mnt"))
                .to_string_lossy()
        ));
        let logf = fs::File::create(&log).map_err(|e| e.to_string())?;
        let logf2 = logf.try_clone().map_err(|e| e.to_string())?;
        let opts = fuse_options(lowers, upper, extra);
        let bin = strata_fuse_bin();
        let mut cmd = match user {
            Some((uid, gid)) => {
                let mut c = Command::new("setpriv");
                c.arg(format!("--reuid={uid}"))
                    .arg(format!("--regid={gid}"))
                    .arg("--clear-groups")
                    .arg("--")
                    .arg(&bin);
                c
            }
            None => Command::new(&bin),
        };
        cmd.arg("-f").arg("-o").arg(&opts).arg(mnt);
        cmd.stdin(Stdio::null()).stdout(logf).stderr(logf2);
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("spawn {}: {e}", bin.display()))?;
        let start = Instant::now();
        loop {
            // any new mount at mnt (a FUSE one for strata; the harness self-check mounts
            // kernel overlayfs through a stand-in program)
            if mountinfo_has(mnt).is_some() {
                let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
                watchdog(child.id(), mnt.to_path_buf(), done.clone());
                return Ok(FuseMount {
                    mnt: mnt.to_path_buf(),
                    log,
                    child: Some(child),
                    mounted: true,
                    done,
                });
            }
            if let Ok(Some(st)) = child.try_wait() {
                return Err(format!(
                    "{} -f -o {opts} {} exited ({st}) before mounting:\n{}",
                    bin.display(),
                    mnt.display(),
                    fs::read_to_string(&log).unwrap_or_default()
                ));
            }
            if start.elapsed() > Duration::from_secs(20) {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "{} did not mount {} within 20 s:\n{}",
                    bin.display(),
                    mnt.display(),
                    fs::read_to_string(&log).unwrap_or_default()
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The daemon's log so far.
    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Unmount and wait (up to 10 s) for the daemon to exit; Err if it had to be killed or
    /// exited with a failure status.
    pub fn unmount(mut self) -> Result<(), String> {
        self.do_unmount()
    }

    fn do_unmount(&mut self) -> Result<(), String> {
        if !self.mounted {
            return Ok(());
        }
        self.mounted = false;
        umount(&self.mnt, true);
        // from here on this thread reaps and, if needed, kills the daemon itself
        self.done.store(true, std::sync::atomic::Ordering::SeqCst);
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        let start = Instant::now();
        loop {
            match child.try_wait() {
                Ok(Some(st)) if st.success() => return Ok(()),
                Ok(Some(st)) => {
                    return Err(format!(
                        "daemon exited with {st} after unmount:\n{}",
                        self.log_text()
                    ));
                }
                Ok(None) if start.elapsed() < Duration::from_secs(10) => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                _ => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err("daemon did not exit within 10 s of unmount (killed)".into());
                }
            }
        }
    }
}

impl Drop for FuseMount {
    fn drop(&mut self) {
        if let Err(e) = self.do_unmount() {
            eprintln!("warning: {}: {e}", self.mnt.display());
        }
    }
}

/// A scratch directory that lazily unmounts anything still mounted under it before removal.
pub struct Workspace {
    dir: Option<tempfile::TempDir>,
}

impl Workspace {
    pub fn new() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("strata-test.")
            .tempdir()
            .expect("tempdir");
        Workspace { dir: Some(dir) }
    }
    pub fn path(&self) -> &Path {
        self.dir.as_ref().expect("workspace").path()
    }
    pub fn join(&self, p: &str) -> PathBuf {
        self.path().join(p)
    }
    /// Create (and return) a directory inside the workspace.
    pub fn mkdir(&self, p: &str) -> PathBuf {
        let d = self.join(p);
        fs::create_dir_all(&d).expect("mkdir");
        d
    }
}

impl Default for Workspace {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for Workspace {
    fn drop(&mut self) {
        let Some(dir) = self.dir.take() else { return };
        let root = fs::canonicalize(dir.path()).unwrap_or_else(|_| dir.path().to_path_buf());
        let prefix = root.to_string_lossy().into_owned();
        let info = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let mut mps: Vec<String> = info
            .lines()
            .filter_map(|l| l.split(' ').nth(4))
            .filter(|m| m.starts_with(&prefix))
            .map(|m| m.replace("\\040", " "))
            .collect();
        mps.sort_by_key(|m| std::cmp::Reverse(m.len()));
        for m in &mps {
            let _ = Command::new("umount").arg("-l").arg(m).status();
        }
        if mps.is_empty() {
            drop(dir);
        } else {
            // never delete through a mount that may still be live
            let _ = dir.keep();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Snapshots
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    File,
    Dir,
    Symlink,
    Fifo,
    Char,
    Block,
    Socket,
    /// Only in upper snapshots: a char 0/0 or `.wh.NAME` whiteout.
    Whiteout,
}

/// What a snapshot records about one path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Node {
    pub kind: Kind,
    /// Permission bits including suid/sgid/sticky.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// Regular files only.
    pub size: Option<u64>,
    /// Regular files only: the full content.
    pub content: Option<Vec<u8>>,
    pub target: Option<String>,
    /// Device numbers of char/block devices.
    pub rdev: Option<(u32, u32)>,
    /// Sorted, without `security.*` and overlay-internal names (unless raw).
    pub xattrs: BTreeMap<String, Vec<u8>>,
    /// Non-directories only (merged snapshots).
    pub nlink: Option<u64>,
    /// Upper snapshots: the opaque marker found ("opaque"), if any.
    pub opaque: bool,
    /// Upper snapshots: an `overlay.redirect` xattr is present.
    pub redirect: bool,
    /// Only with [`SnapOpts::mtime`].
    pub mtime: Option<(i64, i64)>,
}

/// Options of [`snapshot_with`].
#[derive(Clone, Copy, Debug, Default)]
pub struct SnapOpts {
    /// Record mtimes (all entries).
    pub mtime: bool,
    /// Keep every xattr, overlay-internal and security ones included.
    pub raw_xattrs: bool,
    /// Upper-dir mode: normalise whiteouts and opaque markers, drop nlink.
    pub upper: bool,
}

/// A snapshot: path ("/" for the root, "/a/b" below it) -> node.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    pub nodes: BTreeMap<String, Node>,
    /// st_ino of every path (kept apart from the nodes: two implementations over copies of
    /// the same layers show different numbers, one implementation across remounts the same).
    pub inos: BTreeMap<String, u64>,
}

impl Snapshot {
    /// The groups of non-directory paths that share one inode (hard links), two or more.
    pub fn link_groups(&self) -> std::collections::BTreeSet<Vec<String>> {
        let mut by_ino: BTreeMap<u64, Vec<String>> = BTreeMap::new();
        for (p, n) in &self.nodes {
            if n.kind != Kind::Dir
                && let Some(i) = self.inos.get(p)
            {
                by_ino.entry(*i).or_default().push(p.clone());
            }
        }
        by_ino.into_values().filter(|g| g.len() > 1).collect()
    }

    /// The paths present in both snapshots whose inode numbers differ.
    pub fn ino_changes(&self, later: &Snapshot) -> std::collections::BTreeSet<String> {
        self.inos
            .iter()
            .filter(|(p, i)| later.inos.get(*p).is_some_and(|j| j != *i))
            .map(|(p, _)| p.clone())
            .collect()
    }

    pub fn get(&self, p: &str) -> Option<&Node> {
        self.nodes.get(p)
    }
    /// The names of the paths, in order.
    pub fn paths(&self) -> Vec<String> {
        self.nodes.keys().cloned().collect()
    }
}

fn internal_xattr(name: &str) -> bool {
    name.starts_with("security.")
        || name.starts_with("trusted.overlay.")
        || name.starts_with("user.overlay.")
}

fn upper_internal_xattr(name: &str) -> bool {
    internal_xattr(name)
        || name.starts_with("user.fuseoverlayfs.")
        || name.starts_with("user.containers.")
}

fn node_of(path: &Path, md: &fs::Metadata, opts: SnapOpts) -> Node {
    let ft = md.file_type();
    use std::os::unix::fs::FileTypeExt;
    let kind = if ft.is_dir() {
        Kind::Dir
    } else if ft.is_file() {
        Kind::File
    } else if ft.is_symlink() {
        Kind::Symlink
    } else if ft.is_fifo() {
        Kind::Fifo
    } else if ft.is_char_device() {
        Kind::Char
    } else if ft.is_block_device() {
        Kind::Block
    } else {
        Kind::Socket
    };
    let mut xattrs = BTreeMap::new();
    for name in list_xattrs(path) {
        let skip = if opts.raw_xattrs {
            false
        } else if opts.upper {
            upper_internal_xattr(&name)
        } else {
            internal_xattr(&name)
        };
        if !skip {
            xattrs.insert(name.clone(), get_xattr(path, &name).unwrap_or_default());
        }
    }
    let rdev = matches!(kind, Kind::Char | Kind::Block)
        .then(|| (libc::major(md.rdev()), libc::minor(md.rdev())));
    Node {
        kind,
        mode: md.mode() & 0o7777,
        uid: md.uid(),
        gid: md.gid(),
        size: (kind == Kind::File).then(|| md.size()),
        content: (kind == Kind::File)
            .then(|| fs::read(path).unwrap_or_else(|e| format!("<unreadable: {e}>").into_bytes())),
        target: (kind == Kind::Symlink).then(|| {
            fs::read_link(path)
                .map(|t| t.to_string_lossy().into_owned())
                .unwrap_or_default()
        }),
        rdev,
        xattrs,
        nlink: (kind != Kind::Dir && !opts.upper).then(|| md.nlink()),
        opaque: false,
        redirect: false,
        mtime: opts.mtime.then(|| (md.mtime(), md.mtime_nsec())),
    }
}

fn whiteout_node() -> Node {
    Node {
        kind: Kind::Whiteout,
        mode: 0,
        uid: 0,
        gid: 0,
        size: None,
        content: None,
        target: None,
        rdev: None,
        xattrs: BTreeMap::new(),
        nlink: None,
        opaque: false,
        redirect: false,
        mtime: None,
    }
}

fn walk(
    root: &Path,
    rel: &str,
    opts: SnapOpts,
    out: &mut BTreeMap<String, Node>,
    inos: &mut BTreeMap<String, u64>,
) {
    let path = if rel == "/" {
        root.to_path_buf()
    } else {
        root.join(&rel[1..])
    };
    let md = match fs::symlink_metadata(&path) {
        Ok(m) => m,
        Err(e) => panic!("lstat {}: {e}", path.display()),
    };
    let mut node = node_of(&path, &md, opts);
    inos.insert(rel.to_string(), md.ino());
    if opts.upper {
        if node.kind == Kind::Char && node.rdev == Some((0, 0)) {
            out.insert(rel.to_string(), whiteout_node());
            return;
        }
        if node.kind == Kind::Dir {
            for name in [
                "trusted.overlay.opaque",
                "user.overlay.opaque",
                "user.fuseoverlayfs.opaque",
            ] {
                if get_xattr(&path, name).as_deref() == Some(b"y") {
                    node.opaque = true;
                }
            }
            node.redirect = get_xattr(&path, "trusted.overlay.redirect").is_some()
                || get_xattr(&path, "user.overlay.redirect").is_some();
        }
        // A metadata-only copy (kernel `metacopy`) has no data of its own: its bytes are
        // holes, and whether an implementation copied data or only metadata is its choice
        // (the merged view, compared separately, shows the data).
        if node.kind == Kind::File
            && (get_xattr(&path, "trusted.overlay.metacopy").is_some()
                || get_xattr(&path, "user.overlay.metacopy").is_some())
        {
            node.content = None;
        }
    }
    let is_dir = node.kind == Kind::Dir;
    out.insert(rel.to_string(), node);
    if !is_dir {
        return;
    }
    let mut names: Vec<String> = fs::read_dir(&path)
        .unwrap_or_else(|e| panic!("readdir {}: {e}", path.display()))
        .map(|e| {
            e.expect("dirent")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    names.sort();
    for name in names {
        let child = if rel == "/" {
            format!("/{name}")
        } else {
            format!("{rel}/{name}")
        };
        if opts.upper {
            // `.wh..opq` is an extra marker fuse-overlayfs writes beside `.wh..wh..opq`
            if name == ".wh..wh..opq" || name == ".wh..opq" {
                if let Some(n) = out.get_mut(rel) {
                    n.opaque = true;
                }
                continue;
            }
            if let Some(hidden) = name.strip_prefix(".wh.") {
                let key = if rel == "/" {
                    format!("/{hidden}")
                } else {
                    format!("{rel}/{hidden}")
                };
                out.insert(key, whiteout_node());
                continue;
            }
        }
        walk(root, &child, opts, out, inos);
    }
}

/// Snapshot a merged (or any) tree: no symlink following, internal xattrs dropped.
pub fn snapshot(root: &Path) -> Snapshot {
    snapshot_with(root, SnapOpts::default())
}

pub fn snapshot_with(root: &Path, opts: SnapOpts) -> Snapshot {
    let mut nodes = BTreeMap::new();
    let mut inos = BTreeMap::new();
    walk(root, "/", opts, &mut nodes, &mut inos);
    Snapshot { nodes, inos }
}

/// Snapshot an upper dir, normalising the on-disk format: char 0/0 and `.wh.NAME` both become
/// a [`Kind::Whiteout`] node at NAME; `trusted.overlay.opaque`, `user.overlay.opaque` and
/// `.wh..wh..opq` all set `opaque`; `overlay.redirect` sets `redirect`; origin/impure/nlink
/// xattrs and link counts are ignored. (The workdir and its index live outside the upper.)
pub fn upper_snapshot(root: &Path) -> Snapshot {
    snapshot_with(
        root,
        SnapOpts {
            upper: true,
            ..Default::default()
        },
    )
}

fn show_bytes(b: &[u8]) -> String {
    if b.len() <= 120 {
        format!("{:?}", String::from_utf8_lossy(b))
    } else {
        format!(
            "{} bytes {:?}...",
            b.len(),
            String::from_utf8_lossy(&b[..80])
        )
    }
}

fn describe(n: &Node) -> String {
    let mut s = format!(
        "{:?} mode={:04o} uid={} gid={}",
        n.kind, n.mode, n.uid, n.gid
    );
    if let Some(c) = &n.content {
        let _ = write!(s, " content={}", show_bytes(c));
    }
    if let Some(t) = &n.target {
        let _ = write!(s, " -> {t:?}");
    }
    if let Some((a, b)) = n.rdev {
        let _ = write!(s, " rdev={a},{b}");
    }
    if n.opaque {
        s.push_str(" opaque");
    }
    if n.redirect {
        s.push_str(" redirect");
    }
    s
}

/// Every difference between two snapshots, one readable line each (empty when equal).
pub fn diff(a: &Snapshot, b: &Snapshot, la: &str, lb: &str) -> Vec<String> {
    let mut out = Vec::new();
    for (p, na) in &a.nodes {
        let Some(nb) = b.nodes.get(p) else {
            out.push(format!("{p}: only in {la}: {}", describe(na)));
            continue;
        };
        let mut more: Vec<String> = Vec::new();
        let d = |what: &str, x: String, y: String| -> Option<String> {
            (x != y).then(|| format!("{p}: {what} differs: {la} {x} vs {lb} {y}"))
        };
        out.extend(d(
            "type",
            format!("{:?}", na.kind),
            format!("{:?}", nb.kind),
        ));
        if na.kind != nb.kind {
            continue;
        }
        if na.kind != Kind::Whiteout && na.kind != Kind::Symlink {
            out.extend(d(
                "mode",
                format!("{:04o}", na.mode),
                format!("{:04o}", nb.mode),
            ));
        }
        if na.kind != Kind::Whiteout {
            out.extend(d(
                "owner",
                format!("{}:{}", na.uid, na.gid),
                format!("{}:{}", nb.uid, nb.gid),
            ));
        }
        out.extend(d(
            "size",
            format!("{:?}", na.size),
            format!("{:?}", nb.size),
        ));
        if na.content != nb.content && na.content.is_some() && nb.content.is_some() {
            let (ca, cb) = (
                na.content.clone().unwrap_or_default(),
                nb.content.clone().unwrap_or_default(),
            );
            let first = ca
                .iter()
                .zip(cb.iter())
                .position(|(x, y)| x != y)
                .unwrap_or(ca.len().min(cb.len()));
            more.push(format!(
                "{p}: content differs (first at byte {first}): {la} {} vs {lb} {}",
                show_bytes(&ca),
                show_bytes(&cb)
            ));
        }
        out.extend(d(
            "symlink target",
            format!("{:?}", na.target),
            format!("{:?}", nb.target),
        ));
        out.extend(d(
            "rdev",
            format!("{:?}", na.rdev),
            format!("{:?}", nb.rdev),
        ));
        if na.xattrs != nb.xattrs {
            let f = |x: &BTreeMap<String, Vec<u8>>| {
                x.iter()
                    .map(|(k, v)| format!("{k}={}", String::from_utf8_lossy(v)))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            more.push(format!(
                "{p}: xattrs differ: {la} {{{}}} vs {lb} {{{}}}",
                f(&na.xattrs),
                f(&nb.xattrs)
            ));
        }
        out.extend(d(
            "nlink",
            format!("{:?}", na.nlink),
            format!("{:?}", nb.nlink),
        ));
        out.extend(d("opaque", na.opaque.to_string(), nb.opaque.to_string()));
        out.extend(d(
            "redirect xattr",
            na.redirect.to_string(),
            nb.redirect.to_string(),
        ));
        out.extend(d(
            "mtime",
            format!("{:?}", na.mtime),
            format!("{:?}", nb.mtime),
        ));
        out.append(&mut more);
    }
    for (p, nb) in &b.nodes {
        if !a.nodes.contains_key(p) {
            out.push(format!("{p}: only in {lb}: {}", describe(nb)));
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Running operations
// ---------------------------------------------------------------------------------------------

/// The outcome of one operation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StepResult {
    pub cmd: String,
    pub status: i32,
    pub stdout: String,
    /// The errno messages (strerror texts) found in stderr, in order, joined by "; ".
    pub errno: String,
    /// Raw stderr (not compared).
    pub stderr: String,
}

fn strerrors() -> &'static Vec<String> {
    static S: OnceLock<Vec<String>> = OnceLock::new();
    S.get_or_init(|| {
        let mut v: Vec<String> = (1..134)
            .map(|e| std::io::Error::from_raw_os_error(e).to_string())
            .map(|s| s.split(" (os error").next().unwrap_or("").to_string())
            .filter(|s| !s.is_empty() && !s.starts_with("Unknown error"))
            .collect();
        // longest first, so "Directory not empty" wins over shorter overlaps
        v.sort_by_key(|s| std::cmp::Reverse(s.len()));
        v
    })
}

/// The strerror texts found in a stderr text, in order of appearance.
pub fn errno_text(stderr: &str) -> String {
    let mut found: Vec<(usize, &str)> = Vec::new();
    for line in stderr.lines() {
        let base = found.len();
        let mut taken: Vec<(usize, usize)> = Vec::new();
        for s in strerrors() {
            let mut from = 0;
            while let Some(i) = line[from..].find(s.as_str()) {
                let start = from + i;
                let end = start + s.len();
                if !taken.iter().any(|(a, b)| start < *b && *a < end) {
                    taken.push((start, end));
                    found.push((base * 10_000 + start, s.as_str()));
                }
                from = end;
            }
        }
    }
    found.sort();
    found.iter().map(|(_, s)| *s).collect::<Vec<_>>().join("; ")
}

/// Run one shell command line with `sh -c` in `dir` (60 s limit).
pub fn run_step(dir: &Path, cmd: &str) -> StepResult {
    run_step_as(dir, cmd, None, None)
}

/// Like [`run_step`], optionally as another user via setpriv.
/// `state` is exported as `$STATE`: a directory outside the mount for data kept between steps.
pub fn run_step_as(
    dir: &Path,
    cmd: &str,
    user: Option<(u32, u32)>,
    state: Option<&Path>,
) -> StepResult {
    let mut c = Command::new("timeout");
    c.arg("60");
    if let Some((u, g)) = user {
        c.arg("setpriv")
            .arg(format!("--reuid={u}"))
            .arg(format!("--regid={g}"))
            .arg("--clear-groups")
            .arg("--");
    }
    if user.is_some() {
        // a FUSE mount made by another user is not accessible to root: cd as that user
        c.arg("sh").arg("-c").arg(format!(
            "cd {} || exit 99; {cmd}",
            shq(&dir.display().to_string())
        ));
    } else {
        c.arg("sh").arg("-c").arg(cmd).current_dir(dir);
    }
    c.stdin(Stdio::null());
    if let Some(state) = state {
        c.env("STATE", state);
    }
    let out = c
        .output()
        .unwrap_or_else(|e| panic!("spawn sh for {cmd:?}: {e}"));
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let root = dir.display().to_string();
    StepResult {
        cmd: cmd.to_string(),
        status: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).replace(&root, "MNT"),
        errno: errno_text(&stderr),
        stderr,
    }
}

// ---------------------------------------------------------------------------------------------
// Differential runner
// ---------------------------------------------------------------------------------------------

/// An op that unmounts and remounts both sides (same dirs, same options).
pub const REMOUNT: &str = "@remount";
/// An op that unmounts both sides, turns each upper into the topmost lower layer and mounts
/// again with a fresh upper and work dir (layer rotation, as containers-storage stacks layers).
pub const ROTATE: &str = "@rotate";

/// A differential scenario: layers (topmost first), optional initial upper content, and the
/// shell command lines to run (with `sh -c`, cwd = mount root; [`REMOUNT`] remounts).
#[derive(Clone, Debug)]
pub struct Scenario {
    pub lowers: Vec<Layer>,
    pub upper: Option<Layer>,
    pub ops: Vec<String>,
    /// Compare the normalised upper dirs (default true).
    pub compare_upper: bool,
    /// Cross-mount the upper dirs at the end (default true).
    pub cross_mount: bool,
    /// Both sides copy metadata only where they can (kernel `metacopy=on`, strata
    /// `-o metacopy=on`); off by default, as in both.
    pub metacopy: bool,
}

impl Scenario {
    pub fn new(lowers: Vec<Layer>) -> Self {
        Scenario {
            lowers,
            upper: None,
            ops: Vec::new(),
            compare_upper: true,
            cross_mount: true,
            metacopy: false,
        }
    }
    /// Run with metadata-only copy-up on both sides.
    pub fn metacopy(mut self) -> Self {
        self.metacopy = true;
        self
    }
    pub fn upper(mut self, l: Layer) -> Self {
        self.upper = Some(l);
        self
    }
    pub fn op(mut self, cmd: impl Into<String>) -> Self {
        self.ops.push(cmd.into());
        self
    }
    pub fn ops<S: Into<String>>(mut self, cmds: impl IntoIterator<Item = S>) -> Self {
        self.ops.extend(cmds.into_iter().map(Into::into));
        self
    }
    pub fn no_upper_compare(mut self) -> Self {
        self.compare_upper = false;
        self
    }
}

/// Everything a differential run observed.
pub struct Outcome {
    pub kernel_options: String,
    pub kernel_steps: Vec<StepResult>,
    pub strata_steps: Vec<StepResult>,
    pub kernel_merged: Snapshot,
    pub strata_merged: Snapshot,
    pub kernel_upper: Snapshot,
    pub strata_upper: Snapshot,
    /// Every difference found (empty = strata behaved like the kernel).
    pub problems: Vec<String>,
    pub strata_log: String,
}

impl Outcome {
    /// Panic with a full report unless strata matched the kernel everywhere.
    pub fn assert_same(&self) {
        if self.problems.is_empty() {
            return;
        }
        let mut r = format!(
            "strata differs from kernel overlayfs ({}; kernel options [{}]):\n",
            strata_fuse_bin().display(),
            self.kernel_options
        );
        for p in self.problems.iter().take(60) {
            let _ = writeln!(r, "  - {p}");
        }
        if self.problems.len() > 60 {
            let _ = writeln!(r, "  ... and {} more differences", self.problems.len() - 60);
        }
        r.push_str("steps (kernel | strata):\n");
        for (k, s) in self.kernel_steps.iter().zip(self.strata_steps.iter()) {
            let _ = writeln!(
                r,
                "  $ {}\n      kernel: status {} errno [{}] stdout {:?}\n      strata: status {} errno [{}] stdout {:?} stderr {:?}",
                k.cmd,
                k.status,
                k.errno,
                k.stdout,
                s.status,
                s.errno,
                s.stdout,
                s.stderr.trim()
            );
        }
        let log = self.strata_log.trim();
        if !log.is_empty() {
            let tail: String = log
                .chars()
                .rev()
                .take(3000)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect();
            let _ = writeln!(r, "strata log (tail):\n{tail}");
        }
        panic!("{r}");
    }

    /// The kernel's result for the step whose command is `cmd` (first match).
    pub fn kernel_step(&self, cmd: &str) -> &StepResult {
        self.kernel_steps
            .iter()
            .find(|s| s.cmd == cmd)
            .expect("no such step")
    }
}

/// The upper snapshot of `upper`, without whiteouts and opaque markers over paths that no
/// layer in `lowers` has (no-ops, which implementations may or may not write).
pub fn normalised_upper(upper: &Path, lowers: &[PathBuf]) -> Snapshot {
    let lower_paths: std::collections::BTreeSet<String> = lowers
        .iter()
        .flat_map(|l| snapshot(l).nodes.into_keys())
        .collect();
    normalise_upper(upper_snapshot(upper), &lower_paths)
}

fn normalise_upper(
    mut snap: Snapshot,
    lower_paths: &std::collections::BTreeSet<String>,
) -> Snapshot {
    snap.nodes
        .retain(|p, n| n.kind != Kind::Whiteout || lower_paths.contains(p));
    for (p, n) in snap.nodes.iter_mut() {
        if n.opaque && !lower_paths.contains(p) {
            n.opaque = false;
        }
    }
    snap
}

struct Side {
    lowers: Vec<PathBuf>,
    upper: PathBuf,
    work: PathBuf,
    mnt: PathBuf,
}

fn prepare_side(ws: &Workspace, base: &Path, name: &str, n: usize, with_upper: bool) -> Side {
    let side = ws.mkdir(name);
    let mut lowers = Vec::new();
    for i in 0..n {
        let dst = side.join(format!("lower{i}"));
        sh(&format!(
            "cp -a {} {}",
            shq(&base.join(format!("lower{i}")).display().to_string()),
            shq(&dst.display().to_string())
        ));
        lowers.push(dst);
    }
    let upper = side.join("upper");
    if with_upper {
        sh(&format!(
            "cp -a {} {}",
            shq(&base.join("upper").display().to_string()),
            shq(&upper.display().to_string())
        ));
    } else {
        fs::create_dir(&upper).expect("upper");
    }
    let work = side.join("work");
    fs::create_dir(&work).expect("work");
    let mnt = side.join("mnt");
    fs::create_dir(&mnt).expect("mnt");
    Side {
        lowers,
        upper,
        work,
        mnt,
    }
}

fn lower_snapshots(s: &Side) -> Vec<Snapshot> {
    s.lowers
        .iter()
        .map(|l| {
            snapshot_with(
                l,
                SnapOpts {
                    mtime: true,
                    raw_xattrs: true,
                    upper: false,
                },
            )
        })
        .collect()
}

/// `later` must show the hard-link groups of `first`, and the inode number of every path that
/// `first` shows, except those in `exempt` (which the kernel itself does not keep).
fn check_same_identity(
    first: &Snapshot,
    later: &Snapshot,
    exempt: &std::collections::BTreeSet<String>,
    what: &str,
    problems: &mut Vec<String>,
) {
    if first.link_groups() != later.link_groups() {
        problems.push(format!(
            "{what}: hard-link groups {:?}, the session showed {:?}",
            later.link_groups(),
            first.link_groups()
        ));
    }
    for p in first.ino_changes(later) {
        if !exempt.contains(&p) {
            problems.push(format!(
                "{what}: st_ino of {p} is {}, the session showed {} (the kernel keeps it)",
                later.inos[&p], first.inos[&p]
            ));
        }
    }
}

/// Run a scenario on kernel overlayfs and on strata over identical copies of its layers and
/// compare per-step results, merged trees and normalised upper dirs; then cross-mount (strata
/// over the kernel's upper, the kernel over strata's) and compare those merged trees with the
/// kernel's; and check no lower layer was modified.
pub fn differential(sc: &Scenario) -> Outcome {
    let ws = Workspace::new();
    let base = ws.mkdir("base");
    for (i, l) in sc.lowers.iter().enumerate() {
        l.build(&base.join(format!("lower{i}")));
    }
    if let Some(u) = &sc.upper {
        u.build(&base.join("upper"));
    }
    let n = sc.lowers.len();
    let mut k = prepare_side(&ws, &base, "kernel", n, sc.upper.is_some());
    let mut s = prepare_side(&ws, &base, "strata", n, sc.upper.is_some());
    let mut k_lowers_before = lower_snapshots(&k);
    let mut s_lowers_before = lower_snapshots(&s);
    let mut rotations = 0;
    let mut problems = Vec::new();

    let strata_opts: Vec<&str> = if sc.metacopy {
        vec!["metacopy=on"]
    } else {
        Vec::new()
    };
    let kernel_mount = |lowers: &[PathBuf], upper: &Path, work: &Path, mnt: &Path| {
        if sc.metacopy {
            KernelOverlay::mount_with(
                lowers,
                Some((upper, work)),
                mnt,
                "redirect_dir=on,index=on,metacopy=on",
                &[],
            )
        } else {
            KernelOverlay::mount(lowers, Some((upper, work)), mnt, &[])
        }
    };
    let mut kmount = kernel_mount(&k.lowers, &k.upper, &k.work, &k.mnt)
        .unwrap_or_else(|e| panic!("kernel overlay mount failed: {e}"));
    let kopts = kmount.options.clone();
    let mut smount = FuseMount::mount(&s.lowers, Some((&s.upper, &s.work)), &s.mnt, &strata_opts)
        .unwrap_or_else(|e| panic!("strata mount failed: {e}"));
    let mut strata_log = String::new();

    let kstate = ws.mkdir("kernel/state");
    let sstate = ws.mkdir("strata/state");
    let mut kernel_steps = Vec::new();
    let mut strata_steps = Vec::new();
    for cmd in &sc.ops {
        if cmd == REMOUNT || cmd == ROTATE {
            kmount.unmount();
            strata_log.push_str(&smount.log_text());
            if let Err(e) = smount.unmount() {
                problems.push(format!("step {cmd}: strata unmount: {e}"));
            }
            if cmd == ROTATE {
                rotations += 1;
                for (side, name) in [(&mut k, "kernel"), (&mut s, "strata")] {
                    let upper = ws.mkdir(&format!("{name}/upper-r{rotations}"));
                    let work = ws.mkdir(&format!("{name}/work-r{rotations}"));
                    let old = std::mem::replace(&mut side.upper, upper);
                    side.work = work;
                    side.lowers.insert(0, old);
                }
                // The rotated layers are lower layers now: they too must stay untouched.
                k_lowers_before = lower_snapshots(&k);
                s_lowers_before = lower_snapshots(&s);
            }
            kmount = KernelOverlay::mount_with(
                &k.lowers,
                Some((&k.upper, &k.work)),
                &k.mnt,
                &kopts,
                &[],
            )
            .unwrap_or_else(|e| panic!("kernel overlay remount failed: {e}"));
            smount = FuseMount::mount(&s.lowers, Some((&s.upper, &s.work)), &s.mnt, &strata_opts)
                .unwrap_or_else(|e| panic!("strata remount failed: {e}"));
            let ok = StepResult {
                cmd: cmd.clone(),
                status: 0,
                stdout: String::new(),
                errno: String::new(),
                stderr: String::new(),
            };
            kernel_steps.push(ok.clone());
            strata_steps.push(ok);
            continue;
        }
        let kr = run_step_as(&k.mnt, cmd, None, Some(&kstate));
        let sr = run_step_as(&s.mnt, cmd, None, Some(&sstate));
        if kr.status != sr.status {
            problems.push(format!(
                "step `{cmd}`: exit status kernel {} vs strata {}",
                kr.status, sr.status
            ));
        }
        if kr.errno != sr.errno {
            problems.push(format!(
                "step `{cmd}`: errors kernel [{}] vs strata [{}]",
                kr.errno, sr.errno
            ));
        }
        if kr.stdout != sr.stdout {
            problems.push(format!(
                "step `{cmd}`: stdout kernel {:?} vs strata {:?}",
                kr.stdout, sr.stdout
            ));
        }
        kernel_steps.push(kr);
        strata_steps.push(sr);
    }

    let kernel_merged = snapshot(&k.mnt);
    let strata_merged = snapshot(&s.mnt);
    problems.extend(
        diff(&kernel_merged, &strata_merged, "kernel", "strata")
            .into_iter()
            .map(|d| format!("merged {d}")),
    );
    if kernel_merged.link_groups() != strata_merged.link_groups() {
        problems.push(format!(
            "hard-link groups: kernel {:?} vs strata {:?}",
            kernel_merged.link_groups(),
            strata_merged.link_groups()
        ));
    }

    kmount.unmount();
    strata_log.push_str(&smount.log_text());
    if let Err(e) = smount.unmount() {
        problems.push(format!("strata unmount: {e}"));
    }

    // A whiteout or opaque marker over a path that no lower layer has is a no-op: drop those
    // before comparing, so only meaningful format differences count.
    let lower_paths: std::collections::BTreeSet<String> = k_lowers_before
        .iter()
        .flat_map(|snap| snap.nodes.keys().cloned())
        .collect();
    let kernel_upper = normalise_upper(upper_snapshot(&k.upper), &lower_paths);
    let strata_upper = normalise_upper(upper_snapshot(&s.upper), &lower_paths);
    if sc.compare_upper {
        problems.extend(
            diff(&kernel_upper, &strata_upper, "kernel", "strata")
                .into_iter()
                .map(|d| format!("upper {d}")),
        );
    }

    // What a remount shows is what the session showed: the tree, the hard-link groups and
    // every inode number the kernel keeps across its own remount.
    let kernel_remounted = {
        let m =
            KernelOverlay::mount_with(&k.lowers, Some((&k.upper, &k.work)), &k.mnt, &kopts, &[])
                .unwrap_or_else(|e| panic!("kernel overlay remount failed: {e}"));
        let snap = snapshot(&k.mnt);
        m.unmount();
        snap
    };
    let kernel_moved = kernel_merged.ino_changes(&kernel_remounted);
    match FuseMount::mount(&s.lowers, Some((&s.upper, &s.work)), &s.mnt, &strata_opts) {
        Ok(m) => {
            let again = snapshot(&s.mnt);
            strata_log.push_str(&m.log_text());
            if let Err(e) = m.unmount() {
                problems.push(format!("strata unmount after remount: {e}"));
            }
            problems.extend(
                diff(&strata_merged, &again, "strata", "strata-remounted")
                    .into_iter()
                    .map(|d| format!("after a remount {d}")),
            );
            check_same_identity(
                &strata_merged,
                &again,
                &kernel_moved,
                "strata after a remount",
                &mut problems,
            );
        }
        Err(e) => problems.push(format!("strata remount: {e}")),
    }

    // STRATA_TEST_NO_CROSS_MOUNT=1 leaves the cross-mount out (only for validating the harness
    // against other mount programs, e.g. fuse-overlayfs 1.x, which shows an empty root over a
    // kernel upper dir carrying `trusted.overlay.origin`).
    let no_cross = std::env::var_os("STRATA_TEST_NO_CROSS_MOUNT").is_some_and(|v| v == "1");
    if sc.cross_mount && !no_cross {
        // strata over the kernel's upper
        // the original workdirs: they hold the hard-link index (kernel `index=on`)
        let w = k.work.clone();
        let m = ws.mkdir("kernel/mnt-x");
        match FuseMount::mount(&k.lowers, Some((&k.upper, &w)), &m, &strata_opts) {
            Ok(fm) => {
                let snap = snapshot(&m);
                problems.extend(
                    diff(&kernel_merged, &snap, "kernel", "strata-over-kernel-upper")
                        .into_iter()
                        .map(|d| format!("cross-mount (strata over the kernel's upper) {d}")),
                );
                check_same_identity(
                    &kernel_merged,
                    &snap,
                    &kernel_moved,
                    "strata over the kernel's upper",
                    &mut problems,
                );
                strata_log.push_str(&fm.log_text());
                if let Err(e) = fm.unmount() {
                    problems.push(format!("cross-mount strata unmount: {e}"));
                }
            }
            Err(e) => problems.push(format!(
                "cross-mount: strata cannot mount the kernel's upper: {e}"
            )),
        }
        // the kernel over strata's upper
        let w = s.work.clone();
        let m = ws.mkdir("strata/mnt-x");
        match kernel_mount(&s.lowers, &s.upper, &w, &m) {
            Ok(km) => {
                if km.options != kopts {
                    problems.push(format!(
                        "cross-mount: kernel overlayfs needed fallback options [{}] instead of [{kopts}] for strata's upper/workdir",
                        km.options
                    ));
                }
                let snap = snapshot(&m);
                problems.extend(
                    diff(&kernel_merged, &snap, "kernel", "kernel-over-strata-upper")
                        .into_iter()
                        .map(|d| format!("cross-mount (kernel over strata's upper) {d}")),
                );
                // Both read the same files: the kernel must show the numbers strata showed.
                check_same_identity(
                    &strata_merged,
                    &snap,
                    &kernel_moved,
                    "the kernel over strata's upper",
                    &mut problems,
                );
                km.unmount();
            }
            Err(e) => problems.push(format!(
                "cross-mount: kernel overlayfs refuses strata's upper: {e}"
            )),
        }
        // Without metacopy, strata's upper is one that a kernel with its default options
        // (redirects followed, no index, no metacopy) reads exactly as it reads its own.
        if !sc.metacopy {
            let (mk, ms) = (ws.mkdir("kernel/mnt-d"), ws.mkdir("strata/mnt-d"));
            match (
                KernelOverlay::mount_with(&k.lowers, Some((&k.upper, &k.work)), &mk, "", &[]),
                KernelOverlay::mount_with(&s.lowers, Some((&s.upper, &s.work)), &ms, "", &[]),
            ) {
                (Ok(a), Ok(b)) => {
                    let (mut sa, mut sb) = (snapshot(&mk), snapshot(&ms));
                    // Without the index, the kernel shows a lower hard link's names that are
                    // not in the upper with their old data; which names of a group are in the
                    // upper is not the same (FUSE's setattr and link name no path).
                    let linked: std::collections::BTreeSet<String> = k_lowers_before
                        .iter()
                        .flat_map(|l| {
                            l.nodes
                                .iter()
                                .filter(|(_, n)| n.nlink.is_some_and(|c| c > 1))
                                .map(|(p, _)| p.clone())
                                .collect::<Vec<_>>()
                        })
                        .chain(kernel_merged.link_groups().into_iter().flatten())
                        .collect();
                    sa.nodes.retain(|p, _| !linked.contains(p));
                    sb.nodes.retain(|p, _| !linked.contains(p));
                    problems.extend(
                        diff(
                            &sa,
                            &sb,
                            "kernel-defaults-over-kernel-upper",
                            "kernel-defaults-over-strata-upper",
                        )
                        .into_iter()
                        .map(|d| format!("kernel with default options {d}")),
                    );
                    a.unmount();
                    b.unmount();
                }
                (Err(e), _) => problems.push(format!("kernel defaults over its own upper: {e}")),
                (_, Err(e)) => problems.push(format!(
                    "kernel overlayfs with default options refuses strata's upper: {e}"
                )),
            }
        }
    }

    for (side, before, lowers) in [
        ("kernel", &k_lowers_before, &k.lowers),
        ("strata", &s_lowers_before, &s.lowers),
    ] {
        for (i, (b, l)) in before.iter().zip(lowers.iter()).enumerate() {
            let after = snapshot_with(
                l,
                SnapOpts {
                    mtime: true,
                    raw_xattrs: true,
                    upper: false,
                },
            );
            for d in diff(b, &after, "before", "after") {
                problems.push(format!("{side} lower{i} was modified: {d}"));
            }
        }
    }

    Outcome {
        kernel_options: kopts,
        kernel_steps,
        strata_steps,
        kernel_merged,
        strata_merged,
        kernel_upper,
        strata_upper,
        problems,
        strata_log,
    }
}
