//! Environment of the mount test harness.

#[allow(unused_imports)]
use super::*;

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

pub(crate) fn cpath(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).expect("path without NUL")
}

pub(crate) fn mkdirs(p: &Path) {
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

pub(crate) fn mknod(p: &Path, mode: u32, major: u32, minor: u32) {
    let dev = libc::makedev(major, minor);
    let kind = rustix::fs::FileType::from_raw_mode(mode);
    let perm = rustix::fs::Mode::from_raw_mode(mode);
    if let Err(e) = rustix::fs::mknodat(rustix::fs::CWD, p, kind, perm, dev) {
        panic!("mknod {}: {e}", p.display());
    }
}

pub(crate) fn set_mtime(p: &Path, secs: i64) {
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
