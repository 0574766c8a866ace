//! Thin, safe wrappers over the `*at()` path calls the driver and the image store use (stat,
//! open, mkdir/mknod/symlink/link, unlink, rename, readlink, chown/chmod, utimens), and the
//! small helpers every module of `sys` shares. Every path given here is one name (or a relative
//! path checked by the kernel with `RESOLVE_BENEATH`) resolved against a directory fd, never a
//! host path built by string joining. Host paths are taken only to open a directory and by the
//! `l*xattr` variants in [`super::xattr`] (for the image code, which reads layers by path).

use std::ffi::{CString, OsStr};
use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// Result of a system call wrapper.
pub type SysResult<T> = io::Result<T>;

pub(super) fn cstr(name: &OsStr) -> SysResult<CString> {
    CString::new(name.as_bytes()).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

pub(super) fn check(ret: libc::c_int) -> SysResult<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

pub(super) fn check_ssize(ret: libc::ssize_t) -> SysResult<usize> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret as usize)
    }
}

/// Retry a call interrupted by a signal.
pub(super) fn retry<T>(mut f: impl FnMut() -> SysResult<T>) -> SysResult<T> {
    loop {
        match f() {
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
            other => return other,
        }
    }
}

/// `fstatat(dir, name, AT_SYMLINK_NOFOLLOW)`; an empty name stats `dir` itself.
pub fn stat_at(dir: BorrowedFd<'_>, name: &OsStr) -> SysResult<libc::stat64> {
    let c = cstr(name)?;
    let mut st = MaybeUninit::<libc::stat64>::uninit();
    let flags = if name.is_empty() {
        libc::AT_SYMLINK_NOFOLLOW | libc::AT_EMPTY_PATH
    } else {
        libc::AT_SYMLINK_NOFOLLOW
    };
    // SAFETY: an FFI call on a descriptor borrowed for the call's duration, with pointers to live
    // NUL-terminated strings and to buffers whose lengths are passed with them; the kernel touches
    // nothing else.
    check(unsafe { libc::fstatat64(dir.as_raw_fd(), c.as_ptr(), st.as_mut_ptr(), flags) })?;
    // SAFETY: the call above succeeded, so the kernel filled in the whole struct.
    Ok(unsafe { st.assume_init() })
}

/// `fstat(fd)` (works on `O_PATH` fds too).
pub fn fstat(fd: BorrowedFd<'_>) -> SysResult<libc::stat64> {
    stat_at(fd, OsStr::new(""))
}

/// Like [`stat_at`] but maps `ENOENT`/`ENOTDIR` to `None`.
pub fn stat_at_opt(dir: BorrowedFd<'_>, name: &OsStr) -> SysResult<Option<libc::stat64>> {
    match stat_at(dir, name) {
        Ok(st) => Ok(Some(st)),
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT) | Some(libc::ENOTDIR)) => Ok(None),
        Err(e) => Err(e),
    }
}

