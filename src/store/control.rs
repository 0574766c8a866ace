//! Client of the mount daemon's control socket: `pause` / `resume` around a commit.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

/// While held, writes to the container wait; dropping it sends `resume`.
pub struct PauseGuard {
    stream: UnixStream,
}

/// Why pausing did not happen.
#[derive(Debug)]
pub enum PauseOutcome {
    /// Paused: keep the guard until the snapshot is taken.
    Paused(PauseGuard),
    /// No daemon listens (not mounted, or a driver without control socket): a warning text.
    NotPaused(String),
}

fn request(stream: &mut UnixStream, line: &str) -> std::io::Result<String> {
    stream.write_all(line.as_bytes())?;
    stream.flush()?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut reply = String::new();
    reader.read_line(&mut reply)?;
    Ok(reply.trim().to_string())
}

/// Ask the daemon at `socket` to pause writes.
pub fn pause(socket: &Path) -> PauseOutcome {
    let mut stream = match UnixStream::connect(socket) {
        Ok(s) => s,
        Err(e) => {
            return PauseOutcome::NotPaused(format!(
                "cannot reach {} ({e}); committing without pausing",
                socket.display()
            ));
        }
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
    match request(&mut stream, "pause\n") {
        Ok(r) if r == "ok" => PauseOutcome::Paused(PauseGuard { stream }),
        Ok(r) => PauseOutcome::NotPaused(format!(
            "the mount refused to pause ({r:?}); committing without pausing"
        )),
        Err(e) => {
            PauseOutcome::NotPaused(format!("pause failed ({e}); committing without pausing"))
        }
    }
}

impl Drop for PauseGuard {
    fn drop(&mut self) {
        let _ = request(&mut self.stream, "resume\n");
    }
}

impl std::fmt::Debug for PauseGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PauseGuard")
    }
}
