//! A validated TOC: a tree of nodes (files, directories, links, devices) with their chunks in
//! blob order, built only from entries that pass every check (safe names, known types, sane
//! sizes, payload offsets strictly increasing inside the blob, complete chunk runs); and the
//! decoding of one chunk, verified against its chunkDigest.

use super::toc::{Toc, TocEntry};
use super::{EstargzError, NO_PREFETCH_LANDMARK, PREFETCH_LANDMARK, Result, TOC_TAR_NAME};
use crate::oci::Digest;
use base64::Engine as _;
use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::ops::Range;

/// Largest file accepted (1 TiB).
pub const MAX_FILE_SIZE: u64 = 1 << 40;
/// Largest chunk accepted (chunks are verified in memory).
pub const MAX_CHUNK_SIZE: u64 = 64 << 20;
/// Most entries accepted in one TOC.
pub const MAX_ENTRIES: usize = 4_000_000;

/// What a node is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeKind {
    /// A directory: children by name.
    Dir(BTreeMap<String, usize>),
    /// A regular file: its chunks (indices into [`Index::chunks`]).
    Reg(Range<usize>),
    /// A symbolic link to the target.
    Symlink(String),
    /// A character device.
    Char(u32, u32),
    /// A block device.
    Block(u32, u32),
    /// A named pipe.
    Fifo,
}

/// One inode of the layer's tree (a hard-linked file is one node under several names).
#[derive(Debug, Clone)]
pub struct Node {
    /// The clean path of its first name ("" for the root).
    pub path: String,
    /// What it is.
    pub kind: NodeKind,
    /// Size in bytes (files; symlinks: target length).
    pub size: u64,
    /// Permission bits with setuid/setgid/sticky.
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Modification time, seconds since the epoch.
    pub mtime: i64,
    /// Extended attributes.
    pub xattrs: BTreeMap<String, Vec<u8>>,
    /// Names it has (hard links).
    pub nlink: u32,
    /// sha256 of the whole file, as the TOC says (regular files).
    pub digest: String,
}

/// One chunk of a regular file: where its gzip member is in the blob and what it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    /// The node it belongs to.
    pub node: usize,
    /// Blob offset of its gzip member.
    pub offset: u64,
    /// Blob offset where the next payload member (or the TOC) starts.
    pub end: u64,
    /// Offset in the file.
    pub file_offset: u64,
    /// Bytes of the file it holds.
    pub size: u64,
    /// Bytes to skip in the decompressed member before the chunk's data.
    pub inner_offset: u64,
    /// sha256 of the chunk's data.
    pub digest: Digest,
}

impl Chunk {
    /// Where to stop reading the blob to decode this chunk: its member's end, or sooner, as
    /// deflate never grows data by more than a few bytes per 64 KiB block (a member followed
    /// by many header-only entries must not make a read fetch them all).
    pub fn fetch_end(&self) -> u64 {
        self.end.min(
            self.offset
                .saturating_add(self.size + self.size / 64 + 65536),
        )
    }
}

/// How whiteouts of the layer tar are shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Whiteouts<'a> {
    /// As in the tar (`.wh.NAME` files).
    Raw,
    /// Overlay format: `.wh.NAME` as a char device 0/0 named NAME, `.wh..wh..opq` as this
    /// opaque xattr (value `y`) on its directory.
    Overlay(&'a str),
}

/// A validated TOC of one layer.
#[derive(Debug, Clone)]
pub struct Index {
    /// The layer's name in errors (its digest).
    pub layer: String,
    /// Nodes; 0 is the root directory.
    pub nodes: Vec<Node>,
    /// Chunks of all files, in blob order.
    pub chunks: Vec<Chunk>,
    /// Blob offset of the TOC.
    pub toc_offset: u64,
    /// Blob offset up to which the prefetch files lie (the `.prefetch.landmark` member), if
    /// the layer has a prefetch list.
    pub prefetch_end: Option<u64>,
}

