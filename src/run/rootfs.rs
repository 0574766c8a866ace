//! The container's root: inside its own mount namespace, over the union mount, a new procfs
//! (for its PID namespace), /dev (a tmpfs with null, zero, full, random, urandom and tty bound
//! from the host, a new devpts instance, /dev/shm, the fd and stdio links), /sys read-only,
//! /etc/resolv.conf, /etc/hosts and /etc/hostname bound from files in the container's
//! directory, the `-v` binds; then pivot_root into it and the old root detached, so that
//! nothing of the host outside the binds stays reachable.

use super::{Result, RunError};
use crate::store::BindSpec;
use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sys::statvfs::{FsFlags, statvfs};
use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

/// What to build.
#[derive(Debug, Clone)]
pub struct RootfsPlan {
    /// The union mount (the new root).
    pub root: PathBuf,
    /// The container's directory (holds hosts, hostname, resolv.conf).
    pub dir: PathBuf,
    /// The container has its own PID namespace (mount a new procfs; else bind the host's).
    pub own_pid_ns: bool,
    /// `-v` binds.
    pub binds: Vec<BindSpec>,
    /// `--read-only`.
    pub read_only: bool,
}

/// Resolve the container path `path` under `root` as the container will see it: symlinks
/// are followed relative to `root` and `..` stops at it, so that no path of a (hostile) image
/// leads outside. Components that do not exist yet are appended as they are.
pub fn resolve_in_root(root: &Path, path: &str) -> Result<PathBuf> {
    let mut pending: std::collections::VecDeque<OsString> = Path::new(path)
        .components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_os_string()),
            Component::ParentDir => Some("..".into()),
            _ => None,
        })
        .collect();
    let mut resolved = PathBuf::new();
    let mut links = 0;
    while let Some(c) = pending.pop_front() {
        if c == ".." {
            resolved.pop();
            continue;
        }
        let candidate = resolved.join(&c);
        let host = root.join(&candidate);
        match host.symlink_metadata() {
            Ok(m) if m.file_type().is_symlink() => {
                links += 1;
                if links > 255 {
                    return Err(RunError::Invalid(format!(
                        "too many levels of symbolic links in {path}"
                    )));
                }
                let target = std::fs::read_link(&host)
                    .map_err(RunError::io(format!("readlink {}", host.display())))?;
                if target.is_absolute() {
                    resolved = PathBuf::new();
                }
                for t in target.components().rev() {
                    match t {
                        Component::Normal(n) => pending.push_front(n.to_os_string()),
                        Component::ParentDir => pending.push_front("..".into()),
                        _ => {}
                    }
                }
            }
            _ => resolved = candidate,
        }
    }
    Ok(root.join(resolved))
}

/// Make sure `path` exists in the container (a directory, or an empty file with `file`);
/// returns the host path and whether it had to be made (a placeholder).
fn ensure(root: &Path, path: &str, file: bool) -> Result<(PathBuf, bool)> {
    let p = resolve_in_root(root, path)?;
    match p.symlink_metadata() {
        Ok(m) if m.is_dir() != file => return Ok((p, false)),
        Ok(_) => {
            return Err(RunError::Invalid(format!(
                "cannot mount on {path} in the container: it is {}",
                if file {
                    "a directory"
                } else {
                    "not a directory"
                }
            )));
        }
        Err(_) => {}
    }
    if let Some(parent) = p.parent() {
        std::fs::create_dir_all(parent)
            .map_err(RunError::io(format!("create {} in the container", path)))?;
    }
    let made = if file {
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&p)
            .map(|_| ())
    } else {
        std::fs::create_dir(&p)
    };
    made.map_err(RunError::io(format!("create {path} in the container")))?;
    Ok((p, true))
}

fn mnt(
    src: Option<&Path>,
    target: &Path,
    fstype: Option<&str>,
    flags: MsFlags,
    data: Option<&str>,
) -> Result<()> {
    mount(src, target, fstype, flags, data).map_err(|e| RunError::Io {
        context: format!(
            "mount {} on {}",
            fstype
                .map(str::to_string)
                .or_else(|| src.map(|s| s.display().to_string()))
                .unwrap_or_default(),
            target.display()
        ),
        source: e.into(),
    })
}

/// The per-mount flags of the mount at `p` that a bind remount must keep (a mount made in
/// a more privileged namespace keeps them locked).
fn locked_flags(p: &Path) -> MsFlags {
    let mut f = MsFlags::empty();
    if let Ok(s) = statvfs(p) {
        let fl = s.flags();
        for (st, ms) in [
            (FsFlags::ST_NOSUID, MsFlags::MS_NOSUID),
            (FsFlags::ST_NODEV, MsFlags::MS_NODEV),
            (FsFlags::ST_NOEXEC, MsFlags::MS_NOEXEC),
            (FsFlags::ST_NOATIME, MsFlags::MS_NOATIME),
            (FsFlags::ST_NODIRATIME, MsFlags::MS_NODIRATIME),
            (FsFlags::ST_RELATIME, MsFlags::MS_RELATIME),
        ] {
            if fl.contains(st) {
                f |= ms;
            }
        }
    }
    f
}

/// Make the mount at `p` read-only (keeping its other flags).
fn remount_ro(p: &Path) -> Result<()> {
    mnt(
        None,
        p,
        None,
        MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | locked_flags(p),
        None,
    )
}

