//! Thin, safe wrappers over the `*at()` system calls the driver and the image store use.
//! Every path given here is one name (or a relative path checked by the kernel with
//! `RESOLVE_BENEATH`) resolved against a directory fd, never a host path built by string
//! joining. Host paths are taken only to open a directory and by the `l*xattr` variants
//! (for the image code, which reads layers by path).

use std::ffi::{CStr, CString, OsStr};
use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// Result of a system call wrapper.
pub type SysResult<T> = io::Result<T>;

fn cstr(name: &OsStr) -> SysResult<CString> {
    CString::new(name.as_bytes()).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

fn check(ret: libc::c_int) -> SysResult<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

fn check_ssize(ret: libc::ssize_t) -> SysResult<usize> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret as usize)
    }
}

/// Retry a call interrupted by a signal.
fn retry<T>(mut f: impl FnMut() -> SysResult<T>) -> SysResult<T> {
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

/// The filesystem type (`f_type` magic) of the filesystem holding `fd`.
pub fn fs_type(fd: BorrowedFd<'_>) -> SysResult<i64> {
    let mut st = MaybeUninit::<libc::statfs64>::uninit();
    // SAFETY: st is a writable statfs64 buffer.
    check(unsafe { libc::fstatfs64(fd.as_raw_fd(), st.as_mut_ptr()) })?;
    // SAFETY: fstatfs64 filled it in.
    #[allow(clippy::unnecessary_cast)] // f_type is not i64 on every target
    // SAFETY: the call above succeeded, so the kernel filled in the whole struct.
    Ok(unsafe { st.assume_init() }.f_type as i64)
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

/// Read one extended attribute of the object behind `fd`; `Ok(None)` when it is absent or
/// xattrs are unsupported.
pub fn get_xattr(fd: BorrowedFd<'_>, name: &str) -> SysResult<Option<Vec<u8>>> {
    get_xattr_cstr(&proc_path(fd), &xattr_name(name.as_bytes())?, true)
}

/// [`get_xattr`] of the host path `path`, not following a symlink at its end (`lgetxattr`).
pub fn lget_xattr(path: &Path, name: &str) -> SysResult<Option<Vec<u8>>> {
    get_xattr_cstr(
        &cstr(path.as_os_str())?,
        &xattr_name(name.as_bytes())?,
        false,
    )
}

fn xattr_name(name: &[u8]) -> SysResult<CString> {
    CString::new(name).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

/// `getxattr(p, n)`, or `lgetxattr` unless `follow`; `/proc/self/fd/N` paths must follow.
fn get_xattr_cstr(p: &CStr, n: &CStr, follow: bool) -> SysResult<Option<Vec<u8>>> {
    // SAFETY: called only with a pointer to a live buffer and its length (or null and 0 to ask for
    // the size); the strings are NUL-terminated.
    let get = |buf: *mut libc::c_void, size: usize| unsafe {
        if follow {
            libc::getxattr(p.as_ptr(), n.as_ptr(), buf, size)
        } else {
            libc::lgetxattr(p.as_ptr(), n.as_ptr(), buf, size)
        }
    };
    let mut buf = vec![0u8; 256];
    loop {
        let r = get(buf.as_mut_ptr().cast(), buf.len());
        if r >= 0 {
            buf.truncate(r as usize);
            return Ok(Some(buf));
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::ENODATA) | Some(libc::ENOTSUP) => return Ok(None),
            Some(libc::ERANGE) => {
                let need = get(std::ptr::null_mut(), 0);
                if need < 0 {
                    return Err(io::Error::last_os_error());
                }
                buf.resize(need as usize + 1, 0);
            }
            _ => return Err(e),
        }
    }
}

/// Raw getxattr through /proc for the FUSE getxattr op (keeps errno as it is).
pub fn get_xattr_raw(fd: BorrowedFd<'_>, name: &CStr, size: usize) -> SysResult<Vec<u8>> {
    let p = proc_path(fd);
    let mut buf = vec![0u8; size];
    let ptr = if size == 0 {
        std::ptr::null_mut()
    } else {
        buf.as_mut_ptr().cast()
    };
    // SAFETY: an FFI call on a descriptor borrowed for the call's duration, with pointers to live
    // NUL-terminated strings and to buffers whose lengths are passed with them; the kernel touches
    // nothing else.
    let n = check_ssize(unsafe { libc::getxattr(p.as_ptr(), name.as_ptr(), ptr, size) })?;
    if size == 0 {
        return Ok(vec![0u8; n]);
    }
    buf.truncate(n);
    Ok(buf)
}

/// All xattr names of the object behind `fd` (empty when unsupported).
pub fn list_xattr(fd: BorrowedFd<'_>) -> SysResult<Vec<Vec<u8>>> {
    list_xattr_cstr(&proc_path(fd), true)
}

/// [`list_xattr`] of the host path `path`, not following a symlink at its end (`llistxattr`).
pub fn llist_xattr(path: &Path) -> SysResult<Vec<Vec<u8>>> {
    list_xattr_cstr(&cstr(path.as_os_str())?, false)
}

/// `listxattr(p)`, or `llistxattr` unless `follow`; `/proc/self/fd/N` paths must follow.
fn list_xattr_cstr(p: &CStr, follow: bool) -> SysResult<Vec<Vec<u8>>> {
    // SAFETY: called only with a pointer to a live buffer and its length (or null and 0 to ask for
    // the size); the strings are NUL-terminated.
    let list = |buf: *mut libc::c_char, size: usize| unsafe {
        if follow {
            libc::listxattr(p.as_ptr(), buf, size)
        } else {
            libc::llistxattr(p.as_ptr(), buf, size)
        }
    };
    let mut buf = vec![0u8; 1024];
    loop {
        let r = list(buf.as_mut_ptr().cast(), buf.len());
        if r >= 0 {
            buf.truncate(r as usize);
            return Ok(split_names(&buf));
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::ENOTSUP) => return Ok(Vec::new()),
            Some(libc::ERANGE) => {
                let need = list(std::ptr::null_mut(), 0);
                if need < 0 {
                    return Err(io::Error::last_os_error());
                }
                buf.resize(need as usize + 1, 0);
            }
            _ => return Err(e),
        }
    }
}

/// Syscall numbers of the `*xattrat` family (Linux 6.13; one number on every architecture).
const SYS_GETXATTRAT: libc::c_long = 464;
const SYS_LISTXATTRAT: libc::c_long = 465;

/// Whether the kernel lacks the `*xattrat` calls (learnt on the first ENOSYS).
static NO_XATTRAT: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

fn xattrat_missing(e: &io::Error) -> bool {
    if e.raw_os_error() == Some(libc::ENOSYS) {
        NO_XATTRAT.store(true, std::sync::atomic::Ordering::Relaxed);
        return true;
    }
    false
}

/// The value of xattr `xattr` of `name` in `dir` (not following a symlink at its end), in one
/// `getxattrat` call where the kernel has it; `None` when absent or unsupported.
pub fn get_xattr_at(dir: BorrowedFd<'_>, name: &OsStr, xattr: &str) -> SysResult<Option<Vec<u8>>> {
    let c = cstr(if name.is_empty() {
        OsStr::new(".")
    } else {
        name
    })?;
    let n = xattr_name(xattr.as_bytes())?;
    if !NO_XATTRAT.load(std::sync::atomic::Ordering::Relaxed) {
        #[repr(C)]
        struct XattrArgs {
            value: u64,
            size: u32,
            flags: u32,
        }
        let mut buf = vec![0u8; 256];
        loop {
            let mut args = XattrArgs {
                value: buf.as_mut_ptr() as u64,
                size: buf.len() as u32,
                flags: 0,
            };
            // SAFETY: c and n are NUL-terminated; args points at a live xattr_args whose
            // value buffer (buf) has `size` writable bytes.
            let r = unsafe {
                libc::syscall(
                    SYS_GETXATTRAT,
                    dir.as_raw_fd(),
                    c.as_ptr(),
                    libc::AT_SYMLINK_NOFOLLOW,
                    n.as_ptr(),
                    &mut args as *mut XattrArgs,
                    std::mem::size_of::<XattrArgs>(),
                )
            };
            if r >= 0 {
                buf.truncate(r as usize);
                return Ok(Some(buf));
            }
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::ENODATA) | Some(libc::ENOTSUP) => return Ok(None),
                Some(libc::ERANGE) if buf.len() < (1 << 16) => buf.resize(1 << 16, 0),
                _ if xattrat_missing(&e) => break,
                _ => return Err(e),
            }
        }
    }
    let fd = open_at(dir, name, libc::O_PATH | libc::O_NOFOLLOW, 0)?;
    get_xattr(fd.as_fd(), xattr)
}

