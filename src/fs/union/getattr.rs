//! Attributes shown to the kernel: a real stat of the backing object, with the union's stable
//! inode number, merged-directory link count, and owner/mode overrides of rootless unpacks.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{FileAttr, FileType, INodeNo};

use crate::fs::format::override_stat::{Special, StatOverride};

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
            kind = match k {
                Special::Char => FileType::CharDevice,
                Special::Block => FileType::BlockDevice,
                Special::Fifo => FileType::NamedPipe,
            };
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