/// A TOC name made safe: `./` prefixes and a trailing `/` removed; `..`, `.`, empty
/// components, absolute names and NUL refused.
pub fn clean_name(name: &str) -> std::result::Result<String, String> {
    let mut n = name;
    while let Some(r) = n.strip_prefix("./") {
        n = r;
    }
    if n == "." {
        return Ok(String::new());
    }
    if n.starts_with('/') {
        return Err("absolute name".to_string());
    }
    if n.contains('\0') {
        return Err("NUL in name".to_string());
    }
    let n = n.strip_suffix('/').unwrap_or(n);
    if n.is_empty() {
        return Ok(String::new());
    }
    for c in n.split('/') {
        match c {
            ".." => return Err("\"..\" in name".to_string()),
            "." | "" => return Err("empty or \".\" component in name".to_string()),
            _ => {}
        }
    }
    Ok(n.to_string())
}

fn parse_mtime(s: &str) -> i64 {
    s.parse::<jiff::Timestamp>()
        .map(|t| t.as_second())
        .unwrap_or(0)
}

fn dev(v: u64) -> std::result::Result<u32, String> {
    u32::try_from(v).map_err(|_| format!("device number {v} out of range"))
}

impl Index {
    /// Validates `toc` (of a blob whose TOC starts at `toc_offset`) into a tree.
    pub fn new(layer: &str, toc: &Toc, toc_offset: u64, whiteouts: Whiteouts) -> Result<Index> {
        if toc.entries.len() > MAX_ENTRIES {
            return Err(EstargzError::Toc {
                layer: layer.to_string(),
                reason: format!("{} entries (at most {MAX_ENTRIES})", toc.entries.len()),
            });
        }
        let mut b = Builder {
            layer,
            whiteouts,
            idx: Index {
                layer: layer.to_string(),
                nodes: vec![dir_node(String::new())],
                chunks: Vec::new(),
                toc_offset,
                prefetch_end: None,
            },
            by_path: HashMap::from([(String::new(), 0)]),
            last_offset: 0,
            open_file: None,
        };
        for e in &toc.entries {
            b.entry(e)?;
        }
        b.close_file()?;
        let mut idx = b.idx;
        // Chunk members end where the next payload (or the TOC) starts.
        let n = idx.chunks.len();
        for i in 0..n {
            idx.chunks[i].end = idx.chunks.get(i + 1).map_or(toc_offset, |c| c.offset);
        }
        Ok(idx)
    }

    /// The node at a clean path.
    pub fn lookup(&self, path: &str) -> Option<usize> {
        let mut cur = 0;
        if path.is_empty() {
            return Some(0);
        }
        for c in path.split('/') {
            let NodeKind::Dir(children) = &self.nodes[cur].kind else {
                return None;
            };
            cur = *children.get(c)?;
        }
        Some(cur)
    }

    /// The chunks of a regular file node.
    pub fn file_chunks(&self, node: usize) -> &[Chunk] {
        match &self.nodes[node].kind {
            NodeKind::Reg(r) => &self.chunks[r.clone()],
            _ => &[],
        }
    }

    /// Decodes a chunk from its compressed bytes (`blob[chunk.offset..chunk.end]`, or a
    /// prefix of it that holds the chunk) and verifies it against its chunkDigest.
    pub fn decode_chunk(&self, chunk: &Chunk, compressed: &[u8]) -> Result<Vec<u8>> {
        let name = self.nodes[chunk.node].path.clone();
        let bad = |reason: String| EstargzError::Chunk {
            layer: self.layer.clone(),
            name: name.clone(),
            offset: chunk.offset,
            reason,
        };
        let mut gz = flate2::read::MultiGzDecoder::new(compressed);
        if chunk.inner_offset > 0 {
            std::io::copy(
                &mut (&mut gz).take(chunk.inner_offset),
                &mut std::io::sink(),
            )
            .map_err(|e| bad(e.to_string()))?;
        }
        let mut out = Vec::with_capacity(chunk.size as usize);
        gz.take(chunk.size)
            .read_to_end(&mut out)
            .map_err(|e| bad(format!("gunzip: {e}")))?;
        if out.len() as u64 != chunk.size {
            return Err(bad(format!(
                "member holds {} bytes, the TOC says {}",
                out.len(),
                chunk.size
            )));
        }
        let actual = Digest::of(&out);
        if actual != chunk.digest {
            return Err(EstargzError::ChunkDigest {
                layer: self.layer.clone(),
                name,
                offset: chunk.offset,
                expected: chunk.digest.to_string(),
                actual: actual.to_string(),
            });
        }
        Ok(out)
    }
}

