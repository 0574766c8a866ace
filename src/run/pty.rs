//! Pseudo-terminals: a pty pair opened from the container's own devpts (its /dev/ptmx), the
//! caller's terminal in raw mode while attached (restored on drop), window sizes.

use super::{Result, RunError};
use nix::fcntl::OFlag;
use nix::sys::termios::{self, SetArg, Termios};
use std::os::fd::{AsFd, OwnedFd};

/// A new pty from the devpts behind `/dev/ptmx`: (master, path of the slave).
pub fn open_pty() -> Result<(OwnedFd, String)> {
    let master = nix::pty::posix_openpt(OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC)
        .map_err(RunError::sys("open /dev/ptmx"))?;
    nix::pty::grantpt(&master).map_err(RunError::sys("grantpt"))?;
    nix::pty::unlockpt(&master).map_err(RunError::sys("unlockpt"))?;
    let name = nix::pty::ptsname_r(&master).map_err(RunError::sys("ptsname"))?;
    Ok((OwnedFd::from(master), name))
}

/// Open the slave side `path` of a pty.
pub fn open_slave(path: &str) -> Result<OwnedFd> {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags_noctty()
        .open(path)
        .map_err(RunError::io(format!("open {path}")))?;
    Ok(OwnedFd::from(f))
}

trait NoCtty {
    fn custom_flags_noctty(&mut self) -> &mut Self;
}

impl NoCtty for std::fs::OpenOptions {
    fn custom_flags_noctty(&mut self) -> &mut Self {
        use std::os::unix::fs::OpenOptionsExt;
        self.custom_flags(libc::O_NOCTTY)
    }
}

/// The caller's terminal in raw mode (no echo, no line editing, no signals from keys: ^C is
/// passed to the container as a byte); the previous mode comes back on drop.
pub struct RawMode {
    saved: Termios,
}

impl RawMode {
    /// Put stdin in raw mode if it is a terminal.
    pub fn stdin() -> Option<RawMode> {
        let stdin = std::io::stdin();
        let saved = termios::tcgetattr(stdin.as_fd()).ok()?;
        let mut raw = saved.clone();
        termios::cfmakeraw(&mut raw);
        termios::tcsetattr(stdin.as_fd(), SetArg::TCSANOW, &raw).ok()?;
        Some(RawMode { saved })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let _ = termios::tcsetattr(std::io::stdin().as_fd(), SetArg::TCSANOW, &self.saved);
    }
}

/// The caller's terminal size (from stdin, else stdout), if there is a terminal.
pub fn caller_size() -> Option<(u16, u16)> {
    crate::sys::term::window_size(std::io::stdin().as_fd())
        .or_else(|| crate::sys::term::window_size(std::io::stdout().as_fd()))
}
