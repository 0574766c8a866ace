//! Whiteout and opaque-directory formats: recognising every form that kernel overlayfs,
//! fuse-overlayfs and OCI unpackers write, and writing the kernel's own forms.

use std::ffi::{OsStr, OsString};
use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};

use crate::sys::{at, xattr};

/// Prefix of whiteout files (`.wh.NAME`) as written by OCI tools and fuse-overlayfs.
pub const WH_PREFIX: &[u8] = b".wh.";
/// The opaque marker file inside a directory (`.wh..wh..opq`).
pub const OPAQUE_FILE: &[u8] = b".wh..wh..opq";

/// Every xattr that marks an opaque directory.
pub const OPAQUE_XATTRS: [&str; 3] = [
    "trusted.overlay.opaque",
    "user.overlay.opaque",
    "user.fuseoverlayfs.opaque",
];

/// Whether a stat is a kernel whiteout (character device 0/0).
pub fn is_whiteout_dev(st: &libc::stat64) -> bool {
    st.st_mode & libc::S_IFMT == libc::S_IFCHR && st.st_rdev == 0
}

/// Whether `name` is one of the reserved `.wh.*` names that are never shown.
pub fn is_reserved_name(name: &[u8]) -> bool {
    name.starts_with(WH_PREFIX)
}

/// `.wh.NAME` for `NAME`.
pub fn wh_name(name: &OsStr) -> OsString {
    let mut v = WH_PREFIX.to_vec();
    v.extend_from_slice(name.as_bytes());
    OsString::from_vec(v)
}

