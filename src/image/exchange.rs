//! The neutral records the image formats and the store exchange: the images an importer offers
//! (files to read, digests to check) and the images an exporter writes.

use crate::oci::{Digest, MediaType};
use std::path::PathBuf;

/// A layer offered by an importer: a file to read, and what it should hash to.
#[derive(Debug, Clone)]
pub struct SourceLayer {
    /// The file holding the blob (plain, gzip or zstd tar).
    pub path: PathBuf,
    /// How to name it in messages (e.g. the archive member name).
    pub name: String,
    /// The blob digest, when the source states it (OCI descriptors).
    pub digest: Option<Digest>,
    /// The blob size, when the source states it.
    pub size: Option<u64>,
    /// The media type, when the source states it.
    pub media_type: Option<MediaType>,
}

/// An image offered by an importer.
#[derive(Debug, Clone)]
pub struct SourceImage {
    /// The config JSON bytes.
    pub config: Vec<u8>,
    /// The config digest the source states, if any.
    pub config_digest: Option<Digest>,
    /// The manifest bytes, if the source has one (verified against `manifest_digest`).
    pub manifest: Option<Vec<u8>>,
    /// The names to tag the image with (`name:tag`).
    pub tags: Vec<String>,
    /// The layers, bottom first.
    pub layers: Vec<SourceLayer>,
    /// Registry digests (`name@sha256:...`) to record, for pulled images.
    pub repo_digests: Vec<String>,
}

/// A layer handed to an exporter.
#[derive(Debug, Clone)]
pub struct ExportLayer {
    /// The uncompressed digest.
    pub diff_id: Digest,
    /// The uncompressed size.
    pub diff_size: u64,
    /// The stored blob.
    pub blob: PathBuf,
    /// The blob digest.
    pub digest: Digest,
    /// The blob size.
    pub size: u64,
    /// The blob media type.
    pub media_type: MediaType,
}

/// An image handed to an exporter.
#[derive(Debug, Clone)]
pub struct ExportImage {
    /// The names (`name:tag`) to record.
    pub tags: Vec<String>,
    /// The config bytes.
    pub config: Vec<u8>,
    /// The manifest bytes (OCI) and their digest.
    pub manifest: Vec<u8>,
    /// The layers, bottom first.
    pub layers: Vec<ExportLayer>,
}
