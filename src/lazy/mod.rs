//! Lazy layers: a small read-only FUSE filesystem per eStargz layer, serving the layer's tree
//! from its verified TOC and fetching file data on demand (Range requests, chunks verified
//! against their chunkDigest, kept in the store's chunk cache), mounted under the store so
//! that it is an ordinary lowerdir of the union (`strata-fuse` is not changed).
//!
//! - [`fetch`]: chunk fetching (merged ranges, de-duplicated concurrent fetches, the cache).
//! - [`fs`]: the `fuser` filesystem over the TOC (attributes, xattrs, links, whiteouts).
//! - [`serve`]: the daemon of one layer: mount, prefetch, background completion.

pub mod fetch;
pub mod fs;
pub mod serve;

/// Errors of lazy layers.
#[derive(Debug, thiserror::Error)]
pub enum LazyError {
    /// The registry could not give the bytes.
    #[error(transparent)]
    Registry(#[from] crate::registry::Error),
    /// A chunk or the TOC was refused.
    #[error(transparent)]
    Estargz(#[from] crate::estargz::EstargzError),
    /// The store's records of the layer.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    /// An I/O error, with what was being done.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

impl LazyError {
    /// Wrap an I/O error with context.
    pub fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> LazyError {
        let context = context.into();
        move |source| LazyError::Io { context, source }
    }
}

/// The result type of lazy layers.
pub type Result<T> = std::result::Result<T, LazyError>;
