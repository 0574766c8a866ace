//! Export images from the store (for `save`): gather configs, manifests and layer blobs.

use super::{Result, Store};
use crate::image::exchange::{ExportImage, ExportLayer};
use crate::image::names;

impl Store {
    /// Collect what exporters need for the given references. A reference by tag exports that
    /// tag; a reference by ID exports the image with all its tags.
    pub fn export_images(&self, refs: &[String]) -> Result<Vec<ExportImage>> {
        let tags = self.tags()?;
        let mut out = Vec::new();
        for r in refs {
            let rec = self.resolve_image(r)?;
            let norm = names::lookup_key(r);
            let names = if tags.get(&norm) == Some(&rec.id) {
                vec![norm]
            } else {
                self.tags_of(&rec.id)?
            };
            let config = self.read_blob(&rec.id)?;
            let manifest = self.read_blob(&rec.manifest_digest)?;
            let layers = rec
                .layers
                .iter()
                .map(|l| ExportLayer {
                    blob: self.blob_path(&l.digest),
                    diff_id: l.diff_id.clone(),
                    diff_size: l.diff_size,
                    digest: l.digest.clone(),
                    size: l.size,
                    media_type: l.media_type.clone(),
                })
                .collect();
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
