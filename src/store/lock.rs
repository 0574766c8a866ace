//! The store lock: flock on ROOT/lock, exclusive for writers and shared for readers.

use super::{Result, StoreError};
use std::os::fd::AsRawFd;
use std::path::Path;

/// Held while the lock is held; dropping releases it.
pub struct StoreLock {
    _file: std::fs::File,
}

impl StoreLock {
    /// Block until the lock is ours.
    pub fn acquire(path: &Path, exclusive: bool) -> Result<StoreLock> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(path)
            .map_err(StoreError::io(format!("open lock {}", path.display())))?;
        let op = if exclusive {
            libc::LOCK_EX
        } else {
            libc::LOCK_SH
        };
        loop {
            let r = unsafe { libc::flock(file.as_raw_fd(), op) };
            if r == 0 {
                break;
            }
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::Interrupted {
                return Err(StoreError::io(format!("lock {}", path.display()))(e));
            }
        }
        Ok(StoreLock { _file: file })
    }
}
