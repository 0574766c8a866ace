//! Mounting as root with mount(2) directly, so the mount shows as `fuse.strata` (type and
//! subtype) the way fuse-overlayfs shows `fuse.fuse-overlayfs`; unprivileged mounts go through
//! fusermount3 inside fuser.

use std::ffi::CString;
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use fuser::MountOption;

/// Open /dev/fuse and mount it on `mnt` with the given options; returns the session fd.
pub fn mount_fuse(
    mnt: &Path,
    options: &[MountOption],
    allow_other: bool,
) -> std::io::Result<OwnedFd> {
    let dev = CString::new("/dev/fuse").unwrap_or_default();
    let fd = unsafe { libc::open(dev.as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let target = CString::new(mnt.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))?;
    let meta = std::fs::metadata(mnt)?;
    let rootmode = std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & libc::S_IFMT;
    let mut data = format!(
        "fd={},rootmode={:o},user_id={},group_id={}",
        std::os::fd::AsRawFd::as_raw_fd(&fd),
        rootmode,
        unsafe { libc::getuid() },
        unsafe { libc::getgid() }
    );
    let mut flags: libc::c_ulong = libc::MS_NOSUID | libc::MS_NODEV;
    for o in options {
        match o {
            MountOption::DefaultPermissions => data.push_str(",default_permissions"),
            MountOption::Suid => flags &= !libc::MS_NOSUID,
            MountOption::Dev => flags &= !libc::MS_NODEV,
            MountOption::NoSuid => flags |= libc::MS_NOSUID,
            MountOption::NoDev => flags |= libc::MS_NODEV,
            MountOption::RO => flags |= libc::MS_RDONLY,
            MountOption::NoExec => flags |= libc::MS_NOEXEC,
            MountOption::NoAtime => flags |= libc::MS_NOATIME,
            MountOption::Sync => flags |= libc::MS_SYNCHRONOUS,
            MountOption::DirSync => flags |= libc::MS_DIRSYNC,
            _ => {}
        }
    }
    if allow_other {
        data.push_str(",allow_other");
    }
    let source = CString::new("strata").unwrap_or_default();
    let fstype = CString::new("fuse.strata").unwrap_or_default();
    let data = CString::new(data).map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))?;
    let r = unsafe {
        libc::mount(
            source.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            flags,
            data.as_ptr().cast(),
        )
    };
    if r != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(fd)
}

/// Raise the kernel readahead of the new mount (root only, best effort): FUSE starts at
/// 128 KiB, which turns a sequential read into many small requests to the daemon.
pub fn tune_readahead(mnt: &Path, kib: u32) {
    let Ok(mounts) = crate::fs::mounting::mountinfo::mounts() else {
        return;
    };
    let dev = mounts.into_iter().rev().find(|m| m.mount_point == mnt);
    if let Some(dev) = dev.map(|m| m.device) {
        let _ = std::fs::write(
            format!("/sys/class/bdi/{dev}/read_ahead_kb"),
            kib.to_string(),
        );
    }
}
