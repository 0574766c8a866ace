//! File data: open, read, write, fsync, fallocate, lseek, copy_file_range, and statfs.
//! Opening for writing copies the file up first; lower files open read-only and keep the
//! kernel's page cache (lower layers never change while mounted).

use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use fuser::Errno;
use parking_lot::RwLock;

use crate::fs::tables::handles::FileHandle;
use crate::fs::tables::node::Node;
use crate::fs::tables::node_fds::Access;
use crate::fs::union::FsError;
use crate::fs::union::copyup::copy_up;
use crate::fs::union::{FsResult, Union, errno};
use crate::sys::{at, handle, io};

/// The result of an open: handle id and whether the kernel may keep its cache.
pub struct Opened {
    pub fh: u64,
    pub keep_cache: bool,
}

/// Whether an open with `flags` may change the file (and so copies it up first).
pub fn wants_write(flags: i32) -> bool {
    let acc = flags & libc::O_ACCMODE;
    acc == libc::O_WRONLY || acc == libc::O_RDWR || flags & libc::O_TRUNC != 0
}

/// Flags for the backing fd: no create/append (the kernel gives explicit offsets).
pub fn backing_flags(flags: i32) -> i32 {
    flags & !(libc::O_CREAT | libc::O_EXCL | libc::O_NOCTTY | libc::O_APPEND | libc::O_TRUNC)
}

impl Union {
    fn open_backing(&self, node: &Node, flags: i32) -> FsResult<OwnedFd> {
        let e = self.data_entry_of(node)?;
        match at::open_at(e.dir(), &e.name, flags, 0) {
            Err(err) if err.raw_os_error() == Some(libc::EPERM) && flags & libc::O_NOATIME != 0 => {
                at::open_at(e.dir(), &e.name, flags & !libc::O_NOATIME, 0).map_err(errno)
            }
            other => other.map_err(errno),
        }
    }

    /// open(2) of a non-directory.
    pub fn open(&self, node: &Arc<Node>, flags: i32) -> FsResult<Opened> {
        let write = wants_write(flags);
        let _pass = if write { Some(self.gate.enter()) } else { None };
        if write {
            copy_up(self, node)?;
        }
        let bflags = backing_flags(flags);
        let fd = self.open_backing(node, bflags)?;
        if flags & libc::O_TRUNC != 0 {
            io::ftruncate(fd.as_fd(), 0)?;
        }
        let on_upper = node.data_in_upper();
        Ok(Opened {
            fh: self.add_handle(node, fd, bflags, on_upper),
            keep_cache: !on_upper,
        })
    }

    /// Register an open fd as a handle.
    pub fn add_handle(&self, node: &Arc<Node>, fd: OwnedFd, flags: i32, on_upper: bool) -> u64 {
        let fd = Arc::new(fd);
        node.opens().fd = Arc::downgrade(&fd);
        self.handles.add_file(FileHandle {
            node: node.clone(),
            fd: RwLock::new(fd),
            on_upper: on_upper.into(),
            flags,
            backing: Default::default(),
        })
    }

    /// The fd of a handle, moved to the upper copy if the file was copied up meanwhile.
    pub fn current_fd(&self, h: &FileHandle) -> FsResult<Arc<OwnedFd>> {
        if h.on_upper.load(Ordering::Acquire) || !h.node.data_in_upper() {
            return Ok(h.fd());
        }
        let mut guard = h.fd.write();
        if !h.on_upper.load(Ordering::Acquire) {
            let fd = Arc::new(self.open_backing(&h.node, h.flags)?);
            h.node.opens().fd = Arc::downgrade(&fd);
            *guard = fd;
            h.on_upper.store(true, Ordering::Release);
        }
        Ok(guard.clone())
    }

    pub(super) fn handle(&self, fh: u64) -> FsResult<Arc<FileHandle>> {
        self.handles.file(fh).ok_or(FsError(Errno::EBADF))
    }

    pub fn read(&self, ino: u64, fh: u64, offset: u64, size: u32) -> FsResult<Vec<u8>> {
        let fd = self.io_fd(ino, fh, Access::Read)?;
        io::pread_to_vec(fd.as_fd(), size as usize, offset).map_err(errno)
    }

    pub fn write(&self, ino: u64, fh: u64, offset: u64, data: &[u8]) -> FsResult<u32> {
        let _pass = self.gate.enter();
        let fd = self.io_fd(ino, fh, Access::Write)?;
        let mut done = 0usize;
        while done < data.len() {
            let n = io::pwrite(fd.as_fd(), &data[done..], offset + done as u64)?;
            if n == 0 {
                break;
            }
            done += n;
        }
        Ok(done as u32)
    }

