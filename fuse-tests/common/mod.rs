//! Harness shared by the integration tests that mount for real, one file per job: `env`
//! (environment and tools), `layers` (layer builder), `mounts` (mount guards), `snapshot`
//! (tree snapshots and diffs), `steps` (operations), `runner` (the differential runner).
//!
//! - [`strata_fuse_bin`]: the mount program under test (`STRATA_FUSE_BIN` overrides it, so the
//!   harness itself can be validated against fuse-overlayfs).
//! - [`Layer`]: a declarative lower (or initial upper) layer.
//! - [`KernelOverlay`] and [`FuseMount`]: mount guards that unmount on drop.
//! - [`snapshot`], [`upper_snapshot`], [`diff`]: tree snapshots and readable diffs.
//! - [`Scenario`] / [`differential`]: run one op sequence on kernel overlayfs and on strata
//!   over identical layer copies and compare everything, then cross-mount the upper dirs.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::ffi::{CString, OsStr};
use std::fmt::Write as _;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

#[path = "../../tests/common/skip.rs"]
mod skip;
#[allow(unused_imports)]
pub use skip::skip;

mod env;
mod layers;
mod mounts;
mod runner;
mod snapshot;
mod steps;

#[allow(unused_imports)]
pub use env::*;
#[allow(unused_imports)]
pub use layers::*;
#[allow(unused_imports)]
pub use mounts::*;
#[allow(unused_imports)]
pub use runner::*;
#[allow(unused_imports)]
pub use snapshot::*;
#[allow(unused_imports)]
pub use steps::*;
