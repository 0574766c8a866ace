//! The hard-link index's on-disk format, kernel overlayfs's: index keys (the hex of the
//! kernel's `ovl_fh` encoding of a lower file's handle), `overlay.origin` values, the inode
//! number inside known file-handle layouts, and `overlay.nlink` ("U+N") values.

use std::ffi::{OsStr, OsString};
use std::os::fd::BorrowedFd;

use crate::sys::handle;

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
    let (handle_type, fid) = handle::file_handle(dir, name)?;
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
pub fn nlink_value(union: u64, upper_nlink: u64) -> String {
    format!("U{:+}", union as i64 - upper_nlink as i64)
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsFd;

    use super::*;
    use crate::sys::at;

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
        let (ty, fid) = handle::file_handle(d.as_fd(), OsStr::new("f")).ok_or("no file handle")?;
        assert_eq!(k.origin[0..2], [0x00, 0xfb]);
        assert_eq!(k.origin[2] as usize, k.origin.len());
        assert_eq!(k.origin[4] as i32, ty);
        assert_eq!(k.origin[5..21], uuid);
        assert_eq!(k.origin[21..], fid[..]);
        assert_eq!(k.name.len(), 2 * k.origin.len());
        Ok(())
    }
}
