//! The eStargz writer: a layer tar becomes gzip members (the headers of entries without
//! payload together, then one member per chunk of each regular file's payload), an optional
//! prefetch list moved first and ended by `.prefetch.landmark` (or `.no.prefetch.landmark`
//! first), the TOC member and the footer. Tar headers are copied byte for byte.

use super::footer::footer_bytes;
use super::toc::{Toc, TocEntry};
use super::{
    DEFAULT_CHUNK_SIZE, EstargzError, LANDMARK_CONTENTS, NO_PREFETCH_LANDMARK, PREFETCH_LANDMARK,
    Result, TOC_TAR_NAME,
};
use crate::oci::Digest;
use crate::oci::digest::Hasher;
use base64::Engine as _;
use std::collections::{BTreeMap, HashSet};
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};

/// Options of the writer.
#[derive(Debug, Clone)]
pub struct WriteOptions {
    /// Payload bytes per chunk.
    pub chunk_size: u64,
    /// Files to put first, in this order (clean paths, as in [`super::index::clean_name`]).
    pub prefetch: Vec<String>,
    /// gzip level (0-9).
    pub level: u32,
}

impl Default for WriteOptions {
    fn default() -> Self {
        WriteOptions {
            chunk_size: DEFAULT_CHUNK_SIZE,
            prefetch: Vec::new(),
            level: 6,
        }
    }
}

/// What was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    /// sha256 of the blob (the layer digest).
    pub digest: Digest,
    /// Bytes of the blob.
    pub size: u64,
    /// sha256 of the uncompressed tar (the diff ID).
    pub diff_id: Digest,
    /// Bytes of the uncompressed tar.
    pub diff_size: u64,
    /// sha256 of the TOC JSON (the `toc.digest` annotation).
    pub toc_digest: Digest,
}

/// One entry of the input tar: where its bytes are in the spooled copy, and its TOC entry.
struct Seg {
    header: (u64, u64),
    data: (u64, u64),
    padded_end: u64,
    toc: TocEntry,
    clean: String,
    reg: bool,
    dir: bool,
}

/// The output: whole gzip members appended to `out`, offsets counted, blob and diff hashed.
struct Out<W: Write> {
    out: W,
    count: u64,
    blob: Hasher,
    diff: Hasher,
    level: u32,
    gz: Option<flate2::write::GzEncoder<Vec<u8>>>,
}

impl<W: Write> Out<W> {
    fn open(&mut self) {
        if self.gz.is_none() {
            self.gz = Some(flate2::write::GzEncoder::new(
                Vec::new(),
                flate2::Compression::new(self.level),
            ));
        }
    }
    fn write(&mut self, b: &[u8]) -> Result<()> {
        self.open();
        self.diff.update(b);
        if let Some(gz) = &mut self.gz {
            gz.write_all(b).map_err(EstargzError::io("compress"))?;
        }
        Ok(())
    }
    fn raw(&mut self, b: &[u8]) -> Result<()> {
        self.out
            .write_all(b)
            .map_err(EstargzError::io("write eStargz blob"))?;
        self.blob.update(b);
        self.count += b.len() as u64;
        Ok(())
    }
    fn close(&mut self) -> Result<()> {
        if let Some(gz) = self.gz.take() {
            let bytes = gz.finish().map_err(EstargzError::io("compress"))?;
            self.raw(&bytes)?;
        }
        Ok(())
    }
}

fn input_err(reason: impl Into<String>) -> EstargzError {
    EstargzError::Input {
        context: "layer tar to eStargz".to_string(),
        reason: reason.into(),
    }
}

fn modtime(secs: u64) -> String {
    if secs == 0 {
        return String::new();
    }
    i64::try_from(secs)
        .ok()
        .and_then(|s| jiff::Timestamp::from_second(s).ok())
        .map(|t| t.to_string())
        .unwrap_or_default()
}

