//! File data: positioned reads and writes, truncate, fsync, writeback, fallocate, lseek, copy_file_range.

use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsRawFd, BorrowedFd};

use super::at::{SysResult, check, check_ssize, retry};

pub fn pread(fd: BorrowedFd<'_>, buf: &mut [u8], off: u64) -> SysResult<usize> {
    pread_into(fd, buf.as_mut_ptr(), buf.len(), off)
}

/// pread into uninitialised memory (saves zeroing read buffers); returns bytes read.
pub fn pread_uninit(fd: BorrowedFd<'_>, buf: &mut [MaybeUninit<u8>], off: u64) -> SysResult<usize> {
    pread_into(fd, buf.as_mut_ptr().cast(), buf.len(), off)
}

/// pread64 into the `len` bytes at `ptr`, which the caller holds mutably borrowed.
fn pread_into(fd: BorrowedFd<'_>, ptr: *mut u8, len: usize, off: u64) -> SysResult<usize> {
    retry(|| {
        // SAFETY: ptr and len describe a buffer the caller borrows mutably for this call (the
        // kernel writes at most len bytes there); fd is borrowed for the call's duration.
        check_ssize(unsafe { libc::pread64(fd.as_raw_fd(), ptr.cast(), len, off as i64) })
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
