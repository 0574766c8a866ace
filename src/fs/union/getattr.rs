//! Attributes shown to the kernel: a real stat of the backing object, with the union's stable
//! inode number, merged-directory link count, and owner/mode overrides of rootless unpacks.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{FileAttr, FileType, INodeNo};

use crate::fs::tables::node::StatOverride;

/// The fuser file type of a stat mode.
pub fn file_type(mode: u32) -> FileType {
    match mode & libc::S_IFMT {
        libc::S_IFDIR => FileType::Directory,
        libc::S_IFLNK => FileType::Symlink,
        libc::S_IFCHR => FileType::CharDevice,
        libc::S_IFBLK => FileType::BlockDevice,
        libc::S_IFIFO => FileType::NamedPipe,
        libc::S_IFSOCK => FileType::Socket,
        _ => FileType::RegularFile,
    }
}

/// The fuser file type of a getdents d_type (None when unknown).
pub fn file_type_of_dtype(d: u8) -> Option<FileType> {
    Some(match d {
        libc::DT_DIR => FileType::Directory,
        libc::DT_LNK => FileType::Symlink,
        libc::DT_CHR => FileType::CharDevice,
        libc::DT_BLK => FileType::BlockDevice,
        libc::DT_FIFO => FileType::NamedPipe,
        libc::DT_SOCK => FileType::Socket,
        libc::DT_REG => FileType::RegularFile,
        _ => return None,
    })
}

fn time(sec: i64, nsec: i64) -> SystemTime {
    if sec >= 0 {
        UNIX_EPOCH + Duration::new(sec as u64, nsec as u32)
    } else {
        UNIX_EPOCH - Duration::new((-sec) as u64, 0) + Duration::from_nanos(nsec as u64)
    }
}

/// Build the attributes of a node from its real stat.
pub fn to_file_attr(
    st: &libc::stat64,
    ino: u64,
    merged_dir: bool,
    over: Option<&StatOverride>,
) -> FileAttr {
    let mut kind = file_type(st.st_mode);
    let mut perm = (st.st_mode & 0o7777) as u16;
    let mut uid = st.st_uid;
    let mut gid = st.st_gid;
    let mut rdev = st.st_rdev as u32;
    if let Some(o) = over {
        uid = o.uid;
        gid = o.gid;
        perm = (o.perm & 0o7777) as u16;
        if let Some((k, dev)) = o.dev {
            kind = k;
            rdev = dev as u32;
        }
    }
    FileAttr {
        ino: INodeNo(ino),
        size: st.st_size as u64,
        blocks: st.st_blocks as u64,
        atime: time(st.st_atime, st.st_atime_nsec),
        mtime: time(st.st_mtime, st.st_mtime_nsec),
        ctime: time(st.st_ctime, st.st_ctime_nsec),
        crtime: UNIX_EPOCH,
        kind,
        perm,
        nlink: if merged_dir { 1 } else { st.st_nlink as u32 },
        uid,
        gid,
        rdev,
        blksize: st.st_blksize as u32,
        flags: 0,
    }
}

/// Parse `UID:GID:MODE[:TYPE]` (MODE octal permission bits, TYPE `char-MAJ-MIN`,
/// `block-MAJ-MIN` or a plain type word) as written by rootless unpackers.
pub fn parse_override(value: &[u8]) -> Option<StatOverride> {
    let s = std::str::from_utf8(value)
        .ok()?
        .trim_end_matches('\0')
        .trim();
    let mut parts = s.split(':');
    let uid = parts.next()?.parse().ok()?;
    let gid = parts.next()?.parse().ok()?;
    let perm = u32::from_str_radix(parts.next()?, 8).ok()? & 0o7777;
    let dev = match parts.next() {
        Some(t) if t.starts_with("char-") || t.starts_with("block-") => {
            let mut p = t.split('-');
            let kind = if p.next()? == "char" {
                FileType::CharDevice
            } else {
                FileType::BlockDevice
            };
            let major: u32 = p.next()?.parse().ok()?;
            let minor: u32 = p.next()?.parse().ok()?;
            Some((kind, libc::makedev(major, minor)))
        }
        _ => None,
    };
    Some(StatOverride {
        uid,
        gid,
        perm,
        dev,
    })
}

/// Format an override as [`parse_override`] reads it.
pub fn format_override(o: &StatOverride) -> String {
    let mut s = format!("{}:{}:{:04o}", o.uid, o.gid, o.perm & 0o7777);
    if let Some((kind, dev)) = o.dev {
        let k = if kind == FileType::CharDevice {
            "char"
        } else {
            "block"
        };
        s.push_str(&format!(":{}-{}-{}", k, libc::major(dev), libc::minor(dev)));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn override_round_trips() -> std::result::Result<(), Box<dyn std::error::Error>> {
        let o = parse_override(b"0:5:4755").ok_or("0:5:4755 does not parse")?;
        assert_eq!((o.uid, o.gid, o.perm, o.dev), (0, 5, 0o4755, None));
        assert_eq!(format_override(&o), "0:5:4755");
        let d = parse_override(b"0:0:0660:char-1-3").ok_or("a device does not parse")?;
        assert_eq!(d.dev, Some((FileType::CharDevice, libc::makedev(1, 3))));
        assert_eq!(format_override(&d), "0:0:0660:char-1-3");
        assert!(parse_override(b"garbage").is_none());
        Ok(())
    }
}