/// Reads the input tar (spooled to `spool`) into segments.
fn scan(spool: &mut File) -> Result<Vec<Seg>> {
    spool
        .seek(SeekFrom::Start(0))
        .map_err(EstargzError::io("rewind spooled tar"))?;
    let mut ar = tar::Archive::new(&*spool);
    let mut segs = Vec::new();
    let mut prev_end = 0u64;
    let entries = ar.entries().map_err(|e| input_err(e.to_string()))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| input_err(e.to_string()))?;
        let h = entry.header().clone();
        let name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let size = entry.size();
        let data_start = entry.raw_file_position();
        let data_end = data_start + size;
        let padded_end = data_end.div_ceil(512) * 512;
        let header = (prev_end, data_start);
        prev_end = padded_end;
        let clean = super::index::clean_name(&name).unwrap_or_else(|_| name.clone());
        if clean == TOC_TAR_NAME || clean == PREFETCH_LANDMARK || clean == NO_PREFETCH_LANDMARK {
            continue;
        }
        let mut xattrs = BTreeMap::new();
        if let Ok(Some(pax)) = entry.pax_extensions() {
            for ext in pax.flatten() {
                if let Ok(k) = ext.key()
                    && let Some(x) = k.strip_prefix("SCHILY.xattr.")
                {
                    xattrs.insert(
                        x.to_string(),
                        base64::engine::general_purpose::STANDARD.encode(ext.value_bytes()),
                    );
                }
            }
        }
        let u = |r: std::io::Result<u64>| r.unwrap_or(0);
        let mut t = TocEntry {
            name: name.clone(),
            mode: i64::from(h.mode().unwrap_or(0)),
            uid: u(h.uid()),
            gid: u(h.gid()),
            user_name: h.username().ok().flatten().unwrap_or("").to_string(),
            group_name: h.groupname().ok().flatten().unwrap_or("").to_string(),
            modtime: modtime(h.mtime().unwrap_or(0)),
            xattrs,
            ..Default::default()
        };
        use tar::EntryType as E;
        let et = h.entry_type();
        match et {
            E::Regular | E::Continuous => {
                t.kind = "reg".into();
                t.size = size;
            }
            E::Directory => t.kind = "dir".into(),
            E::Symlink | E::Link => {
                t.kind = if et == E::Link { "hardlink" } else { "symlink" }.into();
                t.link_name = entry
                    .link_name_bytes()
                    .map(|l| String::from_utf8_lossy(&l).into_owned())
                    .unwrap_or_default();
            }
            E::Char | E::Block => {
                t.kind = if et == E::Char { "char" } else { "block" }.into();
                t.dev_major = u(h.device_major().map(|d| u64::from(d.unwrap_or(0))));
                t.dev_minor = u(h.device_minor().map(|d| u64::from(d.unwrap_or(0))));
            }
            E::Fifo => t.kind = "fifo".into(),
            other => {
                return Err(input_err(format!(
                    "{name:?}: unsupported tar entry type {other:?}"
                )));
            }
        }
        let reg = t.kind == "reg";
        let dir = t.kind == "dir";
        segs.push(Seg {
            header,
            data: (data_start, data_end),
            padded_end,
            toc: t,
            clean,
            reg,
            dir,
        });
    }
    Ok(segs)
}

/// The order to write the segments in: prefetch files (with their directories) first.
fn order(segs: &[Seg], prefetch: &[String]) -> (Vec<usize>, Vec<usize>) {
    let mut first = Vec::new();
    let mut taken = HashSet::new();
    for p in prefetch {
        let Some(i) = segs.iter().position(|s| s.reg && s.clean == *p) else {
            continue;
        };
        // Ancestors first.
        let mut anc = Vec::new();
        let mut cur = p.as_str();
        while let Some((parent, _)) = cur.rsplit_once('/') {
            if let Some(d) = segs.iter().position(|s| s.dir && s.clean == parent) {
                anc.push(d);
            }
            cur = parent;
        }
        for d in anc.into_iter().rev().chain([i]) {
            if taken.insert(d) {
                first.push(d);
            }
        }
    }
    let rest = (0..segs.len()).filter(|i| !taken.contains(i)).collect();
    (first, rest)
}

fn landmark_header(name: &str) -> Result<Vec<u8>> {
    let mut h = tar::Header::new_ustar();
    h.set_path(name).map_err(|e| input_err(e.to_string()))?;
    h.set_size(1);
    h.set_mode(0o644);
    h.set_entry_type(tar::EntryType::Regular);
    h.set_mtime(0);
    h.set_uid(0);
    h.set_gid(0);
    h.set_cksum();
    Ok(h.as_bytes().to_vec())
}

fn copy_range<W: Write>(spool: &mut File, out: &mut Out<W>, from: u64, to: u64) -> Result<()> {
    if to <= from {
        return Ok(());
    }
    spool
        .seek(SeekFrom::Start(from))
        .map_err(EstargzError::io("seek spooled tar"))?;
    let mut left = to - from;
    let mut buf = vec![0u8; 256 * 1024];
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        spool
            .read_exact(&mut buf[..n])
            .map_err(EstargzError::io("read spooled tar"))?;
        out.write(&buf[..n])?;
        left -= n as u64;
    }
    Ok(())
}

