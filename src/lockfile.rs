//! Advisory whole-file locks (flock(2), through std's `File::lock`): taken waiting, through
//! interrupting signals, and released when the file is closed.

use std::fs::File;
use std::io;

/// Whether others may hold the lock at the same time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Readers: any number at once.
    Shared,
    /// A writer: alone.
    Exclusive,
}

/// Locks `file`, waiting for the holders of a conflicting lock; a wait interrupted by a
/// signal is resumed.
pub fn lock(file: &File, mode: Mode) -> io::Result<()> {
    loop {
        let r = match mode {
            Mode::Exclusive => file.lock(),
            Mode::Shared => file.lock_shared(),
        };
        match r {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            r => return r,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_and_exclusive() -> io::Result<()> {
        let f = tempfile::NamedTempFile::new()?;
        let (a, b) = (f.reopen()?, f.reopen()?);
        lock(&a, Mode::Shared)?;
        lock(&b, Mode::Shared)?;
        assert!(f.reopen()?.try_lock().is_err(), "exclusive beside shared");
        drop((a, b));
        let c = f.reopen()?;
        lock(&c, Mode::Exclusive)?;
        assert!(
            f.reopen()?.try_lock_shared().is_err(),
            "shared beside exclusive"
        );
        Ok(())
    }
}
