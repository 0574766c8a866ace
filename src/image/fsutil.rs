//! Symlink-safe file system primitives relative to a directory fd (the openat family),
//! and extended attributes. Used wherever we write into a layer.

use std::ffi::{CString, OsStr};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

/// Name of the rootless override xattr (containers-storage compatible).
pub const OVERRIDE_XATTR: &str = "user.containers.override_stat";
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

fn cstr(name: &OsStr) -> io::Result<CString> {
    CString::new(name.as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in file name"))
}

fn check(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// Open a directory without following a symlink at `name`.
pub fn open_dir_at(dir: RawFd, name: &OsStr) -> io::Result<OwnedFd> {
    let c = cstr(name)?;
    let fd = check(unsafe {
        libc::openat(
            dir,
            c.as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
        )
    })?;
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Open a directory by absolute path (following symlinks: for store paths we own).
pub fn open_dir(path: &Path) -> io::Result<OwnedFd> {
    let c = cstr(path.as_os_str())?;
    let fd = check(unsafe {
        libc::open(
            c.as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    })?;
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
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
pub fn walk_dirs(root: RawFd, comps: &[&OsStr], create: bool) -> io::Result<OwnedFd> {
    walk_dirs_with(root, comps, create, &mut |_, _| Ok(()))
}

/// [`walk_dirs`], calling `on_create(parent_fd, name)` for every directory it creates.
pub fn walk_dirs_with(
    root: RawFd,
    comps: &[&OsStr],
    create: bool,
    on_create: &mut dyn FnMut(RawFd, &OsStr) -> io::Result<()>,
) -> io::Result<OwnedFd> {
    let mut cur = open_dir_at(root, OsStr::new("."))?;
    for c in comps {
        let next = match open_dir_at(cur.as_raw_fd(), c) {
            Ok(fd) => fd,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) && create => {
                mkdir_at(cur.as_raw_fd(), c, 0o755)?;
                on_create(cur.as_raw_fd(), c)?;
                open_dir_at(cur.as_raw_fd(), c)?
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

/// mkdirat.
pub fn mkdir_at(dir: RawFd, name: &OsStr, mode: u32) -> io::Result<()> {
    let c = cstr(name)?;
    check(unsafe { libc::mkdirat(dir, c.as_ptr(), mode as libc::mode_t) }).map(|_| ())
}

/// mknodat.
pub fn mknod_at(dir: RawFd, name: &OsStr, mode: u32, dev: u64) -> io::Result<()> {
    let c = cstr(name)?;
    check(unsafe { libc::mknodat(dir, c.as_ptr(), mode as libc::mode_t, dev as libc::dev_t) })
        .map(|_| ())
}

/// symlinkat.
pub fn symlink_at(target: &OsStr, dir: RawFd, name: &OsStr) -> io::Result<()> {
    let t = cstr(target)?;
    let c = cstr(name)?;
    check(unsafe { libc::symlinkat(t.as_ptr(), dir, c.as_ptr()) }).map(|_| ())
}

/// linkat without following symlinks.
pub fn link_at(odir: RawFd, oname: &OsStr, ndir: RawFd, nname: &OsStr) -> io::Result<()> {
    let o = cstr(oname)?;
    let n = cstr(nname)?;
    check(unsafe { libc::linkat(odir, o.as_ptr(), ndir, n.as_ptr(), 0) }).map(|_| ())
}

/// Create a new regular file (fails if anything exists there), never following symlinks.
pub fn create_file_at(dir: RawFd, name: &OsStr, mode: u32) -> io::Result<std::fs::File> {
    let c = cstr(name)?;
    let fd = check(unsafe {
        libc::openat(
            dir,
            c.as_ptr(),
            libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_CLOEXEC,
            mode as libc::c_uint,
        )
    })?;
    Ok(unsafe { std::fs::File::from_raw_fd(fd) })
}

/// lstat relative to a dir fd; `None` if absent.
pub fn lstat_at(dir: RawFd, name: &OsStr) -> io::Result<Option<libc::stat>> {
    let c = cstr(name)?;
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    let r = unsafe { libc::fstatat(dir, c.as_ptr(), &mut st, libc::AT_SYMLINK_NOFOLLOW) };
    if r < 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::ENOENT) {
            return Ok(None);
        }
        return Err(e);
    }
    Ok(Some(st))
}

/// Remove whatever is at `name` (recursively for a directory), without following symlinks.
pub fn remove_at(dir: RawFd, name: &OsStr) -> io::Result<()> {
    let Some(st) = lstat_at(dir, name)? else {
        return Ok(());
    };
    if st.st_mode & libc::S_IFMT == libc::S_IFDIR {
        // std's remove_dir_all is symlink-safe (openat based); reach the dir through our fd.
        std::fs::remove_dir_all(proc_path(dir, name))
    } else {
        let c = cstr(name)?;
        check(unsafe { libc::unlinkat(dir, c.as_ptr(), 0) }).map(|_| ())
    }
}

/// `/proc/self/fd/DIR/NAME`: a path that resolves `name` inside the directory fd.
pub fn proc_path(dir: RawFd, name: &OsStr) -> PathBuf {
    let mut p = PathBuf::from(format!("/proc/self/fd/{dir}"));
    p.push(name);
    p
}

/// Change owner without following symlinks.
pub fn chown_at(dir: RawFd, name: &OsStr, uid: u32, gid: u32) -> io::Result<()> {
    let c = cstr(name)?;
    check(unsafe { libc::fchownat(dir, c.as_ptr(), uid, gid, libc::AT_SYMLINK_NOFOLLOW) })
        .map(|_| ())
}

/// chmod of a non-symlink entry.
pub fn chmod_at(dir: RawFd, name: &OsStr, mode: u32) -> io::Result<()> {
    let c = cstr(name)?;
    check(unsafe { libc::fchmodat(dir, c.as_ptr(), mode as libc::mode_t, 0) }).map(|_| ())
}

/// Set atime and mtime (seconds) without following symlinks.
pub fn set_mtime_at(dir: RawFd, name: &OsStr, mtime: i64) -> io::Result<()> {
    let c = cstr(name)?;
    let ts = libc::timespec {
        tv_sec: mtime as libc::time_t,
        tv_nsec: 0,
    };
    let times = [ts, ts];
    check(unsafe { libc::utimensat(dir, c.as_ptr(), times.as_ptr(), libc::AT_SYMLINK_NOFOLLOW) })
        .map(|_| ())
}

/// lsetxattr.
pub fn set_xattr(path: &Path, name: &str, value: &[u8]) -> io::Result<()> {
    let p = cstr(path.as_os_str())?;
    let n = cstr(OsStr::new(name))?;
    check(unsafe {
        libc::lsetxattr(
            p.as_ptr(),
            n.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    })
    .map(|_| ())
}

/// lgetxattr; `None` if the attribute is absent or unsupported.
pub fn get_xattr(path: &Path, name: &str) -> io::Result<Option<Vec<u8>>> {
    let p = cstr(path.as_os_str())?;
    let n = cstr(OsStr::new(name))?;
    let mut buf = vec![0u8; 4096];
    loop {
        let r =
            unsafe { libc::lgetxattr(p.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
        if r >= 0 {
            buf.truncate(r as usize);
            return Ok(Some(buf));
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::ENODATA) | Some(libc::ENOTSUP) => return Ok(None),
            Some(libc::ERANGE) if buf.len() < 1 << 20 => buf.resize(buf.len() * 4, 0),
            _ => return Err(e),
        }
    }
}

/// llistxattr, names sorted.
pub fn list_xattrs(path: &Path) -> io::Result<Vec<String>> {
    let p = cstr(path.as_os_str())?;
    let mut buf = vec![0u8; 4096];
    let n = loop {
        let r = unsafe { libc::llistxattr(p.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
        if r >= 0 {
            break r as usize;
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::ENOTSUP) => return Ok(Vec::new()),
            Some(libc::ERANGE) if buf.len() < 1 << 20 => buf.resize(buf.len() * 4, 0),
            _ => return Err(e),
        }
    };
    let mut names: Vec<String> = buf[..n]
        .split(|b| *b == 0)
        .filter(|s| !s.is_empty())
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
    unsafe { libc::geteuid() == 0 }
}

/// Parse a `user.containers.override_stat` value `UID:GID:MODE[:TYPE]`.
pub fn parse_override(v: &[u8]) -> Option<(u32, u32, u32, Option<String>)> {
    let s = std::str::from_utf8(v).ok()?;
    let mut it = s.trim().splitn(4, ':');
    let uid = it.next()?.parse().ok()?;
    let gid = it.next()?.parse().ok()?;
    let mode = u32::from_str_radix(it.next()?, 8).ok()?;
    Some((uid, gid, mode, it.next().map(str::to_string)))
}

/// Name as bytes to a `&CStr`-free OsStr helper.
pub fn os(s: &str) -> &OsStr {
    OsStr::new(s)
}
