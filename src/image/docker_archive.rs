//! docker-archive (`docker save`, `skopeo copy docker-archive:`): read the images an unpacked
//! archive offers, and write images as an archive that docker, podman and skopeo load.

use super::archive::member;
use super::compress;
use super::exchange::{ExportImage, SourceImage, SourceLayer};
use super::names;
use super::{ImageError, Result};
use crate::oci::Digest;
use crate::progress::CountReader;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashSet};
use std::io::{self, Read, Write};
use std::path::Path;

/// One entry of `manifest.json`.
#[derive(Debug, Serialize, Deserialize)]
pub struct ArchiveManifest {
    /// The config member.
    #[serde(rename = "Config")]
    pub config: String,
    /// The tags.
    #[serde(rename = "RepoTags", default)]
    pub repo_tags: Option<Vec<String>>,
    /// The layer members, bottom first.
    #[serde(rename = "Layers")]
    pub layers: Vec<String>,
}

/// A 64-hex digest named by a member path (`<hex>.json`, `<hex>.tar`, `blobs/sha256/<hex>`).
fn digest_in_name(name: &str) -> Option<Digest> {
    let base = name.rsplit('/').next()?;
    let stem = base.split('.').next()?;
    Digest::from_hex(stem).ok()
}

/// The images in an unpacked docker-archive directory.
pub fn read(dir: &Path) -> Result<Vec<SourceImage>> {
    let mpath = dir.join("manifest.json");
    let bytes = std::fs::read(&mpath).map_err(ImageError::io("read manifest.json"))?;
    let entries: Vec<ArchiveManifest> = serde_json::from_slice(&bytes)
        .map_err(|e| ImageError::Format(format!("invalid manifest.json: {e}")))?;
    let mut out = Vec::new();
    for e in entries {
        let cpath = member(dir, &e.config)?;
        let config =
            std::fs::read(&cpath).map_err(ImageError::io(format!("read config {}", e.config)))?;
        // Members named by a digest: the config's name is its digest; under blobs/ so is a layer's.
        let config_digest = digest_in_name(&e.config);
        let mut layers = Vec::new();
        for l in &e.layers {
            let path = member(dir, l)?;
            let digest = if l.starts_with("blobs/sha256/") {
                digest_in_name(l)
            } else {
                None
            };
            layers.push(SourceLayer {
                path,
                name: l.clone(),
                digest,
                size: None,
                media_type: None,
            });
        }
        let tags = e
            .repo_tags
            .unwrap_or_default()
            .iter()
            .map(|t| names::key(t))
            .collect::<std::result::Result<_, _>>()?;
        out.push(SourceImage {
            config,
            config_digest,
            manifest: None,
            tags,
            layers,
            repo_digests: Vec::new(),
        });
    }
    if out.is_empty() {
        return Err(ImageError::Format(
            "docker-archive manifest.json lists no image".into(),
        ));
    }
    Ok(out)
}

/// Where exporters put files: a tar stream or a directory.
pub trait Sink {
    /// Add a file of `size` bytes read from `data`.
    fn add(&mut self, path: &str, size: u64, data: &mut dyn Read) -> Result<()>;
}

/// A tar stream sink with fixed metadata (deterministic).
pub struct TarSink<W: Write>(pub tar::Builder<W>);

impl<W: Write> TarSink<W> {
    /// A new tar sink.
    pub fn new(w: W) -> Self {
        TarSink(tar::Builder::new(w))
    }
    /// Finish the tar and return the writer.
    pub fn finish(self) -> Result<W> {
        self.0
            .into_inner()
            .map_err(ImageError::io("finish archive"))
    }
}

impl<W: Write> Sink for TarSink<W> {
    fn add(&mut self, path: &str, size: u64, data: &mut dyn Read) -> Result<()> {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_size(size);
        h.set_mode(0o644);
        h.set_mtime(0);
        let mut limited = data.take(size);
        self.0
            .append_data(&mut h, path, &mut limited)
            .map_err(ImageError::io(format!("write {path}")))
    }
}

/// A directory sink (files written under a root).
pub struct DirSink(pub std::path::PathBuf);

impl Sink for DirSink {
    fn add(&mut self, path: &str, _size: u64, data: &mut dyn Read) -> Result<()> {
        let p = member(&self.0, path)?;
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent)
                .map_err(ImageError::io(format!("create {}", parent.display())))?;
        }
        let mut f =
            std::fs::File::create(&p).map_err(ImageError::io(format!("create {}", p.display())))?;
        io::copy(data, &mut f).map_err(ImageError::io(format!("write {}", p.display())))?;
        f.sync_all()
            .map_err(ImageError::io(format!("sync {}", p.display())))?;
        Ok(())
    }
}

/// Write images as a docker-archive: `<diffid>.tar` layers (uncompressed), `<id>.json`
/// configs, `manifest.json` and `repositories`. `progress(bytes)` is called as data goes out.
pub fn write(
    images: &[ExportImage],
    sink: &mut dyn Sink,
    progress: &mut dyn FnMut(u64),
) -> Result<()> {
    let mut manifest = Vec::new();
    let mut repos: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    let mut written: HashSet<String> = HashSet::new();
    for img in images {
        let id = Digest::of(&img.config);
        let cname = format!("{}.json", id.hex());
        if written.insert(cname.clone()) {
            sink.add(&cname, img.config.len() as u64, &mut img.config.as_slice())?;
        }
        let mut layers = Vec::new();
        for l in &img.layers {
            let lname = format!("{}.tar", l.diff_id.hex());
            if written.insert(lname.clone()) {
                let f = std::fs::File::open(&l.blob)
                    .map_err(ImageError::io(format!("open blob {}", l.digest)))?;
                let (_, r) = compress::decompress(f)
                    .map_err(ImageError::io(format!("read blob {}", l.digest)))?;
                let mut counted = CountReader::new(r, &mut *progress);
                sink.add(&lname, l.diff_size, &mut counted)?;
            }
            layers.push(lname);
        }
        for t in &img.tags {
            if let (n, Some(tag)) = names::split_key(t) {
                repos
                    .entry(n)
                    .or_default()
                    .insert(tag, id.hex().to_string());
            }
        }
        manifest.push(ArchiveManifest {
            config: cname,
            repo_tags: Some(img.tags.clone()),
            layers,
        });
    }
    let m = serde_json::to_vec(&manifest).map_err(|e| ImageError::Format(e.to_string()))?;
    sink.add("manifest.json", m.len() as u64, &mut m.as_slice())?;
    let r = serde_json::to_vec(&repos).map_err(|e| ImageError::Format(e.to_string()))?;
    sink.add("repositories", r.len() as u64, &mut r.as_slice())?;
    Ok(())
}