/// Set xattr `xattr` of `name` in `dir` (not following a symlink at its end), in one
/// `setxattrat` call where the kernel has it.
pub fn set_xattr_at(
    dir: BorrowedFd<'_>,
    name: &OsStr,
    xattr: &[u8],
    value: &[u8],
) -> SysResult<()> {
    const SYS_SETXATTRAT: libc::c_long = 463;
    let c = cstr(if name.is_empty() {
        OsStr::new(".")
    } else {
        name
    })?;
    let n = xattr_name(xattr)?;
    if !NO_XATTRAT.load(std::sync::atomic::Ordering::Relaxed) {
        #[repr(C)]
        struct XattrArgs {
            value: u64,
            size: u32,
            flags: u32,
        }
        let args = XattrArgs {
            value: value.as_ptr() as u64,
            size: value.len() as u32,
            flags: 0,
        };
        // SAFETY: c and n are NUL-terminated; args points at a live xattr_args whose value
        // buffer has `size` readable bytes.
        let r = unsafe {
            libc::syscall(
                SYS_SETXATTRAT,
                dir.as_raw_fd(),
                c.as_ptr(),
                libc::AT_SYMLINK_NOFOLLOW,
                n.as_ptr(),
                &args as *const XattrArgs,
                std::mem::size_of::<XattrArgs>(),
            )
        };
        if r >= 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if !xattrat_missing(&e) {
            return Err(e);
        }
    }
    let fd = open_at(dir, name, libc::O_PATH | libc::O_NOFOLLOW, 0)?;
    set_xattr(fd.as_fd(), xattr, value, 0)
}

