//! Extended attributes (get, set, list, remove) of fds, of names in a directory fd, of host paths.

use std::ffi::{CStr, CString, OsStr};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::path::Path;

use super::at::{SysResult, check, check_ssize, cstr, open_at, proc_path};

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

/// Syscall numbers of the `*xattrat` family (Linux 6.13; one number on every architecture).
const SYS_SETXATTRAT: libc::c_long = 463;
const SYS_GETXATTRAT: libc::c_long = 464;
const SYS_LISTXATTRAT: libc::c_long = 465;

/// The kernel's `struct xattr_args` of getxattrat(2) and setxattrat(2).
#[repr(C)]
struct XattrArgs {
    value: u64,
    size: u32,
    flags: u32,
}

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
    let c = cstr(if name.is_empty() {
        OsStr::new(".")
    } else {
        name
    })?;
    let n = xattr_name(xattr)?;
    if !NO_XATTRAT.load(std::sync::atomic::Ordering::Relaxed) {
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
