//! Import images into the store: verify every blob digest and diff ID, unpack new layers,
//! skip layers already present ("Already exists"), and install everything in one
//! transaction so a failure leaves nothing new behind. Entry points for `load`, `import`
//! and the registry client.

use super::atomic::{Staging, fsync_tree, install};
use super::blobs::{TeeReader, stage_bytes};
use super::records::{ImageRecord, LayerRecord, LayerRef};
use super::{Progress, Result, Store, StoreError};
use crate::image::apply::{ApplyOptions, apply_layer};
use crate::image::archive::{self, Format};
use crate::image::compress::{self, Compression};
use crate::image::digest::{CountReader, Digest, HashReader};
use crate::image::spec::{self, Descriptor, Manifest, SourceImage, media};
use crate::image::{ImageError, docker_archive, oci_layout};
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
        progress: &mut dyn Progress,
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
        progress: &mut dyn Progress,
    ) -> Result<Vec<LoadedImage>> {
        let _lock = self.lock()?;
        self.load_dir_locked(dir, name_hint, progress)
    }

    fn load_dir_locked(
        &self,
        dir: &Path,
        name_hint: &str,
        progress: &mut dyn Progress,
    ) -> Result<Vec<LoadedImage>> {
        let sources = match archive::detect_format(dir)? {
            Format::DockerArchive => docker_archive::read(dir)?,
            Format::OciLayout => oci_layout::read(dir, name_hint)?,
        };
        self.import_images_locked(sources, progress)
    }

    /// Import the images of an OCI layout directory (e.g. one a registry pull just wrote).
    pub fn import_oci_layout(
        &self,
        dir: &Path,
        name_hint: &str,
        progress: &mut dyn Progress,
    ) -> Result<Vec<LoadedImage>> {
        let _lock = self.lock()?;
        let sources = oci_layout::read(dir, name_hint)?;
        self.import_images_locked(sources, progress)
    }

    /// Import what a registry pull wrote: an OCI layout (layers the store already had may be
    /// missing from it) whose manifest `manifest_digest` was pulled as `reference`
    /// (`name[:tag]`); records the repo digest `name@manifest_digest`.
    pub fn import_pulled_layout(
        &self,
        dir: &Path,
        reference: &str,
        manifest_digest: &Digest,
        progress: &mut dyn Progress,
    ) -> Result<Vec<LoadedImage>> {
        let _lock = self.lock()?;
        let base = reference.split('@').next().unwrap_or(reference);
        let (name, _) = spec::split_ref(base);
        let mut sources = oci_layout::read(dir, &name)?;
        for s in &mut sources {
            if s.manifest.as_deref().map(Digest::of).as_ref() == Some(manifest_digest) {
                s.repo_digests.push(format!("{name}@{manifest_digest}"));
            }
        }
        self.import_images_locked(sources, progress)
    }

    /// Import images described by their sources (all verified, one transaction).
    pub fn import_images(
        &self,
        sources: Vec<SourceImage>,
        progress: &mut dyn Progress,
    ) -> Result<Vec<LoadedImage>> {
        let _lock = self.lock()?;
        self.import_images_locked(sources, progress)
    }

    pub(crate) fn import_images_locked(
        &self,
        sources: Vec<SourceImage>,
        progress: &mut dyn Progress,
    ) -> Result<Vec<LoadedImage>> {
        let staging = Staging::new(&self.path("tmp"))?;
        let mut staged_layers: HashMap<String, StagedLayer> = HashMap::new();
        let mut staged_blobs: BTreeMap<Digest, PathBuf> = BTreeMap::new();
        let mut records = Vec::new();
        let mut all_tags: Vec<(String, String)> = Vec::new();
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
                    expected: exp.to_string(),
                    actual: config_digest.to_string(),
                }
                .into());
            }
            let config = spec::parse_config(&src.config)?;
            let diff_ids = spec::config_diff_ids(&config)?;
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
                let r = self.stage_layer(
                    &staging.dir,
                    l,
                    diff_id,
                    &mut staged_layers,
                    &what,
                    progress,
                )?;
                if let Some(b) = staged_layers.get(&r.diff_id).and_then(|s| s.blob.clone())
                    && let (Some(d), None) = (Digest::parse(&r.digest), &existing)
                {
                    staged_blobs.insert(d, b);
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
                id: config_digest.to_string(),
                manifest_digest: md.to_string(),
                layers: layer_refs,
                repo_digests: src.repo_digests.clone(),
                stored: spec::now_rfc3339(),
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
                let d = Digest::parse(&s.layer_ref.diff_id)
                    .ok_or_else(|| StoreError::Corrupt("bad diff id".into()))?;
                install(dir, &self.path("layers").join(d.hex()))?;
            }
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
        l: &spec::SourceLayer,
        diff_id: &Digest,
        staged: &mut HashMap<String, StagedLayer>,
        what: &str,
        progress: &mut dyn Progress,
    ) -> Result<LayerRef> {
        let err = |e: ImageError| StoreError::Layer {
            layer: what.to_string(),
            error: e,
        };
        let id = diff_id.short().to_string();
        // A pull leaves out of its layout the blobs the store said it has: read ours.
        let path = match &l.digest {
            Some(d) if !l.path.exists() && self.has_blob(d) => self.blob_path(d),
            _ => l.path.clone(),
        };
        let file = std::fs::File::open(&path)
            .map_err(|e| err(ImageError::io(format!("open {}", path.display()))(e)))?;
        let total = file.metadata().ok().map(|m| m.len());
        let have_layer = self.has_layer(diff_id)
            || staged
                .get(diff_id.as_str())
                .is_some_and(|s| s.unpacked.is_some());
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
                    expected: diff_id.to_string(),
                    actual: actual_diff.to_string(),
                }));
            }
            if let Some(dir) = &unpacked {
                let rec = LayerRecord {
                    diff_id: diff_id.to_string(),
                    diff_size,
                    rootless: self.rootless(),
                    created: spec::now_rfc3339(),
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
                expected: exp.to_string(),
                actual: actual.to_string(),
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
        let media_type = l.media_type.clone().unwrap_or_else(|| media_type_for(c));
        let layer_ref = LayerRef {
            digest: actual.to_string(),
            media_type,
            size,
            diff_id: diff_id.to_string(),
            diff_size,
        };
        progress.finish(
            &id,
            if have_layer {
                "Already exists"
            } else {
                "Loaded"
            },
        );
        let entry = staged.entry(diff_id.to_string()).or_insert(StagedLayer {
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

fn media_type_for(c: Compression) -> String {
    c.oci_layer_media_type().to_string()
}

/// An OCI manifest for a config and layers (for images that came without one).
pub fn synth_manifest(config: &[u8], layers: &[LayerRef]) -> Result<Vec<u8>> {
    let m = Manifest {
        schema_version: 2,
        media_type: Some(media::MANIFEST.into()),
        config: Descriptor {
            media_type: media::CONFIG.into(),
            digest: Digest::of(config).to_string(),
            size: config.len() as u64,
            annotations: None,
            platform: None,
        },
        layers: layers
            .iter()
            .map(|l| Descriptor {
                media_type: l.media_type.clone(),
                digest: l.digest.clone(),
                size: l.size,
                annotations: None,
                platform: None,
            })
            .collect(),
        annotations: None,
    };
    serde_json::to_vec(&m).map_err(|e| StoreError::Corrupt(e.to_string()))
}