/// Every xattr name of `name` in `dir` (not following a symlink at its end), in one
/// `listxattrat` call where the kernel has it.
pub fn list_xattr_at(dir: BorrowedFd<'_>, name: &OsStr) -> SysResult<Vec<Vec<u8>>> {
    let c = cstr(if name.is_empty() {
        OsStr::new(".")
    } else {
        name
    })?;
    if !NO_XATTRAT.load(std::sync::atomic::Ordering::Relaxed) {
        let mut buf = vec![0u8; 512];
        loop {
            // SAFETY: c is NUL-terminated; buf has buf.len() writable bytes.
            let r = unsafe {
                libc::syscall(
                    SYS_LISTXATTRAT,
                    dir.as_raw_fd(),
                    c.as_ptr(),
                    libc::AT_SYMLINK_NOFOLLOW,
                    buf.as_mut_ptr(),
                    buf.len(),
                )
            };
            if r >= 0 {
                buf.truncate(r as usize);
                return Ok(split_names(&buf));
            }
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::ENOTSUP) => return Ok(Vec::new()),
                Some(libc::ERANGE) if buf.len() < (1 << 16) => buf.resize(1 << 16, 0),
                _ if xattrat_missing(&e) => break,
                _ => return Err(e),
            }
        }
    }
    let fd = open_at(dir, name, libc::O_PATH | libc::O_NOFOLLOW, 0)?;
    list_xattr(fd.as_fd())
}

