//! Blob helpers: staging bytes and streams under a transaction, and re-verifying stored blobs.

use super::{Result, StoreError};
use crate::oci::Digest;
use crate::oci::digest::HashReader;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

/// Write `bytes` as a staged blob in `staging/blobs/<hex>`; returns its digest.
pub fn stage_bytes(staging: &Path, bytes: &[u8]) -> Result<(Digest, PathBuf)> {
    let d = Digest::of(bytes);
    let dir = staging.join("blobs");
    std::fs::create_dir_all(&dir).map_err(StoreError::io("create staging blobs"))?;
    let p = dir.join(d.hex());
    let mut f = std::fs::File::create(&p).map_err(StoreError::io(format!("stage blob {d}")))?;
    f.write_all(bytes)
        .map_err(StoreError::io(format!("stage blob {d}")))?;
    f.sync_all()
        .map_err(StoreError::io(format!("fsync blob {d}")))?;
    Ok((d, p))
}

/// A reader that copies everything it reads into a file (to stage a blob while unpacking it).
pub struct TeeReader<R> {
    inner: R,
    out: Option<std::fs::File>,
}

impl<R: Read> TeeReader<R> {
    /// Tee into `out` when given.
    pub fn new(inner: R, out: Option<std::fs::File>) -> Self {
        TeeReader { inner, out }
    }
    /// The file written, flushed to disk.
    pub fn finish(self) -> Result<()> {
        if let Some(f) = self.out {
            f.sync_all().map_err(StoreError::io("fsync staged blob"))?;
        }
        Ok(())
    }
}

impl<R: Read> Read for TeeReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Some(f) = self.out.as_mut() {
            f.write_all(&buf[..n])?;
        }
        Ok(n)
    }
}

/// Hash a file: its digest and size.
pub fn hash_file(p: &Path) -> Result<(Digest, u64)> {
    crate::oci::digest::hash_file(p).map_err(StoreError::io(format!("read {}", p.display())))
}

/// Hash the decompressed content of a blob file: the diff ID and size of a layer blob.
pub fn hash_uncompressed(p: &Path) -> Result<(Digest, u64)> {
    let f = std::fs::File::open(p).map_err(StoreError::io(format!("open {}", p.display())))?;
    let (_, r) = crate::image::compress::decompress(f)
        .map_err(StoreError::io(format!("read {}", p.display())))?;
    let mut r = HashReader::new(r);
    r.drain()
        .map_err(StoreError::io(format!("decompress {}", p.display())))?;
    Ok(r.hasher.finish())
}

impl super::Store {
    /// Store a blob from a stream, verifying it against `expected` (e.g. a registry download).
    /// Atomic and under the store lock; returns the blob's path. A blob no image references
    /// is removed by `prune`.
    pub fn put_blob<R: Read>(&self, reader: R, expected: &Digest) -> Result<PathBuf> {
        let _lock = self.lock()?;
        let target = self.blob_path(expected);
        if target.is_file() {
            return Ok(target);
        }
        let tmp = self.path("tmp").join(super::atomic::unique_name("blob-"));
        let res = (|| {
            let f = std::fs::File::create(&tmp).map_err(StoreError::io("create blob"))?;
            let mut r = HashReader::new(reader);
            let mut w = std::io::BufWriter::new(f);
            std::io::copy(&mut r, &mut w)
                .map_err(StoreError::io(format!("write blob {expected}")))?;
            let f = w
                .into_inner()
                .map_err(|e| StoreError::io(format!("write blob {expected}"))(e.into_error()))?;
            f.sync_all().map_err(StoreError::io("fsync blob"))?;
            let (actual, _) = r.hasher.finish();
            if actual != *expected {
                return Err(crate::image::ImageError::DigestMismatch {
                    what: format!("blob {expected}"),
                    expected: expected.clone(),
                    actual,
                }
                .into());
            }
            super::atomic::install(&tmp, &target)?;
            Ok(target.clone())
        })();
        let _ = std::fs::remove_file(&tmp);
        res
    }
}
