//! Operations that change names: create, mkdir, mknod, symlink, link, unlink, rmdir. New
//! objects replace whiteouts atomically (built in the work dir, then renamed or exchanged into
//! place); removing a name that a lower layer holds leaves a whiteout.

use std::ffi::{OsStr, OsString};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Arc;

use fuser::Errno;

use crate::fs::format::whiteout;
use crate::fs::tables::layer::Place;
use crate::fs::tables::node::{Link, Node};
use crate::fs::tables::node_state::NodeState;
use crate::fs::union::FsError;
use crate::fs::union::getattr;
use crate::fs::union::{FsResult, Union, errno};
use crate::sys::{at, dir};

/// Who asks for a new object, and how it should look.
#[derive(Debug, Clone, Copy)]
pub struct Creator {
    pub uid: u32,
    pub gid: u32,
}

/// What to make in [`Union::make_object`].
pub enum NewObject<'a> {
    File {
        mode: u32,
        flags: i32,
    },
    Dir {
        mode: u32,
    },
    Node {
        mode: u32,
        rdev: u64,
    },
    Symlink {
        target: &'a OsStr,
    },
    Link {
        src_dir: BorrowedFd<'a>,
        src_name: &'a OsStr,
    },
}

impl NewObject<'_> {
    fn is_dir(&self) -> bool {
        matches!(self, NewObject::Dir { .. })
    }

    /// Create the object as `name` in `dir`; files come back open.
    fn make(&self, dir: BorrowedFd<'_>, name: &OsStr) -> std::io::Result<Option<OwnedFd>> {
        match self {
            NewObject::File { mode, flags } => {
                let f = (flags & !(libc::O_APPEND | libc::O_NOCTTY | libc::O_TRUNC))
                    | libc::O_CREAT
                    | libc::O_EXCL;
                Ok(Some(at::open_at(dir, name, f, *mode & 0o7777)?))
            }
            NewObject::Dir { mode } => at::mkdir_at(dir, name, *mode & 0o7777).map(|_| None),
            NewObject::Node { mode, rdev } => at::mknod_at(dir, name, *mode, *rdev).map(|_| None),
            NewObject::Symlink { target } => at::symlink_at(target, dir, name).map(|_| None),
            NewObject::Link {
                src_dir, src_name, ..
            } => at::link_at(*src_dir, src_name, dir, name).map(|_| None),
        }
    }

    fn mode(&self) -> Option<u32> {
        match self {
            NewObject::File { mode, .. }
            | NewObject::Dir { mode }
            | NewObject::Node { mode, .. } => Some(*mode & 0o7777),
            _ => None,
        }
    }
}

/// What an upper directory holds at a name before a create.
struct Slot {
    dev_whiteout: bool,
    wh_file: bool,
}

impl Union {
    fn slot(&self, dir: BorrowedFd<'_>, name: &OsStr) -> FsResult<Slot> {
        let dev_whiteout = match at::stat_at_opt(dir, name)? {
            Some(st) if whiteout::is_whiteout_dev(&st) => true,
            Some(_) => return Err(FsError(Errno::EEXIST)),
            None => false,
        };
        let wh_file = whiteout::has_wh_file(dir, name)?;
        Ok(Slot {
            dev_whiteout,
            wh_file,
        })
    }

    /// Give a new object the creator's owner (root daemons only) and its exact mode.
    fn own(
        &self,
        dir: BorrowedFd<'_>,
        name: &OsStr,
        obj: &NewObject<'_>,
        who: Creator,
        parent_st: &libc::stat64,
    ) -> std::io::Result<()> {
        if matches!(obj, NewObject::Link { .. }) {
            return Ok(());
        }
        let setgid_parent = parent_st.st_mode & libc::S_ISGID != 0;
        let gid = if setgid_parent {
            parent_st.st_gid
        } else {
            who.gid
        };
        if self.settings.privileged {
            at::chown_at(dir, name, who.uid, gid)?;
        }
        if let Some(mut mode) = obj.mode() {
            if obj.is_dir() && setgid_parent {
                mode |= libc::S_ISGID;
            }
            if mode & 0o7000 != 0 || obj.is_dir() {
                let fd = at::open_at(dir, name, libc::O_PATH, 0)?;
                at::chmod_fd(fd.as_fd(), mode)?;
            }
        }
        Ok(())
    }

