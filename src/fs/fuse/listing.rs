//! READDIR and READDIRPLUS replies from the merged listing of a directory: `.` and `..`
//! first, stable offsets, and (READDIRPLUS) attributes for every entry or, as the workload
//! shows it pays, for the subdirectories only.

use fuser::{INodeNo, ReplyDirectory, ReplyDirectoryPlus};

use crate::fs::fuse::dispatch::StrataFs;
use crate::fs::fuse::replies::GEN;
use crate::fs::union::Union;

impl StrataFs {
    pub(super) fn reply_readdir(&self, ino: INodeNo, offset: u64, mut reply: ReplyDirectory) {
        let r = self.timed("readdir", ino.0, None, || {
            let n = self.u.node(ino.0)?;
            let list = self.u.listing_at(&n, offset)?;
            Ok((n, list))
        });
        let (node, list) = match r {
            Ok(x) => x,
            Err(e) => return reply.error(e.into()),
        };
        let mut off = offset;
        if off == 0 {
            if reply.add(
                INodeNo(Union::st_ino(&node)),
                1,
                fuser::FileType::Directory,
                ".",
            ) {
                return reply.ok();
            }
            off = 1;
        }
        if off == 1 {
            let pino = self
                .u
                .parent_of(&node)
                .map(|(p, _)| Union::st_ino(&p))
                .unwrap_or(Union::st_ino(&node));
            if reply.add(INodeNo(pino), 2, fuser::FileType::Directory, "..") {
                return reply.ok();
            }
            off = 2;
        }
        if off - 2 >= list.len() as u64 {
            self.rdplus.released(node.id);
        }
        let mut files = 0;
        for (i, e) in list.iter().enumerate().skip((off - 2) as usize) {
            if reply.add(INodeNo(e.ino), i as u64 + 3, e.kind, &e.name) {
                break;
            }
            files += u32::from(e.kind != fuser::FileType::Directory);
        }
        self.rdplus.listed(node.id, files);
        reply.ok();
    }

    pub(super) fn reply_readdirplus(
        &self,
        ino: INodeNo,
        offset: u64,
        mut reply: ReplyDirectoryPlus,
    ) {
        let r = self.timed("readdirplus", ino.0, None, || {
            let n = self.u.node(ino.0)?;
            let list = self.u.listing_at(&n, offset)?;
            Ok((n, list))
        });
        let (node, list) = match r {
            Ok(x) => x,
            Err(e) => return reply.error(e.into()),
        };
        let ttl = self.ttl();
        let mut off = offset;
        // Unless listings have been followed by stats, the first reply carries `.`, `..` and
        // the subdirectories (which a walk looks up anyway; the listing holds them first) and
        // stops there: the kernel asks for the rest with plain READDIR.
        let names_only = off == 0 && !self.rdplus.full_listing(node.id);
        if off == 0 {
            if let Ok(a) = self.u.attr(&node)
                && reply.add(INodeNo(node.id), 1, ".", &ttl, &a, GEN)
            {
                return reply.ok();
            }
            off = 1;
        }
        if off == 1 {
            let parent = self
                .u
                .parent_of(&node)
                .map(|(p, _)| p)
                .unwrap_or_else(|_| node.clone());
            if let Ok(a) = self.u.attr(&parent)
                && reply.add(INodeNo(parent.id), 2, "..", &ttl, &a, GEN)
            {
                return reply.ok();
            }
            off = 2;
        }
        if off - 2 >= list.len() as u64 {
            self.rdplus.released(node.id);
        }
        for (i, e) in list.iter().enumerate().skip((off - 2) as usize) {
            if names_only && e.kind != fuser::FileType::Directory {
                break;
            }
            let Ok((child, a)) = self.u.lookup_attr(&node, &e.name) else {
                continue;
            };
            let full = reply.add(INodeNo(child.id), i as u64 + 3, &e.name, &ttl, &a, GEN);
            if full {
                self.u.nodes.forget(child.id, 1);
                break;
            }
        }
        reply.ok();
    }
}
