//! The store lock: flock on ROOT/lock, exclusive for writers and shared for readers.

use super::{Result, StoreError};
use crate::lockfile::{self, Mode};
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
        let mode = if exclusive {
            Mode::Exclusive
        } else {
            Mode::Shared
        };
        lockfile::lock(&file, mode).map_err(StoreError::io(format!("lock {}", path.display())))?;
        Ok(StoreLock { _file: file })
    }
}
