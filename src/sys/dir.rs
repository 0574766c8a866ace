//! Directory listing with `getdents64`.

use std::ffi::OsStr;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};

use super::at::{SysResult, open_at};

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
    let fd = match open_at(dir, OsStr::new("."), libc::O_RDONLY | libc::O_DIRECTORY, 0) {
        Ok(fd) => fd,
        // "." needs search permission on the directory, which an owner without the x bit (an
        // unprivileged daemon, a mode 0600 directory) lacks; reading its entries needs only r.
        // Reopening the object itself through its /proc magic link checks just that.
        Err(e) if e.raw_os_error() == Some(libc::EACCES) => {
            use std::os::unix::ffi::OsStrExt;
            let path = super::at::proc_path(dir);
            super::at::open_dir_read(std::path::Path::new(OsStr::from_bytes(path.as_bytes())))
                .map_err(|_| e)?
        }
        Err(e) => return Err(e),
    };
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
