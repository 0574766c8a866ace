//! OCI image layout (`oci-layout`, `index.json`, `blobs/sha256/`): read the images a layout
//! directory offers (verifying manifests and configs), and write images as a layout.

use super::archive::member;
use super::docker_archive::Sink;
use super::exchange::{ExportImage, SourceImage, SourceLayer};
use super::names;
use super::{ImageError, Result};
use crate::oci::media::{self, IMAGE_NAME, REF_NAME};
use crate::oci::{self, Descriptor, Digest, ImageIndex, ImageManifest, MediaType, Platform};
use crate::progress::CountReader;
use std::collections::{HashMap, HashSet};
use std::path::Path;

fn blob_path(dir: &Path, d: &Descriptor) -> Result<(Digest, std::path::PathBuf)> {
    let dg = oci::digest_of(d)
        .map_err(|_| ImageError::Format(format!("unsupported digest {:?}", d.digest().as_ref())))?;
    let p = member(dir, &format!("blobs/sha256/{}", dg.hex()))?;
    Ok((dg, p))
}

/// Read a small blob and check its digest and size against the descriptor.
fn read_verified(dir: &Path, d: &Descriptor, what: &str) -> Result<Vec<u8>> {
    let (dg, p) = blob_path(dir, d)?;
    let meta = p
        .metadata()
        .map_err(ImageError::io(format!("{what} {dg}")))?;
    if meta.len() > 64 << 20 {
        return Err(ImageError::Format(format!(
            "{what} {dg} is implausibly large ({} bytes)",
            meta.len()
        )));
    }
    let bytes = std::fs::read(&p).map_err(ImageError::io(format!("read {what} {dg}")))?;
    let actual = Digest::of(&bytes);
    if actual != dg {
        return Err(ImageError::DigestMismatch {
            what: format!("{what} {dg}"),
            expected: dg,
            actual,
        });
    }
    if bytes.len() as u64 != d.size() {
        return Err(ImageError::Format(format!(
            "{what} {dg}: size {} but descriptor says {}",
            bytes.len(),
            d.size()
        )));
    }
    Ok(bytes)
}

fn tag_for(d: &Descriptor, layout_name: &str) -> Result<Option<String>> {
    if let Some(n) = oci::annotation(d, IMAGE_NAME) {
        return Ok(Some(names::key(n)?));
    }
    let Some(r) = oci::annotation(d, REF_NAME) else {
        return Ok(None);
    };
    let name = if r.contains('/') || r.contains(':') {
        names::key(r)?
    } else {
        names::key(&format!("{layout_name}:{r}"))?
    };
    Ok(Some(name))
}

/// The images of an OCI layout directory. `layout_name` names images whose index entry only
/// carries a tag (`ref.name` = `latest`).
pub fn read(dir: &Path, layout_name: &str) -> Result<Vec<SourceImage>> {
    let ibytes =
        std::fs::read(dir.join("index.json")).map_err(ImageError::io("read index.json"))?;
    let index: ImageIndex = serde_json::from_slice(&ibytes)
        .map_err(|e| ImageError::Format(format!("invalid index.json: {e}")))?;
    let mut out = Vec::new();
    for d in index.manifests() {
        let tag = tag_for(d, layout_name)?;
        read_descriptor(dir, d, tag, &mut out, 0)?;
    }
    if out.is_empty() {
        return Err(ImageError::Format(
            "OCI layout index.json lists no image".into(),
        ));
    }
    Ok(out)
}

