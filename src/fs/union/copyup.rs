//! Copy-up: bring an object from a lower layer into the upper one before its first change.
//! The copy (data with holes, mode, owner, times, xattrs) is built in the work dir and renamed
//! into place, so the upper never holds a half-made object; parent directories come first,
//! with their own metadata, and keep their times.

use std::ffi::OsStr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Arc;

use fuser::Errno;

use crate::fs::format::whiteout;
use crate::fs::tables::node::Node;
use crate::fs::union::FsError;
use crate::fs::union::{FsResult, Union, errno};
use crate::sys::{at, io, xattr};

/// The times of a stat, as utimensat takes them.
pub fn times_of(st: &libc::stat64) -> [libc::timespec; 2] {
    [
        libc::timespec {
            tv_sec: st.st_atime,
            tv_nsec: st.st_atime_nsec,
        },
        libc::timespec {
            tv_sec: st.st_mtime,
            tv_nsec: st.st_mtime_nsec,
        },
    ]
}

/// Copy every xattr of `src` to `dst` except overlay-internal ones.
pub fn copy_xattrs(src: BorrowedFd<'_>, dst: BorrowedFd<'_>) -> std::io::Result<()> {
    for name in xattr::list_xattr(src)? {
        if name.starts_with(b"trusted.overlay.") || name.starts_with(b"user.overlay.") {
            continue;
        }
        let Ok(n) = std::str::from_utf8(&name) else {
            continue;
        };
        let Some(value) = xattr::get_xattr(src, n)? else {
            continue;
        };
        match xattr::set_xattr(dst, &name, &value, 0) {
            Ok(()) => {}
            // What the daemon may not set (trusted.* rootless, security.* without privilege)
            // is left behind, as kernel overlayfs does for xattrs the upper cannot hold.
            Err(e) if matches!(e.raw_os_error(), Some(libc::EPERM) | Some(libc::ENOTSUP)) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Copy the data of `src` to `dst`: a reflink when the filesystem can, else the data
/// extents only (holes stay holes), then the exact size.
/// With `durable`, writeback of each copied chunk starts at once (so that the caller's final
/// fsync waits for little more than the last chunk) instead of all at the end.
pub fn copy_data(
    src: BorrowedFd<'_>,
    dst: BorrowedFd<'_>,
    size: u64,
    durable: bool,
) -> std::io::Result<()> {
    if rustix::fs::ioctl_ficlone(dst, src).is_ok() {
        return Ok(());
    }
    let mut pos: u64 = 0;
    while pos < size {
        let data = match io::lseek(src, pos as i64, libc::SEEK_DATA) {
            Ok(d) => d as u64,
            Err(e) if e.raw_os_error() == Some(libc::ENXIO) => break,
            Err(_) => pos, // SEEK_DATA unsupported: copy everything
        };
        let hole = match io::lseek(src, data as i64, libc::SEEK_HOLE) {
            Ok(h) => (h as u64).min(size),
            Err(_) => size,
        };
        let mut off = data;
        while off < hole {
            let want = ((hole - off) as usize).min(if durable { DURABLE_CHUNK } else { 1 << 30 });
            let n = match io::copy_file_range(src, off, dst, off, want) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e)
                    if matches!(
                        e.raw_os_error(),
                        Some(libc::EXDEV)
                            | Some(libc::EINVAL)
                            | Some(libc::ENOSYS)
                            | Some(libc::EOPNOTSUPP)
                    ) =>
                {
                    copy_by_buffer(src, dst, off, hole)?;
                    hole as usize - off as usize
                }
                Err(e) => return Err(e),
            };
            if durable {
                io::start_writeback(dst, off, n as u64)?;
            }
            off += n as u64;
        }
        pos = hole.max(data + 1).max(off);
    }
    // Only when the copy is short (a hole at the end): on ext4 a same-size truncate writes the
    // size to disk at once, and before the data, an unsynced copy would come back after a
    // power cut as zeros of that size.
    if at::fstat(dst)?.st_size as u64 != size {
        io::ftruncate(dst, size)?;
    }
    Ok(())
}

/// Bytes copied between two writeback starts of a durable copy.
const DURABLE_CHUNK: usize = 8 << 20;

fn copy_by_buffer(
    src: BorrowedFd<'_>,
    dst: BorrowedFd<'_>,
    from: u64,
    to: u64,
) -> std::io::Result<()> {
    let mut buf = vec![0u8; 1 << 20];
    let mut off = from;
    while off < to {
        let want = ((to - off) as usize).min(buf.len());
        let n = io::pread(src, &mut buf[..want], off)?;
        if n == 0 {
            break;
        }
        let mut w = 0;
        while w < n {
            w += io::pwrite(dst, &buf[w..n], off + w as u64)?;
        }
        off += n as u64;
    }
    Ok(())
}

/// Give the object `name` in `dir` the owner, mode, xattrs and times of `src_st` / `src`.
fn copy_meta(
    u: &Union,
    dir: BorrowedFd<'_>,
    name: &OsStr,
    obj: Option<BorrowedFd<'_>>,
    src: Option<BorrowedFd<'_>>,
    src_st: &libc::stat64,
) -> std::io::Result<()> {
    let is_link = src_st.st_mode & libc::S_IFMT == libc::S_IFLNK;
    if u.settings.privileged {
        at::chown_at(dir, name, src_st.st_uid, src_st.st_gid)?;
    }
    if let (Some(src), Some(obj)) = (src, obj)
        && !is_link
    {
        copy_xattrs(src, obj)?;
    }
    if !is_link {
        match obj {
            Some(o) => at::chmod_fd(o, src_st.st_mode & 0o7777)?,
            None => {
                let o = at::open_at(dir, name, libc::O_PATH, 0)?;
                at::chmod_fd(o.as_fd(), src_st.st_mode & 0o7777)?;
            }
        }
    }
    at::utimens_at(dir, name, &times_of(src_st))
}

/// Copy `node` up with its data (its parents first). A no-op when it is already in the upper
/// layer; a metadata-only copy gets its data.
pub fn copy_up(u: &Union, node: &Arc<Node>) -> FsResult<()> {
    if node.in_upper() {
        if node.state.read().metacopy {
            return copy_up_data(u, node);
        }
        return Ok(());
    }
    copy_up_inner(u, node, false)
}

/// Copy `node` up for a change of metadata only (chmod, chown, utimes, xattrs): a regular
/// file with one link gets an upper inode without data (kernel overlayfs `metacopy`), which
/// reads keep taking from the lower file until the first write.
pub fn copy_up_meta(u: &Union, node: &Arc<Node>) -> FsResult<()> {
    if node.in_upper() {
        return Ok(());
    }
    copy_up_inner(u, node, u.settings.metacopy)
}

/// Give a metadata-only copy its data: copied into the upper inode in place, the metacopy
/// mark removed only afterwards, so a crash in between still reads the lower data.
pub fn copy_up_data(u: &Union, node: &Arc<Node>) -> FsResult<()> {
    let _guard = node.copyup_lock.lock();
    if !node.state.read().metacopy {
        return Ok(());
    }
    let src = u.data_entry_of(node)?;
    let dst = u.entry_of(node)?;
    let sfd = at::open_at(src.dir(), &src.name, libc::O_RDONLY, 0)?;
    let dfd = at::open_at(dst.dir(), &dst.name, libc::O_WRONLY, 0)?;
    let before = at::fstat(dfd.as_fd())?;
    let size = at::fstat(sfd.as_fd())?.st_size as u64;
    copy_data(sfd.as_fd(), dfd.as_fd(), size, u.settings.sync_copy_up)?;
    if u.settings.sync_copy_up {
        io::fsync(dfd.as_fd(), false)?;
    }
    let _ = at::utimens_at(dfd.as_fd(), OsStr::new(""), &times_of(&before));
    match xattr::remove_xattr(
        dfd.as_fd(),
        u.fmt
            .xattr(crate::fs::format::whiteout::OvlXattr::Metacopy)
            .as_bytes(),
    ) {
        Err(e) if e.raw_os_error() != Some(libc::ENODATA) => return Err(errno(e)),
        _ => {}
    }
    let mut st = node.state.write();
    st.metacopy = false;
    st.set_data(None);
    st.set_lower_layer(None);
    Ok(())
}

fn copy_up_inner(u: &Union, node: &Arc<Node>, meta_only: bool) -> FsResult<()> {
    let _guard = node.copyup_lock.lock();
    if node.in_upper() {
        return Ok(());
    }
    let (parent, name) = u.parent_of(node)?;
    let pdir = u.upper_dir(&parent)?;
    let work = u.work()?;
    let src = u.entry_of(node)?;
    // A metadata-only lower object (an upper written with metacopy=on, now a lower layer)
    // has its data further down.
    let data_src = u.data_entry_of(node)?;
    let src_st = at::stat_at(src.dir(), &src.name)?;
    let parent_st = at::stat_at(pdir.as_fd(), OsStr::new(""))?;
    let tmp = u.temp_name();

    // Hard-linked lower files go through the index, so every name shares one upper inode.
    let (indexed, lower_layer) = {
        let s = node.state.read();
        (s.indexed().cloned(), s.lower_layer())
    };
    let key = match (indexed, lower_layer) {
        (Some(k), _) => Some(k),
        (None, Some(layer))
            if at::is_reg_or_special(&src_st) && src_st.st_nlink > 1 && u.has_index() =>
        {
            u.index_key(layer, src.dir(), &src.name)
        }
        _ => None,
    };
    if let Some(key) = &key
        && let Some(ist) = u.index_lookup(key)?
    {
        let union = u.index_nlink(key, &ist);
        u.link_from_index(key, pdir.as_fd(), &name)?;
        u.index_name_linked_up(key, union)?;
        let _ = at::utimens_at(pdir.as_fd(), OsStr::new(""), &times_of(&parent_st));
        u.mark_impure(&parent, pdir.as_fd())?;
        let mut st = node.state.write();
        st.set_lower_layer(None);
        st.in_upper = true;
        st.from_lower = true;
        st.set_indexed(Some(key.clone()));
        return Ok(());
    }

    // Rootless kernel overlayfs (userxattr) has no metacopy: copy data there too.
    let metacopy = meta_only
        && u.fmt.xattr_prefix.starts_with("trusted.")
        && key.is_none()
        && at::is_reg(&src_st);
    let made = if metacopy {
        make_meta_copy(u, work, &tmp, &src, &src_st)
    } else {
        make_copy(u, work, &tmp, &src, &data_src, &src_st)
    };
    let origin_layer = {
        let s = node.state.read();
        s.lower_layer()
            .or_else(|| s.lower_dirs().first().map(|d| d.layer))
    };
    let made = made.and_then(|_| match &key {
        Some(k) => u.add_to_index(work, &tmp, k, src_st.st_nlink),
        // Record where the copy came from (the kernel's `origin`): its inode number, its
        // hard-link index entry and its lower object are found by it after a remount.
        None => match origin_layer.and_then(|l| u.origin_value(l, src.dir(), &src.name)) {
            Some(origin) => set_internal_xattr(
                work,
                &tmp,
                u.fmt
                    .xattr(crate::fs::format::whiteout::OvlXattr::Origin)
                    .as_bytes(),
                &origin,
            ),
            None => Ok(()),
        },
    });
    if let Err(e) = made {
        let _ = at::unlink_at(work, &tmp, src_st.st_mode & libc::S_IFMT == libc::S_IFDIR);
        return Err(e);
    }
    if let Err(e) = at::rename_at(work, &tmp, pdir.as_fd(), &name, 0) {
        let _ = at::unlink_at(work, &tmp, src_st.st_mode & libc::S_IFMT == libc::S_IFDIR);
        return Err(errno(e));
    }
    u.mark_impure(&parent, pdir.as_fd())?;
    // Adding the name changed the parent's times: give it back the ones it had.
    let _ = at::utimens_at(pdir.as_fd(), OsStr::new(""), &times_of(&parent_st));

    let mut st = node.state.write();
    if node.is_dir() {
        let fd = at::open_at(pdir.as_fd(), &name, libc::O_PATH | libc::O_DIRECTORY, 0)?;
        st.set_upper_dir(Some(Arc::new(fd)));
    } else if metacopy {
        if !st.metacopy {
            // The data stays where it is: in the lower object just copied.
            st.set_data(Some(crate::fs::tables::node_state::DataLoc {
                dir: src.dir.clone(),
                name: src.name.clone(),
            }));
        }
        st.metacopy = true;
    } else {
        st.set_lower_layer(None);
        st.metacopy = false;
        st.set_data(None);
        st.set_indexed(key);
    }
    st.in_upper = true;
    st.from_lower = true;
    Ok(())
}

/// Set an overlay xattr on a new copy, leaving it out where the filesystem cannot hold it on
/// this kind of object (`user.*` on symlinks and devices), as the kernel does.
fn set_internal_xattr(
    dir: BorrowedFd<'_>,
    name: &OsStr,
    xattr: &[u8],
    value: &[u8],
) -> FsResult<()> {
    match xattr::set_xattr_at(dir, name, xattr, value) {
        Ok(()) => Ok(()),
        Err(e) if matches!(e.raw_os_error(), Some(libc::EPERM) | Some(libc::ENOTSUP)) => Ok(()),
        Err(e) => Err(errno(e)),
    }
}

/// Build a metadata-only copy of regular file `src` as `tmp`: the right size (all hole), the
/// metadata, and the `metacopy` mark.
fn make_meta_copy(
    u: &Union,
    work: BorrowedFd<'_>,
    tmp: &OsStr,
    src: &crate::fs::union::Entry,
    st: &libc::stat64,
) -> FsResult<()> {
    let sfd = src_fd(src, libc::O_PATH)?;
    let dfd = at::open_at(
        work,
        tmp,
        libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL,
        0o600,
    )?;
    io::ftruncate(dfd.as_fd(), st.st_size as u64)?;
    xattr::set_xattr(
        dfd.as_fd(),
        u.fmt
            .xattr(crate::fs::format::whiteout::OvlXattr::Metacopy)
            .as_bytes(),
        b"",
        0,
    )?;
    copy_meta(u, work, tmp, Some(dfd.as_fd()), Some(sfd.as_fd()), st).map_err(errno)
}

/// Build the copy of `src` as `tmp` in the work dir (a regular file's data from `data`,
/// which is `src` itself unless `src` holds metadata only).
fn make_copy(
    u: &Union,
    work: BorrowedFd<'_>,
    tmp: &OsStr,
    src: &crate::fs::union::Entry,
    data: &crate::fs::union::Entry,
    st: &libc::stat64,
) -> FsResult<()> {
    let fmt = st.st_mode & libc::S_IFMT;
    match fmt {
        libc::S_IFDIR => {
            at::mkdir_at(work, tmp, 0o700)?;
            let obj = at::open_at(work, tmp, libc::O_PATH | libc::O_DIRECTORY, 0)?;
            let sfd = src_fd(src, libc::O_PATH)?;
            copy_meta(u, work, tmp, Some(obj.as_fd()), Some(sfd.as_fd()), st).map_err(errno)
        }
        libc::S_IFREG => {
            let sfd = src_fd(src, libc::O_RDONLY)?;
            let datafd = src_fd(data, libc::O_RDONLY)?;
            let dfd = at::open_at(
                work,
                tmp,
                libc::O_RDWR | libc::O_CREAT | libc::O_EXCL,
                0o600,
            )?;
            copy_data(
                datafd.as_fd(),
                dfd.as_fd(),
                st.st_size as u64,
                u.settings.sync_copy_up,
            )?;
            copy_meta(u, work, tmp, Some(dfd.as_fd()), Some(sfd.as_fd()), st)?;
            if u.settings.sync_copy_up {
                io::fsync(dfd.as_fd(), false)?;
            }
            Ok(())
        }
        libc::S_IFLNK => {
            let target = at::readlink_at(src.dir(), &src.name)?;
            at::symlink_at(OsStr::from_bytes_compat(&target), work, tmp)?;
            copy_meta(u, work, tmp, None, None, st).map_err(errno)
        }
        _ => {
            if whiteout::is_whiteout_dev(st) {
                return Err(FsError(Errno::EIO));
            }
            at::mknod_at(work, tmp, fmt | 0o600, st.st_rdev)?;
            let obj = at::open_at(work, tmp, libc::O_PATH, 0)?;
            let sfd = src_fd(src, libc::O_PATH)?;
            copy_meta(u, work, tmp, Some(obj.as_fd()), Some(sfd.as_fd()), st).map_err(errno)
        }
    }
}

fn src_fd(src: &crate::fs::union::Entry, flags: i32) -> FsResult<OwnedFd> {
    let name = if src.name.is_empty() {
        OsStr::new(".")
    } else {
        &*src.name
    };
    at::open_at(src.dir(), name, flags, 0).map_err(errno)
}

trait FromBytesCompat {
    fn from_bytes_compat(b: &[u8]) -> &OsStr;
}

impl FromBytesCompat for OsStr {
    fn from_bytes_compat(b: &[u8]) -> &OsStr {
        use std::os::unix::ffi::OsStrExt;
        OsStr::from_bytes(b)
    }
}
