//! A disk with a volatile write cache, served inside the test process, for power-cut tests.
//!
//! A tiny FUSE file system (fuser, in a background thread) holds one regular file,
//! `disk.img`, to put a loop device on. Its contents are 4 KiB blocks in two parts: the
//! durable blocks and the pending ones, written since the last flush. WRITE puts data into
//! the pending blocks (a partial block starts from the block as READ shows it), READ shows
//! the pending block else the durable one, FSYNC (what the loop device sends for a flush or
//! a FUA write; FSYNCDIR too) moves every pending block into the durable ones. Every open is
//! answered with `FOPEN_DIRECT_IO`, so the loop device's I/O bypasses the page cache and
//! every write and flush reaches the daemon.
//!
//! [`DiskHandle::cut`] is the power cut: a pseudo-random part of the pending blocks (the
//! cache may have written any subset of them) becomes durable, the rest is lost, and from
//! then on every write is silently dropped and a flush does nothing, until
//! [`DiskHandle::power_on`].
#![allow(dead_code)]

use fuser::{
    Config, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo,
    LockOwner, MountOption, OpenFlags, ReplyAttr, ReplyData, ReplyDirectory, ReplyEmpty,
    ReplyEntry, ReplyOpen, ReplyWrite, Request, WriteFlags,
};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

/// The unit the cache keeps or loses as a whole.
pub const BLOCK: usize = 4096;
const ROOT: u64 = 1;
const IMG: u64 = 2;
const IMG_NAME: &str = "disk.img";
const TTL: Duration = Duration::from_secs(1);

#[derive(Default)]
struct State {
    /// Blocks on the medium; a missing one is zeros.
    durable: HashMap<u64, Box<[u8]>>,
    /// Blocks written since the last flush; `None` is a block of zeros.
    pending: HashMap<u64, Option<Box<[u8]>>>,
    /// The power is off: writes are dropped, flushes do nothing.
    cut: bool,
}

impl State {
    fn block(&self, i: u64) -> Option<&[u8]> {
        match self.pending.get(&i) {
            Some(b) => b.as_deref(),
            None => self.durable.get(&i).map(|b| &b[..]),
        }
    }

    fn flush(&mut self) {
        for (i, b) in self.pending.drain() {
            match b {
                Some(b) => self.durable.insert(i, b),
                None => self.durable.remove(&i),
            };
        }
    }

    /// Writes `data` (or zeros when `None`, `len` bytes) at `offset` into the pending blocks.
    fn write(&mut self, offset: u64, data: Option<&[u8]>, len: usize) {
        let mut done = 0usize;
        while done < len {
            let pos = offset + done as u64;
            let i = pos / BLOCK as u64;
            let within = (pos % BLOCK as u64) as usize;
            let n = (BLOCK - within).min(len - done);
            let mut b: Box<[u8]> = match self.block(i) {
                Some(old) if n < BLOCK => old.into(),
                _ => vec![0u8; BLOCK].into_boxed_slice(),
            };
            match data {
                Some(d) => b[within..within + n].copy_from_slice(&d[done..done + n]),
                None => b[within..within + n].fill(0),
            }
            let b = if b.iter().all(|&x| x == 0) {
                None
            } else {
                Some(b)
            };
            self.pending.insert(i, b);
            done += n;
        }
    }
}

#[derive(Default)]
struct Shared {
    state: Mutex<State>,
    writes: AtomicU64,
    flushes: AtomicU64,
    dropped_writes: AtomicU64,
}

/// What the daemon was asked since the last [`DiskHandle::restore`].
#[derive(Clone, Copy, Debug, Default)]
pub struct Counters {
    /// WRITE (and zeroing FALLOCATE) requests taken into the cache.
    pub writes: u64,
    /// FSYNC requests that moved the cache to the medium.
    pub flushes: u64,
    /// Writes dropped after the cut.
    pub dropped_writes: u64,
}

/// What a cut did with the pending blocks.
#[derive(Clone, Copy, Debug, Default)]
pub struct CutReport {
    /// Pending blocks that reached the medium.
    pub kept: usize,
    /// Pending blocks lost.
    pub lost: usize,
}

/// The durable contents of the disk, to start rounds from the same image.
#[derive(Clone)]
pub struct Image(HashMap<u64, Box<[u8]>>);

/// The test's handle on the disk.
#[derive(Clone)]
pub struct DiskHandle {
    shared: Arc<Shared>,
}

