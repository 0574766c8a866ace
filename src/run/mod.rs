//! Running containers, rootless and daemonless: `strata run`, `exec`, `start`, `stop`,
//! `kill`, `wait`, `logs`, `attach`.
//!
//! A run is supervised by a re-executed `strata` ([`supervisor`]) that forks the container in
//! new namespaces ([`namespaces`]) with an id map ([`idmap`]), mounts the union of the image
//! inside the container's user namespace through [`crate::fs::mount_child`], switches the root
//! ([`rootfs`]), starts a small pid-1 init ([`init`]) that runs the process the image config
//! and the options describe ([`spec`]), and relays its output to a log ([`logs`]) and to
//! attached clients ([`attach`], [`pty`]). Published ports go through pasta ([`network`]).
//! State lives in the container's record in the store ([`state`]); `exec` joins a running
//! container's namespaces ([`exec`]); commands on a container's files from the host run in a
//! user namespace with its id map ([`userns`]).

pub mod attach;
pub mod channel;
pub mod container;
pub mod exec;
pub mod idmap;
pub mod init;
pub mod logs;
pub mod namespaces;
pub mod network;
pub mod pty;
pub mod rootfs;
pub mod spec;
pub mod state;
pub mod supervisor;
pub mod userns;

use crate::fs::MountError;
use crate::store::StoreError;

/// Why a run could not be made (or went wrong in strata itself).
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// Bad input: an option, an image config or a user the image lacks.
    #[error("{0}")]
    Invalid(String),
    /// Something this machine lacks (user namespaces, /dev/fuse, pasta).
    #[error("{0}")]
    Unavailable(String),
    /// A system call failed; the context says what was being done.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    /// The container's process could not be executed (126) or found (127).
    #[error("{msg}")]
    Exec { code: i32, msg: String },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The union mount failed.
    #[error(transparent)]
    Mount(#[from] MountError),
}

impl RunError {
    /// Wrap an I/O error with context.
    pub fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> RunError {
        let context = context.into();
        move |source| RunError::Io { context, source }
    }

    /// Wrap a nix error with context.
    pub fn sys(context: impl Into<String>) -> impl FnOnce(nix::Error) -> RunError {
        let context = context.into();
        move |e| RunError::Io {
            context,
            source: std::io::Error::from(e),
        }
    }

    /// The exit status Docker gives this failure: 126/127 for the command, 125 for strata.
    pub fn exit_code(&self) -> i32 {
        match self {
            RunError::Exec { code, .. } => *code,
            _ => 125,
        }
    }
}

/// The result type of this module.
pub type Result<T> = std::result::Result<T, RunError>;