fn read_descriptor(
    dir: &Path,
    d: &Descriptor,
    tag: Option<String>,
    out: &mut Vec<SourceImage>,
    depth: u32,
) -> Result<()> {
    if depth > 4 {
        return Err(ImageError::Format("OCI index nesting too deep".into()));
    }
    let digest = d.digest().as_ref();
    if media::is_index(d.media_type()) {
        let bytes = read_verified(dir, d, "index")?;
        let idx: ImageIndex = serde_json::from_slice(&bytes)
            .map_err(|e| ImageError::Format(format!("invalid index {digest}: {e}")))?;
        // Pick the manifest for this machine's OS and architecture (any variant), else the
        // first.
        let want = Platform {
            variant: None,
            ..Platform::host()
        };
        let pick = idx
            .manifests()
            .iter()
            .find(|m| m.platform().as_ref().is_some_and(|p| want.matches(p)))
            .or_else(|| idx.manifests().first())
            .ok_or_else(|| ImageError::Format(format!("index {digest} is empty")))?;
        return read_descriptor(dir, pick, tag, out, depth + 1);
    }
    let mbytes = read_verified(dir, d, "manifest")?;
    let m: ImageManifest = serde_json::from_slice(&mbytes)
        .map_err(|e| ImageError::Format(format!("invalid manifest {digest}: {e}")))?;
    let config = read_verified(dir, m.config(), "config")?;
    let mut layers = Vec::new();
    for l in m.layers() {
        let (dg, path) = blob_path(dir, l)?;
        layers.push(SourceLayer {
            path,
            name: dg.to_string(),
            digest: Some(dg),
            size: Some(l.size()),
            media_type: Some(l.media_type().clone()),
        });
    }
    out.push(SourceImage {
        config_digest: oci::digest_of(m.config()).ok(),
        config,
        manifest: Some(mbytes),
        tags: tag.into_iter().collect(),
        layers,
        repo_digests: Vec::new(),
    });
    Ok(())
}

/// Write images as an OCI layout (blobs copied as stored). `progress(bytes)` as data goes out.
pub fn write(
    images: &[ExportImage],
    sink: &mut dyn Sink,
    progress: &mut dyn FnMut(u64),
) -> Result<()> {
    let layout = br#"{"imageLayoutVersion":"1.0.0"}"#;
    sink.add("oci-layout", layout.len() as u64, &mut layout.as_slice())?;
    let mut written: HashSet<Digest> = HashSet::new();
    let mut manifests = Vec::new();
    for img in images {
        for l in &img.layers {
            if written.insert(l.digest.clone()) {
                let f = std::fs::File::open(&l.blob)
                    .map_err(ImageError::io(format!("open blob {}", l.digest)))?;
                let mut r = CountReader::new(f, &mut *progress);
                sink.add(&format!("blobs/sha256/{}", l.digest.hex()), l.size, &mut r)?;
            }
        }
        for bytes in [&img.config, &img.manifest] {
            let dg = Digest::of(bytes);
            if written.insert(dg.clone()) {
                sink.add(
                    &format!("blobs/sha256/{}", dg.hex()),
                    bytes.len() as u64,
                    &mut bytes.as_slice(),
                )?;
            }
        }
        let mdg = Digest::of(&img.manifest);
        // Pulled Docker schema 2 manifests keep their own media type.
        let mt = serde_json::from_slice::<serde_json::Value>(&img.manifest)
            .ok()
            .and_then(|v| v.get("mediaType")?.as_str().map(MediaType::from))
            .unwrap_or(MediaType::ImageManifest);
        let base = oci::descriptor(mt, &mdg, img.manifest.len() as u64)
            .map_err(|e| ImageError::Format(e.to_string()))?;
        if img.tags.is_empty() {
            manifests.push(base.clone());
        }
        for t in &img.tags {
            let (_, tag) = names::split_key(t);
            let tag = tag.unwrap_or_else(|| mdg.to_string());
            let mut d = base.clone();
            d.set_annotations(Some(HashMap::from([
                (REF_NAME.to_string(), tag),
                (IMAGE_NAME.to_string(), t.clone()),
            ])));
            manifests.push(d);
        }
    }
    let mut index = ImageIndex::default();
    index.set_media_type(Some(MediaType::ImageIndex));
    index.set_manifests(manifests);
    let ib = oci::canonical_json(&index).map_err(|e| ImageError::Format(e.to_string()))?;
    sink.add("index.json", ib.len() as u64, &mut ib.as_slice())
}