fn split_names(buf: &[u8]) -> Vec<Vec<u8>> {
    buf.split(|b| *b == 0)
        .filter(|s| !s.is_empty())
        .map(|s| s.to_vec())
        .collect()
}

/// `open_by_handle_at(mount_fd, handle, O_PATH)`: the object a file handle names on the
/// filesystem of `mount_fd` (needs CAP_DAC_READ_SEARCH).
pub fn open_by_handle(
    mount_fd: BorrowedFd<'_>,
    handle_type: i32,
    fid: &[u8],
) -> SysResult<OwnedFd> {
    // struct file_handle { u32 handle_bytes; i32 handle_type; u8 f_handle[]; }
    let mut buf = Vec::with_capacity(8 + fid.len());
    buf.extend_from_slice(&(fid.len() as u32).to_ne_bytes());
    buf.extend_from_slice(&handle_type.to_ne_bytes());
    buf.extend_from_slice(fid);
    // SAFETY: buf is a complete struct file_handle with handle_bytes bytes of handle.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_open_by_handle_at,
            mount_fd.as_raw_fd(),
            buf.as_mut_ptr(),
            libc::O_PATH | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the call returned a new fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as libc::c_int) })
}

/// `setxattr` on the object behind `fd`.
pub fn set_xattr(fd: BorrowedFd<'_>, name: &[u8], value: &[u8], flags: i32) -> SysResult<()> {
    set_xattr_cstr(&proc_path(fd), &xattr_name(name)?, value, flags, true)
}

/// [`set_xattr`] on the host path `path`, not following a symlink at its end (`lsetxattr`).
pub fn lset_xattr(path: &Path, name: &[u8], value: &[u8], flags: i32) -> SysResult<()> {
    set_xattr_cstr(
        &cstr(path.as_os_str())?,
        &xattr_name(name)?,
        value,
        flags,
        false,
    )
}

/// `setxattr(p, n, value, flags)`, or `lsetxattr` unless `follow`.
fn set_xattr_cstr(p: &CStr, n: &CStr, value: &[u8], flags: i32, follow: bool) -> SysResult<()> {
    let (v, len) = (value.as_ptr().cast(), value.len());
    // SAFETY: an FFI call on a descriptor borrowed for the call's duration, with pointers to live
    // NUL-terminated strings and to buffers whose lengths are passed with them; the kernel touches
    // nothing else.
    check(unsafe {
        if follow {
            libc::setxattr(p.as_ptr(), n.as_ptr(), v, len, flags)
        } else {
            libc::lsetxattr(p.as_ptr(), n.as_ptr(), v, len, flags)
        }
    })?;
    Ok(())
}

/// `removexattr` on the object behind `fd`.
pub fn remove_xattr(fd: BorrowedFd<'_>, name: &[u8]) -> SysResult<()> {
    let p = proc_path(fd);
    let n = xattr_name(name)?;
    // SAFETY: an FFI call on a descriptor borrowed for the call's duration, with pointers to live
    // NUL-terminated strings and to buffers whose lengths are passed with them; the kernel touches
    // nothing else.
    check(unsafe { libc::removexattr(p.as_ptr(), n.as_ptr()) })?;
    Ok(())
}

pub fn pread(fd: BorrowedFd<'_>, buf: &mut [u8], off: u64) -> SysResult<usize> {
    retry(|| {
        // SAFETY: an FFI call on a descriptor borrowed for the call's duration, with pointers to
        // live NUL-terminated strings and to buffers whose lengths are passed with them; the kernel
        // touches nothing else.
        check_ssize(unsafe {
            libc::pread64(
                fd.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                off as i64,
            )
        })
    })
}

