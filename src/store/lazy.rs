//! Lazy (partial) layers in the store: an eStargz layer pulled as footer + TOC only, kept in
//! `lazy/<diffid-hex>/` with its record, the verified TOC bytes, the chunk cache and the
//! mountpoint of its lazy filesystem, until the whole blob is fetched and it becomes an
//! ordinary layer.
//!
//! ```text
//! ROOT/lazy/<hex>/lazy.json     LazyRecord
//! ROOT/lazy/<hex>/tail          blob[toc_offset..]: TOC member and footer, as fetched
//! ROOT/lazy/<hex>/chunks/<off>  verified chunk data, by blob offset (hex); written atomically
//! ROOT/lazy/<hex>/mnt/          where its lazy filesystem is mounted
//! ```

use super::atomic::write_atomic;
use super::{Result, Store, StoreError};
use crate::estargz::blob::{OpenedToc, open_toc};
use crate::estargz::index::Whiteouts;
use crate::oci::{Digest, MediaType};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// What the store knows of a lazy layer.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct LazyRecord {
    /// Uncompressed digest (from the image config).
    pub diff_id: Digest,
    /// Blob digest.
    pub digest: Digest,
    /// Blob size.
    pub size: u64,
    /// Blob media type.
    pub media_type: MediaType,
    /// sha256 of the TOC JSON (the layer's toc.digest annotation).
    pub toc_digest: Digest,
    /// Uncompressed size, from the layer's annotation (0 when unknown).
    pub diff_size: u64,
    /// Where to fetch it: `registry/repository` (a reference without tag).
    pub source: String,
    /// Verify TLS when fetching.
    pub tls_verify: bool,
    /// When it was pulled.
    pub created: String,
}

/// A lazy layer as a lazy pull hands it to the store (keyed by blob digest).
#[derive(Debug, Clone)]
pub struct LazySource {
    /// The toc.digest annotation.
    pub toc_digest: Digest,
    /// The uncompressed-size annotation (0 when absent).
    pub diff_size: u64,
    /// `registry/repository` to fetch from.
    pub source: String,
    /// Verify TLS when fetching.
    pub tls_verify: bool,
    /// `blob[toc_offset..]`, verified by the pull.
    pub tail: Vec<u8>,
}

impl Store {
    /// The directory of a lazy layer.
    pub fn lazy_dir(&self, diff_id: &Digest) -> PathBuf {
        self.path("lazy").join(diff_id.hex())
    }

    /// Where a lazy layer's filesystem is mounted.
    pub fn lazy_mountpoint(&self, diff_id: &Digest) -> PathBuf {
        self.lazy_dir(diff_id).join("mnt")
    }

    /// True if the layer is held lazily (and not unpacked).
    pub fn is_lazy(&self, diff_id: &Digest) -> bool {
        !self.has_layer(diff_id) && self.lazy_dir(diff_id).join("lazy.json").is_file()
    }

    /// The record of a lazy layer.
    pub fn lazy_record(&self, diff_id: &Digest) -> Result<LazyRecord> {
        let p = self.lazy_dir(diff_id).join("lazy.json");
        let b = std::fs::read(&p).map_err(StoreError::io(format!("read {}", p.display())))?;
        serde_json::from_slice(&b).map_err(|e| StoreError::Corrupt(format!("{}: {e}", p.display())))
    }

    /// The verified TOC of a lazy layer (read again from `tail` and checked against the
    /// record's TOC digest), with whiteouts in this store's overlay format.
    pub fn lazy_toc(&self, rec: &LazyRecord) -> Result<OpenedToc> {
        let p = self.lazy_dir(&rec.diff_id).join("tail");
        let tail = std::fs::read(&p).map_err(StoreError::io(format!("read {}", p.display())))?;
        let start = rec
            .size
            .checked_sub(tail.len() as u64)
            .ok_or_else(|| StoreError::Corrupt(format!("{}: longer than the blob", p.display())))?;
        let mut read = |off: u64, len: u64| -> crate::estargz::Result<Vec<u8>> {
            let lo = off.checked_sub(start).map(|o| o as usize);
            match lo {
                Some(lo) if lo + len as usize <= tail.len() => {
                    Ok(tail[lo..lo + len as usize].to_vec())
                }
                _ => Err(crate::estargz::EstargzError::Toc {
                    layer: rec.digest.to_string(),
                    reason: "the stored TOC does not cover the TOC".to_string(),
                }),
            }
        };
        open_toc(
            rec.digest.as_str(),
            rec.size,
            Some(&rec.toc_digest),
            Whiteouts::Overlay(self.opaque_xattr()),
            &mut read,
        )
        .map_err(|e| StoreError::Corrupt(e.to_string()))
    }

