//! Client side of the OCI distribution API: pull images from a registry into an OCI image
//! layout on disk, push images from an OCI image layout to a registry, and keep registry
//! credentials.
//!
//! The registry half never touches the store: a pull writes an OCI image layout (which the
//! store imports, asking through `have_blob` which layers it already holds), and a push reads
//! one (which the store exports). Data flows one way: CLI -> store/image -> registry.
//!
//! What the CLI calls:
//! - `strata pull REF`: [`Reference::parse`], then [`pull()`] into a temporary layout with
//!   `have_blob` asking the store, then the store imports the layout ([`PullResult`] lists
//!   the manifest, config and layer digests and which layers were skipped).
//! - `strata push IMAGE REF`: the store exports the image to a layout, then [`push()`].
//! - `strata login HOST` / `strata logout HOST`: [`login`] / [`logout`]; credentials come
//!   from the credentials file or the credential helpers it names ([`credhelper`]).
//! - `--tls-verify=false`, `--creds`, `--authfile`: [`ClientOptions`];
//!   `--platform`: [`Platform::parse`] into [`PullOptions::platform`].
//! - Errors are [`Error`]: print them with `{}`, one line each.

pub mod auth;
pub mod client;
pub mod credhelper;
pub mod error;
pub mod layout;
pub mod lazy;
pub mod manifest;
pub mod pull;
pub mod push;
pub mod range;

pub use crate::oci::{Platform, Reference};
pub use auth::{login, logout};
pub use client::ClientOptions;
pub use error::{Error, Result};
pub use lazy::{LazyLayerInfo, pull_lazy};
pub use pull::{PullOptions, PullResult, pull};
pub use push::{PushOptions, push};
pub use range::{RangeReader, RetryPolicy};

/// The status a blob's transfer ends with (see [`crate::progress::Progress::finish`]).
pub const TRANSFER_COMPLETE: &str = "Transfer complete";
