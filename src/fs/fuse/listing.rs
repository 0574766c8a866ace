//! READDIR and READDIRPLUS replies from the merged listing of a directory: `.` and `..`
//! first, stable offsets, and (READDIRPLUS) attributes for every entry or, as the workload
//! shows it pays, for the subdirectories only (the other entries as names without a node).

use fuser::{Errno, INodeNo, ReplyDirectory, ReplyDirectoryPlus};

use crate::fs::fuse::dispatch::StrataFs;
use crate::fs::fuse::replies::{GEN, negative_entry};
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
        // A listing carries attributes for every entry, or (names only) for the
        // subdirectories, which a walk looks up anyway, and for the other entries just their
        // name, inode number and type (node id 0: the kernel makes no inode of them). Which
        // one is decided at offset 0 from what recent listings were followed by, and kept for
        // the reads that continue it.
        let names_only = if off == 0 {
            !self.rdplus.full_listing(node.id)
        } else {
            self.rdplus.names_only(node.id)
        };
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
        let mut files = 0;
        for (i, e) in list.iter().enumerate().skip((off - 2) as usize) {
            let next = i as u64 + 3;
            let looked_up = if names_only && e.kind != fuser::FileType::Directory {
                None
            } else {
                // An entry gone since the listing was made is left out; one whose lookup fails
                // otherwise is still listed, by name.
                match self.u.lookup_attr(&node, &e.name) {
                    Ok(found) => Some(found),
                    Err(err) if err == Errno::ENOENT => continue,
                    Err(_) => None,
                }
            };
            let Some((child, a)) = looked_up else {
                let name_only = fuser::FileAttr {
                    ino: INodeNo(e.ino),
                    kind: e.kind,
                    ..negative_entry()
                };
                if reply.add(INodeNo(0), next, &e.name, &ttl, &name_only, GEN) {
                    break;
                }
                files += u32::from(e.kind != fuser::FileType::Directory);
                continue;
            };
            if reply.add(INodeNo(child.id), next, &e.name, &ttl, &a, GEN) {
                self.u.nodes.forget(child.id, 1);
                break;
            }
        }
        self.rdplus.listed(node.id, files);
        reply.ok();
    }
}