/// pread into uninitialised memory (saves zeroing read buffers); returns bytes read.
pub fn pread_uninit(fd: BorrowedFd<'_>, buf: &mut [MaybeUninit<u8>], off: u64) -> SysResult<usize> {
    retry(|| {
        // SAFETY: an FFI call on a descriptor borrowed for the call's duration, with pointers to
        // live NUL-terminated strings and to buffers whose lengths are passed with them; the kernel
        // touches nothing else.
        check_ssize(unsafe {
            libc::pread64(
                fd.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                off as i64,
            )
        })
    })
}

/// Read up to `size` bytes at `off` into a new vector (shorter at end of file), without
/// zeroing the buffer first.
pub fn pread_to_vec(fd: BorrowedFd<'_>, size: usize, off: u64) -> SysResult<Vec<u8>> {
    let mut buf: Vec<u8> = Vec::with_capacity(size);
    let mut got = 0usize;
    while got < size {
        let n = pread_uninit(
            fd,
            &mut buf.spare_capacity_mut()[..size - got],
            off + got as u64,
        )?;
        if n == 0 {
            break;
        }
        got += n;
        // SAFETY: pread initialised the first `n` spare bytes, after the `got - n` before.
        unsafe { buf.set_len(got) };
    }
    Ok(buf)
}

pub fn pwrite(fd: BorrowedFd<'_>, buf: &[u8], off: u64) -> SysResult<usize> {
    retry(|| {
        // SAFETY: an FFI call on a descriptor borrowed for the call's duration, with pointers to
        // live NUL-terminated strings and to buffers whose lengths are passed with them; the kernel
        // touches nothing else.
        check_ssize(unsafe {
            libc::pwrite64(fd.as_raw_fd(), buf.as_ptr().cast(), buf.len(), off as i64)
        })
    })
}

pub fn ftruncate(fd: BorrowedFd<'_>, len: u64) -> SysResult<()> {
    // SAFETY: an FFI call on a descriptor borrowed for the call's duration, with pointers to live
    // NUL-terminated strings and to buffers whose lengths are passed with them; the kernel touches
    // nothing else.
    retry(|| check(unsafe { libc::ftruncate64(fd.as_raw_fd(), len as i64) }))?;
    Ok(())
}

pub fn fsync(fd: BorrowedFd<'_>, datasync: bool) -> SysResult<()> {
    let r = if datasync {
        // SAFETY: an FFI call on a descriptor borrowed for the call's duration, with pointers to
        // live NUL-terminated strings and to buffers whose lengths are passed with them; the kernel
        // touches nothing else.
        unsafe { libc::fdatasync(fd.as_raw_fd()) }
    } else {
        // SAFETY: an FFI call on a descriptor borrowed for the call's duration, with pointers to
        // live NUL-terminated strings and to buffers whose lengths are passed with them; the kernel
        // touches nothing else.
        unsafe { libc::fsync(fd.as_raw_fd()) }
    };
    check(r)?;
    Ok(())
}

/// Start writeback of a byte range without waiting for it (sync_file_range WRITE).
pub fn start_writeback(fd: BorrowedFd<'_>, off: u64, len: u64) -> SysResult<()> {
    // SAFETY: an FFI call on a descriptor borrowed for the call's duration, with pointers to live
    // NUL-terminated strings and to buffers whose lengths are passed with them; the kernel touches
    // nothing else.
    check(unsafe {
        libc::sync_file_range(
            fd.as_raw_fd(),
            off as i64,
            len as i64,
            libc::SYNC_FILE_RANGE_WRITE,
        )
    })
    .map(drop)
}

pub fn fallocate(fd: BorrowedFd<'_>, mode: i32, off: u64, len: u64) -> SysResult<()> {
    // SAFETY: an FFI call on a descriptor borrowed for the call's duration, with pointers to live
    // NUL-terminated strings and to buffers whose lengths are passed with them; the kernel touches
    // nothing else.
    retry(|| check(unsafe { libc::fallocate64(fd.as_raw_fd(), mode, off as i64, len as i64) }))?;
    Ok(())
}

