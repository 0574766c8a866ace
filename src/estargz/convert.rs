//! Converting the images of an OCI image layout to eStargz in place: every layer is
//! rewritten by the writer, its descriptor gets the toc.digest and uncompressed-size
//! annotations, the config its new diff IDs, and the manifest and `index.json` the new
//! digests (the old blobs stay in the layout, unreferenced).

use super::writer::{WriteOptions, write_estargz};
use super::{EstargzError, Result, TOC_DIGEST_ANNOTATION, UNCOMPRESSED_SIZE_ANNOTATION};
use crate::oci::Digest;
use serde_json::Value;
use std::path::Path;

fn bad(reason: impl Into<String>) -> EstargzError {
    EstargzError::Input {
        context: "convert the layout to eStargz".to_string(),
        reason: reason.into(),
    }
}

fn blob_path(dir: &Path, d: &Digest) -> std::path::PathBuf {
    dir.join("blobs/sha256").join(d.hex())
}

fn read_json(p: &Path) -> Result<Value> {
    let b = std::fs::read(p).map_err(EstargzError::io(format!("read {}", p.display())))?;
    serde_json::from_slice(&b).map_err(|e| bad(format!("{}: {e}", p.display())))
}

fn put_blob(dir: &Path, bytes: &[u8]) -> Result<(Digest, u64)> {
    let d = Digest::of(bytes);
    let p = blob_path(dir, &d);
    std::fs::write(&p, bytes).map_err(EstargzError::io(format!("write {}", p.display())))?;
    Ok((d, bytes.len() as u64))
}

fn digest_field(v: &Value) -> Result<Digest> {
    let s = v
        .get("digest")
        .and_then(Value::as_str)
        .ok_or_else(|| bad("descriptor without digest"))?;
    Digest::parse(s).map_err(|e| bad(e.to_string()))
}

/// Converts one layer blob; returns its new descriptor fields and diff ID.
fn convert_layer(
    dir: &Path,
    layer: &mut Value,
    docker: bool,
    opts: &WriteOptions,
) -> Result<Digest> {
    let d = digest_field(layer)?;
    let src = std::fs::File::open(blob_path(dir, &d))
        .map_err(EstargzError::io(format!("open layer {d}")))?;
    // The new blob gets the old one's mode (a temporary file is created 0600).
    let perms = src
        .metadata()
        .map_err(EstargzError::io(format!("stat layer {d}")))?
        .permissions();
    let (_, plain) = crate::image::compress::decompress(std::io::BufReader::new(src))
        .map_err(EstargzError::io(format!("decompress layer {d}")))?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir.join("blobs/sha256"))
        .map_err(EstargzError::io("create a temporary blob"))?;
    let w = write_estargz(plain, tmp.as_file_mut(), opts)?;
    tmp.as_file()
        .set_permissions(perms)
        .map_err(EstargzError::io("set the eStargz blob's mode"))?;
    tmp.persist(blob_path(dir, &w.digest))
        .map_err(|e| EstargzError::io("install the eStargz blob")(e.error))?;
    layer["digest"] = Value::from(w.digest.to_string());
    layer["size"] = Value::from(w.size);
    layer["mediaType"] = Value::from(if docker {
        "application/vnd.docker.image.rootfs.diff.tar.gzip"
    } else {
        "application/vnd.oci.image.layer.v1.tar+gzip"
    });
    let ann = layer
        .as_object_mut()
        .ok_or_else(|| bad("layer descriptor is not an object"))?
        .entry("annotations")
        .or_insert_with(|| Value::Object(Default::default()));
    ann[TOC_DIGEST_ANNOTATION] = Value::from(w.toc_digest.to_string());
    ann[UNCOMPRESSED_SIZE_ANNOTATION] = Value::from(w.diff_size.to_string());
    Ok(w.diff_id)
}

/// Converts every image manifest named by the layout's `index.json`.
pub fn convert_layout(dir: &Path, opts: &WriteOptions) -> Result<()> {
    let index_path = dir.join("index.json");
    let mut index = read_json(&index_path)?;
    let entries = index
        .get_mut("manifests")
        .and_then(Value::as_array_mut)
        .ok_or_else(|| bad("index.json has no manifests"))?;
    for entry in entries.iter_mut() {
        let md = digest_field(entry)?;
        let mut m = read_json(&blob_path(dir, &md))?;
        if m.get("layers").is_none() {
            return Err(bad(format!("{md} is not an image manifest")));
        }
        let docker = m
            .get("mediaType")
            .and_then(Value::as_str)
            .is_some_and(|t| t.contains("docker"));
        let cd = digest_field(&m["config"])?;
        let mut config = read_json(&blob_path(dir, &cd))?;
        let layers = m["layers"]
            .as_array_mut()
            .ok_or_else(|| bad("layers is not a list"))?;
        let mut diff_ids = Vec::new();
        for l in layers.iter_mut() {
            diff_ids.push(Value::from(
                convert_layer(dir, l, docker, opts)?.to_string(),
            ));
        }
        config["rootfs"]["diff_ids"] = Value::Array(diff_ids);
        let cb = serde_json::to_vec(&config).map_err(|e| bad(e.to_string()))?;
        let (cd, cs) = put_blob(dir, &cb)?;
        m["config"]["digest"] = Value::from(cd.to_string());
        m["config"]["size"] = Value::from(cs);
        let mb = serde_json::to_vec(&m).map_err(|e| bad(e.to_string()))?;
        let (md, ms) = put_blob(dir, &mb)?;
        entry["digest"] = Value::from(md.to_string());
        entry["size"] = Value::from(ms);
    }
    let ib = serde_json::to_vec(&index).map_err(|e| bad(e.to_string()))?;
    std::fs::write(&index_path, ib).map_err(EstargzError::io("write index.json"))?;
    remove_unreferenced(dir, &index)
}

/// Removes the blobs no manifest of `index` names any more (the replaced layers, configs
/// and manifests).
fn remove_unreferenced(dir: &Path, index: &Value) -> Result<()> {
    let mut keep = std::collections::HashSet::new();
    for entry in index["manifests"].as_array().into_iter().flatten() {
        let md = digest_field(entry)?;
        let m = read_json(&blob_path(dir, &md))?;
        keep.insert(md.hex().to_string());
        keep.insert(digest_field(&m["config"])?.hex().to_string());
        for l in m["layers"].as_array().into_iter().flatten() {
            keep.insert(digest_field(l)?.hex().to_string());
        }
    }
    let blobs = dir.join("blobs/sha256");
    let rd = std::fs::read_dir(&blobs).map_err(EstargzError::io("list the layout's blobs"))?;
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !keep.contains(&name) {
            std::fs::remove_file(e.path())
                .map_err(EstargzError::io(format!("remove blob {name}")))?;
        }
    }
    Ok(())
}
