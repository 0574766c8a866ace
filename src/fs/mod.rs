//! The union filesystem: lower layers (read-only, topmost first) under one upper layer,
//! served over FUSE with kernel overlayfs semantics and on-disk format.

mod attr;
pub mod config;
mod control;
mod copyup;
mod daemon;
#[cfg(test)]
mod engine_tests;
mod files;
mod gate;
mod handles;
mod index;
mod kmount;
mod layer;
mod lookup;
mod meta;
pub mod mountinfo;
mod namespace;
mod node;
mod ops;
pub mod options;
pub mod passthrough;
mod rdplus;
mod readdir;
mod rename;
pub(crate) mod sys;
mod union;
pub mod whiteout;

pub use attr::{format_override, parse_override};
pub use config::{MountConfig, MountError};
pub use control::{PauseGuard, pause_client};
pub use daemon::{mount, mount_child};
pub use node::StatOverride;
