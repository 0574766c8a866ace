//! READDIR and READDIRPLUS replies from the merged listing of a directory: `.` and `..`
//! first, stable offsets, and (READDIRPLUS) attributes for every entry or, as the workload
//! shows it pays, for the subdirectories only (the other entries as names without a node).

use fuser::{Errno, INodeNo, ReplyDirectory, ReplyDirectoryPlus};

use crate::fs::fuse::dispatch::StrataFs;
use crate::fs::fuse::replies::{GEN, negative_entry};
use std::sync::Arc;

use crate::fs::tables::handles::DirEntry;
use crate::fs::tables::node::Node;
use crate::fs::union::FsResult;
use crate::fs::union::Union;

impl StrataFs {
    pub(super) fn reply_readdir(&self, ino: INodeNo, offset: u64, mut reply: ReplyDirectory) {
        let (node, list) = match self.listing_read("readdir", ino, offset) {
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
            let parent = self.parent_or_self(&node);
            if reply.add(
                INodeNo(Union::st_ino(&parent)),
                2,
                fuser::FileType::Directory,
                "..",
            ) {
                return reply.ok();
            }
            off = 2;
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
        let (node, list) = match self.listing_read("readdirplus", ino, offset) {
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
            let parent = self.parent_or_self(&node);
            if let Ok(a) = self.u.attr(&parent)
                && reply.add(INodeNo(parent.id), 2, "..", &ttl, &a, GEN)
            {
                return reply.ok();
            }
            off = 2;
        }
        let no_node = negative_entry();
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
                    ..no_node
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

    /// The directory and merged listing a READDIR or READDIRPLUS at `offset` reads (traced as
    /// `op`); a read from past its end tells the learner the listing is done.
    fn listing_read(
        &self,
        op: &str,
        ino: INodeNo,
        offset: u64,
    ) -> FsResult<(Arc<Node>, Arc<Vec<DirEntry>>)> {
        let (node, list) = self.timed(op, ino.0, None, || {
            let n = self.u.node(ino.0)?;
            let list = self.u.listing_at(&n, offset)?;
            Ok((n, list))
        })?;
        // Offsets 1 and 2 are `.` and `..`; entry `i` has offset `i + 3`.
        if offset.max(2) - 2 >= list.len() as u64 {
            self.rdplus.released(node.id);
        }
        Ok((node, list))
    }

    /// The parent a listing shows as `..` (the directory itself for the root, or once its name
    /// is gone).
    fn parent_or_self(&self, node: &Arc<Node>) -> Arc<Node> {
        self.u
            .parent_of(node)
            .map(|(p, _)| p)
            .unwrap_or_else(|_| node.clone())
    }
}
