//! The union filesystem: lower layers (read-only, topmost first) under one upper layer,
//! served over FUSE with kernel overlayfs semantics and on-disk format.
//!
//! Grouped by job, each group depending only on those listed before it: [`crate::sys`] (system
//! call wrappers) <- [`format`] (the overlay on-disk format) <- `tables` (nodes, handles,
//! layers: data only) <- `union` (the semantics: lookup, readdir, copy-up, rename,
//! attributes, I/O, hard links, passthrough) <- `fuse` (request dispatch) <- `mounting`
//! (options, validation, daemon, kernel mount, control socket).

pub mod format;
mod fuse;
mod mounting;
mod tables;
mod union;

#[cfg(test)]
mod engine_tests;

pub use format::override_stat::{self, StatOverride};
pub use format::whiteout;
pub use mounting::config::{self, MountConfig, MountError};
pub use mounting::control::{PauseGuard, pause_client};
pub use mounting::daemon::{mount, mount_child};
pub use mounting::{mountinfo, options};
pub use union::passthrough;
