//! The read-only `fuser` filesystem of one lazy layer: inode N+1 is TOC node N; attributes,
//! xattrs, symlinks, hard links (one node, several names) and whiteouts (char 0/0, opaque
//! xattr) come from the validated TOC; reads go through the [`Fetcher`] and fail with EIO
//! when the chunk cannot be fetched or does not verify. Landmarks and the TOC never appear.

use super::fetch::Fetcher;
use crate::estargz::{Node, NodeKind};
use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, LockOwner,
    OpenFlags, ReplyAttr, ReplyData, ReplyDirectory, ReplyEntry, ReplyOpen, ReplyXattr, Request,
};
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The layer never changes while mounted: the kernel may cache for long.
const TTL: Duration = Duration::from_secs(3600);

/// The filesystem of one lazy layer.
pub struct LazyFs {
    fetcher: Arc<Fetcher>,
}

impl LazyFs {
    /// Serves the tree of `fetcher`'s index.
    pub fn new(fetcher: Arc<Fetcher>) -> LazyFs {
        LazyFs { fetcher }
    }

    fn node(&self, ino: INodeNo) -> Option<(usize, &Node)> {
        let i = usize::try_from(ino.0).ok()?.checked_sub(1)?;
        self.fetcher.index.nodes.get(i).map(|n| (i, n))
    }

    fn attr(&self, i: usize, n: &Node) -> FileAttr {
        let (kind, rdev) = match &n.kind {
            NodeKind::Dir(_) => (FileType::Directory, 0),
            NodeKind::Reg(_) => (FileType::RegularFile, 0),
            NodeKind::Symlink(_) => (FileType::Symlink, 0),
            NodeKind::Char(a, b) => (FileType::CharDevice, libc::makedev(*a, *b)),
            NodeKind::Block(a, b) => (FileType::BlockDevice, libc::makedev(*a, *b)),
            NodeKind::Fifo => (FileType::NamedPipe, 0),
        };
        let t = if n.mtime >= 0 {
            UNIX_EPOCH + Duration::from_secs(n.mtime as u64)
        } else {
            UNIX_EPOCH
        };
        FileAttr {
            ino: INodeNo(i as u64 + 1),
            size: n.size,
            blocks: n.size.div_ceil(512),
            atime: t,
            mtime: t,
            ctime: t,
            crtime: SystemTime::UNIX_EPOCH,
            kind,
            perm: (n.mode & 0o7777) as u16,
            nlink: n.nlink,
            uid: n.uid,
            gid: n.gid,
            rdev: rdev as u32,
            blksize: 4096,
            flags: 0,
        }
    }
}

fn file_type(n: &Node) -> FileType {
    match n.kind {
        NodeKind::Dir(_) => FileType::Directory,
        NodeKind::Reg(_) => FileType::RegularFile,
        NodeKind::Symlink(_) => FileType::Symlink,
        NodeKind::Char(..) => FileType::CharDevice,
        NodeKind::Block(..) => FileType::BlockDevice,
        NodeKind::Fifo => FileType::NamedPipe,
    }
}

impl Filesystem for LazyFs {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let Some((_, p)) = self.node(parent) else {
            return reply.error(Errno::ENOENT);
        };
        let NodeKind::Dir(children) = &p.kind else {
            return reply.error(Errno::ENOTDIR);
        };
        let Some(&c) = std::str::from_utf8(name.as_bytes())
            .ok()
            .and_then(|n| children.get(n))
        else {
            return reply.error(Errno::ENOENT);
        };
        let n = &self.fetcher.index.nodes[c];
        reply.entry(&TTL, &self.attr(c, n), Generation(0));
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.node(ino) {
            Some((i, n)) => reply.attr(&TTL, &self.attr(i, n)),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        match self.node(ino) {
            Some((
                _,
                Node {
                    kind: NodeKind::Symlink(t),
                    ..
                },
            )) => reply.data(t.as_bytes()),
            Some(_) => reply.error(Errno::EINVAL),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        if flags.0 & libc::O_ACCMODE != libc::O_RDONLY {
            return reply.error(Errno::EROFS);
        }
        match self.node(ino) {
            Some(_) => reply.opened(FileHandle(0), FopenFlags::FOPEN_KEEP_CACHE),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: fuser::ReplyEmpty,
    ) {
        reply.ok();
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let Some((i, _)) = self.node(ino) else {
            return reply.error(Errno::ENOENT);
        };
        match self.fetcher.read(i, offset, u64::from(size)) {
            Ok(b) => reply.data(&b),
            Err(e) => {
                log::warn!("read of {}: {e}", self.fetcher.index.nodes[i].path);
                reply.error(Errno::EIO)
            }
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let Some((i, n)) = self.node(ino) else {
            return reply.error(Errno::ENOENT);
        };
        let NodeKind::Dir(children) = &n.kind else {
            return reply.error(Errno::ENOTDIR);
        };
        let parent = if n.path.is_empty() {
            i
        } else {
            let pp = n.path.rsplit_once('/').map_or("", |(p, _)| p);
            self.fetcher.index.lookup(pp).unwrap_or(0)
        };
        let dots = [
            (i, FileType::Directory, ".".to_string()),
            (parent, FileType::Directory, "..".to_string()),
        ];
        let all = dots.into_iter().chain(
            children
                .iter()
                .map(|(name, &c)| (c, file_type(&self.fetcher.index.nodes[c]), name.clone())),
        );
        for (k, (c, kind, name)) in all.enumerate().skip(offset as usize) {
            if reply.add(INodeNo(c as u64 + 1), k as u64 + 1, kind, &name) {
                break;
            }
        }
        reply.ok();
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        let Some((_, n)) = self.node(ino) else {
            return reply.error(Errno::ENOENT);
        };
        let Some(v) = std::str::from_utf8(name.as_bytes())
            .ok()
            .and_then(|k| n.xattrs.get(k))
        else {
            return reply.error(Errno::ENODATA);
        };
        if size == 0 {
            reply.size(v.len() as u32)
        } else if v.len() > size as usize {
            reply.error(Errno::ERANGE)
        } else {
            reply.data(v)
        }
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        let Some((_, n)) = self.node(ino) else {
            return reply.error(Errno::ENOENT);
        };
        let mut all = Vec::new();
        for k in n.xattrs.keys() {
            all.extend_from_slice(k.as_bytes());
            all.push(0);
        }
        if size == 0 {
            reply.size(all.len() as u32)
        } else if all.len() > size as usize {
            reply.error(Errno::ERANGE)
        } else {
            reply.data(&all)
        }
    }
}
