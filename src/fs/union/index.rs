//! The hard-link index, in kernel overlayfs's on-disk format (`index=on`): lower files with
//! several names share one upper inode once any name is copied up. The copy lives in
//! `WORKDIR/index/<key>`, where the key is the hex of the kernel's `ovl_fh` encoding of the
//! lower file's handle, and every name that is copied up is a hard link to it. As the kernel
//! does, the entry carries `overlay.origin` (that same handle) and `overlay.nlink` ("U+N":
//! the union's link count relative to the upper inode's), so kernel overlayfs and strata
//! follow each other's index entries.

use std::ffi::{OsStr, OsString};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;
use std::sync::atomic::Ordering;

use crate::fs::union::{FsResult, Union, errno};
use crate::sys::at;

/// `ovl_fb` header: version 0, magic 0xfb, then len, flags, handle type, 16-byte uuid.
const FH_VERSION: u8 = 0;
const FH_MAGIC: u8 = 0xfb;
const FH_HEADER: usize = 5 + 16;
/// Flag of a handle encoded on a big-endian machine (`OVL_FH_FLAG_BIG_ENDIAN`).
const FH_FLAG_BIG_ENDIAN: u8 = 1;

/// An index key: the lower object's encoded handle and its hex name in the index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexKey {
    pub name: OsString,
    pub origin: Vec<u8>,
}

/// The key of lower object `name` in `dir`, whose filesystem has `uuid` (the kernel's
/// `ovl_encode_real_fh` for a lower object). `None` when the filesystem cannot make file
/// handles: such files are copied up without the index.
pub fn key_of(uuid: &[u8; 16], dir: BorrowedFd<'_>, name: &OsStr) -> Option<IndexKey> {
    let (handle_type, fid) = file_handle(dir, name)?;
    let len = FH_HEADER + fid.len();
    let mut fh = Vec::with_capacity(len);
    let flags = if cfg!(target_endian = "big") {
        FH_FLAG_BIG_ENDIAN
    } else {
        0
    };
    fh.extend_from_slice(&[
        FH_VERSION,
        FH_MAGIC,
        u8::try_from(len).ok()?,
        flags,
        u8::try_from(handle_type).ok()?,
    ]);
    fh.extend_from_slice(uuid);
    fh.extend_from_slice(&fid);
    Some(IndexKey {
        name: OsString::from(hex::encode(&fh)),
        origin: fh,
    })
}

/// An `overlay.origin` value: the file handle of the lower object an upper one was copied
/// up from, as [`key_of`] encodes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub uuid: [u8; 16],
    pub handle_type: i32,
    pub fid: Vec<u8>,
}

/// Parse an `overlay.origin` value; `None` for "origin unknown" (empty, other version, other
/// byte order) or a malformed value, as the kernel treats them.
pub fn parse_origin(v: &[u8]) -> Option<Origin> {
    if v.len() < FH_HEADER || v[1] != FH_MAGIC || v[0] != FH_VERSION {
        return None;
    }
    let len = usize::from(v[2]);
    if len < FH_HEADER || len > v.len() {
        return None;
    }
    let big = v[3] & FH_FLAG_BIG_ENDIAN != 0;
    if big != cfg!(target_endian = "big") {
        return None;
    }
    let mut uuid = [0u8; 16];
    uuid.copy_from_slice(&v[5..FH_HEADER]);
    Some(Origin {
        uuid,
        handle_type: i32::from(v[4]),
        fid: v[FH_HEADER..len].to_vec(),
    })
}

impl IndexKey {
    /// The index key named by an upper object's `overlay.origin` value (the kernel's index
    /// entry name is the hex of the origin handle).
    pub fn from_origin_value(v: &[u8]) -> Option<IndexKey> {
        parse_origin(v)?;
        let fh = v[..usize::from(v[2])].to_vec();
        Some(IndexKey {
            name: OsString::from(hex::encode(&fh)),
            origin: fh,
        })
    }
}