    pub fn release(&self, fh: u64) {
        if let Some(h) = self.handles.remove_file(fh) {
            self.passthrough_release(&h);
        }
    }

    pub fn fsync(&self, ino: u64, fh: u64, datasync: bool) -> FsResult<()> {
        if !self.settings.honor_fsync {
            return Ok(());
        }
        let fd = if fh == 0 {
            // Without a handle: only data in the upper layer (or a private copy) can be dirty.
            let node = self.node(ino)?;
            if !node.data_in_upper() && self.node_fds.pinned(&node).is_none() {
                return Ok(());
            }
            self.node_fd(&node, Access::Read)?
        } else {
            self.io_fd(ino, fh, Access::Read)?
        };
        io::fsync(fd.as_fd(), datasync).map_err(errno)
    }

    /// fsync(2) of a directory: its upper copy, when it has one (lower ones never change).
    pub fn fsync_dir(&self, node: &Node, datasync: bool) -> FsResult<()> {
        if !self.settings.honor_fsync || !node.in_upper() {
            return Ok(());
        }
        // A directory's entry is its own (O_PATH) fd with an empty name: fsync needs a real
        // open of it, which "." relative to that fd gives.
        let e = self.entry_of(node)?;
        let name = if e.name.is_empty() {
            std::ffi::OsStr::new(".")
        } else {
            &*e.name
        };
        let fd = at::open_at(e.dir(), name, libc::O_RDONLY | libc::O_DIRECTORY, 0)?;
        io::fsync(fd.as_fd(), datasync).map_err(errno)
    }

    pub fn fallocate(&self, ino: u64, fh: u64, offset: u64, len: u64, mode: i32) -> FsResult<()> {
        let _pass = self.gate.enter();
        let fd = self.io_fd(ino, fh, Access::Write)?;
        io::fallocate(fd.as_fd(), mode, offset, len).map_err(errno)
    }

    pub fn lseek(&self, ino: u64, fh: u64, offset: i64, whence: i32) -> FsResult<i64> {
        let fd = self.io_fd(ino, fh, Access::Read)?;
        io::lseek(fd.as_fd(), offset, whence).map_err(errno)
    }

    /// copy_file_range(2) from (`ino_in`, `fh_in`) to (`ino_out`, `fh_out`).
    pub fn copy_range(
        &self,
        (ino_in, fh_in, off_in): (u64, u64, u64),
        (ino_out, fh_out, off_out): (u64, u64, u64),
        len: u64,
    ) -> FsResult<u32> {
        let _pass = self.gate.enter();
        let fi = self.io_fd(ino_in, fh_in, Access::Read)?;
        let fo = self.io_fd(ino_out, fh_out, Access::Write)?;
        let len = len.min(u32::MAX as u64 & !0xfff) as usize;
        let n = match io::copy_file_range(fi.as_fd(), off_in, fo.as_fd(), off_out, len) {
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::EXDEV) | Some(libc::EINVAL) | Some(libc::EOPNOTSUPP)
                ) =>
            {
                let data = io::pread_to_vec(fi.as_fd(), len.min(1 << 20), off_in).map_err(errno)?;
                io::pwrite(fo.as_fd(), &data, off_out)?
            }
            Err(e) => return Err(errno(e)),
        };
        Ok(n as u32)
    }

    /// statfs of the upper layer (or the top lower one on a read-only mount).
    pub fn statfs(&self) -> FsResult<libc::statvfs64> {
        let l = self
            .layers
            .upper
            .as_ref()
            .or(self.layers.lowers.first())
            .ok_or(FsError(Errno::EIO))?;
        handle::statvfs(l.fd()).map_err(errno)
    }

    pub fn readlink(&self, node: &Arc<Node>) -> FsResult<Vec<u8>> {
        let e = self.entry_of(node)?;
        at::readlink_at(e.dir(), &e.name).map_err(errno)
    }

    /// getattr through an open handle (works after the name was removed).
    pub fn handle_attr(&self, fh: u64) -> FsResult<fuser::FileAttr> {
        let h = self.handle(fh)?;
        let fd = self.current_fd(&h)?;
        let st = at::fstat(fd.as_fd())?;
        Ok(self.attr_from_stat(&h.node, &st))
    }
}