fn dir_node(path: String) -> Node {
    Node {
        path,
        kind: NodeKind::Dir(BTreeMap::new()),
        size: 0,
        mode: 0o755,
        uid: 0,
        gid: 0,
        mtime: 0,
        xattrs: BTreeMap::new(),
        nlink: 2,
        digest: String::new(),
    }
}

struct Builder<'a> {
    layer: &'a str,
    whiteouts: Whiteouts<'a>,
    idx: Index,
    by_path: HashMap<String, usize>,
    last_offset: u64,
    /// The regular file whose chunks are being read: (node, first chunk, next file offset).
    open_file: Option<(usize, usize, u64)>,
}

impl Builder<'_> {
    fn refuse(&self, name: &str, reason: impl Into<String>) -> EstargzError {
        EstargzError::Entry {
            layer: self.layer.to_string(),
            name: name.to_string(),
            reason: reason.into(),
        }
    }

    /// Ends the chunk run of the open file: its chunks must cover it exactly.
    fn close_file(&mut self) -> Result<()> {
        if let Some((node, first, next)) = self.open_file.take() {
            let n = &self.idx.nodes[node];
            if next != n.size {
                return Err(self.refuse(
                    &n.path,
                    format!("chunks cover {next} of its {} bytes", n.size),
                ));
            }
            let end = self.idx.chunks.len();
            self.idx.nodes[node].kind = NodeKind::Reg(first..end);
        }
        Ok(())
    }

    /// Records a payload chunk of the open file (`e` is its reg or chunk entry).
    fn chunk(&mut self, e: &TocEntry, node: usize) -> Result<()> {
        let Some((_, _, next)) = self.open_file else {
            return Err(self.refuse(&e.name, "chunk without a file before it"));
        };
        let file_size = self.idx.nodes[node].size;
        if e.chunk_offset != next {
            return Err(self.refuse(
                &e.name,
                format!(
                    "chunk at file offset {} where {next} was expected",
                    e.chunk_offset
                ),
            ));
        }
        let size = if e.chunk_size == 0 {
            file_size.saturating_sub(e.chunk_offset)
        } else {
            e.chunk_size
        };
        if size == 0 || size > MAX_CHUNK_SIZE {
            return Err(self.refuse(&e.name, format!("absurd chunk size {size}")));
        }
        if e.chunk_offset + size > file_size {
            return Err(self.refuse(&e.name, "chunk goes past the end of the file"));
        }
        if e.offset <= self.last_offset || e.offset >= self.idx.toc_offset {
            return Err(self.refuse(
                &e.name,
                format!(
                    "payload offset {} overlaps another or lies outside the blob (previous {}, TOC at {})",
                    e.offset, self.last_offset, self.idx.toc_offset
                ),
            ));
        }
        if e.inner_offset > MAX_CHUNK_SIZE {
            return Err(self.refuse(&e.name, "absurd innerOffset"));
        }
        let digest = Digest::parse(&e.chunk_digest).map_err(|_| {
            self.refuse(
                &e.name,
                format!("chunkDigest {:?} unusable", e.chunk_digest),
            )
        })?;
        self.last_offset = e.offset;
        self.idx.chunks.push(Chunk {
            node,
            offset: e.offset,
            end: 0,
            file_offset: e.chunk_offset,
            size,
            inner_offset: e.inner_offset,
            digest,
        });
        if let Some(f) = &mut self.open_file {
            f.2 = next + size;
        }
        Ok(())
    }

    fn entry(&mut self, e: &TocEntry) -> Result<()> {
        let name = clean_name(&e.name).map_err(|r| self.refuse(&e.name, r))?;
        if e.kind == "chunk" {
            let node = match self.open_file {
                Some((node, _, _)) if self.idx.nodes[node].path == name => node,
                _ => return Err(self.refuse(&e.name, "chunk entry does not follow its file")),
            };
            return self.chunk(e, node);
        }
        self.close_file()?;
        if name == TOC_TAR_NAME {
            return Err(self.refuse(&e.name, "the TOC's own name as an entry"));
        }
        if name == PREFETCH_LANDMARK || name == NO_PREFETCH_LANDMARK {
            if name == PREFETCH_LANDMARK && e.offset > 0 {
                if e.offset <= self.last_offset || e.offset >= self.idx.toc_offset {
                    return Err(self.refuse(&e.name, "landmark offset out of order"));
                }
                self.last_offset = e.offset;
                self.idx.prefetch_end = Some(e.offset);
            } else if e.offset > 0 {
                if e.offset <= self.last_offset || e.offset >= self.idx.toc_offset {
                    return Err(self.refuse(&e.name, "landmark offset out of order"));
                }
                self.last_offset = e.offset;
            }
            return Ok(());
        }
        if name.is_empty() {
            if e.kind != "dir" {
                return Err(self.refuse(&e.name, "the root is not a directory"));
            }
            let n = &mut self.idx.nodes[0];
            apply_attrs(n, e).map_err(|r| self.refuse(&e.name, r))?;
            return Ok(());
        }
        if e.size > MAX_FILE_SIZE {
            return Err(self.refuse(&e.name, format!("absurd size {}", e.size)));
        }
        let (parent_path, base) = match name.rsplit_once('/') {
            Some((p, b)) => (p.to_string(), b.to_string()),
            None => (String::new(), name.clone()),
        };
        let parent = self.ensure_dir(&parent_path, &e.name)?;
        // Whiteouts in overlay format.
        let (base, kind_override, opaque) = match self.whiteouts {
            Whiteouts::Overlay(x) if base == ".wh..wh..opq" => (base, None, Some(x)),
            Whiteouts::Overlay(_) if base.starts_with(".wh.") && base.len() > 4 => {
                (base[4..].to_string(), Some(NodeKind::Char(0, 0)), None)
            }
            _ => (base, None, None),
        };
        if let Some(x) = opaque {
            self.idx.nodes[parent]
                .xattrs
                .insert(x.to_string(), b"y".to_vec());
            return Ok(());
        }
        let full = if parent_path.is_empty() {
            base.clone()
        } else {
            format!("{parent_path}/{base}")
        };
        if e.kind == "hardlink" {
            let target = clean_name(&e.link_name).map_err(|r| self.refuse(&e.name, r))?;
            let Some(&t) = self.by_path.get(&target) else {
                return Err(self.refuse(&e.name, format!("hard link to unknown {target:?}")));
            };
            if matches!(self.idx.nodes[t].kind, NodeKind::Dir(_)) {
                return Err(self.refuse(&e.name, "hard link to a directory"));
            }
            self.link(parent, &base, &full, t, &e.name)?;
            self.idx.nodes[t].nlink += 1;
            return Ok(());
        }
        let kind = match (kind_override, e.kind.as_str()) {
            (Some(k), _) => k,
            (None, "dir") => NodeKind::Dir(BTreeMap::new()),
            (None, "reg") => NodeKind::Reg(0..0),
            (None, "symlink") => {
                if e.link_name.is_empty() || e.link_name.contains('\0') {
                    return Err(self.refuse(&e.name, "symlink without a usable target"));
                }
                NodeKind::Symlink(e.link_name.clone())
            }
            (None, "char") => NodeKind::Char(
                dev(e.dev_major).map_err(|r| self.refuse(&e.name, r))?,
                dev(e.dev_minor).map_err(|r| self.refuse(&e.name, r))?,
            ),
            (None, "block") => NodeKind::Block(
                dev(e.dev_major).map_err(|r| self.refuse(&e.name, r))?,
                dev(e.dev_minor).map_err(|r| self.refuse(&e.name, r))?,
            ),
            (None, "fifo") => NodeKind::Fifo,
            (None, t) => return Err(self.refuse(&e.name, format!("unknown type {t:?}"))),
        };
        // A directory named twice keeps the later attributes.
        if let Some(&existing) = self.by_path.get(&full) {
            if matches!(kind, NodeKind::Dir(_))
                && matches!(self.idx.nodes[existing].kind, NodeKind::Dir(_))
            {
                let n = &mut self.idx.nodes[existing];
                apply_attrs(n, e).map_err(|r| self.refuse(&e.name, r))?;
                return Ok(());
            }
            return Err(self.refuse(&e.name, "duplicate name"));
        }
        let is_reg = matches!(kind, NodeKind::Reg(_));
        let is_whiteout = matches!(kind, NodeKind::Char(0, 0)) && e.kind != "char";
        let mut node = dir_node(full.clone());
        node.kind = kind;
        node.nlink = if matches!(node.kind, NodeKind::Dir(_)) {
            2
        } else {
            1
        };
        apply_attrs(&mut node, e).map_err(|r| self.refuse(&e.name, r))?;
        if is_whiteout {
            node.mode = 0;
            node.size = 0;
            node.xattrs.clear();
        }
        if let NodeKind::Symlink(t) = &node.kind {
            node.size = t.len() as u64;
        }
        let id = self.idx.nodes.len();
        self.idx.nodes.push(node);
        self.link(parent, &base, &full, id, &e.name)?;
        if matches!(self.idx.nodes[id].kind, NodeKind::Dir(_)) {
            self.idx.nodes[parent].nlink += 1;
        }
        if is_reg && !is_whiteout {
            self.idx.nodes[id].size = e.size;
            self.idx.nodes[id].digest = e.digest.clone();
            let first = self.idx.chunks.len();
            self.open_file = Some((id, first, 0));
            if e.size > 0 {
                self.chunk(e, id)?;
            }
        }
        Ok(())
    }

    fn link(&mut self, parent: usize, base: &str, full: &str, id: usize, raw: &str) -> Result<()> {
        if self.by_path.contains_key(full) {
            return Err(self.refuse(raw, "duplicate name"));
        }
        let NodeKind::Dir(children) = &mut self.idx.nodes[parent].kind else {
            return Err(self.refuse(raw, "parent is not a directory"));
        };
        children.insert(base.to_string(), id);
        self.by_path.insert(full.to_string(), id);
        Ok(())
    }

    /// The directory at `path`, created (mode 0755) with its parents when the TOC did not
    /// list it first.
    fn ensure_dir(&mut self, path: &str, raw: &str) -> Result<usize> {
        if let Some(&d) = self.by_path.get(path) {
            if !matches!(self.idx.nodes[d].kind, NodeKind::Dir(_)) {
                return Err(self.refuse(raw, format!("parent {path:?} is not a directory")));
            }
            return Ok(d);
        }
        let (pp, base) = path.rsplit_once('/').unwrap_or(("", path));
        let parent = self.ensure_dir(pp, raw)?;
        let id = self.idx.nodes.len();
        self.idx.nodes.push(dir_node(path.to_string()));
        self.link(parent, base, path, id, raw)?;
        self.idx.nodes[parent].nlink += 1;
        Ok(id)
    }
}

