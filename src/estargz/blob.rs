//! Opening an eStargz blob through any byte-range reader (a local file, a registry's Range
//! requests): footer, then the TOC verified and validated; and reading whole files of a blob
//! held locally, chunk by verified chunk.

use super::footer::{FOOTER_SIZE, parse_footer};
use super::index::{Index, Whiteouts};
use super::toc::{MAX_TOC_JSON, decode_toc};
use super::{EstargzError, Result};
use crate::oci::Digest;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

/// The verified TOC of a blob, and the raw bytes it was read from (TOC member + footer).
#[derive(Debug, Clone)]
pub struct OpenedToc {
    /// The validated tree.
    pub index: Index,
    /// sha256 of the TOC JSON.
    pub toc_digest: Digest,
    /// `blob[toc_offset..]`: the TOC member and the footer, as fetched.
    pub tail: Vec<u8>,
}

/// Reads footer and TOC of a blob of `blob_size` bytes through `read_at(offset, len)`,
/// verifying the TOC against `expected` (the layer's toc.digest annotation).
pub fn open_toc(
    layer: &str,
    blob_size: u64,
    expected: Option<&Digest>,
    whiteouts: Whiteouts,
    read_at: &mut dyn FnMut(u64, u64) -> Result<Vec<u8>>,
) -> Result<OpenedToc> {
    let fs = FOOTER_SIZE as u64;
    if blob_size < fs {
        return Err(EstargzError::Footer {
            layer: layer.to_string(),
            reason: format!("blob of {blob_size} bytes is smaller than a footer"),
        });
    }
    let footer = read_at(blob_size - fs, fs)?;
    let toc_offset = parse_footer(layer, &footer)?;
    if toc_offset >= blob_size - fs {
        return Err(EstargzError::Footer {
            layer: layer.to_string(),
            reason: format!("TOC offset {toc_offset} lies outside the blob of {blob_size} bytes"),
        });
    }
    let member_len = blob_size - fs - toc_offset;
    if member_len > MAX_TOC_JSON {
        return Err(EstargzError::Toc {
            layer: layer.to_string(),
            reason: format!("TOC member of {member_len} bytes is too large"),
        });
    }
    let mut tail = read_at(toc_offset, member_len)?;
    let (toc, toc_digest) = decode_toc(layer, &tail, expected)?;
    let index = Index::new(layer, &toc, toc_offset, whiteouts)?;
    tail.extend_from_slice(&footer);
    Ok(OpenedToc {
        index,
        toc_digest,
        tail,
    })
}

/// A complete eStargz blob in a local file.
pub struct LocalBlob {
    file: File,
    /// Its verified TOC.
    pub toc: OpenedToc,
}

impl LocalBlob {
    /// Opens the blob at `path`.
    pub fn open(
        layer: &str,
        path: &Path,
        expected: Option<&Digest>,
        whiteouts: Whiteouts,
    ) -> Result<LocalBlob> {
        let file =
            File::open(path).map_err(EstargzError::io(format!("open {}", path.display())))?;
        let size = file
            .metadata()
            .map_err(EstargzError::io(format!("stat {}", path.display())))?
            .len();
        let mut read = |off: u64, len: u64| read_exact_at(&file, off, len);
        let toc = open_toc(layer, size, expected, whiteouts, &mut read)?;
        Ok(LocalBlob { file, toc })
    }

    /// The whole content of a regular file node, every chunk verified.
    pub fn read_file(&self, node: usize) -> Result<Vec<u8>> {
        let idx = &self.toc.index;
        let mut out = Vec::with_capacity(idx.nodes[node].size.min(64 << 20) as usize);
        for c in idx.file_chunks(node) {
            let raw = read_exact_at(&self.file, c.offset, c.fetch_end() - c.offset)?;
            out.extend_from_slice(&idx.decode_chunk(c, &raw)?);
        }
        Ok(out)
    }
}

