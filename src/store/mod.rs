//! The layer database: a root directory with content-addressed blobs, unpacked layers, image
//! records, tags and containers. Every update is atomic (temp + fsync + rename) under a lock.
//!
//! ```text
//! ROOT/lock                 flock: exclusive for writers, shared for readers
//! ROOT/blobs/sha256/<hex>   blobs exactly as received (layers, configs, manifests)
//! ROOT/layers/<hex>/        unpacked layer (overlay format) in diff/, metadata in layer.json
//! ROOT/images/<hex>.json    image records (hex of the config digest = image ID)
//! ROOT/tags.json            name:tag -> image ID
//! ROOT/containers/<id>/     upper/, work/, merged/, container.json, control.sock
//! ROOT/tmp/                 staging of unfinished transactions (removed by prune)
//! ROOT/lazy/<hex>/          lazy eStargz layers: TOC, chunk cache, mountpoint (see lazy)
//! ```

pub mod atomic;
pub mod blobs;
pub mod commit;
pub mod containers;
pub mod control;
pub mod explain;
pub mod export;
pub mod fsck;
pub mod gc;
pub mod lazy;
pub mod load;
pub mod lock;
pub mod records;

use crate::image::ImageError;
use std::path::{Path, PathBuf};

pub use load::LoadedImage;
pub use lock::StoreLock;
pub use records::{
    BindSpec, ContainerRecord, IdMap, IdRange, ImageRecord, LayerRecord, LayerRef, PortSpec,
    RunConfig, RunState, RunStatus,
};

/// Errors of the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// An I/O error with what was being done.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    /// An image format or verification error.
    #[error(transparent)]
    Image(#[from] ImageError),
    /// A layer failed verification while loading.
    #[error("{layer}: {error}")]
    Layer { layer: String, error: ImageError },
    /// No image or container by that name.
    #[error("{0}")]
    NotFound(String),
    /// The request conflicts with the store's state.
    #[error("{0}")]
    Conflict(String),
    /// A record in the store is damaged.
    #[error("{0}")]
    Corrupt(String),
}

impl StoreError {
    /// Wrap an I/O error with context.
    pub fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> StoreError {
        let context = context.into();
        move |source| StoreError::Io { context, source }
    }
}

/// The result type of the store.
pub type Result<T> = std::result::Result<T, StoreError>;

/// A layer database rooted at a directory.
#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
    rootless: bool,
}

impl Store {
    /// `$XDG_DATA_HOME/strata` (or `~/.local/share/strata`) for users, `/var/lib/strata` for root.
    pub fn default_root() -> PathBuf {
        if crate::image::fsutil::is_root() {
            return PathBuf::from("/var/lib/strata");
        }
        if let Some(x) = std::env::var_os("XDG_DATA_HOME").filter(|x| !x.is_empty()) {
            return PathBuf::from(x).join("strata");
        }
        let home = std::env::var_os("HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/tmp"));
        home.join(".local/share/strata")
    }

    /// Open (creating if needed) the store at `root`. Rootless behaviour follows the effective
    /// uid, or `STRATA_ROOTLESS=1` forces it (for tests run as root).
    pub fn open(root: &Path) -> Result<Store> {
        for d in ["blobs/sha256", "layers", "images", "containers", "tmp"] {
            let p = root.join(d);
            std::fs::create_dir_all(&p)
                .map_err(StoreError::io(format!("create {}", p.display())))?;
        }
        let forced = std::env::var("STRATA_ROOTLESS").is_ok_and(|v| v == "1");
        let root = root
            .canonicalize()
            .map_err(StoreError::io(format!("resolve {}", root.display())))?;
        Ok(Store {
            root,
            rootless: forced || !crate::image::fsutil::is_root(),
        })
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// True when layers are unpacked the unprivileged way.
    pub fn rootless(&self) -> bool {
        self.rootless
    }

    /// Take the store lock exclusively (writers).
    pub fn lock(&self) -> Result<StoreLock> {
        StoreLock::acquire(&self.root.join("lock"), true)
    }

    /// Take the store lock shared (readers).
    pub fn lock_shared(&self) -> Result<StoreLock> {
        StoreLock::acquire(&self.root.join("lock"), false)
    }

    pub(crate) fn path(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }

    /// The opaque xattr this store writes.
    pub fn opaque_xattr(&self) -> &'static str {
        if self.rootless {
            crate::image::fsutil::OPAQUE_USER
        } else {
            crate::image::fsutil::OPAQUE_TRUSTED
        }
    }
}