/// splitmix64: the pseudo-random choice of the blocks a cut keeps.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl DiskHandle {
    /// The power cut: each pending block reaches the medium with probability
    /// `keep_fraction` (chosen by `seed`), the others are lost; then every write is dropped
    /// and every flush does nothing until [`DiskHandle::power_on`].
    pub fn cut(&self, keep_fraction: f64, seed: u64) -> CutReport {
        let mut st = self.shared.state.lock();
        let mut idx: Vec<u64> = st.pending.keys().copied().collect();
        idx.sort_unstable();
        let mut rep = CutReport::default();
        for i in idx {
            let b = st.pending.remove(&i).expect("a pending block");
            let r = (mix(seed ^ mix(i)) >> 11) as f64 / (1u64 << 53) as f64;
            if r < keep_fraction {
                rep.kept += 1;
                match b {
                    Some(b) => st.durable.insert(i, b),
                    None => st.durable.remove(&i),
                };
            } else {
                rep.lost += 1;
            }
        }
        st.cut = true;
        rep
    }

    /// The power back: writes and flushes work again (the cache is empty).
    pub fn power_on(&self) {
        let mut st = self.shared.state.lock();
        st.pending.clear();
        st.cut = false;
    }

    /// Whether the power is off.
    pub fn is_cut(&self) -> bool {
        self.shared.state.lock().cut
    }

    /// The durable contents (what a cut that keeps nothing would leave).
    pub fn image(&self) -> Image {
        Image(self.shared.state.lock().durable.clone())
    }

    /// Blocks in the cache.
    pub fn pending_blocks(&self) -> usize {
        self.shared.state.lock().pending.len()
    }

    /// Starts over from `img`: empty cache, power on, counters at zero.
    pub fn restore(&self, img: &Image) {
        let mut st = self.shared.state.lock();
        st.durable = img.0.clone();
        st.pending.clear();
        st.cut = false;
        self.shared.writes.store(0, Ordering::SeqCst);
        self.shared.flushes.store(0, Ordering::SeqCst);
        self.shared.dropped_writes.store(0, Ordering::SeqCst);
    }

    pub fn counters(&self) -> Counters {
        Counters {
            writes: self.shared.writes.load(Ordering::SeqCst),
            flushes: self.shared.flushes.load(Ordering::SeqCst),
            dropped_writes: self.shared.dropped_writes.load(Ordering::SeqCst),
        }
    }
}

struct DiskFs {
    shared: Arc<Shared>,
    size: u64,
    uid: u32,
    gid: u32,
}

