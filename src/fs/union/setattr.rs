//! Metadata changes and extended attributes: chmod, chown, truncate, utimens and the xattr
//! calls. Changing anything copies the object up first; overlay-internal xattrs stay hidden.

use std::ffi::{CString, OsStr};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::sync::Arc;
use std::time::SystemTime;

use fuser::{Errno, FileAttr, TimeOrNow};

use crate::fs::format::override_stat;
use crate::fs::format::whiteout;
use crate::fs::tables::node::Node;
use crate::fs::union::FsError;
use crate::fs::union::copyup::{copy_up, copy_up_meta};
use crate::fs::union::{FsResult, Union, errno};
use crate::sys::{at, io, xattr};

/// The fields of one setattr call.
#[derive(Debug, Default)]
pub struct SetAttr {
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub size: Option<u64>,
    pub atime: Option<TimeOrNow>,
    pub mtime: Option<TimeOrNow>,
    pub fh: Option<u64>,
}

fn timespec(t: Option<TimeOrNow>) -> libc::timespec {
    match t {
        None => libc::timespec {
            tv_sec: 0,
            tv_nsec: libc::UTIME_OMIT,
        },
        Some(TimeOrNow::Now) => libc::timespec {
            tv_sec: 0,
            tv_nsec: libc::UTIME_NOW,
        },
        Some(TimeOrNow::SpecificTime(t)) => match t.duration_since(SystemTime::UNIX_EPOCH) {
            Ok(d) => libc::timespec {
                tv_sec: d.as_secs() as i64,
                tv_nsec: d.subsec_nanos() as i64,
            },
            Err(e) => {
                let d = e.duration();
                let mut sec = -(d.as_secs() as i64);
                let mut nsec = -(d.subsec_nanos() as i64);
                if nsec < 0 {
                    sec -= 1;
                    nsec += 1_000_000_000;
                }
                libc::timespec {
                    tv_sec: sec,
                    tv_nsec: nsec,
                }
            }
        },
    }
}

impl Union {
    /// An O_PATH fd on the real object of `node`.
    pub fn object_fd(&self, node: &Node) -> FsResult<OwnedFd> {
        let e = self.entry_of(node)?;
        let name = if e.name.is_empty() {
            OsStr::new(".")
        } else {
            &*e.name
        };
        at::open_at(e.dir(), name, libc::O_PATH, 0).map_err(errno)
    }

    /// setattr: truncate, chmod, chown, utimens. With an open handle the changes go through
    /// its fd, so they work after the name was removed.
    pub fn setattr(&self, node: &Arc<Node>, a: SetAttr) -> FsResult<FileAttr> {
        let _pass = self.gate.enter();
        let handle = a.fh.and_then(|fh| self.handles.file(fh));
        if a.size.is_some() {
            copy_up(self, node)?;
        } else if handle.is_none() || !node.in_upper() {
            copy_up_meta(self, node)?;
        }
        // The object to change: a directory fd and a name, or (empty name) the fd itself.
        let (dir, name): (Arc<OwnedFd>, Arc<std::ffi::OsStr>) = match &handle {
            Some(h) => (self.current_fd(h)?, crate::fs::tables::node::empty_name()),
            None => {
                let e = self.entry_of(node)?;
                (e.dir.clone(), e.name.clone())
            }
        };
        if let Some(size) = a.size {
            if name.is_empty() && !node.is_dir() {
                match io::ftruncate(dir.as_fd(), size) {
                    Err(e)
                        if e.raw_os_error() == Some(libc::EINVAL)
                            || e.raw_os_error() == Some(libc::EBADF) =>
                    {
                        let fd = self.open_for_truncate(node)?;
                        io::ftruncate(fd.as_fd(), size)?;
                    }
                    other => other?,
                }
            } else {
                let fd = self.open_for_truncate(node)?;
                io::ftruncate(fd.as_fd(), size)?;
            }
        }
        // A node whose owner and mode come from an override xattr (rootless layers, read with
        // `override_stat`) keeps them there, also on a privileged mount (root of a container's
        // user namespace): a real chown/chmod would not change what the node reports.
        let over = node.state.read().over().copied();
        if a.uid.is_some() || a.gid.is_some() {
            if let Some(mut o) = over {
                o.uid = a.uid.unwrap_or(o.uid);
                o.gid = a.gid.unwrap_or(o.gid);
                if !node.is_dir() {
                    o.perm &= !(libc::S_ISUID
                        | if o.perm & 0o010 != 0 {
                            libc::S_ISGID
                        } else {
                            0
                        });
                }
                self.store_override(node, o)?;
            } else {
                at::chown_at(
                    dir.as_fd(),
                    &name,
                    a.uid.unwrap_or(u32::MAX),
                    a.gid.unwrap_or(u32::MAX),
                )?;
            }
        }
        if let Some(mode) = a.mode {
            if let Some(mut o) = over {
                o.perm = mode & 0o7777;
                self.store_override(node, o)?;
            } else if node.kind != fuser::FileType::Symlink {
                if name.is_empty() {
                    at::chmod_fd(dir.as_fd(), mode & 0o7777)?;
                } else {
                    let fd = at::open_at(dir.as_fd(), &name, libc::O_PATH, 0)?;
                    at::chmod_fd(fd.as_fd(), mode & 0o7777)?;
                }
            }
        }
        if a.atime.is_some() || a.mtime.is_some() {
            let times = [timespec(a.atime), timespec(a.mtime)];
            at::utimens_at(dir.as_fd(), &name, &times)?;
        }
        if name.is_empty() && !node.is_dir() {
            let st = at::fstat(dir.as_fd())?;
            return Ok(self.attr_from_stat(node, &st));
        }
        self.attr(node)
    }

