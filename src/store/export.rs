//! Export images from the store (for `save`): gather configs, manifests and layer blobs.

use super::{Result, Store, StoreError};
use crate::image::digest::Digest;
use crate::image::spec::{self, ExportImage, ExportLayer};

impl Store {
    /// Collect what exporters need for the given references. A reference by tag exports that
    /// tag; a reference by ID exports the image with all its tags.
    pub fn export_images(&self, refs: &[String]) -> Result<Vec<ExportImage>> {
        let tags = self.tags()?;
        let mut out = Vec::new();
        for r in refs {
            let rec = self.resolve_image(r)?;
            let norm = spec::normalize_ref(r);
            let names = if tags.get(&norm) == Some(&rec.id) {
                vec![norm]
            } else {
                self.tags_of(&rec.id)?
            };
            let config = self.read_blob(&rec.digest()?)?;
            let md = Digest::parse(&rec.manifest_digest)
                .ok_or_else(|| StoreError::Corrupt(format!("bad manifest digest in {}", rec.id)))?;
            let manifest = self.read_blob(&md)?;
            let mut layers = Vec::new();
            for l in &rec.layers {
                let bad = || StoreError::Corrupt(format!("bad layer digest in image {}", rec.id));
                let digest = Digest::parse(&l.digest).ok_or_else(bad)?;
                let diff_id = Digest::parse(&l.diff_id).ok_or_else(bad)?;
                layers.push(ExportLayer {
                    blob: self.blob_path(&digest),
                    diff_id,
                    diff_size: l.diff_size,
                    digest,
                    size: l.size,
                    media_type: l.media_type.clone(),
                });
            }
            out.push(ExportImage {
                tags: names,
                config,
                manifest,
                layers,
            });
        }
        Ok(out)
    }
}
