//! Import images into the store: verify every blob digest and diff ID, unpack new layers,
//! skip layers already present ("Already exists"), and install everything in one
//! transaction so a failure leaves nothing new behind. Entry points for `load`, `import`
//! and the registry client.

use super::atomic::{Staging, fsync_tree, install};
use super::blobs::{TeeReader, stage_bytes};
use super::lazy::{LazyRecord, LazySource};
use super::records::{ImageRecord, LayerRecord, LayerRef};
use super::{Result, Store, StoreError};
use crate::image::apply::{ApplyOptions, apply_layer};
use crate::image::archive::{self, Format};
use crate::image::compress;
use crate::image::config::ImageConfig;
use crate::image::exchange::{SourceImage, SourceLayer};
use crate::image::time;
use crate::image::{ImageError, docker_archive, oci_layout};
use crate::oci::Reference;
use crate::oci::digest::HashReader;
use crate::oci::{self, Digest, MediaType};
use crate::progress::Progress;
use crate::progress::{ALREADY_EXISTS, CountReader};
use oci_spec::image::ImageManifestBuilder;
use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::path::{Path, PathBuf};

/// An image a load stored (or found stored), with the tags this load gave it.
#[derive(Debug, Clone)]
pub struct LoadedImage {
    /// The image record.
    pub image: ImageRecord,
    /// Tags set by this load.
    pub tags: Vec<String>,
}

/// A staged layer, ready to install.
struct StagedLayer {
    layer_ref: LayerRef,
    /// staging dir of the unpacked layer (None if the store has it).
    unpacked: Option<PathBuf>,
    /// staged blob (None if the store has it).
    blob: Option<PathBuf>,
}

impl Store {
    /// Load a docker-archive or OCI layout tar (plain or compressed) from a reader.
    pub fn load_archive<R: Read>(
        &self,
        reader: R,
        name_hint: &str,
        progress: &dyn Progress,
    ) -> Result<Vec<LoadedImage>> {
        let _lock = self.lock()?;
        let staging = Staging::new(&self.path("tmp"))?;
        let dir = staging.dir.join("archive");
        std::fs::create_dir_all(&dir).map_err(StoreError::io("create staging"))?;
        progress.begin("archive", "Reading", None);
        archive::extract(reader, &dir, &mut |n| progress.advance("archive", n))?;
        progress.finish("archive", "Read");
        self.load_dir_locked(&dir, name_hint, progress)
    }

    /// Load a docker-archive or OCI layout that is a directory.
    pub fn load_dir(
        &self,
        dir: &Path,
        name_hint: &str,
        progress: &dyn Progress,
    ) -> Result<Vec<LoadedImage>> {
        let _lock = self.lock()?;
        self.load_dir_locked(dir, name_hint, progress)
    }

    fn load_dir_locked(
        &self,
        dir: &Path,
        name_hint: &str,
        progress: &dyn Progress,
    ) -> Result<Vec<LoadedImage>> {
        let sources = match archive::detect_format(dir)? {
            Format::DockerArchive => docker_archive::read(dir)?,
            Format::OciLayout => oci_layout::read(dir, name_hint)?,
        };
        self.import_images_locked(sources, &HashMap::new(), progress)
    }

    /// Import the images of an OCI layout directory (e.g. one a registry pull just wrote).
    pub fn import_oci_layout(
        &self,
        dir: &Path,
        name_hint: &str,
        progress: &dyn Progress,
    ) -> Result<Vec<LoadedImage>> {
        let _lock = self.lock()?;
        let sources = oci_layout::read(dir, name_hint)?;
        self.import_images_locked(sources, &HashMap::new(), progress)
    }

    /// Import what a registry pull wrote: an OCI layout (layers the store already had may be
    /// missing from it) whose manifest `manifest_digest` was pulled as `reference`
    /// (`name[:tag]`); records the repo digest `name@manifest_digest`.
    pub fn import_pulled_layout(
        &self,
        dir: &Path,
        reference: &str,
        manifest_digest: &Digest,
        progress: &dyn Progress,
    ) -> Result<Vec<LoadedImage>> {
        let _lock = self.lock()?;
        let r = Reference::parse(reference).map_err(ImageError::from)?;
        let name = r.written_name();
        let mut sources = oci_layout::read(dir, name)?;
        for s in &mut sources {
            if s.manifest.as_deref().map(Digest::of).as_ref() == Some(manifest_digest) {
                s.repo_digests.push(format!("{name}@{manifest_digest}"));
            }
        }
        self.import_images_locked(sources, &HashMap::new(), progress)
    }