    fn open_for_truncate(&self, node: &Node) -> FsResult<OwnedFd> {
        let e = self.entry_of(node)?;
        at::open_at(e.dir(), &e.name, libc::O_WRONLY, 0).map_err(errno)
    }

    fn store_override(
        &self,
        node: &Arc<Node>,
        o: crate::fs::format::override_stat::StatOverride,
    ) -> FsResult<()> {
        let fd = self.object_fd(node)?;
        let v = override_stat::format(&o);
        xattr::set_xattr(fd.as_fd(), override_stat::XATTR.as_bytes(), v.as_bytes(), 0)?;
        node.state.write().set_over(Some(o));
        Ok(())
    }

    fn check_xattr_name(&self, name: &OsStr) -> FsResult<()> {
        if whiteout::is_internal_xattr(name.as_bytes()) {
            if name
                .as_bytes()
                .starts_with(self.fmt.xattr_prefix.as_bytes())
            {
                return Err(FsError(Errno::EOPNOTSUPP));
            }
            return Err(FsError(Errno::ENODATA));
        }
        Ok(())
    }

    /// getxattr; `size` 0 asks for the length only.
    pub fn getxattr(&self, node: &Arc<Node>, name: &OsStr, size: u32) -> FsResult<Vec<u8>> {
        self.check_xattr_name(name)?;
        let fd = self.object_fd(node)?;
        let c = CString::new(name.as_bytes()).map_err(|_| Errno::EINVAL)?;
        xattr::get_xattr_raw(fd.as_fd(), &c, size as usize).map_err(errno)
    }

    /// listxattr without the internal names; NUL-separated.
    pub fn listxattr(&self, node: &Arc<Node>) -> FsResult<Vec<u8>> {
        let fd = self.object_fd(node)?;
        let mut out = Vec::new();
        for n in xattr::list_xattr(fd.as_fd())? {
            if whiteout::is_internal_xattr(&n) {
                continue;
            }
            out.extend_from_slice(&n);
            out.push(0);
        }
        Ok(out)
    }

    pub fn setxattr(
        &self,
        node: &Arc<Node>,
        name: &OsStr,
        value: &[u8],
        flags: i32,
    ) -> FsResult<()> {
        self.check_xattr_name(name).map_err(|_| Errno::EOPNOTSUPP)?;
        let _pass = self.gate.enter();
        copy_up_meta(self, node)?;
        let fd = self.object_fd(node)?;
        xattr::set_xattr(fd.as_fd(), name.as_bytes(), value, flags).map_err(errno)
    }

    pub fn removexattr(&self, node: &Arc<Node>, name: &OsStr) -> FsResult<()> {
        self.check_xattr_name(name).map_err(|_| Errno::EOPNOTSUPP)?;
        let _pass = self.gate.enter();
        if !node.in_upper() {
            // Nothing to remove: fail without copying up, as kernel overlayfs does.
            let fd = self.object_fd(node)?;
            let c = CString::new(name.as_bytes()).map_err(|_| Errno::EINVAL)?;
            xattr::get_xattr_raw(fd.as_fd(), &c, 0)?;
        }
        copy_up_meta(self, node)?;
        let fd = self.object_fd(node)?;
        xattr::remove_xattr(fd.as_fd(), name.as_bytes()).map_err(errno)
    }
}