/// Whether `dir` has a `.wh.NAME` whiteout file for `name`.
pub fn has_wh_file(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<bool> {
    if name.len() + WH_PREFIX.len() > 255 {
        return Ok(false);
    }
    match at::stat_at_opt(dir, &wh_name(name)) {
        Ok(found) => Ok(found.is_some()),
        Err(e) if e.raw_os_error() == Some(libc::ENAMETOOLONG) => Ok(false),
        Err(e) => Err(e),
    }
}

/// The overlay marks of a directory: opaque (by xattr), and its redirect if any. One
/// listxattr tells which marks exist, so an unmarked directory costs one system call.
pub fn dir_marks(fd: BorrowedFd<'_>) -> io::Result<(bool, Option<OsString>)> {
    let names = match xattr::list_xattr(fd) {
        Ok(n) => n,
        Err(e) if matches!(e.raw_os_error(), Some(libc::EPERM) | Some(libc::EACCES)) => Vec::new(),
        Err(e) => return Err(e),
    };
    let mut opaque = false;
    let mut redirect = None;
    for n in &names {
        let Ok(name) = std::str::from_utf8(n) else {
            continue;
        };
        if OPAQUE_XATTRS.contains(&name) {
            if let Ok(Some(v)) = xattr::get_xattr(fd, name) {
                opaque |= v.first() == Some(&b'y');
            }
        } else if REDIRECT_XATTRS.contains(&name)
            && redirect.is_none()
            && let Ok(Some(v)) = xattr::get_xattr(fd, name)
            && !v.is_empty()
        {
            redirect = Some(OsString::from_vec(v));
        }
    }
    Ok((opaque, redirect))
}

/// The overlay marks an object carries, read with one `listxattrat` (plus one read per mark
/// that is present): what lookup needs to follow the object into lower layers.
#[derive(Debug, Default, Clone)]
pub struct Marks {
    /// Directories: nothing below shows through (`overlay.opaque=y`, any namespace).
    pub opaque: bool,
    /// Where the object's lower contents are (`overlay.redirect`).
    pub redirect: Option<OsString>,
    /// Regular files: metadata only, the data is in a lower layer (`overlay.metacopy`).
    pub metacopy: bool,
    /// The handle of the lower object it was copied up from (`overlay.origin`).
    pub origin: Option<Vec<u8>>,
    /// Directories: may hold entries copied up from lower layers (`overlay.impure=y`).
    pub impure: bool,
}

/// The overlay marks of `name` in `dir` (an empty name: `dir` itself).
pub fn marks_at(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<Marks> {
    let names = match xattr::list_xattr_at(dir, name) {
        Ok(n) => n,
        Err(e) if matches!(e.raw_os_error(), Some(libc::EPERM) | Some(libc::EACCES)) => Vec::new(),
        Err(e) => return Err(e),
    };
    let mut m = Marks::default();
    for n in &names {
        let key = match n.strip_prefix(b"trusted.overlay.") {
            Some(k) => k,
            None => match n.strip_prefix(b"user.overlay.") {
                Some(k) => k,
                None if n.as_slice() == b"user.fuseoverlayfs.opaque" => b"opaque",
                None => continue,
            },
        };
        if !matches!(
            key,
            b"opaque" | b"redirect" | b"metacopy" | b"origin" | b"impure"
        ) {
            continue;
        }
        let Ok(xname) = std::str::from_utf8(n) else {
            continue;
        };
        if key == b"metacopy" {
            m.metacopy = true;
            continue;
        }
        let value = match xattr::get_xattr_at(dir, name, xname) {
            Ok(Some(v)) => v,
            Ok(None) => continue,
            Err(e) if matches!(e.raw_os_error(), Some(libc::EPERM) | Some(libc::EACCES)) => {
                continue;
            }
            Err(e) => return Err(e),
        };
        match key {
            b"opaque" => m.opaque |= value.first() == Some(&b'y'),
            b"impure" => m.impure |= value.first() == Some(&b'y'),
            b"redirect" if m.redirect.is_none() && !value.is_empty() => {
                m.redirect = Some(OsString::from_vec(value))
            }
            b"origin" if m.origin.is_none() => m.origin = Some(value),
            _ => {}
        }
    }
    Ok(m)
}

/// Xattrs that record where a moved directory's lower contents are.
pub const REDIRECT_XATTRS: [&str; 2] = ["trusted.overlay.redirect", "user.overlay.redirect"];

/// Whether the directory behind `fd` is opaque by any known marker.
pub fn is_opaque_dir(fd: BorrowedFd<'_>) -> io::Result<bool> {
    for name in OPAQUE_XATTRS {
        match xattr::get_xattr(fd, name) {
            Ok(Some(v)) if v.first() == Some(&b'y') => return Ok(true),
            Ok(_) => {}
            // Unprivileged daemons cannot read trusted.*: treat as absent.
            Err(e) if e.raw_os_error() == Some(libc::EPERM) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(at::stat_at_opt(fd, OsStr::from_bytes(OPAQUE_FILE))?.is_some())
}

/// How this mount writes whiteouts and overlay xattrs.
#[derive(Debug, Clone)]
pub struct Format {
    /// `trusted.overlay.` as root, `user.overlay.` rootless (kernel `userxattr`).
    pub xattr_prefix: &'static str,
    /// Character-device 0/0 whiteouts (false: `.wh.NAME` files).
    pub whiteout_dev: bool,
}

/// The overlay xattrs strata writes (the kernel's names, without their namespace prefix).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OvlXattr {
    Opaque,
    Redirect,
    Origin,
    Metacopy,
    Impure,
    Nlink,
}

impl OvlXattr {
    /// The full name in the `trusted.` (root) or `user.` (rootless, kernel `userxattr`)
    /// namespace.
    pub fn name(self, trusted: bool) -> &'static str {
        use OvlXattr::*;
        match (self, trusted) {
            (Opaque, true) => "trusted.overlay.opaque",
            (Opaque, false) => "user.overlay.opaque",
            (Redirect, true) => "trusted.overlay.redirect",
            (Redirect, false) => "user.overlay.redirect",
            (Origin, true) => "trusted.overlay.origin",
            (Origin, false) => "user.overlay.origin",
            (Metacopy, true) => "trusted.overlay.metacopy",
            (Metacopy, false) => "user.overlay.metacopy",
            (Impure, true) => "trusted.overlay.impure",
            (Impure, false) => "user.overlay.impure",
            (Nlink, true) => "trusted.overlay.nlink",
            (Nlink, false) => "user.overlay.nlink",
        }
    }
}

impl Format {
    /// The name of overlay xattr `x` in this mount's namespace.
    pub fn xattr(&self, x: OvlXattr) -> &'static str {
        x.name(self.xattr_prefix.starts_with("trusted."))
    }

    /// Create a whiteout for `name` in `dir` (which must not hold `name`).
    pub fn make_whiteout(&self, dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<()> {
        if self.whiteout_dev {
            at::mknod_at(dir, name, libc::S_IFCHR, 0)
        } else {
            let fd = at::open_at(
                dir,
                &wh_name(name),
                libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC,
                0o600,
            )?;
            drop(fd);
            Ok(())
        }
    }

    /// Remove a whiteout for `name` from `dir` if there is one; true if one was removed.
    pub fn remove_whiteout(&self, dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<bool> {
        let mut removed = false;
        if let Some(st) = at::stat_at_opt(dir, name)?
            && is_whiteout_dev(&st)
        {
            at::unlink_at(dir, name, false)?;
            removed = true;
        }
        let wh = wh_name(name);
        if has_wh_file(dir, name)? {
            at::unlink_at(dir, &wh, false)?;
            removed = true;
        }
        Ok(removed)
    }

    /// Mark the directory behind `fd` opaque.
    pub fn set_opaque(&self, fd: BorrowedFd<'_>) -> io::Result<()> {
        xattr::set_xattr(fd, self.xattr(OvlXattr::Opaque).as_bytes(), b"y", 0)
    }
}

/// Whether an xattr name is internal to overlay implementations and never shown.
pub fn is_internal_xattr(name: &[u8]) -> bool {
    name.starts_with(b"trusted.overlay.")
        || name.starts_with(b"user.overlay.")
        || name.starts_with(b"user.fuseoverlayfs.")
        || name == super::override_stat::XATTR.as_bytes()
}

/// Probe whether `trusted.*` xattrs can be set in `work` (not in a user namespace).
pub fn probe_trusted_xattr(work: BorrowedFd<'_>) -> bool {
    let name = OsString::from(format!(".strata-probe-x-{}", std::process::id()));
    let Ok(fd) = at::open_at(work, &name, libc::O_WRONLY | libc::O_CREAT, 0o600) else {
        return false;
    };
    let ok = xattr::set_xattr(fd.as_fd(), b"trusted.overlay.strata-probe", b"y", 0).is_ok();
    drop(fd);
    let _ = at::unlink_at(work, &name, false);
    ok
}

/// Probe whether char 0/0 whiteouts can be made in `work` (as root, or rootless on Linux >= 5.8).
pub fn probe_whiteout_dev(work: BorrowedFd<'_>) -> bool {
    let name = OsString::from(format!(".strata-probe-{}", std::process::id()));
    let ok = at::mknod_at(work, &name, libc::S_IFCHR, 0).is_ok();
    let _ = at::unlink_at(work, &name, false);
    ok
}

/// Turn raw bytes into an OsString (helper for readdir names).
pub fn os(name: &[u8]) -> &OsStr {
    OsStr::from_bytes(name)
}