fn apply_attrs(n: &mut Node, e: &TocEntry) -> std::result::Result<(), String> {
    if !(0..=0o177777).contains(&e.mode) {
        return Err(format!("mode {:o} out of range", e.mode));
    }
    n.mode = (e.mode & 0o7777) as u32;
    n.uid = u32::try_from(e.uid).map_err(|_| format!("uid {} out of range", e.uid))?;
    n.gid = u32::try_from(e.gid).map_err(|_| format!("gid {} out of range", e.gid))?;
    n.mtime = parse_mtime(&e.modtime);
    for (k, v) in &e.xattrs {
        let raw = base64::engine::general_purpose::STANDARD
            .decode(v)
            .map_err(|_| format!("xattr {k:?} is not base64"))?;
        n.xattrs.insert(k.clone(), raw);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    type TestResult = std::result::Result<(), Box<dyn std::error::Error>>;

    fn ent(name: &str, kind: &str) -> TocEntry {
        TocEntry {
            name: name.to_string(),
            kind: kind.to_string(),
            ..Default::default()
        }
    }

    fn reg(name: &str, size: u64, offset: u64) -> TocEntry {
        TocEntry {
            size,
            offset,
            chunk_digest: Digest::of(b"").to_string(),
            ..ent(name, "reg")
        }
    }

    fn build(entries: Vec<TocEntry>) -> Result<Index> {
        Index::new(
            "sha256:layer",
            &Toc {
                version: 1,
                entries,
            },
            1000,
            Whiteouts::Raw,
        )
    }

    #[test]
    fn names_are_cleaned_or_refused() {
        assert_eq!(clean_name("./a/b/").as_deref(), Ok("a/b"));
        assert_eq!(clean_name("./").as_deref(), Ok(""));
        for bad in ["/etc/passwd", "a/../../b", "..", "a//b", "a/./b", "a\0b"] {
            assert!(clean_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn tree_with_implied_dirs_hardlinks_and_chunks() -> TestResult {
        let mut c2 = ent("d/big", "chunk");
        c2.offset = 200;
        c2.chunk_offset = 10;
        c2.chunk_digest = Digest::of(b"x").to_string();
        let mut big = reg("d/big", 15, 100);
        big.chunk_size = 10;
        let mut hl = ent("d/link", "hardlink");
        hl.link_name = "d/big".to_string();
        let idx = build(vec![big, c2, hl, ent(".prefetch.landmark", "reg")])?;
        let big = idx.lookup("d/big").ok_or("file")?;
        assert_eq!(idx.lookup("d/link"), Some(big));
        assert_eq!(idx.nodes[big].nlink, 2);
        let ch = idx.file_chunks(big);
        assert_eq!(ch.len(), 2);
        assert_eq!((ch[0].offset, ch[0].end, ch[0].size), (100, 200, 10));
        assert_eq!((ch[1].offset, ch[1].end, ch[1].size), (200, 1000, 5));
        // A member much longer than its chunk is not read to its end.
        let long = Chunk {
            end: 1 << 30,
            ..ch[1].clone()
        };
        assert_eq!(long.fetch_end(), 200 + 5 + 65536);
        assert!(idx.lookup(".prefetch.landmark").is_none());
        Ok(())
    }

    #[test]
    fn refusals_name_the_layer_and_entry() -> TestResult {
        let cases: Vec<(Vec<TocEntry>, &str)> = vec![
            (vec![ent("../x", "reg")], ".."),
            (vec![ent("/x", "reg")], "absolute"),
            (vec![reg("a", 10, 100), reg("b", 10, 100)], "overlaps"),
            (vec![reg("a", 10, 100), reg("b", 10, 50)], "overlaps"),
            (vec![reg("a", 10, 5000)], "outside"),
            (vec![reg("a", 1 << 50, 100)], "absurd size"),
            (
                vec![TocEntry {
                    chunk_size: 1 << 40,
                    ..reg("a", 1 << 39, 100)
                }],
                "absurd chunk",
            ),
            (vec![reg("a", 10, 0)], "overlaps"),
            (vec![ent("a", "weird")], "unknown type"),
            (vec![ent("a", "reg"), ent("a", "reg")], "duplicate"),
            (vec![ent("a", "reg"), ent("a/b", "reg")], "not a directory"),
            (
                vec![TocEntry {
                    link_name: "nope".into(),
                    ..ent("a", "hardlink")
                }],
                "unknown",
            ),
            (
                vec![TocEntry {
                    chunk_size: 4,
                    ..reg("a", 10, 100)
                }],
                "cover",
            ),
            (vec![ent("a", "chunk")], "does not follow"),
        ];
        for (entries, want) in cases {
            let e = build(entries).err().ok_or(want)?;
            let msg = e.to_string();
            assert!(
                msg.contains("sha256:layer") && msg.contains(want),
                "{want}: {msg}"
            );
        }
        Ok(())
    }

    #[test]
    fn overlay_whiteouts() -> TestResult {
        let idx = Index::new(
            "l",
            &Toc {
                version: 1,
                entries: vec![ent("d/.wh.gone", "reg"), ent("d/.wh..wh..opq", "reg")],
            },
            10,
            Whiteouts::Overlay("trusted.overlay.opaque"),
        )?;
        let g = idx.lookup("d/gone").ok_or("whiteout")?;
        assert_eq!(idx.nodes[g].kind, NodeKind::Char(0, 0));
        let d = idx.lookup("d").ok_or("dir")?;
        assert_eq!(
            idx.nodes[d]
                .xattrs
                .get("trusted.overlay.opaque")
                .map(Vec::as_slice),
            Some(&b"y"[..])
        );
        assert!(idx.lookup("d/.wh..wh..opq").is_none());
        Ok(())
    }
}
