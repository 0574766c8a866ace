//! The OCI image layout on disk (`oci-layout`, `index.json`, `blobs/sha256/<hex>`): atomic
//! writes, blob paths and checks, and `index.json` entries by ref name.

use crate::lockfile::{self, Mode};
use crate::oci::digest::hash_file;
use crate::oci::media::{IMAGE_NAME, REF_NAME};
use crate::oci::{self, Descriptor, Digest, ImageIndex, MediaType};
use crate::registry::error::{Error, Result};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Writes `bytes` to `path` atomically: a temporary file in the same directory with `mode`,
/// fsync, rename over `path`, fsync of the directory.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let seq = SEQ.fetch_add(1, Ordering::Relaxed);
    let tmp = dir.join(format!(".{name}.tmp-{}-{seq}", std::process::id()));
    let res = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)
            .map_err(|e| Error::io("create", &tmp, e))?;
        f.write_all(bytes)
            .map_err(|e| Error::io("write", &tmp, e))?;
        f.sync_all().map_err(|e| Error::io("fsync", &tmp, e))?;
        std::fs::rename(&tmp, path).map_err(|e| Error::io("rename into", path, e))?;
        sync_dir(dir)
    })();
    if res.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    res
}

/// fsyncs a directory so a rename in it is durable.
pub fn sync_dir(dir: &Path) -> Result<()> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io("fsync directory", dir, e))
}

/// Creates the layout skeleton if missing.
pub fn init(dir: &Path) -> Result<()> {
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).map_err(|e| Error::io("create directory", &blobs, e))?;
    let marker = dir.join("oci-layout");
    if !marker.exists() {
        // Written aside and hard-linked into place: never replaced once there, as its lock
        // guards index.json (see add_to_index).
        // Unique per call: two pulls into one layout may run in one process.
        static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let seq = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let aside = dir.join(format!(".oci-layout.{}.{seq}", std::process::id()));
        write_atomic(&aside, br#"{"imageLayoutVersion":"1.0.0"}"#, 0o644)?;
        let linked = std::fs::hard_link(&aside, &marker);
        let _ = std::fs::remove_file(&aside);
        match linked {
            Ok(()) => sync_dir(dir)?,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(Error::io("create", &marker, e)),
        }
    }
    let index = dir.join("index.json");
    if !index.exists() {
        write_index(dir, &empty_index())?;
    }
    Ok(())
}

fn empty_index() -> ImageIndex {
    let mut index = ImageIndex::default();
    index.set_media_type(Some(MediaType::ImageIndex));
    index
}

/// `dir/blobs/sha256/<hex>`.
pub fn blob_path(dir: &Path, digest: &Digest) -> PathBuf {
    dir.join("blobs/sha256").join(digest.hex())
}

/// Whether the blob is present under its final name with the right size and content.
pub fn has_valid_blob(dir: &Path, digest: &Digest, size: u64) -> Result<bool> {
    let p = blob_path(dir, digest);
    match std::fs::metadata(&p) {
        Ok(m) if m.len() == size => {
            Ok(hash_file(&p).map_err(|e| Error::io("read", &p, e))?.0 == *digest)
        }
        Ok(_) => Ok(false),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(Error::io("stat", &p, e)),
    }
}

/// Stores a small blob held in memory, after checking its digest.
pub fn write_blob(dir: &Path, digest: &Digest, bytes: &[u8]) -> Result<()> {
    verify(digest, bytes)?;
    let p = blob_path(dir, digest);
    if has_valid_blob(dir, digest, bytes.len() as u64)? {
        return Ok(());
    }
    write_atomic(&p, bytes, 0o644)
}

/// Reads a whole small blob (manifest, config), verifying its digest.
pub fn read_blob(dir: &Path, digest: &Digest) -> Result<Vec<u8>> {
    let p = blob_path(dir, digest);
    let bytes = std::fs::read(&p).map_err(|e| Error::io("read", &p, e))?;
    verify(digest, &bytes)?;
    Ok(bytes)
}

/// Checks that `bytes` hash to `digest`.
pub fn verify(digest: &Digest, bytes: &[u8]) -> Result<()> {
    let actual = Digest::of(bytes);
    if actual != *digest {
        return Err(Error::DigestMismatch {
            digest: digest.clone(),
            actual,
        });
    }
    Ok(())
}

/// Reads `index.json`.
pub fn read_index(dir: &Path) -> Result<ImageIndex> {
    let p = dir.join("index.json");
    let bytes = std::fs::read(&p).map_err(|e| Error::io("read", &p, e))?;
    serde_json::from_slice(&bytes).map_err(|e| Error::Layout {
        path: dir.to_path_buf(),
        reason: format!("index.json: {e}"),
    })
}

fn write_index(dir: &Path, index: &ImageIndex) -> Result<()> {
    let bytes = oci::canonical_json(index).map_err(|e| Error::Layout {
        path: dir.to_path_buf(),
        reason: format!("index.json: {e}"),
    })?;
    write_atomic(&dir.join("index.json"), &bytes, 0o644)
}

/// Adds `desc` to `index.json`, replacing any entry with the same ref name annotation.
pub fn add_to_index(dir: &Path, desc: Descriptor) -> Result<()> {
    // `oci-layout` is never replaced, so its lock serialises index.json updates.
    let marker = dir.join("oci-layout");
    let guard = std::fs::File::open(&marker).map_err(|e| Error::io("open", &marker, e))?;
    lockfile::lock(&guard, Mode::Exclusive).map_err(|e| Error::io("lock", &marker, e))?;
    let mut index = match read_index(dir) {
        Ok(i) => i,
        Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
            empty_index()
        }
        Err(e) => return Err(e),
    };
    let name = ref_name(&desc).map(str::to_string);
    let mut manifests = index.manifests().clone();
    if name.is_some() {
        manifests.retain(|d| ref_name(d) != name.as_deref());
    }
    manifests.push(desc);
    index.set_manifests(manifests);
    write_index(dir, &index)
}

/// The ref name annotation of a descriptor.
pub fn ref_name(d: &Descriptor) -> Option<&str> {
    oci::annotation(d, REF_NAME)
}

/// Finds the manifest to use in a layout: by ref name, full image name, or digest; with
/// `None`, the only one.
pub fn resolve(dir: &Path, selector: Option<&str>) -> Result<Descriptor> {
    let index = read_index(dir)?;
    let found: Vec<&Descriptor> = match selector {
        None => index.manifests().iter().collect(),
        Some(s) => index
            .manifests()
            .iter()
            .filter(|d| {
                d.digest().as_ref() == s
                    || ref_name(d) == Some(s)
                    || oci::annotation(d, IMAGE_NAME) == Some(s)
            })
            .collect(),
    };
    match found.as_slice() {
        [one] => Ok((*one).clone()),
        [] => Err(Error::Layout {
            path: dir.to_path_buf(),
            reason: match selector {
                Some(s) => format!("no image named {s:?} in index.json"),
                None => "index.json lists no image".to_string(),
            },
        }),
        many => Err(Error::Layout {
            path: dir.to_path_buf(),
            reason: format!(
                "{} images match{}; name one",
                many.len(),
                selector.map(|s| format!(" {s:?}")).unwrap_or_default()
            ),
        }),
    }
}
