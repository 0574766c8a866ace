//! The union filesystem: lower layers (read-only, topmost first) under one upper layer,
//! served over FUSE with kernel overlayfs semantics and on-disk format.

pub mod config;

pub use config::{MountConfig, MountError};

/// Mount the union described by `cfg`.
///
/// Unless `cfg.foreground` is set, this forks a daemon *before* any thread starts, and returns
/// `Ok(())` in the caller only once the mount is live (or the daemon's error). With
/// `foreground` it serves requests until the filesystem is unmounted.
pub fn mount(cfg: &MountConfig) -> Result<(), MountError> {
    let _ = cfg;
    Err(MountError::Invalid("not implemented yet".into()))
}