/// Filesystem magics (`statfs` f_type) whose file handles carry the inode number.
const EXT4_MAGIC: i64 = 0xEF53;
const TMPFS_MAGIC: i64 = 0x0102_1994;
const XFS_MAGIC: i64 = 0x5846_5342;
const BTRFS_MAGIC: i64 = 0x9123_683E;

/// The inode number inside a file handle of a filesystem of type `fs_type`, for the
/// filesystems whose handle layout is known (no system call, no privilege needed).
pub fn ino_in_handle(fs_type: i64, o: &Origin) -> Option<u64> {
    let u32_at = |i: usize| -> Option<u64> {
        let b = o.fid.get(i..i + 4)?;
        Some(u64::from(u32::from_ne_bytes(b.try_into().ok()?)))
    };
    let u64_at = |i: usize| -> Option<u64> {
        let b = o.fid.get(i..i + 8)?;
        Some(u64::from_ne_bytes(b.try_into().ok()?))
    };
    match (fs_type, o.handle_type) {
        // FILEID_INO32_GEN(_PARENT): { u32 ino; u32 gen; ... }
        (EXT4_MAGIC, 1 | 2) | (XFS_MAGIC, 1 | 2) => u32_at(0),
        // XFS 64-bit inodes: { u64 ino; u32 gen; ... }
        (XFS_MAGIC, 0x81 | 0x82) => u64_at(0),
        // shmem: { u32 gen; u32 ino_lo; u32 ino_hi }
        (TMPFS_MAGIC, 1) => Some(u32_at(4)? | (u32_at(8)? << 32)),
        // btrfs: { u64 objectid; u64 root; u32 gen; ... }
        (BTRFS_MAGIC, 0x4d..=0x4f) => u64_at(0),
        _ => None,
    }
}

/// `name_to_handle_at`: the handle type and bytes of `name` in `dir` (not following links).
fn file_handle(dir: BorrowedFd<'_>, name: &OsStr) -> Option<(i32, Vec<u8>)> {
    const MAX_HANDLE_SZ: usize = 128;
    // struct file_handle { u32 handle_bytes; i32 handle_type; u8 f_handle[]; }
    let mut buf = vec![0u8; 8 + MAX_HANDLE_SZ];
    buf[0..4].copy_from_slice(&(MAX_HANDLE_SZ as u32).to_ne_bytes());
    let c = std::ffi::CString::new(name.as_bytes()).ok()?;
    let mut mount_id: libc::c_int = 0;
    // An empty name is `dir` itself (a directory's key).
    let flags = if name.is_empty() {
        libc::AT_EMPTY_PATH
    } else {
        0
    };
    // SAFETY: buf is a file_handle with room for MAX_HANDLE_SZ bytes; c is NUL-terminated.
    let r = unsafe {
        libc::syscall(
            libc::SYS_name_to_handle_at,
            dir.as_raw_fd(),
            c.as_ptr(),
            buf.as_mut_ptr(),
            &mut mount_id as *mut libc::c_int,
            flags,
        )
    };
    if r != 0 {
        return None;
    }
    let len = (u32::from_ne_bytes(buf[0..4].try_into().ok()?) as usize).min(MAX_HANDLE_SZ);
    let handle_type = i32::from_ne_bytes(buf[4..8].try_into().ok()?);
    Some((handle_type, buf[8..8 + len].to_vec()))
}

/// The uuid of the filesystem holding `fd` (`FS_IOC_GETFSUUID`), as the kernel puts it in
/// file handles; all zero for filesystems without one.
pub fn fs_uuid(fd: BorrowedFd<'_>) -> [u8; 16] {
    // struct fsuuid2 { u8 len; u8 uuid[16]; }, _IOR(0x15, 0, struct fsuuid2)
    const FS_IOC_GETFSUUID: libc::c_ulong = 0x8011_1500;
    let mut buf = [0u8; 17];
    // The ioctl needs a real open file, not an O_PATH one.
    let Ok(dir) = at::open_at(fd, OsStr::new("."), libc::O_RDONLY | libc::O_DIRECTORY, 0) else {
        return [0; 16];
    };
    // SAFETY: buf has the size of struct fsuuid2.
    let r = unsafe { libc::ioctl(dir.as_raw_fd(), FS_IOC_GETFSUUID, buf.as_mut_ptr()) };
    let mut uuid = [0u8; 16];
    if r == 0 && buf[0] as usize <= 16 {
        let n = buf[0] as usize;
        uuid[..n].copy_from_slice(&buf[1..1 + n]);
    }
    uuid
}