    /// Import images described by their sources (all verified, one transaction).
    pub fn import_images(
        &self,
        sources: Vec<SourceImage>,
        progress: &dyn Progress,
    ) -> Result<Vec<LoadedImage>> {
        let _lock = self.lock()?;
        self.import_images_locked(sources, &HashMap::new(), progress)
    }

    /// Import what a lazy pull wrote: as [`Store::import_pulled_layout`], except that the
    /// layers in `lazy` (by blob digest) are not in the layout and are recorded as lazy
    /// layers (footer and TOC only) unless the store already has them.
    pub fn import_pulled_layout_lazy(
        &self,
        dir: &Path,
        reference: &str,
        manifest_digest: &Digest,
        lazy: &HashMap<Digest, LazySource>,
        progress: &dyn Progress,
    ) -> Result<Vec<LoadedImage>> {
        let _lock = self.lock()?;
        let r = Reference::parse(reference).map_err(ImageError::from)?;
        let name = r.written_name();
        let mut sources = oci_layout::read(dir, name)?;
        for s in &mut sources {
            if s.manifest.as_deref().map(Digest::of).as_ref() == Some(manifest_digest) {
                s.repo_digests.push(format!("{name}@{manifest_digest}"));
            }
        }
        self.import_images_locked(sources, lazy, progress)
    }

    pub(crate) fn import_images_locked(
        &self,
        sources: Vec<SourceImage>,
        lazy: &HashMap<Digest, LazySource>,
        progress: &dyn Progress,
    ) -> Result<Vec<LoadedImage>> {
        let mut staged_lazy: Vec<(LazyRecord, Vec<u8>)> = Vec::new();
        let staging = Staging::new(&self.path("tmp"))?;
        let mut staged_layers: HashMap<Digest, StagedLayer> = HashMap::new();
        let mut staged_blobs: BTreeMap<Digest, PathBuf> = BTreeMap::new();
        let mut records = Vec::new();
        let mut all_tags: Vec<(String, Digest)> = Vec::new();
        for (n, src) in sources.iter().enumerate() {
            let label = src
                .tags
                .first()
                .cloned()
                .unwrap_or_else(|| format!("image {}", n + 1));
            let config_digest = Digest::of(&src.config);
            if let Some(exp) = &src.config_digest
                && *exp != config_digest
            {
                return Err(ImageError::DigestMismatch {
                    what: format!("config of {label}"),
                    expected: exp.clone(),
                    actual: config_digest,
                }
                .into());
            }
            let diff_ids = ImageConfig::parse(&src.config)?.diff_ids()?;
            if diff_ids.len() != src.layers.len() {
                return Err(ImageError::Format(format!(
                    "{label}: config lists {} diff IDs but there are {} layers",
                    diff_ids.len(),
                    src.layers.len()
                ))
                .into());
            }
            // An image already stored keeps its record (and blobs); its content is still verified.
            let existing = self.image(&config_digest).ok();
            let mut layer_refs = Vec::new();
            for (i, (l, diff_id)) in src.layers.iter().zip(&diff_ids).enumerate() {
                let what = format!("{label}: layer {}/{} ({})", i + 1, src.layers.len(), l.name);
                if let Some((d, ls)) = l.digest.as_ref().and_then(|d| lazy.get(d).map(|s| (d, s)))
                    && !self.has_layer(diff_id)
                    && !staged_layers.contains_key(diff_id)
                {
                    let rec = LazyRecord {
                        diff_id: diff_id.clone(),
                        digest: d.clone(),
                        size: l.size.unwrap_or(0),
                        media_type: l.media_type.clone().unwrap_or(MediaType::ImageLayerGzip),
                        toc_digest: ls.toc_digest.clone(),
                        diff_size: ls.diff_size,
                        source: ls.source.clone(),
                        tls_verify: ls.tls_verify,
                        created: time::now_rfc3339(),
                    };
                    progress.finish(diff_id.as_str(), "Lazy (TOC only)");
                    layer_refs.push(LayerRef {
                        digest: d.clone(),
                        media_type: rec.media_type.clone(),
                        size: rec.size,
                        diff_id: diff_id.clone(),
                        diff_size: rec.diff_size,
                    });
                    staged_lazy.push((rec, ls.tail.clone()));
                    continue;
                }
                let r = self.stage_layer(
                    &staging.dir,
                    l,
                    diff_id,
                    &mut staged_layers,
                    &what,
                    progress,
                )?;
                // A stored image missing this blob (a lazy layer completed by a full pull)
                // gets it too.
                if let Some(b) = staged_layers.get(&r.diff_id).and_then(|s| s.blob.clone())
                    && (existing.is_none() || !self.has_blob(&r.digest))
                {
                    staged_blobs.insert(r.digest.clone(), b);
                }
                layer_refs.push(r);
            }
            if let Some(mut old) = existing {
                for d in &src.repo_digests {
                    if !old.repo_digests.contains(d) {
                        old.repo_digests.push(d.clone());
                    }
                }
                for t in &src.tags {
                    all_tags.push((t.clone(), old.id.clone()));
                }
                records.push(LoadedImage {
                    image: old,
                    tags: src.tags.clone(),
                });
                continue;
            }
            // Config and manifest blobs.
            let (cd, cp) = stage_bytes(&staging.dir, &src.config)?;
            staged_blobs.insert(cd.clone(), cp);
            let manifest = match &src.manifest {
                Some(m) => m.clone(),
                None => synth_manifest(&src.config, &layer_refs)?,
            };
            let (md, mp) = stage_bytes(&staging.dir, &manifest)?;
            staged_blobs.insert(md.clone(), mp);
            let rec = ImageRecord {
                id: config_digest,
                manifest_digest: md,
                layers: layer_refs,
                repo_digests: src.repo_digests.clone(),
                stored: time::now_rfc3339(),
            };
            for t in &src.tags {
                all_tags.push((t.clone(), rec.id.clone()));
            }
            records.push(LoadedImage {
                image: rec,
                tags: src.tags.clone(),
            });
        }
        // Everything verified: install blobs, then layers, then records, then tags.
        for (d, p) in &staged_blobs {
            install(p, &self.blob_path(d))?;
        }
        for s in staged_layers.values() {
            if let Some(dir) = &s.unpacked {
                fsync_tree(dir)?;
                install(dir, &self.path("layers").join(s.layer_ref.diff_id.hex()))?;
            }
        }
        for (rec, tail) in &staged_lazy {
            self.add_lazy_layer(rec, tail)?;
        }
        for r in &records {
            self.write_image(&r.image)?;
        }
        if !all_tags.is_empty() {
            let mut tags = self.tags()?;
            for (t, id) in all_tags {
                tags.insert(t, id);
            }
            self.write_tags(&tags)?;
        }
        Ok(records)
    }

