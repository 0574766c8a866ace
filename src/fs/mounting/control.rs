//! The control socket of a mounted union: a client sends `pause` and the daemon holds every
//! change until `resume` (or until the client goes away), so a commit snapshots a quiet upper.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::Arc;

use crate::fs::union::Union;

/// Serve the control socket at `path` on a background thread.
pub fn serve(path: &Path, u: Arc<Union>) -> std::io::Result<()> {
    let _ = std::fs::remove_file(path);
    let listener: UnixListener = crate::sys::socket::bind_unix(path)?;
    std::thread::Builder::new()
        .name("strata-control".into())
        .spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                let u = u.clone();
                let _ = std::thread::Builder::new()
                    .name("strata-control-conn".into())
                    .spawn(move || handle(conn, &u));
            }
        })?;
    Ok(())
}

fn handle(conn: UnixStream, u: &Union) {
    let Ok(mut out) = conn.try_clone() else {
        return;
    };
    let mut paused_here = false;
    for line in BufReader::new(conn).lines() {
        let Ok(line) = line else { break };
        let reply = match line.trim() {
            "pause" if !paused_here => {
                u.gate.pause();
                paused_here = true;
                "ok"
            }
            "resume" if paused_here => {
                u.gate.resume();
                paused_here = false;
                "ok"
            }
            "status" => {
                if u.gate.is_paused() {
                    "paused"
                } else {
                    "running"
                }
            }
            "pause" | "resume" => "ok",
            _ => "error unknown command",
        };
        if writeln!(out, "{reply}").is_err() {
            break;
        }
    }
    // A client that goes away never leaves the union paused.
    if paused_here {
        u.gate.resume();
    }
}

/// A held pause of a mounted union; dropping it resumes.
#[derive(Debug)]
pub struct PauseGuard {
    stream: UnixStream,
}

/// Pause the union whose control socket is `path`; returns once no change is under way.
pub fn pause_client(path: &Path) -> std::io::Result<PauseGuard> {
    let mut stream = crate::sys::socket::connect_unix(path)?;
    // Pausing waits for changes under way; a daemon that never answers is an error.
    stream.set_read_timeout(Some(std::time::Duration::from_secs(30)))?;
    stream.write_all(b"pause\n")?;
    let mut line = String::new();
    BufReader::new(stream.try_clone()?).read_line(&mut line)?;
    if line.trim() != "ok" {
        return Err(std::io::Error::other(format!(
            "control socket answered {:?}",
            line.trim()
        )));
    }
    Ok(PauseGuard { stream })
}

impl Drop for PauseGuard {
    fn drop(&mut self) {
        let _ = self.stream.write_all(b"resume\n");
        let mut line = String::new();
        if let Ok(s) = self.stream.try_clone() {
            let _ = BufReader::new(s).read_line(&mut line);
        }
    }
}
