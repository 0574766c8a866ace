//! File handles (`name_to_handle_at`, `open_by_handle_at`) and a filesystem's uuid, type, statvfs.

use std::ffi::OsStr;
use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;

use super::at::{SysResult, check, open_at};

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

pub fn statvfs(fd: BorrowedFd<'_>) -> SysResult<libc::statvfs64> {
    let mut st = MaybeUninit::<libc::statvfs64>::uninit();
    // SAFETY: an FFI call on a descriptor borrowed for the call's duration, with pointers to live
    // NUL-terminated strings and to buffers whose lengths are passed with them; the kernel touches
    // nothing else.
    check(unsafe { libc::fstatvfs64(fd.as_raw_fd(), st.as_mut_ptr()) })?;
    // SAFETY: the call above succeeded, so the kernel filled in the whole struct.
    Ok(unsafe { st.assume_init() })
}
