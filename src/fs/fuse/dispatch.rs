//! The `fuser::Filesystem` implementation: dispatch only. Each call unpacks its arguments,
//! runs the union operation, replies, and (with `-o debug`) traces op, node, name, result and
//! latency.

use std::ffi::OsStr;
use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

use fuser::{
    BsdFileFlags, CopyFileRangeFlags, Errno, FileHandle, Filesystem, INodeNo, KernelConfig,
    LockOwner, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory,
    ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyLseek, ReplyOpen, ReplyStatfs, ReplyWrite,
    ReplyXattr, Request, TimeOrNow, WriteFlags,
};

use crate::fs::fuse::replies::{GEN, negative_entry, reply_empty};
use crate::fs::union::Union;
use crate::fs::union::names::NewObject;
use crate::fs::union::setattr::SetAttr;

/// The FUSE front of a union.
pub struct StrataFs {
    pub u: Arc<Union>,
    pub debug: bool,
    /// The kernel accepted FUSE passthrough (set in `init`).
    pub passthrough: bool,
    /// Whether listings carry attributes, as learnt from the workload.
    pub rdplus: crate::fs::union::rdplus::ReaddirPlus,
}

impl Filesystem for StrataFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        self.negotiate(config);
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let r = self.timed("lookup", parent.0, Some(name), || {
            self.u
                .node(parent.0)
                .and_then(|p| self.u.lookup_attr(&p, name))
        });
        match r {
            Ok((_, a)) => {
                if a.kind != fuser::FileType::Directory {
                    self.rdplus.looked_up(parent.0);
                }
                reply.entry(&self.ttl(), &a, GEN)
            }
            // A negative entry the kernel may cache: every change to the union comes
            // through this daemon, which the kernel sees, so it cannot go stale.
            Err(e) if e == Errno::ENOENT => reply.entry(&self.ttl(), &negative_entry(), GEN),
            Err(e) => reply.error(e.into()),
        }
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        self.u.nodes.forget(ino.0, nlookup);
        self.u.node_fds.forgotten(ino.0);
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, fh: Option<FileHandle>, reply: ReplyAttr) {
        let r = self.timed("getattr", ino.0, None, || {
            let n = self.u.node(ino.0)?;
            match (self.u.attr(&n), fh) {
                (Err(e), Some(fh)) if e == Errno::ENOENT && fh.0 != 0 => self.u.handle_attr(fh.0),
                (Err(e), _) if e == Errno::ENOENT => self.u.pinned_attr(&n).map_err(|_| e),
                (r, _) => r,
            }
        });
        match r {
            Ok(a) => reply.attr(&self.ttl(), &a),
            Err(e) => reply.error(e.into()),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let r = self.timed("setattr", ino.0, None, || {
            let a = SetAttr {
                mode,
                uid,
                gid,
                size,
                atime,
                mtime,
                fh: fh.map(|f| f.0),
            };
            self.u.node(ino.0).and_then(|n| self.u.setattr(&n, a))
        });
        match r {
            Ok(a) => reply.attr(&self.ttl(), &a),
            Err(e) => reply.error(e.into()),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        let r = self.timed("readlink", ino.0, None, || {
            self.u.node(ino.0).and_then(|n| self.u.readlink(&n))
        });
        match r {
            Ok(d) => reply.data(&d),
            Err(e) => reply.error(e.into()),
        }
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        rdev: u32,
        reply: ReplyEntry,
    ) {
        let r = self.timed("mknod", parent.0, Some(name), || {
            let obj = NewObject::Node {
                mode: (mode & libc::S_IFMT) | (mode & 0o7777 & !umask),
                rdev: rdev as u64,
            };
            self.create_entry(parent, name, obj, req)
        });
        self.entry_reply(r, reply);
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        let r = self.timed("mkdir", parent.0, Some(name), || {
            self.create_entry(
                parent,
                name,
                NewObject::Dir {
                    mode: mode & 0o7777 & !umask,
                },
                req,
            )
        });
        self.entry_reply(r, reply);
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let r = self.timed("unlink", parent.0, Some(name), || {
            self.u.node(parent.0).and_then(|p| self.u.unlink(&p, name))
        });
        reply_empty(reply, r);
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let r = self.timed("rmdir", parent.0, Some(name), || {
            self.u.node(parent.0).and_then(|p| self.u.rmdir(&p, name))
        });
        reply_empty(reply, r);
    }

    fn symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        let r = self.timed("symlink", parent.0, Some(link_name), || {
            self.create_entry(
                parent,
                link_name,
                NewObject::Symlink {
                    target: target.as_os_str(),
                },
                req,
            )
        });
        self.entry_reply(r, reply);
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let r = self.timed("rename", parent.0, Some(name), || {
            self.u.node(parent.0).and_then(|p1| {
                let p2 = self.u.node(newparent.0)?;
                self.u.rename(&p1, name, &p2, newname, flags.bits())
            })
        });
        reply_empty(reply, r);
    }

    fn link(
        &self,
        _req: &Request,
        ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        let r = self.timed("link", ino.0, Some(newname), || {
            self.u.node(ino.0).and_then(|n| {
                let p = self.u.node(newparent.0)?;
                self.u.link(&n, &p, newname)
            })
        });
        self.entry_reply(r, reply);
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        self.reply_open(ino, flags, reply);
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let r = self.timed("read", ino.0, None, || {
            self.u.read(ino.0, fh.0, offset, size)
        });
        match r {
            Ok(d) => reply.data(&d),
            Err(e) => reply.error(e.into()),
        }
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let r = self.timed("write", ino.0, None, || {
            self.u.write(ino.0, fh.0, offset, data)
        });
        match r {
            Ok(n) => reply.written(n),
            Err(e) => reply.error(e.into()),
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
        // Nothing to do at close: writes go straight to the layer (no write-back cache) and
        // locks are the kernel's. ENOSYS tells the kernel so, and it sends FLUSH no more,
        // which saves every close(2) a round trip.
        reply.error(Errno::ENOSYS);
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.u.release(fh.0);
        reply.ok();
    }

    fn fsync(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        datasync: bool,
        reply: ReplyEmpty,
    ) {
        let r = self.timed("fsync", ino.0, None, || self.u.fsync(ino.0, fh.0, datasync));
        reply_empty(reply, r);
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        // Not implemented, on purpose: the kernel then sends no OPENDIR and RELEASEDIR at all,
        // reads listings without a handle (see `Union::listing_at`) and keeps them in its page
        // cache (FOPEN_CACHE_DIR | FOPEN_KEEP_CACHE): every change to a directory comes through
        // this daemon, and the kernel drops its cache when one does.
        if self.debug {
            log::debug!("opendir ino={} -> ENOSYS (listings need no handle)", ino.0);
        }
        reply.error(Errno::ENOSYS);
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        reply: ReplyDirectory,
    ) {
        self.reply_readdir(ino, offset, reply);
    }

    fn readdirplus(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        reply: ReplyDirectoryPlus,
    ) {
        self.reply_readdirplus(ino, offset, reply);
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        datasync: bool,
        reply: ReplyEmpty,
    ) {
        let r = self.timed("fsyncdir", ino.0, None, || {
            self.u
                .node(ino.0)
                .and_then(|n| self.u.fsync_dir(&n, datasync))
        });
        reply_empty(reply, r);
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        match self.u.statfs() {
            Ok(s) => reply.statfs(
                s.f_blocks,
                s.f_bfree,
                s.f_bavail,
                s.f_files,
                s.f_ffree,
                s.f_bsize as u32,
                s.f_namemax as u32,
                s.f_frsize as u32,
            ),
            Err(e) => reply.error(e.into()),
        }
    }

    fn setxattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        name: &OsStr,
        value: &[u8],
        flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        let r = self.timed("setxattr", ino.0, Some(name), || {
            self.u
                .node(ino.0)
                .and_then(|n| self.u.setxattr(&n, name, value, flags))
        });
        reply_empty(reply, r);
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        let r = self.timed("getxattr", ino.0, Some(name), || {
            self.u
                .node(ino.0)
                .and_then(|n| self.u.getxattr(&n, name, size))
        });
        match r {
            Ok(v) if size == 0 => reply.size(v.len() as u32),
            Ok(v) => reply.data(&v),
            Err(e) => reply.error(e.into()),
        }
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        let r = self.timed("listxattr", ino.0, None, || {
            self.u.node(ino.0).and_then(|n| self.u.listxattr(&n))
        });
        match r {
            Ok(v) if size == 0 => reply.size(v.len() as u32),
            Ok(v) if v.len() > size as usize => reply.error(Errno::ERANGE),
            Ok(v) => reply.data(&v),
            Err(e) => reply.error(e.into()),
        }
    }

    fn removexattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let r = self.timed("removexattr", ino.0, Some(name), || {
            self.u
                .node(ino.0)
                .and_then(|n| self.u.removexattr(&n, name))
        });
        reply_empty(reply, r);
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        self.reply_create(req, parent, name, (mode, umask, flags), reply);
    }

    fn fallocate(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        let r = self.timed("fallocate", ino.0, None, || {
            self.u.fallocate(ino.0, fh.0, offset, length, mode)
        });
        reply_empty(reply, r);
    }

    fn lseek(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: i64,
        whence: i32,
        reply: ReplyLseek,
    ) {
        let r = self.timed("lseek", ino.0, None, || {
            self.u.lseek(ino.0, fh.0, offset, whence)
        });
        match r {
            Ok(o) => reply.offset(o),
            Err(e) => reply.error(e.into()),
        }
    }

    fn copy_file_range(
        &self,
        _req: &Request,
        ino_in: INodeNo,
        fh_in: FileHandle,
        offset_in: u64,
        ino_out: INodeNo,
        fh_out: FileHandle,
        offset_out: u64,
        len: u64,
        _flags: CopyFileRangeFlags,
        reply: ReplyWrite,
    ) {
        let r = self.timed("copy_file_range", ino_in.0, None, || {
            self.u.copy_range(
                (ino_in.0, fh_in.0, offset_in),
                (ino_out.0, fh_out.0, offset_out),
                len,
            )
        });
        match r {
            Ok(n) => reply.written(n),
            Err(e) => reply.error(e.into()),
        }
    }
}
