//! The container's own processes, forked by the supervisor: the namespace holder (new user
//! namespace, id map written by the supervisor, new mount namespace, the union mounted
//! there by a FUSE daemon child, then new UTS/IPC/PID/network namespaces), which forks the
//! container's init (its own mount namespace, the root built and pivoted into, the
//! terminal, the user looked up, then the command started and supervised as pid 1). The
//! holder unmounts the union once init has exited and exits with its status.

use super::channel::Channel;
use super::init::{self, Process, Stdio};
use super::rootfs::{self, RootfsPlan};
use super::spec::{self, ImageDefaults};
use super::{Result, RunError};
use crate::fs::MountConfig;
use crate::store::{IdMap, RunConfig};
use crate::sys::process::{Forked, exit_now, fork};
use nix::sched::CloneFlags;
use nix::sys::wait::waitpid;
use nix::unistd::Pid;
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

/// Everything the container's processes need, prepared by the supervisor.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Container ID.
    pub id: String,
    /// Hostname.
    pub hostname: String,
    /// The union mount of the image under the container's upper dir.
    pub mount: MountConfig,
    /// The root to build over it.
    pub rootfs: RootfsPlan,
    /// The user namespace's map (none as real root: no user namespace).
    pub id_map: Option<IdMap>,
    /// What the image config says.
    pub image: ImageDefaults,
    /// What the run asked for.
    pub config: RunConfig,
    /// The supervisor's pid.
    pub supervisor: u32,
}

/// The container's stdio as the supervisor hands it over.
#[derive(Debug)]
pub struct ChildIo {
    /// stdin (a pipe or /dev/null); unused with a terminal.
    pub stdin: OwnedFd,
    /// stdout and stderr pipes; none with a terminal.
    pub out: Option<(OwnedFd, OwnedFd)>,
}

fn fail(chan: &Channel, e: RunError) -> ! {
    let code = e.exit_code();
    let _ = chan.send(&format!("error {code} {e}"), None);
    exit_now(code)
}

fn expect_message(chan: &Channel, want: &str) -> Result<()> {
    match chan.recv(None)? {
        Some((m, _)) if m == want => Ok(()),
        Some((m, _)) => Err(RunError::Invalid(format!(
            "unexpected message from the supervisor: {m}"
        ))),
        None => Err(RunError::Invalid("the supervisor went away".into())),
    }
}

/// The namespace holder (the supervisor's child). Never returns.
pub fn holder(plan: &Plan, chan: Channel, io: ChildIo) -> ! {
    let mut keep = vec![chan.raw(), io.stdin.as_raw_fd()];
    if let Some((o, e)) = &io.out {
        keep.extend([o.as_raw_fd(), e.as_raw_fd()]);
    }
    crate::sys::process::close_fds_except(&keep);
    match holder_inner(plan, &chan, io) {
        Ok(code) => exit_now(code),
        Err(e) => fail(&chan, e),
    }
}

fn holder_inner(plan: &Plan, chan: &Channel, io: ChildIo) -> Result<i32> {
    let die = |parent: u32| {
        crate::sys::process::die_with_parent(parent)
            .map_err(|_| RunError::Invalid("the supervisor went away".into()))
    };
    die(plan.supervisor)?;
    if plan.id_map.is_some() {
        super::namespaces::unshare(CloneFlags::CLONE_NEWUSER, "user")?;
        chan.send("userns", None)?;
        expect_message(chan, "mapped")?;
        super::namespaces::become_root()?;
        // (a change of credentials clears the parent-death signal)
        die(plan.supervisor)?;
    }
    super::namespaces::unshare(CloneFlags::CLONE_NEWNS, "mount")?;
    super::namespaces::make_mounts_private()?;
    let daemon = crate::fs::mount_child(&plan.mount)?;
    let mut flags = CloneFlags::CLONE_NEWUTS | CloneFlags::CLONE_NEWIPC;
    if !plan.config.pid_host {
        flags |= CloneFlags::CLONE_NEWPID;
    }
    if plan.config.network != "host" {
        flags |= CloneFlags::CLONE_NEWNET;
    }
    super::namespaces::unshare(flags, "uts/ipc/pid/net")?;
    if plan.config.network != "host" {
        crate::sys::net::loopback_up().map_err(RunError::io("bring lo up"))?;
    }
    let me = std::process::id();
    let init = match fork().map_err(RunError::io("fork"))? {
        Forked::Child => init_process(plan, chan, io, me),
        Forked::Parent(pid) => pid,
    };
    chan.send(&format!("init {}", init.as_raw()), None)?;
    drop(io);
    let code = loop {
        match waitpid(init, None) {
            Ok(st) => {
                if let Some(c) = init::exit_code(st) {
                    break c;
                }
            }
            Err(nix::errno::Errno::EINTR) => {}
            Err(_) => break 125,
        }
    };
    // The union goes with the last namespace that holds it; unmount it here so that the
    // daemon finishes its requests and exits.
    let _ = nix::mount::umount2(&plan.mount.mountpoint, nix::mount::MntFlags::MNT_DETACH);
    reap_daemon(Pid::from_raw(daemon as i32));
    Ok(code)
}