    /// Records a lazy layer (atomically: staged, then renamed into place). A layer already
    /// unpacked or already lazy is left as it is.
    pub fn add_lazy_layer(&self, rec: &LazyRecord, tail: &[u8]) -> Result<()> {
        if self.has_layer(&rec.diff_id) || self.is_lazy(&rec.diff_id) {
            return Ok(());
        }
        let staging = self.path("tmp").join(super::atomic::unique_name("lazy-"));
        for d in ["chunks", "mnt"] {
            std::fs::create_dir_all(staging.join(d))
                .map_err(StoreError::io("create lazy layer"))?;
        }
        write_atomic(&staging.join("tail"), tail)?;
        let b = serde_json::to_vec_pretty(rec).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        write_atomic(&staging.join("lazy.json"), &b)?;
        std::fs::create_dir_all(self.path("lazy")).map_err(StoreError::io("create lazy"))?;
        let dest = self.lazy_dir(&rec.diff_id);
        std::fs::rename(&staging, &dest)
            .map_err(StoreError::io(format!("install {}", dest.display())))?;
        super::atomic::fsync_dir(&self.path("lazy"))
    }

    /// Bytes of chunk data cached for a lazy layer, and the number of chunks.
    pub fn lazy_cached(&self, diff_id: &Digest) -> (u64, u64) {
        let mut bytes = 0;
        let mut n = 0;
        if let Ok(rd) = std::fs::read_dir(self.lazy_dir(diff_id).join("chunks")) {
            for e in rd.flatten() {
                if e.file_name().to_string_lossy().starts_with('.') {
                    continue;
                }
                if let Ok(m) = e.metadata() {
                    bytes += m.len();
                    n += 1;
                }
            }
        }
        (bytes, n)
    }
}

impl Store {
    /// Turns a lazy layer into an ordinary one from its complete blob at `blob` (already
    /// checked against the layer digest): the blob is unpacked and its diff ID verified, then
    /// blob and layer are installed as a full pull would have. The lazy directory stays while
    /// its filesystem may be mounted; `image_lowerdirs` prefers the ordinary layer from now on.
    pub fn complete_lazy_layer(&self, rec: &LazyRecord, blob: &std::path::Path) -> Result<()> {
        use crate::image::apply::{ApplyOptions, apply_layer};
        use crate::oci::digest::HashReader;
        let _lock = self.lock()?;
        if self.has_layer(&rec.diff_id) {
            return Ok(());
        }
        let staging = super::atomic::Staging::new(&self.path("tmp"))?;
        let layer = staging.dir.join("layer");
        let diff = layer.join("diff");
        std::fs::create_dir_all(&diff).map_err(StoreError::io("create staging layer"))?;
        let f = std::fs::File::open(blob)
            .map_err(StoreError::io(format!("open {}", blob.display())))?;
        let gz = flate2::read::MultiGzDecoder::new(f);
        let mut inner = HashReader::new(gz);
        let opts = ApplyOptions {
            rootless: self.rootless(),
            ..ApplyOptions::default()
        };
        apply_layer(&mut inner, &diff, &opts)?;
        inner
            .drain()
            .map_err(StoreError::io("read the completed blob"))?;
        let (actual, diff_size) = inner.hasher.finish();
        if actual != rec.diff_id {
            return Err(crate::image::ImageError::DigestMismatch {
                what: format!("completed lazy layer {}", rec.digest),
                expected: rec.diff_id.clone(),
                actual,
            }
            .into());
        }
        let lr = super::records::LayerRecord {
            diff_id: rec.diff_id.clone(),
            diff_size,
            rootless: self.rootless(),
            created: crate::image::time::now_rfc3339(),
        };
        let b = serde_json::to_vec_pretty(&lr).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        std::fs::write(layer.join("layer.json"), b).map_err(StoreError::io("write layer.json"))?;
        let staged_blob = staging.dir.join("blob");
        std::fs::copy(blob, &staged_blob).map_err(StoreError::io("stage the completed blob"))?;
        super::atomic::install(&staged_blob, &self.blob_path(&rec.digest))?;
        super::atomic::fsync_tree(&layer)?;
        super::atomic::install(&layer, &self.path("layers").join(rec.diff_id.hex()))?;
        Ok(())
    }
}
