//! FUSE passthrough: reads and writes of an open file go straight from the kernel to the
//! backing file, without a round trip through the daemon. Used for files whose data is in the
//! upper layer (they never move again) and for every file of a read-only mount (nothing is
//! ever copied up there); on a writable mount, files still in a lower layer are served by the
//! daemon so that a descriptor opened before a copy-up reads the new data after it, unless the
//! mount asks for `passthrough=all`, which trades that for speed. Passthrough needs CAP_SYS_ADMIN;
//! without it (or an older kernel) every open falls back to normal reads and writes.

use std::os::fd::OwnedFd;
use std::sync::Arc;

use fuser::BackingId;

use crate::fs::tables::handles::FileHandle;
use crate::fs::tables::node::Node;
use crate::fs::union::Union;

/// Which opens use passthrough.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Off,
    /// Files whose data is in the upper layer, and all files of a read-only mount (the
    /// default where allowed).
    Upper,
    /// Every file, lower ones too: a descriptor opened on a lower file keeps reading the lower
    /// data after a copy-up (the semantics of fuse-overlayfs, not of kernel overlayfs).
    All,
}

impl Mode {
    pub fn parse(s: &str) -> Option<Mode> {
        match s {
            "off" | "0" | "no" => Some(Mode::Off),
            "upper" | "on" | "1" | "yes" => Some(Mode::Upper),
            "all" => Some(Mode::All),
            _ => None,
        }
    }
}

impl Union {
    /// Decide how handle `h` (just opened) is served: `Some(id)` for passthrough, made with
    /// `register` when the node has no backing id yet; `None` for normal reads and writes.
    pub fn passthrough_for(
        &self,
        h: &FileHandle,
        write: bool,
        register: impl FnOnce(&OwnedFd) -> std::io::Result<BackingId>,
    ) -> Option<Arc<BackingId>> {
        let node: &Node = &h.node;
        let wanted = match self.settings.passthrough {
            Mode::Off => false,
            Mode::Upper => node.data_in_upper() || self.layers.upper.is_none(),
            Mode::All => true,
        } && !(write && self.settings.pausable);
        let mut b = node.opens();
        if wanted && b.cached_opens == 0 {
            let id = match &b.backing {
                Some(id) => Some(id.clone()),
                None => register(&h.fd()).ok().map(Arc::new),
            };
            if let Some(id) = id {
                b.backing = Some(id.clone());
                b.passthrough_opens += 1;
                *h.backing.lock() = Some(id.clone());
                return Some(id);
            }
        }
        if b.passthrough_opens > 0 {
            // The inode is already in passthrough mode: this open must join it.
            if let Some(id) = b.backing.clone() {
                b.passthrough_opens += 1;
                *h.backing.lock() = Some(id.clone());
                return Some(id);
            }
        }
        b.cached_opens += 1;
        None
    }

    /// Account for the release of handle `h`.
    pub fn passthrough_release(&self, h: &FileHandle) {
        let mut b = h.node.opens();
        if h.backing.lock().take().is_some() {
            b.passthrough_opens = b.passthrough_opens.saturating_sub(1);
            if b.passthrough_opens == 0 {
                b.backing = None;
            }
        } else {
            b.cached_opens = b.cached_opens.saturating_sub(1);
        }
    }
}
