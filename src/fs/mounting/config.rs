//! What a union mount is made of: layer directories, mountpoint and behaviour flags.

use std::path::PathBuf;
use std::time::Duration;

/// Everything needed to mount one union.
#[derive(Debug, Clone)]
pub struct MountConfig {
    /// Lower layer directories, topmost first.
    pub lowerdirs: Vec<PathBuf>,
    /// The writable layer; `None` makes a read-only mount.
    pub upperdir: Option<PathBuf>,
    /// Scratch directory on the upper's filesystem (required with `upperdir`).
    pub workdir: Option<PathBuf>,
    /// Where to mount.
    pub mountpoint: PathBuf,
    /// Serve in this process instead of daemonising.
    pub foreground: bool,
    /// Trace every operation with its result and latency.
    pub debug: bool,
    /// Entry and attribute cache timeout given to the kernel.
    pub timeout: Duration,
    /// Unix socket on which the daemon accepts `pause` / `resume` (used by commit).
    pub control_socket: Option<PathBuf>,
    /// Extra FUSE mount options passed through (e.g. `allow_other`).
    pub fuse_options: Vec<String>,
    /// Which opens use FUSE passthrough (`off`, `upper` = default, `all`).
    pub passthrough: crate::fs::union::passthrough::Mode,
    /// fsync copied-up data before it is renamed into place, as kernel overlayfs does: on by
    /// default, so that a power cut never leaves an empty or zero-filled copy hiding a lower
    /// file. `sync_copyup=0` (and `volatile`, and `fsync=0` unless `sync_copyup` is given)
    /// leave it to the writeback, as fuse-overlayfs does; a killed daemon still never leaves
    /// a half file.
    pub sync_copy_up: bool,
    /// Carry out fsync requests (`fsync=0` and `volatile` turn them into no-ops).
    pub honor_fsync: bool,
    /// Threads serving requests (default: twice the CPUs, at least 4).
    pub threads: Option<usize>,
    /// Metadata-only copy-up and following metadata-only files (kernel `metacopy=on`). Off
    /// by default, as in the kernel: an upper written without it holds whole files that any
    /// tool (tar, rsync, a kernel mount without `metacopy=on`) reads as they are.
    pub metacopy: bool,
    /// Whether the kernel sends OPEN and RELEASE (`open_handles=1`) or I/O names only the
    /// node (`open_handles=0`: two round trips fewer per file opened, and a file opened for
    /// writing is copied up at its first change rather than at the open). Default: handles,
    /// except on a read-only mount without FUSE passthrough.
    pub open_handles: Option<bool>,
}

impl MountConfig {
    /// A configuration with default behaviour for the given layers and mountpoint.
    pub fn new(
        lowerdirs: Vec<PathBuf>,
        upperdir: Option<PathBuf>,
        workdir: Option<PathBuf>,
        mountpoint: PathBuf,
    ) -> Self {
        MountConfig {
            lowerdirs,
            upperdir,
            workdir,
            mountpoint,
            foreground: false,
            debug: false,
            timeout: Duration::from_secs(86_400),
            control_socket: None,
            fuse_options: Vec::new(),
            passthrough: crate::fs::union::passthrough::Mode::Upper,
            sync_copy_up: true,
            honor_fsync: true,
            threads: None,
            metacopy: false,
            open_handles: None,
        }
    }
}

/// Why a mount could not be made.
#[derive(Debug, thiserror::Error)]
pub enum MountError {
    /// The arguments describe an impossible mount (message names the problem).
    #[error("{0}")]
    Invalid(String),
    /// A system call failed while setting up; the context says which.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}
