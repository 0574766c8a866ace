//! eStargz layers (containerd/stargz-snapshotter `docs/estargz.md`): the 51-byte footer, the
//! table of contents (`stargz.index.json`) verified against its digest annotation and
//! validated entry by entry, chunk decoding with digest checks, and a writer that turns a
//! layer tar into an eStargz blob that still gunzips to one ordinary tar.

pub mod blob;
pub mod convert;
pub mod footer;
pub mod index;
pub mod toc;
pub mod writer;

pub use footer::{FOOTER_SIZE, footer_bytes, parse_footer};
pub use index::{Chunk, Index, Node, NodeKind};
pub use toc::{Toc, TocEntry};
pub use writer::{WriteOptions, Written, write_estargz};

/// Annotation of a layer descriptor: the sha256 of the TOC JSON.
pub const TOC_DIGEST_ANNOTATION: &str = "containerd.io/snapshot/stargz/toc.digest";
/// Annotation of a layer descriptor: the size of the uncompressed tar.
pub const UNCOMPRESSED_SIZE_ANNOTATION: &str = "io.containers.estargz.uncompressed-size";
/// The tar entry holding the TOC.
pub const TOC_TAR_NAME: &str = "stargz.index.json";
/// Marks the end of the files to prefetch.
pub const PREFETCH_LANDMARK: &str = ".prefetch.landmark";
/// Says that no file is to be prefetched.
pub const NO_PREFETCH_LANDMARK: &str = ".no.prefetch.landmark";
/// The one byte a landmark file holds.
pub const LANDMARK_CONTENTS: u8 = 0xf;
/// Default chunk size of the writer (upstream's).
pub const DEFAULT_CHUNK_SIZE: u64 = 4 << 20;

/// Why an eStargz blob, TOC or chunk was refused. Every variant names the layer.
#[derive(Debug, thiserror::Error)]
pub enum EstargzError {
    /// The footer is not an eStargz footer.
    #[error("layer {layer}: not an eStargz blob: {reason}")]
    Footer { layer: String, reason: String },
    /// The TOC does not hash to the annotation's digest.
    #[error(
        "layer {layer}: TOC digest mismatch: the annotation says {expected}, the TOC hashes to {actual}"
    )]
    TocDigest {
        layer: String,
        expected: String,
        actual: String,
    },
    /// The TOC cannot be decoded or is inconsistent as a whole.
    #[error("layer {layer}: bad TOC: {reason}")]
    Toc { layer: String, reason: String },
    /// One TOC entry was refused.
    #[error("layer {layer}: refused TOC entry {name:?}: {reason}")]
    Entry {
        layer: String,
        name: String,
        reason: String,
    },
    /// A chunk could not be decoded.
    #[error("layer {layer}: chunk of {name:?} at blob offset {offset}: {reason}")]
    Chunk {
        layer: String,
        name: String,
        offset: u64,
        reason: String,
    },
    /// A chunk's data does not hash to its chunkDigest.
    #[error(
        "layer {layer}: chunk of {name:?} at blob offset {offset}: digest mismatch: the TOC says {expected}, the data hashes to {actual}"
    )]
    ChunkDigest {
        layer: String,
        name: String,
        offset: u64,
        expected: String,
        actual: String,
    },
    /// Bytes of the blob could not be fetched.
    #[error("layer {layer}: fetch: {reason}")]
    Fetch { layer: String, reason: String },
    /// The input tar of the writer cannot be used.
    #[error("{context}: {reason}")]
    Input { context: String, reason: String },
    /// An I/O error, with what was being done.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

impl EstargzError {
    /// Wrap an I/O error with context.
    pub fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> EstargzError {
        let context = context.into();
        move |source| EstargzError::Io { context, source }
    }
}

/// The result type of this module.
pub type Result<T> = std::result::Result<T, EstargzError>;