    fn stage_layer(
        &self,
        staging: &Path,
        l: &SourceLayer,
        diff_id: &Digest,
        staged: &mut HashMap<Digest, StagedLayer>,
        what: &str,
        progress: &dyn Progress,
    ) -> Result<LayerRef> {
        let err = |e: ImageError| StoreError::Layer {
            layer: what.to_string(),
            error: e,
        };
        let id = diff_id.to_string();
        // A pull leaves out of its layout the blobs the store said it has: read ours.
        let path = match &l.digest {
            Some(d) if !l.path.exists() && self.has_blob(d) => self.blob_path(d),
            _ => l.path.clone(),
        };
        let file = std::fs::File::open(&path)
            .map_err(|e| err(ImageError::io(format!("open {}", path.display()))(e)))?;
        let total = file.metadata().ok().map(|m| m.len());
        let have_layer =
            self.has_layer(diff_id) || staged.get(diff_id).is_some_and(|s| s.unpacked.is_some());
        let have_blob = l.digest.as_ref().is_some_and(|d| self.has_blob(d));
        progress.begin(
            &id,
            if have_layer {
                "Verifying"
            } else {
                "Loading layer"
            },
            total,
        );
        // Stage the blob as received unless the store already has it.
        let blob_tmp = staging
            .join("blobs")
            .join(format!("incoming-{}", staged.len()));
        let tee_file = if have_blob {
            None
        } else {
            std::fs::create_dir_all(staging.join("blobs"))
                .map_err(StoreError::io("create staging blobs"))?;
            Some(std::fs::File::create(&blob_tmp).map_err(StoreError::io("stage blob"))?)
        };
        let mut outer = HashReader::new(TeeReader::new(file, tee_file));
        let mut warnings: Vec<String> = Vec::new();
        let (compression, unpacked) = {
            let counted = CountReader::new(&mut outer, |n| progress.advance(&id, n));
            let (c, dec) =
                compress::decompress(counted).map_err(|e| err(ImageError::io("read layer")(e)))?;
            let mut inner = HashReader::new(dec);
            let unpacked = if have_layer {
                inner
                    .drain()
                    .map_err(|e| err(ImageError::io("read layer")(e)))?;
                None
            } else {
                let dir = staging.join("layers").join(diff_id.hex());
                let diff = dir.join("diff");
                std::fs::create_dir_all(&diff).map_err(StoreError::io("create staging layer"))?;
                let opts = ApplyOptions {
                    rootless: self.rootless(),
                    ..ApplyOptions::default()
                };
                let stats = apply_layer(&mut inner, &diff, &opts).map_err(err)?;
                warnings.extend(stats.warnings);
                inner
                    .drain()
                    .map_err(|e| err(ImageError::io("read layer")(e)))?;
                Some(dir)
            };
            let (actual_diff, diff_size) = inner.hasher.finish();
            if actual_diff != *diff_id {
                return Err(err(ImageError::DigestMismatch {
                    what: "diff ID".into(),
                    expected: diff_id.clone(),
                    actual: actual_diff,
                }));
            }
            if let Some(dir) = &unpacked {
                let rec = LayerRecord {
                    diff_id: diff_id.clone(),
                    diff_size,
                    rootless: self.rootless(),
                    created: time::now_rfc3339(),
                };
                let b = serde_json::to_vec_pretty(&rec)
                    .map_err(|e| StoreError::Corrupt(e.to_string()))?;
                std::fs::write(dir.join("layer.json"), b)
                    .map_err(StoreError::io("write layer.json"))?;
            }
            ((c, diff_size), unpacked)
        };
        for w in &warnings {
            progress.message(&format!("warning: {what}: {w}"));
        }
        outer
            .drain()
            .map_err(|e| err(ImageError::io("read layer")(e)))?;
        let (actual, size) = outer.hasher.finish();
        if let Some(exp) = &l.digest
            && *exp != actual
        {
            return Err(err(ImageError::DigestMismatch {
                what: "blob digest".into(),
                expected: exp.clone(),
                actual,
            }));
        }
        if let Some(exp) = l.size
            && exp != size
        {
            return Err(err(ImageError::Format(format!(
                "blob size {size} but the manifest says {exp}"
            ))));
        }
        let (c, diff_size) = compression;
        let blob = if have_blob {
            None
        } else {
            let p = staging.join("blobs").join(actual.hex());
            std::fs::rename(&blob_tmp, &p).map_err(StoreError::io("stage blob"))?;
            Some(p)
        };
        let media_type = l
            .media_type
            .clone()
            .unwrap_or_else(|| c.oci_layer_media_type());
        let layer_ref = LayerRef {
            digest: actual,
            media_type,
            size,
            diff_id: diff_id.clone(),
            diff_size,
        };
        progress.finish(&id, if have_layer { ALREADY_EXISTS } else { "Loaded" });
        let entry = staged.entry(diff_id.clone()).or_insert(StagedLayer {
            layer_ref: layer_ref.clone(),
            unpacked: None,
            blob: None,
        });
        if entry.unpacked.is_none() {
            entry.unpacked = unpacked;
        }
        entry.blob = blob.or(entry.blob.take());
        entry.layer_ref = layer_ref.clone();
        Ok(layer_ref)
    }
}

