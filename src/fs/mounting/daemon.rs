//! Mounting: check the arguments, open the layers, then fork the daemon *before* any thread
//! starts. The child mounts and reports success (or its error) through a pipe; the caller
//! returns only once the mount is live.

use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use fuser::{Config, MountOption, SessionACL};

use crate::fs::format::whiteout::{self, Format};
use crate::fs::fuse::dispatch::StrataFs;
use crate::fs::mounting::config::{MountConfig, MountError};
use crate::fs::tables::layer::Layers;
use crate::fs::union::{Settings, Union};
use crate::sys::process::Forked;

fn invalid(msg: String) -> MountError {
    MountError::Invalid(msg)
}

fn io_err(context: String) -> impl FnOnce(std::io::Error) -> MountError {
    move |source| MountError::Io { context, source }
}

fn canonical_dir(what: &str, p: &Path) -> Result<PathBuf, MountError> {
    let c =
        std::fs::canonicalize(p).map_err(|e| invalid(format!("{what} {}: {e}", p.display())))?;
    if !c.is_dir() {
        return Err(invalid(format!(
            "{what} {} is not a directory",
            p.display()
        )));
    }
    Ok(c)
}

fn dev_of(p: &Path) -> Result<u64, MountError> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(p)
        .map(|m| m.dev())
        .map_err(io_err(format!("stat {}", p.display())))
}

/// The checked, canonical directories of a mount: lowers, upper, work, mountpoint.
type Checked = (Vec<PathBuf>, Option<PathBuf>, Option<PathBuf>, PathBuf);

/// Check everything that can be checked before mounting.
fn validate(cfg: &MountConfig) -> Result<Checked, MountError> {
    let lowers: Vec<PathBuf> = cfg
        .lowerdirs
        .iter()
        .map(|l| canonical_dir("lowerdir", l))
        .collect::<Result<_, _>>()?;
    if lowers.is_empty() {
        return Err(invalid("no lowerdir given".into()));
    }
    let upper = cfg
        .upperdir
        .as_deref()
        .map(|u| canonical_dir("upperdir", u))
        .transpose()?;
    let work = cfg
        .workdir
        .as_deref()
        .map(|w| canonical_dir("workdir", w))
        .transpose()?;
    let mnt = canonical_dir("mountpoint", &cfg.mountpoint)?;
    if let Some(u) = &upper {
        let Some(w) = &work else {
            return Err(invalid("upperdir needs a workdir (-o workdir=DIR)".into()));
        };
        if dev_of(u)? != dev_of(w)? {
            return Err(invalid(format!(
                "workdir {} is not on the same filesystem as upperdir {}",
                w.display(),
                u.display()
            )));
        }
        if w.starts_with(u) || u.starts_with(w) {
            return Err(invalid(format!(
                "workdir {} and upperdir {} must be separate directories, neither inside the other",
                w.display(),
                u.display()
            )));
        }
        for l in &lowers {
            if u.starts_with(l) || l.starts_with(u) {
                return Err(invalid(format!(
                    "upperdir {} and lowerdir {} overlap (one is inside the other)",
                    u.display(),
                    l.display()
                )));
            }
        }
    }
    if crate::fs::mounting::mountinfo::is_mountpoint(&mnt) {
        return Err(invalid(format!(
            "mountpoint {} is already mounted",
            mnt.display()
        )));
    }
    Ok((lowers, upper, work, mnt))
}

/// Empty the work dir of temp files a previous session left behind.
fn clean_work(layers: &Layers) {
    let Some(work) = &layers.work else { return };
    let Ok(entries) = crate::sys::dir::read_dir(work.as_fd()) else {
        return;
    };
    for e in entries {
        if e.name.starts_with(b"#strata-") {
            let name = <std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(&e.name);
            if e.dtype == libc::DT_DIR {
                let _ = remove_tree(work.as_fd(), name);
            } else {
                let _ = crate::sys::at::unlink_at(work.as_fd(), name, false);
            }
        }
    }
}

fn remove_tree(dir: std::os::fd::BorrowedFd<'_>, name: &std::ffi::OsStr) -> std::io::Result<()> {
    let sub = crate::sys::at::open_at(dir, name, libc::O_PATH | libc::O_DIRECTORY, 0)?;
    for e in crate::sys::dir::read_dir(sub.as_fd())? {
        let n = <std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(&e.name);
        if e.dtype == libc::DT_DIR {
            remove_tree(sub.as_fd(), n)?;
        } else {
            crate::sys::at::unlink_at(sub.as_fd(), n, false)?;
        }
    }
    crate::sys::at::unlink_at(dir, name, true)
}

