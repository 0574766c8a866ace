//! The registry errors: each renders as one line saying what went wrong and with what.

use crate::oci::{Digest, DigestError};
use std::path::PathBuf;

/// Result of registry operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A registry operation failure.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The image reference does not parse.
    #[error(transparent)]
    InvalidReference(#[from] crate::oci::ReferenceError),
    /// No TCP connection could be made (refused, unresolvable, timed out).
    #[error("registry {host} is unreachable: {detail}")]
    Unreachable { host: String, detail: String },
    /// The connection broke in the middle of a transfer.
    #[error("transfer of {what} from registry {host} was interrupted: {detail}")]
    Interrupted {
        host: String,
        what: String,
        detail: String,
    },
    /// Credentials were sent and the registry still answered 401.
    /// `from` says where the credentials came from (` (credentials from ...)`), or is empty.
    #[error("authentication to registry {host} failed: wrong username or password{from}")]
    WrongCredentials { host: String, from: String },
    /// No credentials are known and the registry wants some.
    #[error(
        "registry {host} requires authentication for {action} of {repository}: log in with `strata login {host}`"
    )]
    AuthRequired {
        host: String,
        repository: String,
        action: String,
    },
    /// The registry refused the operation to these credentials (403 or DENIED).
    #[error("registry {host} denied {action} of {repository}: {detail}")]
    Denied {
        host: String,
        repository: String,
        action: String,
        detail: String,
    },
    /// The tag or manifest does not exist (404 / MANIFEST_UNKNOWN / NAME_UNKNOWN).
    #[error("manifest unknown: {reference} not found in registry {host}")]
    ManifestUnknown { host: String, reference: String },
    /// A blob does not exist in the registry.
    #[error("blob {digest} not found in {repository} on registry {host}")]
    BlobUnknown {
        host: String,
        repository: String,
        digest: Digest,
    },
    /// Content received does not hash to its digest.
    #[error("digest mismatch for blob {digest}: received content hashes to {actual}")]
    DigestMismatch { digest: Digest, actual: Digest },
    /// Content received does not have its declared size.
    #[error("size mismatch for blob {digest}: expected {expected} bytes, received {actual}")]
    SizeMismatch {
        digest: Digest,
        expected: u64,
        actual: u64,
    },
    /// Any other unexpected HTTP answer.
    #[error("registry {host} answered HTTP {status} to {what}: {detail}")]
    Status {
        host: String,
        status: u16,
        what: String,
        detail: String,
    },
    /// A digest (in a manifest, reference or layout) that is not `sha256:<hex>`.
    #[error(transparent)]
    Digest(#[from] DigestError),
    /// A manifest or index that cannot be used.
    #[error("bad manifest {what}: {reason}")]
    BadManifest { what: String, reason: String },
    /// An index holds no image for the wanted platform.
    #[error("no image for platform {platform} in {reference} (available: {available})")]
    NoPlatform {
        platform: String,
        reference: String,
        available: String,
    },
    /// The OCI image layout cannot be used.
    #[error("OCI layout {path}: {reason}")]
    Layout { path: PathBuf, reason: String },
    /// The credentials file cannot be read or written.
    #[error("credentials file {path}: {reason}")]
    AuthFile { path: PathBuf, reason: String },
    /// A credential helper (`docker-credential-NAME`) could not be run or failed.
    #[error("credential helper {helper}: {action}: {detail}")]
    CredentialHelper {
        helper: String,
        action: String,
        detail: String,
    },
    /// Local file I/O failed.
    #[error("{context} {path}: {source}")]
    Io {
        context: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A token server answered something unusable.
    #[error("token server {realm}: {reason}")]
    Token { realm: String, reason: String },
    /// An eStargz layer's footer, TOC or chunk was refused.
    #[error(transparent)]
    Estargz(#[from] crate::estargz::EstargzError),
    /// Any other protocol or HTTP library failure.
    #[error("registry {host}: {detail}")]
    Protocol { host: String, detail: String },
}

impl Error {
    /// Wraps an I/O error on a local path.
    pub(crate) fn io(
        context: &'static str,
        path: impl Into<PathBuf>,
        source: std::io::Error,
    ) -> Self {
        Error::Io {
            context,
            path: path.into(),
            source,
        }
    }
}
