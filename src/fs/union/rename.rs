//! Rename, with RENAME_NOREPLACE and RENAME_EXCHANGE. A directory that has lower contents is
//! moved by copying up the directory itself and recording where its lower contents are (the
//! kernel's `redirect` xattr), so renaming lower directories works instead of failing EXDEV.

use std::ffi::OsStr;
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::sync::Arc;

use fuser::Errno;

use crate::fs::format::whiteout;
use crate::fs::tables::node::Node;
use crate::fs::union::FsError;
use crate::fs::union::copyup::copy_up_meta;
use crate::fs::union::lookup::join;
use crate::fs::union::{FsResult, Union};
use crate::sys::{at, xattr};

impl Union {
    /// rename(2) / renameat2(2) in the union.
    pub fn rename(
        &self,
        p1: &Arc<Node>,
        n1: &OsStr,
        p2: &Arc<Node>,
        n2: &OsStr,
        flags: u32,
    ) -> FsResult<()> {
        if flags & libc::RENAME_WHITEOUT != 0 {
            return Err(FsError(Errno::EINVAL));
        }
        if whiteout::is_reserved_name(n2.as_bytes()) {
            return Err(FsError(Errno::EINVAL));
        }
        let exchange = flags & libc::RENAME_EXCHANGE != 0;
        let _pass = self.gate.enter();
        let src = self.peek_child(p1, n1)?.ok_or(FsError(Errno::ENOENT))?;
        let dst = self.peek_child(p2, n2)?;
        if flags & libc::RENAME_NOREPLACE != 0 && dst.is_some() {
            return Err(FsError(Errno::EEXIST));
        }
        if exchange && dst.is_none() {
            return Err(FsError(Errno::ENOENT));
        }
        if let Some(d) = &dst {
            if Arc::ptr_eq(d, &src) || (p1.id == p2.id && n1 == n2) {
                return Ok(());
            }
            if !exchange {
                if d.is_dir() != src.is_dir() {
                    return Err(if d.is_dir() {
                        FsError(Errno::EISDIR)
                    } else {
                        FsError(Errno::ENOTDIR)
                    });
                }
                if d.is_dir() && !self.dir_is_empty(d)? {
                    return Err(FsError(Errno::ENOTEMPTY));
                }
            }
        }

        // Lower presence at both names, before anything moves.
        let src_lower_at_name = self.lower_has(p1, n1)?;
        let dst_lower_at_name = self.lower_has(p2, n2)?;

        copy_up_meta(self, &src)?;
        self.link_up_name(p1, n1, &src)?;
        if let Some(d) = &dst
            && exchange
        {
            copy_up_meta(self, d)?;
            self.link_up_name(p2, n2, d)?;
        }
        let d1 = self.upper_dir(p1)?;
        let d2 = self.upper_dir(p2)?;

        self.prepare_moved_dir(&src, p2, n2, dst_lower_at_name)?;
        // A directory receiving an object that came from a lower layer becomes impure.
        if p1.id != p2.id {
            if src.state.read().from_lower {
                self.mark_impure(p2, d2.as_fd())?;
            }
            if exchange && dst.as_ref().is_some_and(|d| d.state.read().from_lower) {
                self.mark_impure(p1, d1.as_fd())?;
            }
        }
        if exchange {
            if let Some(d) = &dst {
                self.prepare_moved_dir(d, p1, n1, src_lower_at_name)?;
            }
            at::rename_at(d1.as_fd(), n1, d2.as_fd(), n2, libc::RENAME_EXCHANGE)?;
            self.nodes.exchange_children(p1, n1, p2, n2);
            self.set_file_redirect(&src)?;
            if let Some(d) = &dst {
                self.set_file_redirect(d)?;
            }
            return Ok(());
        }

        if let Some(d) = &dst {
            self.pin_before_removal(d);
        }
        // Make room at the target: an upper directory there holds only whiteouts now.
        if let Some(d) = &dst
            && d.is_dir()
            && d.in_upper()
        {
            self.clear_upper_dir(d)?;
        }
        let target = at::stat_at_opt(d2.as_fd(), n2)?;
        let target_is_whiteout = target.as_ref().is_some_and(whiteout::is_whiteout_dev);
        if target_is_whiteout && src.is_dir() {
            // A directory cannot replace a device node: drop the whiteout first.
            at::unlink_at(d2.as_fd(), n2, false)?;
        }
        let wh_file_at_target = whiteout::has_wh_file(d2.as_fd(), n2)?;

        let leave_whiteout = src_lower_at_name;
        let mut done = false;
        if leave_whiteout && self.settings.privileged && self.fmt.whiteout_dev {
            done = at::rename_at(d1.as_fd(), n1, d2.as_fd(), n2, libc::RENAME_WHITEOUT).is_ok();
        }
        if !done {
            at::rename_at(d1.as_fd(), n1, d2.as_fd(), n2, 0)?;
            if leave_whiteout {
                self.make_whiteout(d1.as_fd(), n1)?;
            }
        }
        if wh_file_at_target {
            at::unlink_at(d2.as_fd(), &whiteout::wh_name(n2), false)?;
        }
        self.nodes.move_child(p1, n1, p2, n2);
        self.set_file_redirect(&src)?;
        Ok(())
    }

    /// Before directory `node` moves to `newparent/newname`: record a redirect to its lower
    /// contents, or mark it opaque when it has none but the target name has lower contents.
    fn prepare_moved_dir(
        &self,
        node: &Arc<Node>,
        newparent: &Arc<Node>,
        newname: &OsStr,
        target_has_lower: bool,
    ) -> FsResult<()> {
        if !node.is_dir() {
            return Ok(());
        }
        let st = node.state.read().clone();
        let Some(udir) = st.upper_dir().cloned() else {
            return Err(FsError(Errno::EIO));
        };
        if !st.lower_dirs().is_empty() && !st.opaque {
            let origin = st
                .lower_path()
                .cloned()
                .unwrap_or_else(crate::fs::tables::node::empty_name);
            let np = newparent.state.read().lower_path().cloned();
            let new_lower_path = np.map(|p| join(&p, newname));
            if new_lower_path.as_deref() != Some(&*origin) {
                let mut value = b"/".to_vec();
                value.extend_from_slice(origin.as_bytes());
                xattr::set_xattr(
                    udir.as_fd(),
                    self.fmt
                        .xattr(crate::fs::format::whiteout::OvlXattr::Redirect)
                        .as_bytes(),
                    &value,
                    0,
                )?;
            }
        } else if target_has_lower && !st.opaque {
            self.fmt.set_opaque(udir.as_fd())?;
            node.state.write().opaque = true;
        }
        Ok(())
    }
}