fn reap_daemon(pid: Pid) {
    use nix::sys::wait::WaitPidFlag;
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(10) {
        match waitpid(pid, Some(WaitPidFlag::WNOHANG)) {
            Ok(nix::sys::wait::WaitStatus::StillAlive) => {
                std::thread::sleep(Duration::from_millis(10))
            }
            _ => return,
        }
    }
    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
    let _ = waitpid(pid, None);
}

/// The container's init (pid 1 of its PID namespace). Never returns.
fn init_process(plan: &Plan, chan: &Channel, io: ChildIo, holder: u32) -> ! {
    match init_inner(plan, chan, io, holder) {
        Ok(code) => exit_now(code),
        Err(e) => fail(chan, e),
    }
}

fn read_in_root(path: &str) -> Option<String> {
    std::fs::read_to_string(path).ok()
}

fn init_inner(plan: &Plan, chan: &Channel, io: ChildIo, holder: u32) -> Result<i32> {
    if plan.config.pid_host {
        crate::sys::process::die_with_parent(holder)
    } else {
        crate::sys::process::die_with_parent_unchecked()
    }
    .map_err(|_| RunError::Invalid("the container's namespace holder went away".into()))?;
    super::namespaces::unshare(CloneFlags::CLONE_NEWNS, "mount")?;
    nix::unistd::sethostname(&plan.hostname).map_err(RunError::sys("sethostname"))?;
    let placeholders = rootfs::setup(&plan.rootfs)?;
    let list = serde_json::to_string(&placeholders).unwrap_or_else(|_| "[]".into());
    chan.send(&format!("placeholders {list}"), None)?;
    rootfs::pivot(&plan.rootfs.root)?;
    let stdio = if plan.config.tty {
        let (master, slave) = super::pty::open_pty()?;
        chan.send("pty", Some(&master))?;
        drop(master);
        drop(io);
        Stdio::Tty(slave)
    } else {
        let ChildIo { stdin, out } = io;
        let (o, e) = out.ok_or_else(|| RunError::Invalid("no output pipes".into()))?;
        Stdio::Fds(stdin, o, e)
    };
    let user_spec = spec::user_spec(&plan.image, &plan.config);
    let user = spec::resolve_user(
        &user_spec,
        read_in_root("/etc/passwd").as_deref(),
        read_in_root("/etc/group").as_deref(),
    )?;
    let cwd = spec::workdir(&plan.image, &plan.config)?;
    if !std::path::Path::new(&cwd).is_dir() {
        std::fs::create_dir_all(&cwd)
            .map_err(RunError::io(format!("create the working directory {cwd}")))?;
    }
    let process = Process {
        argv: spec::argv(&plan.image, &plan.config)?,
        env: spec::environment(
            &plan.image,
            &plan.config.env,
            &plan.hostname,
            &user.home,
            plan.config.tty,
        ),
        cwd,
        user,
    };
    let sfd = init::block_signals()?;
    chan.send("ready", None)?;
    expect_message(chan, "go")?;
    match init::start(&process, stdio) {
        Ok(pid) => {
            chan.send("started", None)?;
            Ok(init::serve(pid, &sfd))
        }
        Err(e) => {
            let code = e.exit_code();
            let _ = chan.send(&format!("error {code} {e}"), None);
            Ok(code)
        }
    }
}