pub fn lseek(fd: BorrowedFd<'_>, off: i64, whence: i32) -> SysResult<i64> {
    // SAFETY: an FFI call on a descriptor borrowed for the call's duration, with pointers to live
    // NUL-terminated strings and to buffers whose lengths are passed with them; the kernel touches
    // nothing else.
    let r = unsafe { libc::lseek64(fd.as_raw_fd(), off, whence) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

pub fn copy_file_range(
    fd_in: BorrowedFd<'_>,
    off_in: u64,
    fd_out: BorrowedFd<'_>,
    off_out: u64,
    len: usize,
) -> SysResult<usize> {
    let mut oi = off_in as i64;
    let mut oo = off_out as i64;
    retry(|| {
        // SAFETY: an FFI call on a descriptor borrowed for the call's duration, with pointers to
        // live NUL-terminated strings and to buffers whose lengths are passed with them; the kernel
        // touches nothing else.
        check_ssize(unsafe {
            libc::copy_file_range(
                fd_in.as_raw_fd(),
                &mut oi,
                fd_out.as_raw_fd(),
                &mut oo,
                len,
                0,
            )
        } as libc::ssize_t)
    })
}

pub fn statvfs(fd: BorrowedFd<'_>) -> SysResult<libc::statvfs64> {
    let mut st = MaybeUninit::<libc::statvfs64>::uninit();
    // SAFETY: an FFI call on a descriptor borrowed for the call's duration, with pointers to live
    // NUL-terminated strings and to buffers whose lengths are passed with them; the kernel touches
    // nothing else.
    check(unsafe { libc::fstatvfs64(fd.as_raw_fd(), st.as_mut_ptr()) })?;
    // SAFETY: the call above succeeded, so the kernel filled in the whole struct.
    Ok(unsafe { st.assume_init() })
}

/// One directory entry as read by [`read_dir`].
pub struct RawDirEntry {
    pub name: Vec<u8>,
    pub ino: u64,
    pub dtype: u8,
}

/// Every entry of the directory `dir` (an fd of any kind), `.` and `..` excluded.
pub fn read_dir(dir: BorrowedFd<'_>) -> SysResult<Vec<RawDirEntry>> {
    thread_local! {
        // One getdents buffer per thread, reused: no allocation or zeroing per listing.
        static BUF: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(vec![0u8; 32 * 1024]);
    }
    let fd = open_at(dir, OsStr::new("."), libc::O_RDONLY | libc::O_DIRECTORY, 0)?;
    BUF.with(|b| match b.try_borrow_mut() {
        Ok(mut buf) => read_dir_with(fd.as_fd(), &mut buf),
        Err(_) => read_dir_with(fd.as_fd(), &mut vec![0u8; 32 * 1024]),
    })
}

fn read_dir_with(fd: BorrowedFd<'_>, buf: &mut [u8]) -> SysResult<Vec<RawDirEntry>> {
    let mut out = Vec::new();
    loop {
        // SAFETY: an FFI call on a descriptor borrowed for the call's duration, with pointers to
        // live NUL-terminated strings and to buffers whose lengths are passed with them; the kernel
        // touches nothing else.
        let n = unsafe {
            libc::syscall(
                libc::SYS_getdents64,
                fd.as_raw_fd(),
                buf.as_mut_ptr(),
                buf.len(),
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            return Err(e);
        }
        if n == 0 {
            break;
        }
        let mut pos = 0usize;
        while pos < n as usize {
            // struct linux_dirent64 { u64 d_ino; i64 d_off; u16 d_reclen; u8 d_type; char d_name[]; }
            let rec = &buf[pos..];
            let ino = u64::from_ne_bytes(rec[0..8].try_into().unwrap_or([0; 8]));
            let reclen = u16::from_ne_bytes(rec[16..18].try_into().unwrap_or([0; 2])) as usize;
            let dtype = rec[18];
            let name_bytes = &rec[19..reclen.max(19)];
            let len = name_bytes
                .iter()
                .position(|b| *b == 0)
                .unwrap_or(name_bytes.len());
            let name = &name_bytes[..len];
            if name != b"." && name != b".." {
                out.push(RawDirEntry {
                    name: name.to_vec(),
                    ino,
                    dtype,
                });
            }
            if reclen == 0 {
                break;
            }
            pos += reclen;
        }
    }
    Ok(out)
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

/// Return the allocator's free memory to the system (glibc `malloc_trim`).
pub fn release_free_memory() {
    // SAFETY: malloc_trim only walks the allocator's own free lists; it takes no pointers.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Raise the soft limit of open files to the hard limit: every directory the kernel holds
/// keeps an fd per layer, so a walk of a big tree needs many.
pub fn raise_nofile_limit() {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: r is a valid rlimit to fill in and then to pass back.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) == 0 && r.rlim_cur < r.rlim_max {
            r.rlim_cur = r.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &r);
        }
    }
}

/// `name_to_handle_at`: the handle type and bytes of `name` in `dir` (not following links).
pub fn file_handle(dir: BorrowedFd<'_>, name: &OsStr) -> Option<(i32, Vec<u8>)> {
    const MAX_HANDLE_SZ: usize = 128;
    // struct file_handle { u32 handle_bytes; i32 handle_type; u8 f_handle[]; }
    let mut buf = vec![0u8; 8 + MAX_HANDLE_SZ];
    buf[0..4].copy_from_slice(&(MAX_HANDLE_SZ as u32).to_ne_bytes());
    let c = std::ffi::CString::new(name.as_bytes()).ok()?;
    let mut mount_id: libc::c_int = 0;
    // An empty name is `dir` itself (a directory's key).
    let flags = if name.is_empty() {
        libc::AT_EMPTY_PATH
    } else {
        0
    };
    // SAFETY: buf is a file_handle with room for MAX_HANDLE_SZ bytes; c is NUL-terminated.
    let r = unsafe {
        libc::syscall(
            libc::SYS_name_to_handle_at,
            dir.as_raw_fd(),
            c.as_ptr(),
            buf.as_mut_ptr(),
            &mut mount_id as *mut libc::c_int,
            flags,
        )
    };
    if r != 0 {
        return None;
    }
    let len = (u32::from_ne_bytes(buf[0..4].try_into().ok()?) as usize).min(MAX_HANDLE_SZ);
    let handle_type = i32::from_ne_bytes(buf[4..8].try_into().ok()?);
    Some((handle_type, buf[8..8 + len].to_vec()))
}

/// The uuid of the filesystem holding `fd` (`FS_IOC_GETFSUUID`), as the kernel puts it in
/// file handles; all zero for filesystems without one.
pub fn fs_uuid(fd: BorrowedFd<'_>) -> [u8; 16] {
    // struct fsuuid2 { u8 len; u8 uuid[16]; }, _IOR(0x15, 0, struct fsuuid2)
    const FS_IOC_GETFSUUID: libc::c_ulong = 0x8011_1500;
    let mut buf = [0u8; 17];
    // The ioctl needs a real open file, not an O_PATH one.
    let Ok(dir) = open_at(fd, OsStr::new("."), libc::O_RDONLY | libc::O_DIRECTORY, 0) else {
        return [0; 16];
    };
    // SAFETY: buf has the size of struct fsuuid2.
    let r = unsafe { libc::ioctl(dir.as_raw_fd(), FS_IOC_GETFSUUID, buf.as_mut_ptr()) };
    let mut uuid = [0u8; 16];
    if r == 0 && buf[0] as usize <= 16 {
        let n = buf[0] as usize;
        uuid[..n].copy_from_slice(&buf[1..1 + n]);
    }
    uuid
}
