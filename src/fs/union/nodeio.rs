//! File I/O addressed by node. A mount that answers OPEN with ENOSYS gets no OPEN or RELEASE
//! from the kernel, so READ, WRITE, FSYNC, FALLOCATE, LSEEK and COPY_FILE_RANGE come with
//! file handle 0. Each request then finds the node's data where it is now: a descriptor
//! opened on a lower file reads the upper copy once the file is copied up (kernel overlayfs
//! semantics), the first write copies the file up, and a file whose last name is removed
//! keeps its data reachable until the kernel forgets it.

use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;

use fuser::Errno;

use crate::fs::tables::node::Node;
use crate::fs::tables::node_fds::{Access, Pinned};
use crate::fs::union::copyup::{copy_data, copy_up};
use crate::fs::union::{FsError, FsResult, Union, errno};
use crate::sys::at;

impl Union {
    /// The descriptor for I/O on node `ino` through handle `fh`, or by node when `fh` is 0.
    /// Callers that write hold the gate.
    pub fn io_fd(&self, ino: u64, fh: u64, want: Access) -> FsResult<Arc<OwnedFd>> {
        if fh != 0 {
            let h = self.handle(fh)?;
            return self.current_fd(&h);
        }
        let node = self.node(ino)?;
        self.node_fd(&node, want)
    }

    /// The descriptor for I/O on `node` itself; wanting to write copies the file up first.
    /// A cached descriptor serves a node whose names are gone too: it is on the same inode
    /// (a private copy replaces it when one is made).
    pub fn node_fd(&self, node: &Arc<Node>, want: Access) -> FsResult<Arc<OwnedFd>> {
        if node.is_dir() {
            return Err(FsError(Errno::EISDIR));
        }
        let opened = (|| {
            if want != Access::Read {
                copy_up(self, node)?;
            }
            let upper = node.data_in_upper();
            if let Some(fd) = self.node_fds.get(node, upper, want) {
                return Ok(fd);
            }
            let (fd, access) = self.open_node(node, want)?;
            Ok(self.node_fds.put(node, fd, upper, access))
        })();
        match opened {
            // No name reaches the data any more: use what its removal kept.
            Err(e) if e == Errno::ENOENT => match self.node_fds.pinned(node) {
                Some(p) => self.pinned_fd(node, p, want),
                None => Err(e),
            },
            other => other,
        }
    }

    /// Open the data of `node` for `want`: read-only for reads, read-write (or write-only,
    /// when the owner may not read) for writes.
    fn open_node(&self, node: &Node, want: Access) -> FsResult<(OwnedFd, Access)> {
        let e = self.data_entry_of(node)?;
        if want == Access::Read {
            let fd = at::open_at(e.dir(), &e.name, libc::O_RDONLY, 0).map_err(errno)?;
            return Ok((fd, Access::Read));
        }
        match at::open_at(e.dir(), &e.name, libc::O_RDWR, 0) {
            Ok(fd) => Ok((fd, Access::ReadWrite)),
            Err(err) if err.raw_os_error() == Some(libc::EACCES) => {
                let fd = at::open_at(e.dir(), &e.name, libc::O_WRONLY, 0).map_err(errno)?;
                Ok((fd, Access::Write))
            }
            Err(err) => Err(errno(err)),
        }
    }

    /// I/O on a node whose last name was removed.
    fn pinned_fd(&self, node: &Arc<Node>, p: Pinned, want: Access) -> FsResult<Arc<OwnedFd>> {
        match p {
            Pinned::Fd(fd, access) if access.serves(want) => Ok(fd),
            Pinned::Fd(..) => Err(FsError(Errno::EBADF)),
            Pinned::Lower(dir, name) if want == Access::Read => {
                if let Some(fd) = self.node_fds.get(node, false, want) {
                    return Ok(fd);
                }
                let fd = at::open_at(dir.as_fd(), &name, libc::O_RDONLY, 0).map_err(errno)?;
                Ok(self.node_fds.put(node, fd, false, Access::Read))
            }
            Pinned::Lower(dir, name) => {
                // Written after its name was removed: the data moves to a private copy in
                // the work dir that goes when the kernel forgets the node.
                let src = at::open_at(dir.as_fd(), &name, libc::O_RDONLY, 0).map_err(errno)?;
                let size = at::fstat(src.as_fd())?.st_size as u64;
                let tmp = at::open_at(
                    self.work()?,
                    std::ffi::OsStr::new("."),
                    libc::O_TMPFILE | libc::O_RDWR,
                    0o600,
                )
                .map_err(errno)?;
                copy_data(src.as_fd(), tmp.as_fd(), size, false).map_err(errno)?;
                let fd = self.node_fds.put(node, tmp, false, Access::ReadWrite);
                self.node_fds
                    .pin(node, Pinned::Fd(fd.clone(), Access::ReadWrite));
                Ok(fd)
            }
        }
    }

    /// Before the last name of non-directory `node` is removed (unlink, or rename over it):
    /// keep where its data is, since the kernel may still have it open without telling.
    pub fn pin_before_removal(&self, node: &Arc<Node>) {
        if !self.node_fds.enabled() || node.is_dir() || node.name_count() > 1 {
            return;
        }
        if !node.data_in_upper() {
            if let Ok(e) = self.data_entry_of(node) {
                self.node_fds.pin(node, Pinned::Lower(e.dir, e.name));
            }
            return;
        }
        let fd = match self.node_fds.get(node, true, Access::ReadWrite) {
            Some(fd) => Some((fd, Access::ReadWrite)),
            None => self
                .open_node(node, Access::Write)
                .or_else(|_| self.open_node(node, Access::Read))
                .ok()
                .map(|(fd, a)| (Arc::new(fd), a)),
        };
        if let Some((fd, access)) = fd {
            self.node_fds.pin(node, Pinned::Fd(fd, access));
        }
    }

    /// getattr of a node whose last name was removed, from where its data is kept.
    pub fn pinned_attr(&self, node: &Arc<Node>) -> FsResult<fuser::FileAttr> {
        let fd = match self.node_fds.pinned(node).ok_or(FsError(Errno::ENOENT))? {
            Pinned::Fd(fd, _) => fd,
            Pinned::Lower(..) => self.node_fd(node, Access::Read)?,
        };
        let st = at::fstat(fd.as_fd())?;
        Ok(self.attr_from_stat(node, &st))
    }
}
