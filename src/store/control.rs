//! Pausing a mounted container around a commit, through the driver's control-socket client
//! (`strata::fs::pause_client`), with the outcome as a warning when it cannot pause.

use std::path::Path;

pub use crate::fs::PauseGuard;

/// Why pausing did not happen.
#[derive(Debug)]
pub enum PauseOutcome {
    /// Paused: keep the guard until the snapshot is taken.
    Paused(PauseGuard),
    /// No daemon listens (not mounted, or a driver without control socket): a warning text.
    NotPaused(String),
}

/// Ask the daemon at `socket` to pause writes.
pub fn pause(socket: &Path) -> PauseOutcome {
    match crate::fs::pause_client(socket) {
        Ok(guard) => PauseOutcome::Paused(guard),
        Err(e) => PauseOutcome::NotPaused(format!(
            "cannot pause the mount at {} ({e}); committing without pausing",
            socket.display()
        )),
    }
}
