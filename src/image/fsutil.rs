//! The image code's file system helpers: the layer format's names (whiteouts, opaque and
//! override xattrs), symlink-safe walks and writes below a directory fd, and xattrs by host
//! path. The system call wrappers are in `crate::sys::at` and `crate::sys::xattr`; the override
//! format is `crate::fs::override_stat`.

use crate::sys::{at, xattr};
use std::ffi::OsStr;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

/// Name of the rootless override xattr (containers-storage compatible).
pub const OVERRIDE_XATTR: &str = crate::fs::override_stat::XATTR;
/// Opaque-dir xattr as root.
pub const OPAQUE_TRUSTED: &str = "trusted.overlay.opaque";
/// Opaque-dir xattr rootless (kernel overlay `userxattr`).
pub const OPAQUE_USER: &str = "user.overlay.opaque";
/// Opaque-dir xattr written by fuse-overlayfs.
pub const OPAQUE_FUSE: &str = "user.fuseoverlayfs.opaque";
/// The OCI whiteout prefix.
pub const WH_PREFIX: &str = ".wh.";
/// The OCI opaque marker.
pub const WH_OPAQUE: &str = ".wh..wh..opq";

/// Open the directory `name` in `dir` for reading, without following a symlink at `name`.
fn open_dir_at(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<OwnedFd> {
    at::open_at(dir, name, libc::O_RDONLY | libc::O_DIRECTORY, 0)
}

/// Split a relative path into its normal components; `None` if it has `..` or is empty.
pub fn normal_components(path: &Path) -> Option<Vec<&OsStr>> {
    let mut out = Vec::new();
    for c in path.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::CurDir | Component::RootDir => {}
            Component::ParentDir | Component::Prefix(_) => return None,
        }
    }
    Some(out)
}

/// Walk `comps` from `root`, never through a symlink; optionally create missing dirs (0755).
pub fn walk_dirs(root: BorrowedFd<'_>, comps: &[&OsStr], create: bool) -> io::Result<OwnedFd> {
    walk_dirs_with(root, comps, create, &mut |_, _| Ok(()))
}

/// [`walk_dirs`], calling `on_create(parent_fd, name)` for every directory it creates.
pub fn walk_dirs_with(
    root: BorrowedFd<'_>,
    comps: &[&OsStr],
    create: bool,
    on_create: &mut dyn FnMut(BorrowedFd<'_>, &OsStr) -> io::Result<()>,
) -> io::Result<OwnedFd> {
    let mut cur = open_dir_at(root, OsStr::new("."))?;
    for c in comps {
        let next = match open_dir_at(cur.as_fd(), c) {
            Ok(fd) => fd,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) && create => {
                at::mkdir_at(cur.as_fd(), c, 0o755)?;
                on_create(cur.as_fd(), c)?;
                open_dir_at(cur.as_fd(), c)?
            }
            Err(e)
                if e.raw_os_error() == Some(libc::ELOOP)
                    || e.raw_os_error() == Some(libc::ENOTDIR) =>
            {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("{:?} is a symlink or not a directory", c),
                ));
            }
            Err(e) => return Err(e),
        };
        cur = next;
    }
    Ok(cur)
}

/// Create a new regular file (fails if anything exists there), never following symlinks.
pub fn create_file_at(dir: BorrowedFd<'_>, name: &OsStr, mode: u32) -> io::Result<std::fs::File> {
    let fd = at::open_at(
        dir,
        name,
        libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL,
        mode,
    )?;
    Ok(std::fs::File::from(fd))
}

/// Remove whatever is at `name` (recursively for a directory), without following symlinks.
pub fn remove_at(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<()> {
    let Some(st) = at::stat_at_opt(dir, name)? else {
        return Ok(());
    };
    if at::is_dir(&st) {
        // std's remove_dir_all is symlink-safe (openat based); reach the dir through our fd.
        std::fs::remove_dir_all(proc_path(dir, name))
    } else {
        at::unlink_at(dir, name, false)
    }
}

/// `/proc/self/fd/DIR/NAME`: a path that resolves `name` inside the directory fd.
pub fn proc_path(dir: BorrowedFd<'_>, name: &OsStr) -> PathBuf {
    let mut p = PathBuf::from(OsStr::from_bytes(at::proc_path(dir).as_bytes()));
    p.push(name);
    p
}

/// Set atime and mtime (seconds) without following symlinks.
pub fn set_mtime_at(dir: BorrowedFd<'_>, name: &OsStr, mtime: i64) -> io::Result<()> {
    let ts = libc::timespec {
        tv_sec: mtime as libc::time_t,
        tv_nsec: 0,
    };
    at::utimens_at(dir, name, &[ts, ts])
}

/// lgetxattr; `None` if the attribute is absent or unsupported.
pub use crate::sys::xattr::lget_xattr as get_xattr;

/// lsetxattr (no flags).
pub fn set_xattr(path: &Path, name: &str, value: &[u8]) -> io::Result<()> {
    xattr::lset_xattr(path, name.as_bytes(), value, 0)
}

/// llistxattr, names sorted.
pub fn list_xattrs(path: &Path) -> io::Result<Vec<String>> {
    let mut names: Vec<String> = xattr::llist_xattr(path)?
        .iter()
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect();
    names.sort();
    Ok(names)
}

/// True if a directory is marked opaque in any of the formats we know.
pub fn is_opaque_dir(path: &Path) -> bool {
    for name in [OPAQUE_TRUSTED, OPAQUE_USER, OPAQUE_FUSE] {
        if let Ok(Some(v)) = get_xattr(path, name)
            && v == b"y"
        {
            return true;
        }
    }
    path.join(WH_OPAQUE).symlink_metadata().is_ok()
}

/// True for an overlay whiteout (char device 0/0) or a `.wh.`-file fallback is handled by callers.
pub fn is_whiteout_dev(meta: &std::fs::Metadata) -> bool {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    meta.file_type().is_char_device() && meta.rdev() == 0
}

/// The effective uid is 0.
pub fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// Name as bytes to a `&CStr`-free OsStr helper.
pub fn os(s: &str) -> &OsStr {
    OsStr::new(s)
}