fn read_exact_at(f: &File, off: u64, len: u64) -> Result<Vec<u8>> {
    let mut buf = vec![0u8; len as usize];
    f.read_exact_at(&mut buf, off)
        .map_err(EstargzError::io(format!("read {len} bytes at {off}")))?;
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::super::index::NodeKind;
    use super::super::writer::{WriteOptions, write_estargz};
    use super::*;
    use std::io::Read;

    type TestResult = std::result::Result<(), Box<dyn std::error::Error>>;

    pub(crate) fn sample_tar() -> std::io::Result<Vec<u8>> {
        let mut b = tar::Builder::new(Vec::new());
        let mut add = |name: &str, kind: tar::EntryType, data: &[u8], link: Option<&str>| {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(kind);
            h.set_size(data.len() as u64);
            h.set_mode(if kind == tar::EntryType::Directory {
                0o755
            } else {
                0o640
            });
            h.set_uid(1000);
            h.set_gid(100);
            h.set_mtime(1_700_000_000);
            if let Some(l) = link {
                b.append_link(&mut h, name, l)
            } else {
                b.append_data(&mut h, name, data)
            }
        };
        add("etc/", tar::EntryType::Directory, b"", None)?;
        add("etc/hostname", tar::EntryType::Regular, b"box\n", None)?;
        let big: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
        add("usr/lib/big.bin", tar::EntryType::Regular, &big, None)?;
        add("empty", tar::EntryType::Regular, b"", None)?;
        add(
            "bin/sh",
            tar::EntryType::Symlink,
            b"",
            Some("/usr/bin/busybox"),
        )?;
        add(
            "etc/hostname.hard",
            tar::EntryType::Link,
            b"",
            Some("etc/hostname"),
        )?;
        add("etc/.wh.gone", tar::EntryType::Regular, b"", None)?;
        b.into_inner()
    }

    #[test]
    fn written_blob_reads_back_and_is_an_ordinary_tar_gz() -> TestResult {
        let tar_bytes = sample_tar()?;
        let mut blob = Vec::new();
        let opts = WriteOptions {
            chunk_size: 65536,
            prefetch: vec!["etc/hostname".to_string()],
            level: 6,
        };
        let w = write_estargz(&tar_bytes[..], &mut blob, &opts)?;
        assert_eq!(w.digest, Digest::of(&blob));
        // gunzips to one tar whose diff ID the writer reported
        let mut plain = Vec::new();
        flate2::read::MultiGzDecoder::new(&blob[..]).read_to_end(&mut plain)?;
        assert_eq!(w.diff_id, Digest::of(&plain));
        assert_eq!(w.diff_size, plain.len() as u64);
        let mut names = Vec::new();
        let mut ar = tar::Archive::new(&plain[..]);
        for e in ar.entries()? {
            let mut e = e?;
            assert!(e.header().uid().is_ok() && e.header().gid().is_ok());
            names.push(String::from_utf8_lossy(&e.path_bytes()).into_owned());
            std::io::copy(&mut e, &mut std::io::sink())?;
        }
        assert_eq!(names[0], "etc/");
        assert_eq!(names[1], "etc/hostname");
        assert_eq!(names[2], ".prefetch.landmark");
        assert_eq!(names.last().map(String::as_str), Some("stargz.index.json"));

        let dir = tempfile::tempdir()?;
        let p = dir.path().join("blob");
        std::fs::write(&p, &blob)?;
        let lb = LocalBlob::open("L", &p, Some(&w.toc_digest), Whiteouts::Raw)?;
        let idx = &lb.toc.index;
        assert!(idx.prefetch_end.is_some());
        let big = idx.lookup("usr/lib/big.bin").ok_or("big")?;
        assert_eq!(idx.file_chunks(big).len(), 5);
        let data = lb.read_file(big)?;
        let want: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
        assert_eq!(data, want);
        let h = idx.lookup("etc/hostname").ok_or("hostname")?;
        assert_eq!(lb.read_file(h)?, b"box\n");
        assert_eq!(idx.lookup("etc/hostname.hard"), Some(h));
        assert_eq!(idx.nodes[h].uid, 1000);
        assert_eq!(idx.nodes[h].mode, 0o640);
        assert_eq!(idx.nodes[h].mtime, 1_700_000_000);
        let sh = idx.lookup("bin/sh").ok_or("sh")?;
        assert_eq!(
            idx.nodes[sh].kind,
            NodeKind::Symlink("/usr/bin/busybox".into())
        );
        assert!(idx.lookup(".prefetch.landmark").is_none());

        // A wrong annotation is refused; a flipped payload byte fails its chunk digest.
        let e = LocalBlob::open("L", &p, Some(&Digest::of(b"no")), Whiteouts::Raw);
        assert!(matches!(e, Err(EstargzError::TocDigest { .. })));
        let c = &idx.file_chunks(big)[2];
        let mut raw = blob[c.offset as usize..c.end as usize].to_vec();
        let mut plainchunk = Vec::new();
        flate2::read::GzDecoder::new(&raw[..])
            .read_to_end(&mut plainchunk)
            .map_err(|e| format!("chunk gunzips: {e}"))?;
        // Re-compress altered data: a valid gzip member with the wrong content.
        plainchunk[10] ^= 1;
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, &plainchunk)?;
        raw = gz.finish()?;
        let e = idx.decode_chunk(c, &raw).err().ok_or("corrupt chunk")?;
        assert!(matches!(e, EstargzError::ChunkDigest { .. }), "{e}");
        Ok(())
    }
}
