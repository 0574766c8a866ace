//! The hard-link index: lower files with several names share one upper inode once any name
//! is copied up. The copy lives in `WORKDIR/strata-index/<key>` (key: the lower file's file
//! handle) and every name that is copied up is a hard link to it, as kernel overlayfs does
//! with `index=on`. An xattr on the index entry counts the lower names not yet linked, so the
//! link count shown stays right.

use std::ffi::{OsStr, OsString};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};

use super::sys;
use super::union::{FsResult, Union, errno};

/// Key of a lower object in the index: the hex of its file handle (stable across remounts).
pub fn key_of(dir: BorrowedFd<'_>, name: &OsStr, st: &libc::stat64) -> OsString {
    match file_handle(dir, name) {
        Some(h) => OsString::from(format!("fh-{}", hex(&h))),
        None => OsString::from(format!("ino-{:x}-{:x}", st.st_dev, st.st_ino)),
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn file_handle(dir: BorrowedFd<'_>, name: &OsStr) -> Option<Vec<u8>> {
    use std::os::unix::ffi::OsStrExt;
    const MAX_HANDLE_SZ: usize = 128;
    // struct file_handle { u32 handle_bytes; i32 handle_type; u8 f_handle[]; }
    let mut buf = vec![0u8; 8 + MAX_HANDLE_SZ];
    buf[0..4].copy_from_slice(&(MAX_HANDLE_SZ as u32).to_ne_bytes());
    let c = std::ffi::CString::new(name.as_bytes()).ok()?;
    let mut mount_id: libc::c_int = 0;
    let r = unsafe {
        libc::syscall(
            libc::SYS_name_to_handle_at,
            dir.as_raw_fd(),
            c.as_ptr(),
            buf.as_mut_ptr(),
            &mut mount_id as *mut libc::c_int,
            0,
        )
    };
    if r != 0 {
        return None;
    }
    let len = u32::from_ne_bytes(buf[0..4].try_into().ok()?) as usize;
    buf.truncate(8 + len.min(MAX_HANDLE_SZ));
    Some(buf)
}

const PENDING_XATTR: &str = "strata.lowerlinks";

impl Union {
    fn index_dir(&self) -> Option<BorrowedFd<'_>> {
        self.layers.index.as_ref().map(|f| f.as_fd())
    }

    /// Whether the index has an entry for `key`, and its stat.
    pub fn index_lookup(&self, key: &OsStr) -> FsResult<Option<libc::stat64>> {
        let Some(dir) = self.index_dir() else {
            return Ok(None);
        };
        sys::stat_at_opt(dir, key).map_err(errno)
    }

    /// Lower names of an indexed object that are not linked into the upper layer yet.
    pub fn index_pending(&self, key: &OsStr) -> u32 {
        let Some(dir) = self.index_dir() else {
            return 0;
        };
        let Ok(fd) = sys::open_at(dir, key, libc::O_PATH, 0) else {
            return 0;
        };
        match sys::get_xattr(fd.as_fd(), &self.fmt.xattr(PENDING_XATTR)) {
            Ok(Some(v)) => std::str::from_utf8(&v)
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(0),
            _ => 0,
        }
    }

    /// Record `n` pending lower names on index entry `key`.
    pub fn set_index_pending(&self, key: &OsStr, n: u32) -> FsResult<()> {
        let dir = self.index_dir().ok_or(libc_err(libc::EIO))?;
        let fd = sys::open_at(dir, key, libc::O_PATH, 0).map_err(errno)?;
        sys::set_xattr(
            fd.as_fd(),
            self.fmt.xattr(PENDING_XATTR).as_bytes(),
            n.to_string().as_bytes(),
            0,
        )
        .map_err(errno)
    }

    /// One fewer lower name of `key` is pending (it was linked up or removed).
    pub fn index_name_settled(&self, key: &OsStr) -> FsResult<()> {
        let n = self.index_pending(key);
        self.set_index_pending(key, n.saturating_sub(1))
    }

    /// Link index entry `key` as `name` in `dir`.
    pub fn link_from_index(&self, key: &OsStr, dir: BorrowedFd<'_>, name: &OsStr) -> FsResult<()> {
        let idx = self.index_dir().ok_or(libc_err(libc::EIO))?;
        sys::link_at(idx, key, dir, name).map_err(errno)
    }

    /// Put the finished copy `tmp` (in the work dir) into the index as `key`, recording the
    /// lower names still to come.
    pub fn add_to_index(
        &self,
        work: BorrowedFd<'_>,
        tmp: &OsStr,
        key: &OsStr,
        pending: u32,
    ) -> FsResult<()> {
        let idx = self.index_dir().ok_or(libc_err(libc::EIO))?;
        let fd = sys::open_at(work, tmp, libc::O_PATH, 0).map_err(errno)?;
        sys::set_xattr(
            fd.as_fd(),
            self.fmt.xattr(PENDING_XATTR).as_bytes(),
            pending.to_string().as_bytes(),
            0,
        )
        .map_err(errno)?;
        sys::link_at(work, tmp, idx, key).map_err(errno)
    }

    pub fn has_index(&self) -> bool {
        self.layers.index.is_some()
    }
}

fn libc_err(e: i32) -> fuser::Errno {
    fuser::Errno::from_i32(e)
}
