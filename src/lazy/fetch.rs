//! Chunk fetching for one lazy layer: a read asks for the chunks covering its byte range;
//! missing ones are fetched by Range requests (runs of adjacent chunks merged into one
//! request, bounded in size), each verified against its chunkDigest before it is written
//! (temp + rename) to the chunk cache; a chunk another thread is fetching is waited for, not
//! fetched twice. Data is served only from verified cache files.

use super::{LazyError, Result};
use crate::estargz::Index;
use crate::oci::{Digest, Reference};
use crate::registry::{ClientOptions, RangeReader, RetryPolicy};
use parking_lot::{Condvar, Mutex};
use std::collections::HashSet;
use std::io::Write;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// Most bytes asked for in one merged request.
pub const MAX_REQUEST: u64 = 8 << 20;

/// Where a layer's blob is fetched from.
#[derive(Debug, Clone)]
pub struct Remote {
    /// `registry/repository`.
    pub reference: Reference,
    /// Connection options (timeouts bound each request).
    pub client: ClientOptions,
    /// Blob digest.
    pub digest: Digest,
    /// Blob size.
    pub size: u64,
    /// Retries of a failed request.
    pub policy: RetryPolicy,
}

/// The chunk fetcher of one layer.
pub struct Fetcher {
    /// The validated TOC.
    pub index: Index,
    cache: PathBuf,
    remote: Remote,
    reader: Mutex<Option<Arc<RangeReader>>>,
    inflight: Mutex<HashSet<usize>>,
    done: Condvar,
    /// Reads being served now (background work yields to them).
    pub active_reads: AtomicUsize,
    fetched: AtomicU64,
    requests: AtomicU64,
}

