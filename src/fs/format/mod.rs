//! Kernel overlayfs's on-disk format, shared by the driver and the image code: whiteout forms,
//! opaque markers, overlay xattr names, and the rootless owner/mode override.

pub mod index;
pub mod override_stat;
pub mod whiteout;
