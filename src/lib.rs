//! strata: a union filesystem in userspace and a layer database of container images.
//!
//! The crate has two halves. [`fs`] serves a stack of read-only layers under one writable
//! layer over FUSE, with the on-disk format and semantics of kernel overlayfs. The image half
//! (store, image formats, registry, CLI) keeps content-addressed layers and mounts images
//! through [`fs`]; its shared vocabulary (digests, references, OCI documents) is [`oci`], long
//! work reports through [`progress`], and file locks are [`lockfile`]'s. Data flows one way:
//! CLI -> store/image -> fs/registry, with oci, progress and lockfile below them all.

pub mod cli;
pub mod estargz;
pub mod fs;
pub mod image;
pub mod lazy;
pub mod lockfile;
pub mod oci;
pub mod progress;
pub mod registry;
pub mod run;
pub mod store;
pub mod sys;