/// Make `p` and every mount below it read-only (best effort for the ones below).
fn remount_tree_ro(p: &Path) -> Result<()> {
    remount_ro(p)?;
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let prefix = p.as_os_str().as_bytes();
    for l in info.lines() {
        let Some(mp) = l.split(' ').nth(4) else {
            continue;
        };
        let mp = mp.replace("\\040", " ");
        if mp.len() > prefix.len()
            && mp.as_bytes().starts_with(prefix)
            && mp.as_bytes()[prefix.len()] == b'/'
        {
            let _ = remount_ro(Path::new(&mp));
        }
    }
    Ok(())
}

/// Bind `src` on `dst` (recursively); read-only if asked.
fn bind(src: &Path, dst: &Path, read_only: bool) -> Result<()> {
    mnt(
        Some(src),
        dst,
        None,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None,
    )?;
    if read_only {
        remount_tree_ro(dst)?;
    }
    Ok(())
}

const DEVICES: [&str; 6] = ["null", "zero", "full", "random", "urandom", "tty"];

/// Mount /dev: a tmpfs with the host's basic devices bound in, devpts, shm and the links.
fn setup_dev(root: &Path) -> Result<()> {
    let (dev, _) = ensure(root, "/dev", false)?;
    mnt(
        Some(Path::new("tmpfs")),
        &dev,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_STRICTATIME,
        Some("mode=755,size=65536k"),
    )?;
    for d in DEVICES {
        let p = dev.join(d);
        std::fs::File::create(&p).map_err(RunError::io(format!("create /dev/{d}")))?;
        bind(&Path::new("/dev").join(d), &p, false)?;
    }
    let pts = dev.join("pts");
    std::fs::create_dir(&pts).map_err(RunError::io("create /dev/pts"))?;
    let mut opts = "newinstance,ptmxmode=0666,mode=0620".to_string();
    if super::idmap::gid_mapped_here(5) {
        opts.push_str(",gid=5");
    }
    mnt(
        Some(Path::new("devpts")),
        &pts,
        Some("devpts"),
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some(&opts),
    )?;
    let shm = dev.join("shm");
    std::fs::create_dir(&shm).map_err(RunError::io("create /dev/shm"))?;
    mnt(
        Some(Path::new("shm")),
        &shm,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        Some("mode=1777,size=65536k"),
    )?;
    for (name, target) in [
        ("ptmx", "pts/ptmx"),
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
        ("core", "/proc/kcore"),
    ] {
        std::os::unix::fs::symlink(target, dev.join(name))
            .map_err(RunError::io(format!("create /dev/{name}")))?;
    }
    Ok(())
}

/// Build the container's tree under `plan.root` (in the container's own mount namespace,
/// as its root user). Returns the placeholders made (container paths).
pub fn setup(plan: &RootfsPlan) -> Result<Vec<String>> {
    super::namespaces::make_mounts_private()?;
    let root = &plan.root;
    let mut placeholders = Vec::new();
    let mut note = |path: &str, made: bool| {
        if made {
            placeholders.push(path.to_string());
        }
    };
    let (proc_dir, made) = ensure(root, "/proc", false)?;
    note("/proc", made);
    if plan.own_pid_ns {
        mnt(
            Some(Path::new("proc")),
            &proc_dir,
            Some("proc"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
            None,
        )?;
    } else {
        bind(Path::new("/proc"), &proc_dir, false)?;
    }
    let dev_existed = resolve_in_root(root, "/dev")?.exists();
    setup_dev(root)?;
    note("/dev", !dev_existed);
    let (sys, made) = ensure(root, "/sys", false)?;
    note("/sys", made);
    bind(Path::new("/sys"), &sys, true)?;
    for f in ["resolv.conf", "hosts", "hostname"] {
        let path = format!("/etc/{f}");
        let (p, made) = ensure(root, &path, true)?;
        note(&path, made);
        bind(&plan.dir.join(f), &p, false)?;
    }
    for b in &plan.binds {
        let src = Path::new(&b.source);
        let is_dir = src.is_dir();
        let (p, made) = ensure(root, &b.target, !is_dir)?;
        note(&b.target, made);
        bind(src, &p, b.read_only)?;
    }
    if plan.read_only {
        remount_ro(root)?;
    }
    Ok(placeholders)
}

/// Switch the root to `root` and detach the old one.
pub fn pivot(root: &Path) -> Result<()> {
    nix::unistd::chdir(root).map_err(RunError::sys(format!("chdir {}", root.display())))?;
    nix::unistd::pivot_root(".", ".").map_err(RunError::sys("pivot_root"))?;
    umount2(".", MntFlags::MNT_DETACH).map_err(RunError::sys("detach the old root"))?;
    nix::unistd::chdir("/").map_err(RunError::sys("chdir /"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symlinks_stay_inside_the_root() -> std::result::Result<(), Box<dyn std::error::Error>> {
        let d = tempfile::tempdir()?;
        let r = d.path();
        std::fs::create_dir_all(r.join("real/etc"))?;
        std::os::unix::fs::symlink("/real/etc", r.join("etc"))?;
        std::os::unix::fs::symlink("../../../../tmp", r.join("up"))?;
        std::os::unix::fs::symlink("/", r.join("slash"))?;
        assert_eq!(resolve_in_root(r, "/etc/hosts")?, r.join("real/etc/hosts"));
        assert_eq!(resolve_in_root(r, "/up/x")?, r.join("tmp/x"));
        assert_eq!(resolve_in_root(r, "/slash/../../proc")?, r.join("proc"));
        std::os::unix::fs::symlink("loop", r.join("loop"))?;
        assert!(resolve_in_root(r, "/loop").is_err());
        Ok(())
    }
}
