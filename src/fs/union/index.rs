//! The hard-link index (its format in [`crate::fs::format::index`]), kernel overlayfs's (`index=on`): lower files with
//! several names share one upper inode once any name is copied up. The copy lives in
//! `WORKDIR/index/<key>`, where the key is the hex of the kernel's `ovl_fh` encoding of the
//! lower file's handle, and every name that is copied up is a hard link to it. As the kernel
//! does, the entry carries `overlay.origin` (that same handle) and `overlay.nlink` ("U+N":
//! the union's link count relative to the upper inode's), so kernel overlayfs and strata
//! follow each other's index entries.

use std::ffi::OsStr;
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::atomic::Ordering;

use crate::fs::format::index::{IndexKey, key_of, nlink_value, union_nlink};
use crate::fs::union::{FsResult, Union, errno};
use crate::sys::{at, xattr};

impl Union {
    fn index_dir(&self) -> Option<BorrowedFd<'_>> {
        self.layers.index.as_ref().map(|f| f.as_fd())
    }

    /// The index key of lower object `name` in `dir` of lower layer `layer`.
    pub fn index_key(&self, layer: usize, dir: BorrowedFd<'_>, name: &OsStr) -> Option<IndexKey> {
        let l = self.layers.lowers.get(layer)?;
        key_of(&l.uuid, dir, name)
    }

    /// The `overlay.origin` value for a copy of lower object `name` in `dir` of layer
    /// `layer` (an empty name: `dir` itself); `None` when its filesystem makes no handles.
    pub fn origin_value(&self, layer: usize, dir: BorrowedFd<'_>, name: &OsStr) -> Option<Vec<u8>> {
        self.index_key(layer, dir, name).map(|k| k.origin)
    }

    /// Mark upper directory `dir` of union directory `node` impure (once): it now holds an
    /// entry that came from a lower layer, as kernel overlayfs marks it.
    pub fn mark_impure(
        &self,
        node: &crate::fs::tables::node::Node,
        dir: BorrowedFd<'_>,
    ) -> FsResult<()> {
        if node.state.read().impure {
            return Ok(());
        }
        match xattr::set_xattr_at(
            dir,
            OsStr::new(""),
            self.fmt
                .xattr(crate::fs::format::whiteout::OvlXattr::Impure)
                .as_bytes(),
            b"y",
        ) {
            Ok(()) => {}
            // As the kernel: an upper without xattrs holds no origins either.
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOTSUP) | Some(libc::EPERM)) => {}
            Err(e) => return Err(errno(e)),
        }
        node.state.write().impure = true;
        Ok(())
    }

    /// Whether the index has an entry for `key`, and its stat.
    pub fn index_lookup(&self, key: &IndexKey) -> FsResult<Option<libc::stat64>> {
        let Some(dir) = self.index_dir() else {
            return Ok(None);
        };
        match at::stat_at_opt(dir, &key.name)? {
            // A whiteout entry marks an object whose names were all removed.
            Some(st) if crate::fs::format::whiteout::is_whiteout_dev(&st) => Ok(None),
            other => Ok(other),
        }
    }

    /// The union's link count of index entry `key` (stat `st`): its `overlay.nlink`, or the
    /// upper count less the index's own link when that is missing.
    pub fn index_nlink(&self, key: &IndexKey, st: &libc::stat64) -> u64 {
        let fallback = st.st_nlink.saturating_sub(1).max(1);
        let Some(dir) = self.index_dir() else {
            return fallback;
        };
        let Ok(fd) = at::open_at(dir, &key.name, libc::O_PATH, 0) else {
            return fallback;
        };
        match xattr::get_xattr(
            fd.as_fd(),
            self.fmt.xattr(crate::fs::format::whiteout::OvlXattr::Nlink),
        ) {
            Ok(Some(v)) => union_nlink(&v, st.st_nlink, None).unwrap_or(fallback),
            _ => fallback,
        }
    }

    /// The union's link count of index entry `key`.
    pub fn index_union_nlink(&self, key: &IndexKey) -> FsResult<u64> {
        let ist = self.index_lookup(key)?.ok_or(libc_err(libc::ENOENT))?;
        Ok(self.index_nlink(key, &ist))
    }

    /// Record union link count `union` on index entry `key`.
    fn set_index_nlink(&self, key: &IndexKey, union: u64) -> FsResult<()> {
        let dir = self.index_dir().ok_or(libc_err(libc::EIO))?;
        let fd = at::open_at(dir, &key.name, libc::O_PATH, 0)?;
        let st = at::fstat(fd.as_fd())?;
        xattr::set_xattr(
            fd.as_fd(),
            self.fmt
                .xattr(crate::fs::format::whiteout::OvlXattr::Nlink)
                .as_bytes(),
            nlink_value(union, st.st_nlink).as_bytes(),
            0,
        )
        .map_err(errno)
    }

    /// A lower name of `key` was linked up: the upper inode gained a link, the union did not.
    pub fn index_name_linked_up(&self, key: &IndexKey, union_before: u64) -> FsResult<()> {
        self.set_index_nlink(key, union_before)
    }

    /// A lower-only name of `key` was removed from the union (whited out).
    pub fn index_name_removed(&self, key: &IndexKey, union_before: u64) -> FsResult<()> {
        self.set_index_nlink(key, union_before.saturating_sub(1))
    }

    /// Link index entry `key` as `name` in `dir`.
    pub fn link_from_index(
        &self,
        key: &IndexKey,
        dir: BorrowedFd<'_>,
        name: &OsStr,
    ) -> FsResult<()> {
        let idx = self.index_dir().ok_or(libc_err(libc::EIO))?;
        at::link_at(idx, &key.name, dir, name).map_err(errno)
    }

    /// Put the finished copy `tmp` (in the work dir) into the index as `key`, marked with its
    /// origin and the union's link count `union` (the lower object's).
    pub fn add_to_index(
        &self,
        work: BorrowedFd<'_>,
        tmp: &OsStr,
        key: &IndexKey,
        union: u64,
    ) -> FsResult<()> {
        let idx = self.index_dir().ok_or(libc_err(libc::EIO))?;
        self.layers.index_used.store(true, Ordering::Release);
        let fd = at::open_at(work, tmp, libc::O_PATH, 0)?;
        xattr::set_xattr(
            fd.as_fd(),
            self.fmt
                .xattr(crate::fs::format::whiteout::OvlXattr::Origin)
                .as_bytes(),
            &key.origin,
            0,
        )?;
        // Once in the index and under its name the upper inode has two links.
        xattr::set_xattr(
            fd.as_fd(),
            self.fmt
                .xattr(crate::fs::format::whiteout::OvlXattr::Nlink)
                .as_bytes(),
            nlink_value(union, 2).as_bytes(),
            0,
        )?;
        at::link_at(work, tmp, idx, &key.name).map_err(errno)
    }

    pub fn has_index(&self) -> bool {
        self.layers.index.is_some()
    }

    /// Whether the index may hold entries (lookups consult it only then).
    pub fn index_in_use(&self) -> bool {
        self.layers.index_used.load(Ordering::Acquire)
    }
}

fn libc_err(e: i32) -> fuser::Errno {
    fuser::Errno::from_i32(e)
}