/// `openat(dir, name, flags | O_NOFOLLOW | O_CLOEXEC, mode)` for a single name.
pub fn open_at(dir: BorrowedFd<'_>, name: &OsStr, flags: i32, mode: u32) -> SysResult<OwnedFd> {
    let c = cstr(name)?;
    let fd = retry(|| {
        // SAFETY: an FFI call on a descriptor borrowed for the call's duration, with pointers to
        // live NUL-terminated strings and to buffers whose lengths are passed with them; the kernel
        // touches nothing else.
        check(unsafe {
            libc::openat(
                dir.as_raw_fd(),
                c.as_ptr(),
                flags | libc::O_NOFOLLOW | libc::O_CLOEXEC,
                mode as libc::c_uint,
            )
        })
    })?;
    // SAFETY: the descriptor was just returned by a successful call and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `open(path, flags | O_DIRECTORY | O_CLOEXEC)`, following symlinks in `path`.
fn open_host_dir(path: &Path, flags: i32) -> SysResult<OwnedFd> {
    let c = cstr(path.as_os_str())?;
    // SAFETY: an FFI call on a descriptor borrowed for the call's duration, with pointers to live
    // NUL-terminated strings and to buffers whose lengths are passed with them; the kernel touches
    // nothing else.
    let fd = check(unsafe { libc::open(c.as_ptr(), flags | libc::O_DIRECTORY | libc::O_CLOEXEC) })?;
    // SAFETY: the descriptor was just returned by a successful call and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Open a directory (by absolute or relative host path) as an `O_PATH` fd: used only for the
/// layer roots given on the command line.
pub fn open_dir_path(path: &Path) -> SysResult<OwnedFd> {
    open_host_dir(path, libc::O_PATH)
}

/// Open a directory by host path for reading, following symlinks: for the store's own
/// directories, which the image code then walks with the `*at()` calls.
pub fn open_dir_read(path: &Path) -> SysResult<OwnedFd> {
    open_host_dir(path, libc::O_RDONLY)
}

/// `/proc/self/fd/N`: lets xattr and mode calls reach the object behind an `O_PATH` fd.
pub fn proc_path(fd: BorrowedFd<'_>) -> CString {
    CString::new(format!("/proc/self/fd/{}", fd.as_raw_fd())).unwrap_or_default()
}

/// `mkdirat(dir, name, mode)`.
pub fn mkdir_at(dir: BorrowedFd<'_>, name: &OsStr, mode: u32) -> SysResult<()> {
    let c = cstr(name)?;
    // SAFETY: an FFI call on a descriptor borrowed for the call's duration, with pointers to live
    // NUL-terminated strings and to buffers whose lengths are passed with them; the kernel touches
    // nothing else.
    check(unsafe { libc::mkdirat(dir.as_raw_fd(), c.as_ptr(), mode) })?;
    Ok(())
}

/// `mknodat(dir, name, mode, rdev)`.
pub fn mknod_at(dir: BorrowedFd<'_>, name: &OsStr, mode: u32, rdev: u64) -> SysResult<()> {
    let c = cstr(name)?;
    // SAFETY: an FFI call on a descriptor borrowed for the call's duration, with pointers to live
    // NUL-terminated strings and to buffers whose lengths are passed with them; the kernel touches
    // nothing else.
    check(unsafe { libc::mknodat(dir.as_raw_fd(), c.as_ptr(), mode, rdev) })?;
    Ok(())
}

/// `symlinkat(target, dir, name)`.
pub fn symlink_at(target: &OsStr, dir: BorrowedFd<'_>, name: &OsStr) -> SysResult<()> {
    let t = cstr(target)?;
    let c = cstr(name)?;
    // SAFETY: an FFI call on a descriptor borrowed for the call's duration, with pointers to live
    // NUL-terminated strings and to buffers whose lengths are passed with them; the kernel touches
    // nothing else.
    check(unsafe { libc::symlinkat(t.as_ptr(), dir.as_raw_fd(), c.as_ptr()) })?;
    Ok(())
}

/// `linkat(olddir, oldname, newdir, newname, 0)`: a symlink at `oldname` is not followed.
pub fn link_at(
    olddir: BorrowedFd<'_>,
    oldname: &OsStr,
    newdir: BorrowedFd<'_>,
    newname: &OsStr,
) -> SysResult<()> {
    let o = cstr(oldname)?;
    let n = cstr(newname)?;
    // SAFETY: an FFI call on a descriptor borrowed for the call's duration, with pointers to live
    // NUL-terminated strings and to buffers whose lengths are passed with them; the kernel touches
    // nothing else.
    check(unsafe {
        libc::linkat(
            olddir.as_raw_fd(),
            o.as_ptr(),
            newdir.as_raw_fd(),
            n.as_ptr(),
            0,
        )
    })?;
    Ok(())
}

pub fn unlink_at(dir: BorrowedFd<'_>, name: &OsStr, is_dir: bool) -> SysResult<()> {
    let c = cstr(name)?;
    let flags = if is_dir { libc::AT_REMOVEDIR } else { 0 };
    // SAFETY: an FFI call on a descriptor borrowed for the call's duration, with pointers to live
    // NUL-terminated strings and to buffers whose lengths are passed with them; the kernel touches
    // nothing else.
    check(unsafe { libc::unlinkat(dir.as_raw_fd(), c.as_ptr(), flags) })?;
    Ok(())
}

pub fn rename_at(
    olddir: BorrowedFd<'_>,
    oldname: &OsStr,
    newdir: BorrowedFd<'_>,
    newname: &OsStr,
    flags: u32,
) -> SysResult<()> {
    let o = cstr(oldname)?;
    let n = cstr(newname)?;
    // SAFETY: an FFI call on a descriptor borrowed for the call's duration, with pointers to live
    // NUL-terminated strings and to buffers whose lengths are passed with them; the kernel touches
    // nothing else.
    check(unsafe {
        libc::renameat2(
            olddir.as_raw_fd(),
            o.as_ptr(),
            newdir.as_raw_fd(),
            n.as_ptr(),
            flags,
        )
    })?;
    Ok(())
}

pub fn readlink_at(dir: BorrowedFd<'_>, name: &OsStr) -> SysResult<Vec<u8>> {
    let c = cstr(name)?;
    let mut buf = vec![0u8; libc::PATH_MAX as usize + 1];
    // SAFETY: an FFI call on a descriptor borrowed for the call's duration, with pointers to live
    // NUL-terminated strings and to buffers whose lengths are passed with them; the kernel touches
    // nothing else.
    let n = check_ssize(unsafe {
        libc::readlinkat(
            dir.as_raw_fd(),
            c.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    })?;
    buf.truncate(n);
    Ok(buf)
}

/// `fchownat(dir, name, uid, gid, AT_SYMLINK_NOFOLLOW)`; `u32::MAX` leaves a field unchanged.
pub fn chown_at(dir: BorrowedFd<'_>, name: &OsStr, uid: u32, gid: u32) -> SysResult<()> {
    let c = cstr(name)?;
    let flags = if name.is_empty() {
        libc::AT_SYMLINK_NOFOLLOW | libc::AT_EMPTY_PATH
    } else {
        libc::AT_SYMLINK_NOFOLLOW
    };
    // SAFETY: an FFI call on a descriptor borrowed for the call's duration, with pointers to live
    // NUL-terminated strings and to buffers whose lengths are passed with them; the kernel touches
    // nothing else.
    check(unsafe { libc::fchownat(dir.as_raw_fd(), c.as_ptr(), uid, gid, flags) })?;
    Ok(())
}

/// `fchmodat(dir, name, mode, 0)`: follows a symlink at `name` (fchmodat takes no
/// `AT_SYMLINK_NOFOLLOW`), so only for entries known not to be one.
pub fn chmod_at(dir: BorrowedFd<'_>, name: &OsStr, mode: u32) -> SysResult<()> {
    let c = cstr(name)?;
    // SAFETY: an FFI call on a descriptor borrowed for the call's duration, with pointers to live
    // NUL-terminated strings and to buffers whose lengths are passed with them; the kernel touches
    // nothing else.
    check(unsafe { libc::fchmodat(dir.as_raw_fd(), c.as_ptr(), mode, 0) })?;
    Ok(())
}

/// chmod of the object behind an fd (also an `O_PATH` one, through /proc).
pub fn chmod_fd(fd: BorrowedFd<'_>, mode: u32) -> SysResult<()> {
    // fchmodat2(fd, "", AT_EMPTY_PATH) (Linux 6.6) takes O_PATH fds in one call.
    // SAFETY: an FFI call on a descriptor borrowed for the call's duration, with pointers to live
    // NUL-terminated strings and to buffers whose lengths are passed with them; the kernel touches
    // nothing else.
    let r = unsafe {
        libc::syscall(
            libc::SYS_fchmodat2,
            fd.as_raw_fd(),
            c"".as_ptr(),
            mode,
            libc::AT_EMPTY_PATH,
        )
    };
    if r == 0 {
        return Ok(());
    }
    let err = io::Error::last_os_error();
    if !matches!(err.raw_os_error(), Some(libc::ENOSYS) | Some(libc::EINVAL)) {
        return Err(err);
    }
    // SAFETY: an FFI call on a descriptor borrowed for the call's duration, with pointers to live
    // NUL-terminated strings and to buffers whose lengths are passed with them; the kernel touches
    // nothing else.
    if unsafe { libc::fchmod(fd.as_raw_fd(), mode) } == 0 {
        return Ok(());
    }
    let err = io::Error::last_os_error();
    if err.raw_os_error() != Some(libc::EBADF) {
        return Err(err);
    }
    let p = proc_path(fd);
    // SAFETY: an FFI call on a descriptor borrowed for the call's duration, with pointers to live
    // NUL-terminated strings and to buffers whose lengths are passed with them; the kernel touches
    // nothing else.
    check(unsafe { libc::chmod(p.as_ptr(), mode) })?;
    Ok(())
}

/// `utimensat(dir, name, times, AT_SYMLINK_NOFOLLOW)`; an empty name sets `dir` itself.
pub fn utimens_at(dir: BorrowedFd<'_>, name: &OsStr, times: &[libc::timespec; 2]) -> SysResult<()> {
    if name.is_empty() {
        // utimensat rejects AT_EMPTY_PATH; go through /proc for O_PATH fds.
        let p = proc_path(dir);
        // SAFETY: an FFI call on a descriptor borrowed for the call's duration, with pointers to
        // live NUL-terminated strings and to buffers whose lengths are passed with them; the kernel
        // touches nothing else.
        check(unsafe { libc::utimensat(libc::AT_FDCWD, p.as_ptr(), times.as_ptr(), 0) })?;
        return Ok(());
    }
    let c = cstr(name)?;
    // SAFETY: an FFI call on a descriptor borrowed for the call's duration, with pointers to live
    // NUL-terminated strings and to buffers whose lengths are passed with them; the kernel touches
    // nothing else.
    check(unsafe {
        libc::utimensat(
            dir.as_raw_fd(),
            c.as_ptr(),
            times.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    })?;
    Ok(())
}

/// Whether a stat describes a directory.
pub fn is_dir(st: &libc::stat64) -> bool {
    st.st_mode & libc::S_IFMT == libc::S_IFDIR
}

/// Whether a stat describes a non-directory that is not a symlink.
pub fn is_reg_or_special(st: &libc::stat64) -> bool {
    let f = st.st_mode & libc::S_IFMT;
    f != libc::S_IFDIR && f != libc::S_IFLNK
}

/// Whether a stat describes a regular file.
pub fn is_reg(st: &libc::stat64) -> bool {
    st.st_mode & libc::S_IFMT == libc::S_IFREG
}
