//! Namespaces: whether user namespaces are available (and which sysctl forbids them), the
//! unshare steps of a new container, becoming root of a fresh user namespace, and joining
//! the namespaces of a running container (`exec`).

use super::{Result, RunError};
use nix::errno::Errno;
use nix::sched::CloneFlags;
use nix::unistd::{Gid, Uid};
use std::os::fd::OwnedFd;
use std::os::unix::fs::MetadataExt;

fn sysctl(path: &str) -> Option<i64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// The sysctl that disables unprivileged user namespaces here, if one does.
pub fn userns_disabled_by() -> Option<&'static str> {
    if sysctl("/proc/sys/user/max_user_namespaces") == Some(0) {
        return Some("user.max_user_namespaces=0");
    }
    if sysctl("/proc/sys/kernel/unprivileged_userns_clone") == Some(0) {
        return Some("kernel.unprivileged_userns_clone=0");
    }
    None
}

/// Refuse early, with the sysctl named, when user namespaces cannot be made.
pub fn check_userns() -> Result<()> {
    match userns_disabled_by() {
        Some(s) => Err(RunError::Unavailable(format!(
            "user namespaces are disabled on this machine (sysctl {s}); a rootless container needs them"
        ))),
        None => Ok(()),
    }
}

/// A readable message for a failed unshare(CLONE_NEWUSER).
pub fn userns_error(e: Errno) -> String {
    if let Some(s) = userns_disabled_by() {
        return format!("user namespaces are disabled on this machine (sysctl {s})");
    }
    match e {
        Errno::ENOSPC | Errno::EUSERS => {
            "too many user namespaces (limit user.max_user_namespaces reached)".into()
        }
        Errno::EPERM | Errno::EACCES
            if sysctl("/proc/sys/kernel/apparmor_restrict_unprivileged_userns") == Some(1) =>
        {
            "user namespaces are restricted (sysctl kernel.apparmor_restrict_unprivileged_userns=1)"
                .into()
        }
        Errno::EINVAL => "cannot create a user namespace from a multithreaded process".into(),
        e => format!("cannot create a user namespace: {e}"),
    }
}

/// Become uid/gid 0 (with no supplementary groups where allowed) once the maps are written.
pub fn become_root() -> Result<()> {
    if super::idmap::setgroups_allowed() {
        nix::unistd::setgroups(&[]).map_err(RunError::sys("setgroups"))?;
    }
    nix::unistd::setresgid(Gid::from_raw(0), Gid::from_raw(0), Gid::from_raw(0))
        .map_err(RunError::sys("setresgid 0"))?;
    nix::unistd::setresuid(Uid::from_raw(0), Uid::from_raw(0), Uid::from_raw(0))
        .map_err(RunError::sys("setresuid 0"))?;
    Ok(())
}

/// unshare(2) with a readable error.
pub fn unshare(flags: CloneFlags, what: &str) -> Result<()> {
    nix::sched::unshare(flags).map_err(|e| {
        if flags.contains(CloneFlags::CLONE_NEWUSER) {
            RunError::Unavailable(userns_error(e))
        } else {
            RunError::Io {
                context: format!("unshare {what}"),
                source: e.into(),
            }
        }
    })
}

/// Make every mount of this mount namespace private (nothing propagates back to the host).
pub fn make_mounts_private() -> Result<()> {
    use nix::mount::{MsFlags, mount};
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(RunError::sys("make / private"))
}

/// The namespaces a container has, in the order they are joined.
const KINDS: [(&str, CloneFlags); 6] = [
    ("user", CloneFlags::CLONE_NEWUSER),
    ("ipc", CloneFlags::CLONE_NEWIPC),
    ("uts", CloneFlags::CLONE_NEWUTS),
    ("net", CloneFlags::CLONE_NEWNET),
    ("pid", CloneFlags::CLONE_NEWPID),
    ("mnt", CloneFlags::CLONE_NEWNS),
];

/// Open the namespaces of process `pid` that differ from ours.
pub fn open_namespaces(pid: u32) -> Result<Vec<(OwnedFd, CloneFlags)>> {
    let mut out = Vec::new();
    for (name, flag) in KINDS {
        let theirs = format!("/proc/{pid}/ns/{name}");
        let ours = format!("/proc/self/ns/{name}");
        let (Ok(a), Ok(b)) = (std::fs::metadata(&theirs), std::fs::metadata(&ours)) else {
            return Err(RunError::Invalid(format!(
                "cannot see the namespaces of process {pid} (is the container running?)"
            )));
        };
        if a.ino() == b.ino() && a.dev() == b.dev() {
            continue;
        }
        let f = std::fs::File::open(&theirs).map_err(RunError::io(format!("open {theirs}")))?;
        out.push((OwnedFd::from(f), flag));
    }
    Ok(out)
}

/// Join namespaces opened by [`open_namespaces`] (user first, mount last: that one changes
/// the root to the container's). Children forked afterwards are in the pid namespace.
pub fn join(namespaces: Vec<(OwnedFd, CloneFlags)>) -> Result<()> {
    let mut in_userns = false;
    for (fd, flag) in namespaces {
        nix::sched::setns(&fd, flag).map_err(RunError::sys(format!("setns {flag:?}")))?;
        if flag == CloneFlags::CLONE_NEWUSER {
            in_userns = true;
        }
    }
    if in_userns {
        become_root()?;
    }
    nix::unistd::chdir("/").map_err(RunError::sys("chdir /"))
}
