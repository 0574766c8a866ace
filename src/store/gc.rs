//! Tags and garbage: `tag`, `rmi` (untag, then drop what nothing references) and `prune`.

use super::{Result, Store, StoreError};
use crate::image::names;
use crate::oci::Digest;
use crate::oci::Reference;
use std::collections::HashSet;

/// What a removal or prune did.
#[derive(Debug, Default)]
pub struct Removed {
    /// Tags removed.
    pub untagged: Vec<String>,
    /// Image IDs deleted.
    pub images: Vec<Digest>,
    /// Layers deleted (`sha256:` and their directory name, the diff ID's hex).
    pub layers: Vec<String>,
    /// Blobs deleted (`sha256:` and their file name).
    pub blobs: Vec<String>,
    /// Leftover temporary entries removed.
    pub temp: usize,
}

impl Store {
    /// Point tag `dst` at the image `src` names.
    pub fn tag(&self, src: &str, dst: &str) -> Result<String> {
        let _lock = self.lock()?;
        let rec = self.resolve_image(src)?;
        let dst = Reference::parse_tag(dst).map_err(|e| StoreError::Conflict(e.to_string()))?;
        let mut tags = self.tags()?;
        tags.insert(dst.clone(), rec.id.clone());
        self.write_tags(&tags)?;
        Ok(dst)
    }

    /// Remove a tag (or, by ID, all tags of an image); the image goes when no tag or container
    /// needs it, and then its layers and blobs that nothing else uses.
    pub fn rmi(&self, r: &str, force: bool) -> Result<Removed> {
        let _lock = self.lock()?;
        let rec = self.resolve_image(r)?;
        let mut tags = self.tags()?;
        let norm = names::lookup_key(r);
        let mut out = Removed::default();
        if tags.get(&norm) == Some(&rec.id) {
            tags.remove(&norm);
            out.untagged.push(norm);
        } else {
            let mine: Vec<String> = tags
                .iter()
                .filter(|(_, v)| **v == rec.id)
                .map(|(k, _)| k.clone())
                .collect();
            if mine.len() > 1 && !force {
                return Err(StoreError::Conflict(format!(
                    "image {} is referenced by several tags ({}); remove them by name or use --force",
                    rec.id.short(),
                    mine.join(", ")
                )));
            }
            for t in mine {
                tags.remove(&t);
                out.untagged.push(t);
            }
        }
        let used_by: Vec<String> = self
            .containers()?
            .into_iter()
            .filter(|c| c.image == rec.id)
            .map(|c| c.name)
            .collect();
        self.write_tags(&tags)?;
        if !tags.values().any(|v| *v == rec.id) {
            if used_by.is_empty() {
                self.delete_image(&rec.id)?;
                out.images.push(rec.id.clone());
                self.collect(&mut out)?;
            } else if !out.untagged.is_empty() {
                // Kept for its containers; it shows as <none>.
            }
        }
        Ok(out)
    }

    fn delete_image(&self, id: &Digest) -> Result<()> {
        let p = self.path("images").join(format!("{}.json", id.hex()));
        std::fs::remove_file(&p).map_err(StoreError::io(format!("remove {}", p.display())))?;
        super::atomic::fsync_dir(&self.path("images"))
    }

    /// Remove untagged images no container uses, then unreferenced layers and blobs, and
    /// leftovers of interrupted commands.
    pub fn prune(&self) -> Result<Removed> {
        let _lock = self.lock()?;
        let mut out = Removed::default();
        let tags = self.tags()?;
        let tagged: HashSet<&Digest> = tags.values().collect();
        let used: HashSet<Digest> = self.containers()?.into_iter().map(|c| c.image).collect();
        for img in self.images()? {
            if !tagged.contains(&img.id) && !used.contains(&img.id) {
                self.delete_image(&img.id)?;
                out.images.push(img.id);
            }
        }
        self.collect(&mut out)?;
        // Staging dirs of interrupted commands (we hold the exclusive lock: nobody uses them).
        for e in std::fs::read_dir(self.path("tmp"))
            .map_err(StoreError::io("list tmp"))?
            .flatten()
        {
            let p = e.path();
            let r = if p.is_dir() {
                std::fs::remove_dir_all(&p)
            } else {
                std::fs::remove_file(&p)
            };
            if r.is_ok() {
                out.temp += 1;
            }
        }
        for d in ["images", "blobs/sha256", "layers", "."] {
            for e in std::fs::read_dir(self.path(d))
                .map_err(StoreError::io("list store"))?
                .flatten()
            {
                if e.file_name().to_string_lossy().starts_with(".tmp-")
                    && std::fs::remove_file(e.path()).is_ok()
                {
                    out.temp += 1;
                }
            }
        }
        Ok(out)
    }

    /// Delete layers and blobs that no image references.
    fn collect(&self, out: &mut Removed) -> Result<()> {
        let mut layers: HashSet<String> = HashSet::new();
        let mut blobs: HashSet<String> = HashSet::new();
        for img in self.images()? {
            blobs.insert(img.id.hex().to_string());
            blobs.insert(img.manifest_digest.hex().to_string());
            for l in &img.layers {
                layers.insert(l.diff_id.hex().to_string());
                blobs.insert(l.digest.hex().to_string());
            }
        }
        for e in std::fs::read_dir(self.path("layers"))
            .map_err(StoreError::io("list layers"))?
            .flatten()
        {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') || layers.contains(&name) {
                continue;
            }
            // Move aside atomically, then delete: a crash leaves only a temp dir.
            let trash = self.path("tmp").join(super::atomic::unique_name("gc-"));
            std::fs::rename(e.path(), &trash)
                .map_err(StoreError::io(format!("remove layer {name}")))?;
            let _ = std::fs::remove_dir_all(&trash);
            out.layers.push(format!("sha256:{name}"));
        }
        for e in std::fs::read_dir(self.path("blobs/sha256"))
            .map_err(StoreError::io("list blobs"))?
            .flatten()
        {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') || blobs.contains(&name) {
                continue;
            }
            std::fs::remove_file(e.path())
                .map_err(StoreError::io(format!("remove blob {name}")))?;
            out.blobs.push(format!("sha256:{name}"));
        }
        super::atomic::fsync_dir(&self.path("layers"))?;
        super::atomic::fsync_dir(&self.path("blobs/sha256"))
    }
}