/// Writes the layer tar read from `input` as an eStargz blob to `out`.
pub fn write_estargz<R: Read, W: Write>(
    mut input: R,
    out: W,
    opts: &WriteOptions,
) -> Result<Written> {
    let mut spool = tempfile::tempfile().map_err(EstargzError::io("create spool file"))?;
    std::io::copy(&mut input, &mut spool).map_err(EstargzError::io("read layer tar"))?;
    let segs = scan(&mut spool)?;
    let chunk_size = opts.chunk_size.max(1);
    let mut o = Out {
        out,
        count: 0,
        blob: Hasher::default(),
        diff: Hasher::default(),
        level: opts.level.min(9),
        gz: None,
    };
    let mut toc = Toc {
        version: 1,
        entries: Vec::new(),
    };
    let (first, rest) = order(&segs, &opts.prefetch);
    let landmark = |o: &mut Out<W>, toc: &mut Toc, name: &str| -> Result<()> {
        o.write(&landmark_header(name)?)?;
        o.close()?;
        let offset = o.count;
        o.write(&[LANDMARK_CONTENTS])?;
        o.write(&[0u8; 511])?;
        toc.entries.push(TocEntry {
            name: name.to_string(),
            kind: "reg".into(),
            size: 1,
            mode: 0o644,
            offset,
            digest: Digest::of(&[LANDMARK_CONTENTS]).to_string(),
            chunk_digest: Digest::of(&[LANDMARK_CONTENTS]).to_string(),
            ..Default::default()
        });
        Ok(())
    };
    if first.is_empty() {
        landmark(&mut o, &mut toc, NO_PREFETCH_LANDMARK)?;
    }
    for (n, i) in first.iter().chain(rest.iter()).enumerate() {
        if n == first.len() && !first.is_empty() {
            landmark(&mut o, &mut toc, PREFETCH_LANDMARK)?;
        }
        let s = &segs[*i];
        copy_range(&mut spool, &mut o, s.header.0, s.header.1)?;
        if s.reg && s.toc.size > 0 {
            let mut whole = Hasher::default();
            let mut written = 0u64;
            let mut ent = s.toc.clone();
            let first_idx = toc.entries.len();
            while written < s.toc.size {
                o.close()?;
                let remain = s.toc.size - written;
                let this = remain.min(chunk_size);
                if remain >= chunk_size {
                    ent.chunk_size = chunk_size;
                }
                ent.offset = o.count;
                ent.chunk_offset = written;
                spool
                    .seek(SeekFrom::Start(s.data.0 + written))
                    .map_err(EstargzError::io("seek spooled tar"))?;
                let mut buf = vec![0u8; this as usize];
                spool
                    .read_exact(&mut buf)
                    .map_err(EstargzError::io("read spooled tar"))?;
                whole.update(&buf);
                o.write(&buf)?;
                ent.chunk_digest = Digest::of(&buf).to_string();
                toc.entries.push(ent);
                written += this;
                ent = TocEntry {
                    name: s.toc.name.clone(),
                    kind: "chunk".into(),
                    ..Default::default()
                };
            }
            toc.entries[first_idx].digest = whole.finish().0.to_string();
            copy_range(&mut spool, &mut o, s.data.1, s.padded_end)?;
        } else {
            let mut t = s.toc.clone();
            if s.reg {
                t.digest = Digest::of(b"").to_string();
            }
            toc.entries.push(t);
            copy_range(&mut spool, &mut o, s.data.0, s.padded_end)?;
        }
    }
    o.close()?;
    // The TOC member, then the footer.
    let toc_offset = o.count;
    let json = toc.to_json()?;
    let toc_digest = Digest::of(&json);
    let mut h = tar::Header::new_ustar();
    h.set_path(TOC_TAR_NAME)
        .map_err(|e| input_err(e.to_string()))?;
    h.set_size(json.len() as u64);
    h.set_mode(0o644);
    h.set_entry_type(tar::EntryType::Regular);
    h.set_mtime(0);
    h.set_uid(0);
    h.set_gid(0);
    h.set_cksum();
    o.write(h.as_bytes())?;
    o.write(&json)?;
    let pad = (512 - json.len() % 512) % 512;
    o.write(&vec![0u8; pad + 1024])?;
    o.close()?;
    o.raw(&footer_bytes(toc_offset))?;
    o.out
        .flush()
        .map_err(EstargzError::io("write eStargz blob"))?;
    let (digest, size) = o.blob.finish();
    let (diff_id, diff_size) = o.diff.finish();
    Ok(Written {
        digest,
        size,
        diff_id,
        diff_size,
        toc_digest,
    })
}