/// Build the union for a validated configuration.
pub(in crate::fs) fn build(
    cfg: &MountConfig,
    lowers: &[PathBuf],
    upper: Option<&Path>,
    work: Option<&Path>,
) -> Result<Union, MountError> {
    let layers = Layers::open(lowers, upper, work).map_err(io_err("opening the layers".into()))?;
    clean_work(&layers);
    // The privilege question, answered once for the mount: root may chown, set trusted.*
    // xattrs (where the work dir allows), mknod 0/0 whiteouts, register passthrough files and
    // call mount(2) itself. Everything below reads `Settings` and `Format`.
    let privileged = rustix::process::geteuid().is_root();
    let whiteout_dev = layers
        .work
        .as_ref()
        .map(|w| whiteout::probe_whiteout_dev(w.as_fd()))
        .unwrap_or(true);
    // trusted.* needs CAP_SYS_ADMIN in the initial user namespace: root of a container's user
    // namespace (rootless podman) writes the rootless format, as kernel overlayfs does there.
    let trusted_ok = privileged
        && layers
            .work
            .as_ref()
            .is_none_or(|w| whiteout::probe_trusted_xattr(w.as_fd()));
    let fmt = Format {
        xattr_prefix: if trusted_ok {
            "trusted.overlay."
        } else {
            "user.overlay."
        },
        whiteout_dev,
    };
    let settings = Settings {
        timeout: cfg.timeout,
        privileged,
        override_stat: !privileged || cfg.fuse_options.iter().any(|o| o == "strata:override_stat"),
        // Registering a backing file needs CAP_SYS_ADMIN in the initial namespace.
        passthrough: if trusted_ok {
            cfg.passthrough
        } else {
            crate::fs::union::passthrough::Mode::Off
        },
        pausable: cfg.control_socket.is_some(),
        sync_copy_up: cfg.sync_copy_up,
        honor_fsync: cfg.honor_fsync,
        metacopy: cfg.metacopy,
        open_handles: cfg.open_handles,
    };
    Union::new(layers, fmt, settings).map_err(io_err("reading the layer roots".into()))
}

/// The FUSE session's options; `privileged` as decided by [`build`].
fn fuse_config(cfg: &MountConfig, read_only: bool, privileged: bool) -> Config {
    let mut c = Config::default();
    c.mount_options = vec![
        MountOption::FSName("strata".into()),
        MountOption::Subtype("strata".into()),
        MountOption::DefaultPermissions,
    ];
    if privileged {
        c.acl = SessionACL::All;
        c.mount_options.push(MountOption::Suid);
        c.mount_options.push(MountOption::Dev);
    }
    if read_only {
        c.mount_options.push(MountOption::RO);
    }
    for o in &cfg.fuse_options {
        match o.as_str() {
            "allow_other" => c.acl = SessionACL::All,
            "allow_root" => c.acl = SessionACL::RootAndOwner,
            "suid" | "dev" if privileged => {}
            "nosuid" => c.mount_options.retain(|m| *m != MountOption::Suid),
            "nodev" => c.mount_options.retain(|m| *m != MountOption::Dev),
            "noexec" => c.mount_options.push(MountOption::NoExec),
            "noatime" => c.mount_options.push(MountOption::NoAtime),
            "ro" if !read_only => c.mount_options.push(MountOption::RO),
            "sync" => c.mount_options.push(MountOption::Sync),
            "dirsync" => c.mount_options.push(MountOption::DirSync),
            _ => {}
        }
    }
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2);
    // Blocking calls (reads of cold files, fsync) overlap better with more threads than cores.
    c.n_threads = Some(cfg.threads.unwrap_or((2 * threads).max(4)).clamp(1, 64));
    c.clone_fd = true;
    c
}

/// Mount the union and serve it (in a daemon unless `cfg.foreground`).
pub fn mount(cfg: &MountConfig) -> Result<(), MountError> {
    if cfg.foreground {
        let (lowers, upper, work, mnt) = validate(cfg)?;
        return serve(cfg, &lowers, upper.as_deref(), work.as_deref(), &mnt, None);
    }
    spawn_daemon(cfg, false).map(|_| ())
}

