//! Atomic file updates (temp + fsync + rename + fsync of the directory) and staging dirs.

use super::{Result, StoreError};
use std::io::Write;
use std::path::{Path, PathBuf};

/// fsync a directory so a rename in it is durable.
pub fn fsync_dir(dir: &Path) -> Result<()> {
    let f = std::fs::File::open(dir).map_err(StoreError::io(format!("open {}", dir.display())))?;
    f.sync_all()
        .map_err(StoreError::io(format!("fsync {}", dir.display())))
}

/// A name unique to this process and moment.
pub fn unique_name(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{prefix}{}-{nanos}", std::process::id())
}

/// Replace `path` with `bytes` atomically.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path
        .parent()
        .ok_or_else(|| StoreError::Corrupt(format!("no parent for {}", path.display())))?;
    let tmp = dir.join(unique_name(".tmp-"));
    let res = (|| {
        let mut f = std::fs::File::create(&tmp)
            .map_err(StoreError::io(format!("create {}", tmp.display())))?;
        f.write_all(bytes)
            .map_err(StoreError::io(format!("write {}", tmp.display())))?;
        f.sync_all()
            .map_err(StoreError::io(format!("fsync {}", tmp.display())))?;
        std::fs::rename(&tmp, path).map_err(StoreError::io(format!("rename to {}", path.display())))
    })();
    if res.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    res?;
    fsync_dir(dir)
}

/// A staging directory under ROOT/tmp, removed on drop.
pub struct Staging {
    /// Its path.
    pub dir: PathBuf,
}

impl Staging {
    /// Create a fresh staging dir in `tmp_root`.
    pub fn new(tmp_root: &Path) -> Result<Staging> {
        let dir = tmp_root.join(unique_name("tx-"));
        std::fs::create_dir_all(&dir)
            .map_err(StoreError::io(format!("create {}", dir.display())))?;
        Ok(Staging { dir })
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Move a staged file or directory into place (no-op if the target exists), then fsync.
pub fn install(staged: &Path, target: &Path) -> Result<bool> {
    if target.symlink_metadata().is_ok() {
        return Ok(false);
    }
    std::fs::rename(staged, target)
        .map_err(StoreError::io(format!("install {}", target.display())))?;
    if let Some(parent) = target.parent() {
        fsync_dir(parent)?;
    }
    Ok(true)
}

/// fsync every regular file under `dir` (staged layer contents before they are installed).
/// A tree deeper than paths can name (`ENAMETOOLONG`, a hostile 10,000-deep layer) is made
/// durable with one `syncfs` of its filesystem instead.
pub fn fsync_tree(dir: &Path) -> Result<()> {
    match fsync_tree_paths(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::ENAMETOOLONG) => {
            let f = std::fs::File::open(dir)
                .map_err(StoreError::io(format!("open {}", dir.display())))?;
            rustix::fs::syncfs(&f)
                .map_err(|e| StoreError::io(format!("syncfs {}", dir.display()))(e.into()))
        }
        Err(e) => Err(StoreError::io(format!("fsync under {}", dir.display()))(e)),
    }
}

fn fsync_tree_paths(dir: &Path) -> std::io::Result<()> {
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        let ft = e.file_type()?;
        if ft.is_dir() {
            fsync_tree_paths(&e.path())?;
        } else if ft.is_file()
            && let Ok(f) = std::fs::File::open(e.path())
        {
            let _ = f.sync_all();
        }
    }
    if let Ok(f) = std::fs::File::open(dir) {
        let _ = f.sync_all();
    }
    Ok(())
}
