//! FUSE init: the capabilities asked of the kernel, and whether files get open handles
//! (with passthrough where the kernel grants it) or I/O by node.

use fuser::{InitFlags, KernelConfig};

use crate::fs::fuse::dispatch::StrataFs;

impl StrataFs {
    /// Ask for the capabilities this filesystem uses and settle the I/O mode.
    pub(super) fn negotiate(&mut self, config: &mut KernelConfig) {
        // READDIRPLUS for every read of a listing (no FUSE_READDIRPLUS_AUTO, under which the
        // kernel asks for attributes at offset 0 only): each entry then carries attributes or
        // only its name, as `union::rdplus` judges the workload.
        for cap in [
            InitFlags::FUSE_DO_READDIRPLUS,
            InitFlags::FUSE_PARALLEL_DIROPS,
            InitFlags::FUSE_CACHE_SYMLINKS,
            InitFlags::FUSE_ASYNC_DIO,
        ] {
            let _ = config.add_capabilities(cap);
        }
        // Open handles cost two round trips per file opened (OPEN, and RELEASE after the
        // close). A writable mount needs them all the same: kernel overlayfs copies a lower
        // file up when it is opened for writing, written or not, and only OPEN tells. A
        // read-only mount needs them only for passthrough; without it (no CAP_SYS_ADMIN, or
        // `passthrough=off`) OPEN is answered with ENOSYS, the kernel then sends no OPEN and
        // RELEASE at all, and I/O names the node (`union::nodeio`). `open_handles=0` asks
        // for that on a writable mount too, where a file opened for writing is then copied up
        // at its first change instead.
        use crate::fs::union::passthrough::Mode;
        let read_only = self.u.layers.upper.is_none();
        let asked = self.u.settings.open_handles;
        if asked != Some(false)
            && self.u.settings.passthrough != Mode::Off
            && config.add_capabilities(InitFlags::FUSE_PASSTHROUGH).is_ok()
            && config.set_max_stack_depth(1).is_ok()
        {
            self.passthrough = true;
        }
        let handles = asked.unwrap_or(self.passthrough || !read_only);
        self.u.node_fds.set_enabled(!handles);
    }
}
