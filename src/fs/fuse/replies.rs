//! What every request handler shares: the `-o debug` trace of op, node, name, result and
//! latency, the cache TTL, the caller as creator, and the empty, entry and negative replies.

use std::ffi::OsStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use fuser::{Generation, INodeNo, ReplyEmpty, ReplyEntry, Request};

use crate::fs::fuse::dispatch::StrataFs;
use crate::fs::tables::node::Node;
use crate::fs::union::FsResult;
use crate::fs::union::names::{Creator, NewObject};

pub(super) const GEN: Generation = Generation(0);

fn trace<T>(op: &str, ino: u64, name: Option<&OsStr>, t: Instant, r: &FsResult<T>) {
    let res = match r {
        Ok(_) => "ok".to_string(),
        Err(e) => format!("errno {}", e.code()),
    };
    let name = name.map(|n| format!(" {:?}", n)).unwrap_or_default();
    log::debug!("{op} ino={ino}{name} -> {res} ({:?})", t.elapsed());
}

/// The attributes of a negative lookup reply (node id 0).
pub(super) fn negative_entry() -> fuser::FileAttr {
    fuser::FileAttr {
        ino: INodeNo(0),
        size: 0,
        blocks: 0,
        atime: std::time::UNIX_EPOCH,
        mtime: std::time::UNIX_EPOCH,
        ctime: std::time::UNIX_EPOCH,
        crtime: std::time::UNIX_EPOCH,
        kind: fuser::FileType::RegularFile,
        perm: 0,
        nlink: 0,
        uid: 0,
        gid: 0,
        rdev: 0,
        blksize: 0,
        flags: 0,
    }
}

/// Answer an operation that returns nothing.
pub(super) fn reply_empty(reply: ReplyEmpty, r: FsResult<()>) {
    match r {
        Ok(()) => reply.ok(),
        Err(e) => reply.error(e.into()),
    }
}

impl StrataFs {
    /// Run union operation `op` on node `ino` (and `name`); with `-o debug`, trace its
    /// outcome and time.
    pub(super) fn timed<T>(
        &self,
        op: &str,
        ino: u64,
        name: Option<&OsStr>,
        f: impl FnOnce() -> FsResult<T>,
    ) -> FsResult<T> {
        if !self.debug {
            return f();
        }
        let t = Instant::now();
        let r = f();
        trace(op, ino, name, t, &r);
        r
    }

    pub(super) fn ttl(&self) -> Duration {
        self.u.settings.timeout
    }

    pub(super) fn who(req: &Request) -> Creator {
        Creator {
            uid: req.uid(),
            gid: req.gid(),
        }
    }

    pub(super) fn entry_reply(&self, r: FsResult<Arc<Node>>, reply: ReplyEntry) {
        match r.and_then(|n| self.u.attr(&n).map(|a| (n, a))) {
            Ok((_, a)) => reply.entry(&self.ttl(), &a, GEN),
            Err(e) => reply.error(e.into()),
        }
    }

    pub(super) fn create_entry(
        &self,
        parent: INodeNo,
        name: &OsStr,
        obj: NewObject<'_>,
        req: &Request,
    ) -> FsResult<Arc<Node>> {
        let p = self.u.node(parent.0)?;
        self.u
            .make_object(&p, name, obj, Self::who(req))
            .map(|(n, _)| n)
    }
}
