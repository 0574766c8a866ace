//! The OCI vocabulary the image half shares (image/, store/, registry/, cli/): digests, image
//! references, media types and platforms, and oci-spec's document types with the few helpers
//! they need.

pub mod digest;
pub mod media;
pub mod platform;
pub mod reference;

pub use digest::{Digest, DigestError};
pub use media::MediaType;
pub use oci_spec::image::{Descriptor, ImageConfiguration, ImageIndex, ImageManifest};
pub use platform::Platform;
pub use reference::{Reference, ReferenceError};

/// A descriptor of `size` bytes of `media_type` content with `digest`.
pub fn descriptor(
    media_type: MediaType,
    digest: &Digest,
    size: u64,
) -> Result<Descriptor, DigestError> {
    Ok(Descriptor::new(media_type, size, digest.to_oci()?))
}

/// The (sha256) digest a descriptor names.
pub fn digest_of(d: &Descriptor) -> Result<Digest, DigestError> {
    Digest::from_oci(d.digest())
}

/// The annotation `key` of a descriptor.
pub fn annotation<'a>(d: &'a Descriptor, key: &str) -> Option<&'a str> {
    d.annotations().as_ref()?.get(key).map(String::as_str)
}

/// A document as JSON with every object's keys sorted: oci-spec keeps annotations (and config
/// labels and ports) in hash maps, and a document written twice must come out the same.
pub fn canonical_json<T: serde::Serialize>(doc: &T) -> serde_json::Result<Vec<u8>> {
    serde_json::to_vec(&serde_json::to_value(doc)?)
}
