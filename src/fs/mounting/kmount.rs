//! Mounting as root with mount(2) directly, so the mount shows as `fuse.strata` (type and
//! subtype) the way fuse-overlayfs shows `fuse.fuse-overlayfs`; unprivileged mounts go through
//! fusermount3 inside fuser.

use std::os::fd::OwnedFd;
use std::path::Path;

use rustix::fs::{Mode, OFlags};
use rustix::mount::MountFlags;

use fuser::MountOption;

/// Open /dev/fuse and mount it on `mnt` with the given options; returns the session fd.
pub fn mount_fuse(
    mnt: &Path,
    options: &[MountOption],
    allow_other: bool,
) -> std::io::Result<OwnedFd> {
    let fd = rustix::fs::open("/dev/fuse", OFlags::RDWR | OFlags::CLOEXEC, Mode::empty())?;
    let meta = std::fs::metadata(mnt)?;
    let rootmode = std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & libc::S_IFMT;
    let mut data = format!(
        "fd={},rootmode={:o},user_id={},group_id={}",
        std::os::fd::AsRawFd::as_raw_fd(&fd),
        rootmode,
        rustix::process::getuid().as_raw(),
        rustix::process::getgid().as_raw()
    );
    let mut flags = MountFlags::NOSUID | MountFlags::NODEV;
    for o in options {
        match o {
            MountOption::DefaultPermissions => data.push_str(",default_permissions"),
            MountOption::Suid => flags.remove(MountFlags::NOSUID),
            MountOption::Dev => flags.remove(MountFlags::NODEV),
            MountOption::NoSuid => flags |= MountFlags::NOSUID,
            MountOption::NoDev => flags |= MountFlags::NODEV,
            MountOption::RO => flags |= MountFlags::RDONLY,
            MountOption::NoExec => flags |= MountFlags::NOEXEC,
            MountOption::NoAtime => flags |= MountFlags::NOATIME,
            MountOption::Sync => flags |= MountFlags::SYNCHRONOUS,
            MountOption::DirSync => flags |= MountFlags::DIRSYNC,
            _ => {}
        }
    }
    if allow_other {
        data.push_str(",allow_other");
    }
    let data = std::ffi::CString::new(data)
        .map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))?;
    rustix::mount::mount("strata", mnt, "fuse.strata", flags, Some(data.as_c_str()))?;
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