/// An OCI manifest for a config and layers (for images that came without one).
pub fn synth_manifest(config: &[u8], layers: &[LayerRef]) -> Result<Vec<u8>> {
    let bad = |e: &dyn std::fmt::Display| StoreError::Corrupt(e.to_string());
    let config = oci::descriptor(
        MediaType::ImageConfig,
        &Digest::of(config),
        config.len() as u64,
    )
    .map_err(|e| bad(&e))?;
    let layers = layers
        .iter()
        .map(|l| oci::descriptor(l.media_type.clone(), &l.digest, l.size))
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| bad(&e))?;
    let m = ImageManifestBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageManifest)
        .config(config)
        .layers(layers)
        .build()
        .map_err(|e| bad(&e))?;
    serde_json::to_vec(&m).map_err(|e| bad(&e))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The manifest of an image that came without one (docker-archive, commit) is written
    /// byte for byte as before: its digest is the image's manifest digest.
    #[test]
    fn synthesized_manifest_bytes() -> std::result::Result<(), Box<dyn std::error::Error>> {
        let layer = LayerRef {
            digest: Digest::of(b"blob"),
            media_type: MediaType::ImageLayerGzip,
            size: 4,
            diff_id: Digest::of(b"tar"),
            diff_size: 3,
        };
        let m = synth_manifest(b"{}", std::slice::from_ref(&layer))?;
        let want = format!(
            concat!(
                r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","#,
                r#""config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{}","size":2}},"#,
                r#""layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"{}","size":4}}]}}"#
            ),
            Digest::of(b"{}"),
            layer.digest
        );
        assert_eq!(String::from_utf8(m)?, want);
        Ok(())
    }
}