impl Fetcher {
    /// A fetcher over `index` with its chunk cache in `cache` (stale temp files removed).
    pub fn new(index: Index, cache: PathBuf, remote: Remote) -> Result<Fetcher> {
        std::fs::create_dir_all(&cache)
            .map_err(LazyError::io(format!("create {}", cache.display())))?;
        if let Ok(rd) = std::fs::read_dir(&cache) {
            for e in rd.flatten() {
                if e.file_name().to_string_lossy().starts_with(".tmp-") {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
        Ok(Fetcher {
            index,
            cache,
            remote,
            reader: Mutex::new(None),
            inflight: Mutex::new(HashSet::new()),
            done: Condvar::new(),
            active_reads: AtomicUsize::new(0),
            fetched: AtomicU64::new(0),
            requests: AtomicU64::new(0),
        })
    }

    /// Bytes received from the registry and requests made by this fetcher.
    pub fn fetched(&self) -> (u64, u64) {
        (
            self.fetched.load(Ordering::Relaxed),
            self.requests.load(Ordering::Relaxed),
        )
    }

    fn chunk_path(&self, i: usize) -> PathBuf {
        self.cache
            .join(format!("{:016x}", self.index.chunks[i].offset))
    }

    /// Whether chunk `i` is in the cache.
    pub fn cached(&self, i: usize) -> bool {
        std::fs::metadata(self.chunk_path(i)).is_ok_and(|m| m.len() == self.index.chunks[i].size)
    }

    fn reader(&self) -> Result<Arc<RangeReader>> {
        let mut g = self.reader.lock();
        if let Some(r) = &*g {
            return Ok(r.clone());
        }
        let r = Arc::new(RangeReader::connect(
            &self.remote.reference,
            &self.remote.client,
            self.remote.digest.clone(),
            self.remote.size,
            self.remote.policy,
        )?);
        *g = Some(r.clone());
        Ok(r)
    }

    /// Raw bytes of the blob (for the background completion), counted.
    pub fn read_blob(&self, offset: u64, len: u64) -> Result<Vec<u8>> {
        let r = self.reader()?;
        self.requests.fetch_add(1, Ordering::Relaxed);
        let b = r.read(offset, len);
        if b.is_err() {
            // A broken connection is made again on the next request.
            *self.reader.lock() = None;
        }
        let b = b?;
        self.fetched.fetch_add(b.len() as u64, Ordering::Relaxed);
        Ok(b)
    }

    /// Fetches, verifies and caches chunks `ids` (ascending), merging adjacent ones.
    fn fetch(&self, ids: &[usize]) -> Result<()> {
        let chunks = &self.index.chunks;
        let mut k = 0;
        while k < ids.len() {
            let mut j = k;
            while j + 1 < ids.len()
                && ids[j + 1] == ids[j] + 1
                && chunks[ids[j + 1]].fetch_end() - chunks[ids[k]].offset <= MAX_REQUEST
            {
                j += 1;
            }
            let start = chunks[ids[k]].offset;
            let end = chunks[ids[j]].fetch_end();
            let bytes = self.read_blob(start, end - start)?;
            for &i in &ids[k..=j] {
                let c = &chunks[i];
                let raw = &bytes[(c.offset - start) as usize..(c.fetch_end() - start) as usize];
                let data = self.index.decode_chunk(c, raw)?;
                self.store_chunk(i, &data)?;
            }
            k = j + 1;
        }
        Ok(())
    }

    fn store_chunk(&self, i: usize, data: &[u8]) -> Result<()> {
        let dest = self.chunk_path(i);
        let tmp = self.cache.join(format!(
            ".tmp-{}-{:016x}",
            std::process::id(),
            self.index.chunks[i].offset
        ));
        let mut f = std::fs::File::create(&tmp)
            .map_err(LazyError::io(format!("create {}", tmp.display())))?;
        f.write_all(data)
            .and_then(|()| f.sync_data())
            .map_err(LazyError::io(format!("write {}", tmp.display())))?;
        std::fs::rename(&tmp, &dest).map_err(LazyError::io(format!("rename {}", dest.display())))
    }

    /// Makes sure chunks `want` are cached: fetches those nobody fetches, waits for the
    /// others; a chunk whose fetch failed elsewhere is tried again here.
    pub fn ensure(&self, want: Range<usize>) -> Result<()> {
        loop {
            let (mine, waiting) = {
                let mut inf = self.inflight.lock();
                let mut mine = Vec::new();
                let mut waiting = false;
                for i in want.clone() {
                    if self.cached(i) {
                        continue;
                    }
                    if inf.contains(&i) {
                        waiting = true;
                    } else {
                        inf.insert(i);
                        mine.push(i);
                    }
                }
                (mine, waiting)
            };
            if !mine.is_empty() {
                let r = self.fetch(&mine);
                let mut inf = self.inflight.lock();
                for i in &mine {
                    inf.remove(i);
                }
                self.done.notify_all();
                drop(inf);
                r?;
            }
            if !waiting {
                return Ok(());
            }
            let mut inf = self.inflight.lock();
            while want.clone().any(|i| inf.contains(&i)) {
                self.done.wait(&mut inf);
            }
        }
    }

    /// Up to `size` bytes of file `node` from `offset`, from verified chunks only.
    pub fn read(&self, node: usize, offset: u64, size: u64) -> Result<Vec<u8>> {
        let crate::estargz::NodeKind::Reg(range) = &self.index.nodes[node].kind else {
            return Ok(Vec::new());
        };
        let file_size = self.index.nodes[node].size;
        let end = offset.saturating_add(size).min(file_size);
        if offset >= end {
            return Ok(Vec::new());
        }
        let chunks = &self.index.chunks;
        let first = range.start
            + chunks[range.clone()].partition_point(|c| c.file_offset + c.size <= offset);
        let last = range.start + chunks[range.clone()].partition_point(|c| c.file_offset < end);
        self.active_reads.fetch_add(1, Ordering::SeqCst);
        let r = self.ensure(first..last);
        self.active_reads.fetch_sub(1, Ordering::SeqCst);
        r?;
        let mut out = Vec::with_capacity((end - offset) as usize);
        for (i, c) in chunks.iter().enumerate().take(last).skip(first) {
            let lo = offset.max(c.file_offset);
            let hi = end.min(c.file_offset + c.size);
            let p = self.chunk_path(i);
            let f =
                std::fs::File::open(&p).map_err(LazyError::io(format!("open {}", p.display())))?;
            let mut buf = vec![0u8; (hi - lo) as usize];
            f.read_exact_at(&mut buf, lo - c.file_offset)
                .map_err(LazyError::io(format!("read {}", p.display())))?;
            out.extend_from_slice(&buf);
        }
        Ok(out)
    }
}