    /// Create `name` in `parent` (which must not show it), replacing a whiteout atomically.
    /// Returns the new node (one lookup counted) and, for files, the open fd.
    pub fn make_object(
        &self,
        parent: &Arc<Node>,
        name: &OsStr,
        obj: NewObject<'_>,
        who: Creator,
    ) -> FsResult<(Arc<Node>, Option<OwnedFd>)> {
        let _pass = self.gate.enter();
        let (udir, fd, over_whiteout) = self.place_object(parent, name, &obj, who)?;
        let st = at::stat_at(udir.as_fd(), name)?;
        let mut state = NodeState::default();
        state.in_upper = true;
        if obj.is_dir() {
            let d = at::open_at(udir.as_fd(), name, libc::O_PATH | libc::O_DIRECTORY, 0)?;
            state.set_upper_dir(Some(Arc::new(d)));
            state.opaque = over_whiteout;
        }
        let node = Node::new(
            getattr::file_type(st.st_mode),
            self.layers.ino(Place::Upper, st.st_ino),
            Link::new(parent.id, name),
            state,
        );
        Ok((self.nodes.replace_child(parent, name, node), fd))
    }

    /// Make `obj` as `name` in the upper dir of `parent`; returns that dir, the fd of a new
    /// file, and whether a whiteout was replaced.
    fn place_object(
        &self,
        parent: &Arc<Node>,
        name: &OsStr,
        obj: &NewObject<'_>,
        who: Creator,
    ) -> FsResult<(Arc<OwnedFd>, Option<OwnedFd>, bool)> {
        if whiteout::is_reserved_name(std::os::unix::ffi::OsStrExt::as_bytes(name)) {
            return Err(FsError(Errno::EINVAL));
        }
        // A character device 0/0 would be a whiteout: refused, as kernel overlayfs does.
        if let NewObject::Node { mode, rdev: 0 } = obj
            && mode & libc::S_IFMT == libc::S_IFCHR
        {
            return Err(FsError(Errno::EPERM));
        }
        let udir = self.upper_dir(parent)?;
        let parent_st = at::fstat(udir.as_fd())?;
        let slot = self.slot(udir.as_fd(), name)?;
        let over_whiteout = slot.dev_whiteout || slot.wh_file;
        let fd;
        if !over_whiteout {
            fd = obj.make(udir.as_fd(), name)?;
            if let Err(e) = self.own(udir.as_fd(), name, obj, who, &parent_st) {
                let _ = at::unlink_at(udir.as_fd(), name, obj.is_dir());
                return Err(errno(e));
            }
        } else {
            let work = self.work()?;
            let tmp = self.temp_name();
            fd = obj.make(work, &tmp)?;
            let placed = (|| -> std::io::Result<()> {
                self.own(work, &tmp, obj, who, &parent_st)?;
                if obj.is_dir() {
                    // A directory made where a lower one was deleted hides the old contents.
                    let d = at::open_at(work, &tmp, libc::O_PATH | libc::O_DIRECTORY, 0)?;
                    self.fmt.set_opaque(d.as_fd())?;
                }
                if slot.dev_whiteout {
                    if obj.is_dir() {
                        at::rename_at(work, &tmp, udir.as_fd(), name, libc::RENAME_EXCHANGE)?;
                        at::unlink_at(work, &tmp, false)?;
                    } else {
                        at::rename_at(work, &tmp, udir.as_fd(), name, 0)?;
                    }
                } else {
                    at::rename_at(work, &tmp, udir.as_fd(), name, libc::RENAME_NOREPLACE)?;
                }
                if slot.wh_file {
                    at::unlink_at(udir.as_fd(), &whiteout::wh_name(name), false)?;
                }
                Ok(())
            })();
            if let Err(e) = placed {
                let _ = at::unlink_at(work, &tmp, obj.is_dir());
                return Err(errno(e));
            }
        }
        Ok((udir, fd, over_whiteout))
    }

    /// Hard link `node` as `newname` in `newparent`: one more name of the same node.
    pub fn link(
        &self,
        node: &Arc<Node>,
        newparent: &Arc<Node>,
        newname: &OsStr,
    ) -> FsResult<Arc<Node>> {
        let _pass = self.gate.enter();
        crate::fs::union::copyup::copy_up_meta(self, node)?;
        self.set_file_redirect(node)?;
        let src = self.entry_of(node)?;
        let obj = NewObject::Link {
            src_dir: src.dir(),
            src_name: &src.name,
        };
        let (ndir, _, _) =
            self.place_object(newparent, newname, &obj, Creator { uid: 0, gid: 0 })?;
        if node.state.read().from_lower {
            self.mark_impure(newparent, ndir.as_fd())?;
        }
        self.nodes.add_name(newparent, newname, node);
        Ok(node.clone())
    }

    /// The child `name` of `parent` without counting a kernel lookup (a transient node when
    /// the kernel does not hold it).
    pub fn peek_child(&self, parent: &Arc<Node>, name: &OsStr) -> FsResult<Option<Arc<Node>>> {
        if let Some(id) = self.nodes.child_id(parent.id, name)
            && let Some(n) = self.nodes.get(id)
        {
            return Ok(Some(n));
        }
        if whiteout::is_reserved_name(std::os::unix::ffi::OsStrExt::as_bytes(name)) {
            return Ok(None);
        }
        Ok(self.resolve(parent, name)?.map(Arc::new))
    }