/// Mount the union from a daemon that stays a child of the caller; returns the daemon's pid
/// once the mount is live.
///
/// For mounts made inside a container's namespaces (`strata run`): the caller (single-threaded,
/// as for [`mount`]) may be root of a user namespace, where the kernel mounts FUSE without
/// fusermount3. The daemon is made in the caller's namespaces, gets SIGKILL when the caller
/// dies (so a killed supervisor leaves no daemon behind), keeps no inherited descriptor besides
/// stdio (redirected to /dev/null), and exits once the mount is unmounted, so the caller can
/// unmount and then reap it. `cfg.foreground` is ignored.
pub fn mount_child(cfg: &MountConfig) -> Result<u32, MountError> {
    spawn_daemon(cfg, true)
}

fn spawn_daemon(cfg: &MountConfig, child_of_caller: bool) -> Result<u32, MountError> {
    let (lowers, upper, work, mnt) = validate(cfg)?;
    let parent = std::process::id();
    let (mut rd, wr) = std::io::pipe().map_err(|source| MountError::Io {
        context: "pipe".into(),
        source,
    })?;
    // fork refuses (an error, not undefined behaviour) when a thread has been started.
    match crate::sys::process::fork() {
        Err(source) => Err(MountError::Io {
            context: "fork".into(),
            source,
        }),
        Ok(Forked::Child) => {
            drop(rd);
            if child_of_caller {
                // This fresh child owns none of the caller's objects: drop their descriptors.
                crate::sys::process::close_fds_except(&[std::os::fd::AsRawFd::as_raw_fd(&wr)]);
                if crate::sys::process::die_with_parent(parent).is_err() {
                    crate::sys::process::exit_now(1);
                }
            }
            let _ = rustix::process::setsid();
            crate::sys::process::stdio_to_null();
            let r = serve(
                cfg,
                &lowers,
                upper.as_deref(),
                work.as_deref(),
                &mnt,
                Some(wr),
            );
            std::process::exit(if r.is_ok() { 0 } else { 1 });
        }
        Ok(Forked::Parent(child)) => {
            drop(wr);
            let mut msg = Vec::new();
            let _ = rd.read_to_end(&mut msg);
            match msg.first() {
                Some(0) => Ok(child.as_raw() as u32),
                Some(_) => Err(invalid(String::from_utf8_lossy(&msg[1..]).into_owned())),
                None => Err(invalid(
                    "the mount daemon exited before the mount was live".into(),
                )),
            }
        }
    }
}

/// Mount in this process and serve until unmounted; `ready` learns the outcome of the mount.
fn serve(
    cfg: &MountConfig,
    lowers: &[PathBuf],
    upper: Option<&Path>,
    work: Option<&Path>,
    mnt: &Path,
    mut ready: Option<std::io::PipeWriter>,
) -> Result<(), MountError> {
    let mut report = |r: Result<(), &MountError>| {
        if let Some(mut p) = ready.take() {
            let _ = match r {
                Ok(()) => p.write_all(&[0]),
                Err(e) => p.write_all(format!("\x01{e}").as_bytes()),
            };
        }
    };
    crate::sys::limits::raise_nofile_limit();
    let union = match build(cfg, lowers, upper, work) {
        Ok(u) => Arc::new(u),
        Err(e) => {
            report(Err(&e));
            return Err(e);
        }
    };
    let fs = StrataFs {
        u: union.clone(),
        debug: cfg.debug,
        passthrough: false,
        rdplus: Default::default(),
    };
    let privileged = union.settings.privileged;
    let fcfg = fuse_config(cfg, upper.is_none(), privileged);
    let session = if privileged {
        crate::fs::mounting::kmount::mount_fuse(
            mnt,
            &fcfg.mount_options,
            fcfg.acl != SessionACL::Owner,
        )
        .and_then(|fd| fuser::Session::from_fd(fs, fd, fcfg.acl, fcfg.clone()))
        .inspect(|_| crate::fs::mounting::kmount::tune_readahead(mnt, 2048))
    } else {
        fuser::Session::new(fs, mnt, &fcfg)
    };
    let session = match session {
        Ok(s) => s,
        Err(e) => {
            let e = MountError::Io {
                context: format!("mounting on {}", mnt.display()),
                source: e,
            };
            report(Err(&e));
            return Err(e);
        }
    };
    if let Some(sock) = &cfg.control_socket
        && let Err(e) = crate::fs::mounting::control::serve(sock, union.clone())
    {
        log::warn!("control socket {}: {e}", sock.display());
    }
    report(Ok(()));
    session.run().map_err(io_err("serving the mount".into()))
}