/// The union's link count of an indexed object, from its `overlay.nlink` value ("U+N" or
/// "L+N", relative to the upper or lower inode's count), as the kernel reads it.
pub fn union_nlink(value: &[u8], upper_nlink: u64, lower_nlink: Option<u64>) -> Option<u64> {
    let s = std::str::from_utf8(value).ok()?;
    let (base, rest) = match s.as_bytes().first()? {
        b'U' => (upper_nlink, &s[1..]),
        b'L' => (lower_nlink?, &s[1..]),
        _ => return None,
    };
    if !rest.starts_with(['+', '-']) {
        return None;
    }
    let add: i64 = rest.parse().ok()?;
    u64::try_from(base as i64 + add).ok()
}

/// The `overlay.nlink` value for a union link count relative to the upper inode's.
fn nlink_value(union: u64, upper_nlink: u64) -> String {
    format!("U{:+}", union as i64 - upper_nlink as i64)
}

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
        match at::set_xattr_at(
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
        match at::stat_at_opt(dir, &key.name).map_err(errno)? {
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
        match at::get_xattr(
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
        let fd = at::open_at(dir, &key.name, libc::O_PATH, 0).map_err(errno)?;
        let st = at::fstat(fd.as_fd()).map_err(errno)?;
        at::set_xattr(
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
        let fd = at::open_at(work, tmp, libc::O_PATH, 0).map_err(errno)?;
        at::set_xattr(
            fd.as_fd(),
            self.fmt
                .xattr(crate::fs::format::whiteout::OvlXattr::Origin)
                .as_bytes(),
            &key.origin,
            0,
        )
        .map_err(errno)?;
        // Once in the index and under its name the upper inode has two links.
        at::set_xattr(
            fd.as_fd(),
            self.fmt
                .xattr(crate::fs::format::whiteout::OvlXattr::Nlink)
                .as_bytes(),
            nlink_value(union, 2).as_bytes(),
            0,
        )
        .map_err(errno)?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nlink_values_read_as_the_kernel_reads_them() {
        assert_eq!(union_nlink(b"U+1", 2, None), Some(3));
        assert_eq!(union_nlink(b"U-1", 2, None), Some(1));
        assert_eq!(union_nlink(b"U+0", 4, None), Some(4));
        assert_eq!(union_nlink(b"L+2", 2, Some(3)), Some(5));
        assert_eq!(union_nlink(b"L+2", 2, None), None);
        assert_eq!(union_nlink(b"U1", 2, None), None);
        assert_eq!(union_nlink(b"X+1", 2, None), None);
        assert_eq!(union_nlink(b"U-5", 2, None), None);
        assert_eq!(nlink_value(3, 2), "U+1");
        assert_eq!(nlink_value(1, 2), "U-1");
        assert_eq!(nlink_value(2, 2), "U+0");
    }

    #[test]
    fn key_is_the_kernel_ovl_fh_of_the_file_handle()
    -> std::result::Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        std::fs::write(dir.path().join("f"), "x")?;
        let d = at::open_dir_path(dir.path())?;
        let uuid = [7u8; 16];
        let Some(k) = key_of(&uuid, d.as_fd(), OsStr::new("f")) else {
            return Ok(()); // a filesystem without file handles
        };
        let (ty, fid) = file_handle(d.as_fd(), OsStr::new("f")).ok_or("no file handle")?;
        assert_eq!(k.origin[0..2], [0x00, 0xfb]);
        assert_eq!(k.origin[2] as usize, k.origin.len());
        assert_eq!(k.origin[4] as i32, ty);
        assert_eq!(k.origin[5..21], uuid);
        assert_eq!(k.origin[21..], fid[..]);
        assert_eq!(k.name.len(), 2 * k.origin.len());
        Ok(())
    }
}