    /// Remove a non-directory.
    pub fn unlink(&self, parent: &Arc<Node>, name: &OsStr) -> FsResult<()> {
        let _pass = self.gate.enter();
        let node = self
            .peek_child(parent, name)?
            .ok_or(FsError(Errno::ENOENT))?;
        if node.is_dir() {
            return Err(FsError(Errno::EISDIR));
        }
        self.remove_name(parent, name, &node)
    }

    /// Remove an empty directory.
    pub fn rmdir(&self, parent: &Arc<Node>, name: &OsStr) -> FsResult<()> {
        let _pass = self.gate.enter();
        let node = self
            .peek_child(parent, name)?
            .ok_or(FsError(Errno::ENOENT))?;
        if !node.is_dir() {
            return Err(FsError(Errno::ENOTDIR));
        }
        if !self.dir_is_empty(&node)? {
            return Err(FsError(Errno::ENOTEMPTY));
        }
        self.clear_upper_dir(&node)?;
        self.remove_name(parent, name, &node)
    }

    /// Delete the whiteouts and markers left in the upper dir of an (empty) union directory.
    pub fn clear_upper_dir(&self, node: &Arc<Node>) -> FsResult<()> {
        let Some(udir) = node.state.read().upper_dir().cloned() else {
            return Ok(());
        };
        for e in dir::read_dir(udir.as_fd())? {
            let n = OsString::from(std::ffi::OsStr::new(""));
            let _ = n;
            let name = <OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(&e.name);
            at::unlink_at(udir.as_fd(), name, e.dtype == libc::DT_DIR)?;
        }
        Ok(())
    }

    /// Whether `dir` (an upper directory) holds a real object (not a whiteout) at `name`.
    pub fn name_in_upper(&self, dir: BorrowedFd<'_>, name: &OsStr) -> FsResult<bool> {
        Ok(matches!(at::stat_at_opt(dir, name)?, Some(st) if !whiteout::is_whiteout_dev(&st)))
    }

    /// Make sure name `name` of non-directory `node` (already copied up under another name)
    /// is linked into the upper layer too.
    pub fn link_up_name(&self, parent: &Arc<Node>, name: &OsStr, node: &Arc<Node>) -> FsResult<()> {
        if node.is_dir() {
            return Ok(());
        }
        let Some(key) = node.state.read().indexed().cloned() else {
            return Ok(());
        };
        let udir = self.upper_dir(parent)?;
        if self.name_in_upper(udir.as_fd(), name)? {
            return Ok(());
        }
        let union = self.index_union_nlink(&key)?;
        self.link_from_index(&key, udir.as_fd(), name)?;
        self.index_name_linked_up(&key, union)
    }

    /// Take `name` (showing `node`) out of the union: delete the upper object and leave a
    /// whiteout when a lower layer holds the name.
    fn remove_name(&self, parent: &Arc<Node>, name: &OsStr, node: &Arc<Node>) -> FsResult<()> {
        self.pin_before_removal(node);
        // A name that is not in the upper layer comes from a lower one: no need to look.
        let needs_whiteout = !node.in_upper() || self.lower_has(parent, name)?;
        let udir = self.upper_dir(parent)?;
        // Whether this very name is in the upper layer (a hard link may be there under
        // another name only).
        let in_upper = node.in_upper() && self.name_in_upper(udir.as_fd(), name)?;
        if !in_upper {
            self.make_whiteout(udir.as_fd(), name)?;
            if let Some(key) = node.state.read().indexed().cloned() {
                let union = self.index_union_nlink(&key)?;
                self.index_name_removed(&key, union)?;
            }
        } else if !needs_whiteout {
            at::unlink_at(udir.as_fd(), name, node.is_dir())?;
        } else if self.fmt.whiteout_dev {
            // Build the whiteout in the work dir and swap it in, so the name never shows the
            // lower object in between.
            let work = self.work()?;
            let tmp = self.temp_name();
            self.make_whiteout(work, &tmp)?;
            let swapped = if node.is_dir() {
                at::rename_at(work, &tmp, udir.as_fd(), name, libc::RENAME_EXCHANGE)
                    .and_then(|_| at::unlink_at(work, &tmp, true))
            } else {
                at::rename_at(work, &tmp, udir.as_fd(), name, 0)
            };
            if let Err(e) = swapped {
                let _ = at::unlink_at(work, &tmp, false);
                return Err(errno(e));
            }
        } else {
            self.make_whiteout(udir.as_fd(), name)?;
            at::unlink_at(udir.as_fd(), name, node.is_dir())?;
        }
        self.nodes.detach_child(parent, name);
        Ok(())
    }
}
