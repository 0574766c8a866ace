//! OPEN and CREATE replies: the handle, the page-cache flags and, where the kernel allows it,
//! passthrough of the file's I/O. On a mount with I/O by node, OPEN is answered with ENOSYS.

use std::ffi::OsStr;

use fuser::{Errno, FileHandle, FopenFlags, INodeNo, OpenFlags, ReplyCreate, ReplyOpen, Request};

use crate::fs::fuse::dispatch::StrataFs;
use crate::fs::fuse::replies::GEN;
use crate::fs::union::FsError;
use crate::fs::union::data;
use crate::fs::union::names::NewObject;

impl StrataFs {
    pub(super) fn reply_open(&self, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        if self.u.node_fds.enabled() {
            // I/O is addressed by node on this mount: from this answer on the kernel sends
            // no OPEN (and no RELEASE) at all; see `negotiate`.
            return reply.error(Errno::ENOSYS);
        }
        let r = self.timed("open", ino.0, None, || {
            self.u.node(ino.0).and_then(|n| self.u.open(&n, flags.0))
        });
        match r {
            Ok(o) => {
                let write = data::wants_write(flags.0);
                let mut f = if o.keep_cache {
                    FopenFlags::FOPEN_KEEP_CACHE
                } else {
                    FopenFlags::empty()
                };
                if !write {
                    // Nothing to flush on close of a read-only file: save the round trip.
                    f |= FopenFlags::FOPEN_NOFLUSH;
                }
                let backing = match (self.passthrough, self.u.handles.file(o.fh)) {
                    (true, Some(h)) => self
                        .u
                        .passthrough_for(&h, write, |fd| reply.open_backing(fd)),
                    _ => None,
                };
                match backing {
                    // The page cache is not used in passthrough mode.
                    Some(id) => reply.opened_passthrough(
                        FileHandle(o.fh),
                        f & FopenFlags::FOPEN_NOFLUSH,
                        &id,
                    ),
                    None => reply.opened(FileHandle(o.fh), f),
                }
            }
            Err(e) => reply.error(e.into()),
        }
    }

    /// CREATE of `name` in `parent` with (mode, umask, open flags).
    pub(super) fn reply_create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        (mode, umask, flags): (u32, u32, i32),
        reply: ReplyCreate,
    ) {
        let r = self.timed("create", parent.0, Some(name), || {
            self.u.node(parent.0).and_then(|p| {
                let obj = NewObject::File {
                    mode: mode & 0o7777 & !umask,
                    flags,
                };
                let (node, fd) = self.u.make_object(&p, name, obj, Self::who(req))?;
                let fd = fd.ok_or(FsError(Errno::EIO))?;
                let a = self.u.attr(&node)?;
                let fh = self
                    .u
                    .add_handle(&node, fd, data::backing_flags(flags), true);
                Ok((a, fh))
            })
        });
        match r {
            Ok((a, fh)) => {
                let backing = match (self.passthrough, self.u.handles.file(fh)) {
                    (true, Some(h)) => self
                        .u
                        .passthrough_for(&h, true, |fd| reply.open_backing(fd)),
                    _ => None,
                };
                match backing {
                    Some(id) => reply.created_passthrough(
                        &self.ttl(),
                        &a,
                        GEN,
                        FileHandle(fh),
                        FopenFlags::empty(),
                        &id,
                    ),
                    None => {
                        reply.created(&self.ttl(), &a, GEN, FileHandle(fh), FopenFlags::empty())
                    }
                }
            }
            Err(e) => reply.error(e.into()),
        }
    }
}