thread_local! {
    static IO_FLUSHER: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// The daemon's threads serve the writeback of a file system mounted on top: let them
/// allocate memory without waiting for that writeback (PR_SET_IO_FLUSHER), once per thread.
fn io_flusher() {
    IO_FLUSHER.with(|f| {
        if !f.get() {
            f.set(true);
            let _ = rustix::process::configure_io_flusher_behavior(true);
        }
    });
}

impl DiskFs {
    fn attr(&self, ino: u64) -> Option<FileAttr> {
        let (kind, perm, size, nlink) = match ino {
            ROOT => (FileType::Directory, 0o755, 0, 2),
            IMG => (FileType::RegularFile, 0o600, self.size, 1),
            _ => return None,
        };
        let t = SystemTime::UNIX_EPOCH;
        Some(FileAttr {
            ino: INodeNo(ino),
            size,
            blocks: size.div_ceil(512),
            atime: t,
            mtime: t,
            ctime: t,
            crtime: t,
            kind,
            perm,
            nlink,
            uid: self.uid,
            gid: self.gid,
            rdev: 0,
            blksize: BLOCK as u32,
            flags: 0,
        })
    }

    /// A flush: the cache reaches the medium, unless the power is off.
    fn flush_cache(&self) {
        io_flusher();
        let mut st = self.shared.state.lock();
        if !st.cut {
            st.flush();
            self.shared.flushes.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// Takes a write of `len` bytes at `offset` (zeros when `data` is `None`) unless the
    /// power is off; the length it reports as written.
    fn take_write(&self, offset: u64, data: Option<&[u8]>, len: usize) -> Result<usize, Errno> {
        io_flusher();
        if offset > self.size {
            return Err(Errno::ENOSPC);
        }
        let len = len.min((self.size - offset) as usize);
        let mut st = self.shared.state.lock();
        if st.cut {
            self.shared.dropped_writes.fetch_add(1, Ordering::SeqCst);
        } else {
            st.write(offset, data, len);
            self.shared.writes.fetch_add(1, Ordering::SeqCst);
        }
        Ok(len)
    }
}

impl Filesystem for DiskFs {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        if parent.0 != ROOT || name != IMG_NAME {
            return reply.error(Errno::ENOENT);
        }
        match self.attr(IMG) {
            Some(a) => reply.entry(&TTL, &a, Generation(0)),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.attr(ino.0) {
            Some(a) => reply.attr(&TTL, &a),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        _mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<fuser::TimeOrNow>,
        _mtime: Option<fuser::TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        // The disk has a fixed size; times and modes are ignored.
        if size.is_some_and(|s| s != self.size) {
            return reply.error(Errno::EPERM);
        }
        match self.attr(ino.0) {
            Some(a) => reply.attr(&TTL, &a),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        if ino.0 != IMG {
            return reply.error(Errno::EISDIR);
        }
        reply.opened(FileHandle(0), FopenFlags::FOPEN_DIRECT_IO);
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        io_flusher();
        let end = (offset + u64::from(size)).min(self.size);
        if offset >= end {
            return reply.data(&[]);
        }
        let mut out = vec![0u8; (end - offset) as usize];
        let st = self.shared.state.lock();
        let mut pos = offset;
        while pos < end {
            let i = pos / BLOCK as u64;
            let within = (pos % BLOCK as u64) as usize;
            let n = ((BLOCK - within) as u64).min(end - pos) as usize;
            if let Some(b) = st.block(i) {
                let at = (pos - offset) as usize;
                out[at..at + n].copy_from_slice(&b[within..within + n]);
            }
            pos += n as u64;
        }
        drop(st);
        reply.data(&out);
    }

    fn write(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        match self.take_write(offset, Some(data), data.len()) {
            Ok(n) => reply.written(n as u32),
            Err(e) => reply.error(e),
        }
    }

    fn fallocate(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        // Discard and write-zeroes from the loop device: the range reads as zeros.
        if mode & (libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_ZERO_RANGE) != 0 {
            match self.take_write(offset, None, length as usize) {
                Ok(_) => reply.ok(),
                Err(e) => reply.error(e),
            }
        } else if mode == 0 {
            reply.ok()
        } else {
            reply.error(Errno::EOPNOTSUPP)
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }

    fn fsync(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        self.flush_cache();
        reply.ok();
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        self.flush_cache();
        reply.ok();
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        if ino.0 != ROOT {
            return reply.error(Errno::ENOTDIR);
        }
        let all = [
            (ROOT, FileType::Directory, "."),
            (ROOT, FileType::Directory, ".."),
            (IMG, FileType::RegularFile, IMG_NAME),
        ];
        for (k, (i, kind, name)) in all.into_iter().enumerate().skip(offset as usize) {
            if reply.add(INodeNo(i), k as u64 + 1, kind, name) {
                break;
            }
        }
        reply.ok();
    }
}

/// The mounted disk: `img` is the file to put a loop device on; unmounted on drop (detach
/// the loop device first).
pub struct VolatileDisk {
    pub img: PathBuf,
    pub handle: DiskHandle,
    mnt: PathBuf,
    session: Option<fuser::BackgroundSession>,
}

impl VolatileDisk {
    /// Serves a disk of `size` bytes (a multiple of [`BLOCK`], all zeros) at `mnt`.
    pub fn mount(mnt: &Path, size: u64) -> std::io::Result<VolatileDisk> {
        std::fs::create_dir_all(mnt)?;
        let shared = Arc::new(Shared::default());
        let fs = DiskFs {
            shared: shared.clone(),
            size,
            uid: rustix::process::geteuid().as_raw(),
            gid: rustix::process::getegid().as_raw(),
        };
        let mut cfg = Config::default();
        cfg.mount_options = vec![
            MountOption::FSName("strata-volatile-disk".into()),
            MountOption::Subtype("strata-volatile-disk".into()),
        ];
        cfg.n_threads = Some(2);
        let session = fuser::spawn_mount(fs, mnt, &cfg)?;
        let img = mnt.join(IMG_NAME);
        let t0 = std::time::Instant::now();
        while std::fs::metadata(&img).ok().map(|m| m.len()) != Some(size) {
            if t0.elapsed() > Duration::from_secs(10) {
                return Err(std::io::Error::other(format!(
                    "{} does not show up",
                    img.display()
                )));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(VolatileDisk {
            img,
            handle: DiskHandle { shared },
            mnt: mnt.to_path_buf(),
            session: Some(session),
        })
    }
}

impl Drop for VolatileDisk {
    fn drop(&mut self) {
        if let Some(s) = self.session.take()
            && s.umount_and_join().is_err()
        {
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(&self.mnt)
                .status();
        }
    }
}
