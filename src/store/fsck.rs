//! `fsck`: re-verify every blob digest and layer diff ID, and check that every record
//! references what exists. Unreferenced data and leftovers are notes, not errors.

use super::blobs::{hash_file, hash_uncompressed};
use super::{Result, Store};
use crate::oci::Digest;
use std::collections::HashSet;

/// The findings of a check.
#[derive(Debug, Default, serde::Serialize)]
pub struct FsckReport {
    /// Damage: the store is not clean.
    pub errors: Vec<String>,
    /// Harmless findings (unreferenced data, leftovers of interrupted commands).
    pub notes: Vec<String>,
    /// Blobs verified.
    pub blobs: usize,
    /// Layers checked.
    pub layers: usize,
    /// Images checked.
    pub images: usize,
}

impl FsckReport {
    /// True when no error was found.
    pub fn clean(&self) -> bool {
        self.errors.is_empty()
    }
}

impl Store {
    /// Check the whole store (under the shared lock).
    pub fn fsck(&self) -> Result<FsckReport> {
        let _lock = self.lock_shared()?;
        let mut r = FsckReport::default();
        let mut verified_layer_blobs: HashSet<Digest> = HashSet::new();
        // Blobs.
        for e in std::fs::read_dir(self.path("blobs/sha256"))
            .map_err(super::StoreError::io("list blobs"))?
            .flatten()
        {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with(".tmp-") {
                r.notes
                    .push(format!("leftover temporary file blobs/sha256/{name}"));
                continue;
            }
            let Ok(d) = Digest::from_hex(&name) else {
                r.errors
                    .push(format!("blobs/sha256/{name}: not a digest name"));
                continue;
            };
            match hash_file(&e.path()) {
                Ok((actual, _)) if actual == d => r.blobs += 1,
                Ok((actual, _)) => r
                    .errors
                    .push(format!("blob {d}: content hashes to {actual}")),
                Err(err) => r.errors.push(format!("blob {d}: {err}")),
            }
        }
        // Layers.
        let mut layer_ids = HashSet::new();
        for e in std::fs::read_dir(self.path("layers"))
            .map_err(super::StoreError::io("list layers"))?
            .flatten()
        {
            let name = e.file_name().to_string_lossy().into_owned();
            let p = e.path();
            if Digest::from_hex(&name).is_err() {
                r.notes.push(format!("layers/{name}: unexpected entry"));
                continue;
            }
            if !p.join("layer.json").is_file() || !p.join("diff").is_dir() {
                r.errors.push(format!(
                    "layer sha256:{name}: incomplete (no layer.json or diff/)"
                ));
                continue;
            }
            layer_ids.insert(name);
            r.layers += 1;
        }
        // Images.
        let mut referenced_layers = HashSet::new();
        let mut referenced_blobs = HashSet::new();
        let images = match self.images() {
            Ok(i) => i,
            Err(e) => {
                r.errors.push(e.to_string());
                Vec::new()
            }
        };
        for img in &images {
            r.images += 1;
            let short = img.id.short();
            referenced_blobs.insert(img.id.hex().to_string());
            if !self.has_blob(&img.id) {
                r.errors.push(format!("image {short}: config blob missing"));
            }
            referenced_blobs.insert(img.manifest_digest.hex().to_string());
            if !self.has_blob(&img.manifest_digest) {
                r.errors.push(format!(
                    "image {short}: manifest blob {} missing",
                    img.manifest_digest
                ));
            }
            for l in &img.layers {
                let hex = l.diff_id.hex().to_string();
                referenced_layers.insert(hex.clone());
                referenced_blobs.insert(l.digest.hex().to_string());
                if !layer_ids.contains(&hex) && self.is_lazy(&l.diff_id) {
                    // A partial layer: its record and TOC must still verify.
                    if let Err(e) = self
                        .lazy_record(&l.diff_id)
                        .and_then(|rec| self.lazy_toc(&rec).map(|_| ()))
                    {
                        r.errors.push(format!("lazy layer {}: {e}", l.diff_id));
                    }
                    continue;
                }
                if !layer_ids.contains(&hex) {
                    r.errors.push(format!(
                        "image {short}: layer {} is not unpacked in the store",
                        l.diff_id
                    ));
                }
                if !self.has_blob(&l.digest) {
                    r.errors
                        .push(format!("image {short}: layer blob {} missing", l.digest));
                    continue;
                }
                if verified_layer_blobs.insert(l.digest.clone()) {
                    match hash_uncompressed(&self.blob_path(&l.digest)) {
                        Ok((actual, _)) if actual == l.diff_id => {}
                        Ok((actual, _)) => r.errors.push(format!(
                            "layer {}: blob {} unpacks to {actual}",
                            l.diff_id, l.digest
                        )),
                        Err(e) => r.errors.push(format!("layer {}: {e}", l.diff_id)),
                    }
                }
            }
        }
        // Tags and containers.
        let ids: HashSet<&Digest> = images.iter().map(|i| &i.id).collect();
        match self.tags() {
            Ok(tags) => {
                for (t, id) in tags {
                    if !ids.contains(&id) {
                        r.errors.push(format!("tag {t} names missing image {id}"));
                    }
                }
            }
            Err(e) => r.errors.push(e.to_string()),
        }
        match self.containers() {
            Ok(cs) => {
                for c in cs {
                    if !ids.contains(&c.image) {
                        r.errors.push(format!(
                            "container {} uses missing image {}",
                            c.name, c.image
                        ));
                    }
                    let d = self.container_dir(&c);
                    if !d.join("upper").is_dir() || !d.join("work").is_dir() {
                        r.errors
                            .push(format!("container {}: upper or work dir missing", c.name));
                    }
                }
            }
            Err(e) => r.errors.push(e.to_string()),
        }
        for l in layer_ids.difference(&referenced_layers) {
            r.notes.push(format!(
                "layer sha256:{l} is not used by any image (prune removes it)"
            ));
        }
        if let Ok(rd) = std::fs::read_dir(self.path("blobs/sha256")) {
            for e in rd.flatten() {
                let n = e.file_name().to_string_lossy().into_owned();
                if !n.starts_with('.') && !referenced_blobs.contains(&n) {
                    r.notes.push(format!(
                        "blob sha256:{n} is not used by any image (prune removes it)"
                    ));
                }
            }
        }
        if let Ok(rd) = std::fs::read_dir(self.path("tmp")) {
            let n = rd.count();
            if n > 0 {
                r.notes.push(format!(
                    "{n} leftover temporary entries in tmp/ (prune removes them)"
                ));
            }
        }
        Ok(r)
    }
}
