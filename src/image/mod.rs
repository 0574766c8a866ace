//! Image formats: layer tars (apply and diff), docker-archive, OCI image layout, and the
//! image config and inspect JSON. Nothing here knows about the store's directory layout.

pub mod apply;
pub mod archive;
pub mod compress;
pub mod config;
pub mod diff;
pub mod docker_archive;
pub mod exchange;
pub mod fsutil;
pub mod inspect;
pub mod names;
pub mod oci_layout;
pub mod time;
pub mod union;

/// Errors of the image formats.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// An I/O error, with what was being done.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    /// The input is not in the expected format.
    #[error("{0}")]
    Format(String),
    /// An image name in the input is not a reference.
    #[error(transparent)]
    Reference(#[from] crate::oci::ReferenceError),
    /// A layer tar entry was refused (hostile or unsupported input).
    #[error("refused tar entry {path:?}: {reason}")]
    Refused { path: String, reason: String },
    /// A digest or diff ID did not match the content.
    #[error("{what}: digest mismatch: expected {expected}, content has {actual}")]
    DigestMismatch {
        what: String,
        expected: crate::oci::Digest,
        actual: crate::oci::Digest,
    },
}

impl ImageError {
    /// Wrap an I/O error with context.
    pub fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> ImageError {
        let context = context.into();
        move |source| ImageError::Io { context, source }
    }
}

/// The result type of this module.
pub type Result<T> = std::result::Result<T, ImageError>;
