//! `strata exec`: join a running container's namespaces (user first, then IPC, UTS, network,
//! PID and mount, which puts us in its root) and start a process there with the container's
//! environment, or the options' user, directory and variables; relay its terminal (a pty of
//! the container's devpts) or let it use the caller's stdio; exit with its status.

use super::init::{self, Process, Stdio};
use super::spec::{self, ImageDefaults};
use super::{Result, RunError};
use crate::store::{ContainerRecord, Store};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{SigSet, SigmaskHow, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;
use std::io::Write;
use std::os::fd::{AsFd, OwnedFd};

/// What `exec` was asked for.
#[derive(Debug, Clone, Default)]
pub struct ExecOptions {
    /// CMD [ARG...].
    pub cmd: Vec<String>,
    /// `-e` entries.
    pub env: Vec<String>,
    /// `-w`.
    pub workdir: Option<String>,
    /// `-u`.
    pub user: Option<String>,
    /// `-t`.
    pub tty: bool,
    /// `-i`.
    pub stdin: bool,
    /// `-d`.
    pub detach: bool,
}

/// Run `opts.cmd` in the running container `rec`; returns its exit status (0 at once with
/// `-d`). The calling process must be single-threaded; it ends up inside the container's
/// namespaces.
pub fn exec(store: &Store, rec: &ContainerRecord, opts: &ExecOptions) -> Result<i32> {
    if opts.cmd.is_empty() {
        return Err(RunError::Invalid("exec needs a command".into()));
    }
    let st = rec
        .run
        .as_ref()
        .filter(|_| store.container_running(rec))
        .ok_or_else(|| RunError::Invalid(format!("container {} is not running", rec.name)))?;
    let init_pid = st
        .init_pid
        .ok_or_else(|| RunError::Invalid(format!("container {} is not running", rec.name)))?;
    let img = store.image(&rec.image)?;
    let image = ImageDefaults::from_image_config(&store.image_config(&img)?);
    let hostname = st
        .config
        .hostname
        .clone()
        .unwrap_or_else(|| rec.id[..12].to_string());
    let mut run_cfg = st.config.clone();
    if let Some(u) = &opts.user {
        run_cfg.user = Some(u.clone());
    }
    if let Some(w) = &opts.workdir {
        run_cfg.workdir = Some(w.clone());
    }
    let cwd = spec::workdir(&image, &run_cfg)?;
    let user_spec = spec::user_spec(&image, &run_cfg);

    if crate::sys::process::thread_count() != 1 {
        return Err(RunError::Invalid(
            "internal error: exec from a multithreaded process".into(),
        ));
    }
    super::namespaces::join(super::namespaces::open_namespaces(init_pid)?)?;
    let user = spec::resolve_user(
        &user_spec,
        std::fs::read_to_string("/etc/passwd").ok().as_deref(),
        std::fs::read_to_string("/etc/group").ok().as_deref(),
    )?;
    let mut env = spec::environment(&image, &st.config.env, &hostname, &user.home, opts.tty);
    spec::merge_env(&mut env, &opts.env);
    let process = Process {
        argv: opts.cmd.clone(),
        env,
        cwd,
        user,
    };
    let devnull = || -> Result<OwnedFd> {
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/null")
            .map(OwnedFd::from)
            .map_err(RunError::io("open /dev/null"))
    };
    let dup = |f: std::os::fd::BorrowedFd<'_>| -> Result<OwnedFd> {
        f.try_clone_to_owned().map_err(RunError::io("dup stdio"))
    };
    let mut master = None;
    let stdio = if opts.detach {
        Stdio::Fds(devnull()?, devnull()?, devnull()?)
    } else if opts.tty {
        let (m, slave) = super::pty::open_pty()?;
        if let Some((r, c)) = super::pty::caller_size() {
            let _ = crate::sys::term::set_window_size(m.as_fd(), r, c);
        }
        master = Some(m);
        Stdio::Tty(slave)
    } else {
        let stdin = if opts.stdin {
            dup(std::io::stdin().as_fd())?
        } else {
            devnull()?
        };
        Stdio::Fds(
            stdin,
            dup(std::io::stdout().as_fd())?,
            dup(std::io::stderr().as_fd())?,
        )
    };
    let mask = blocked();
    nix::sys::signal::sigprocmask(SigmaskHow::SIG_BLOCK, Some(&mask), None)
        .map_err(RunError::sys("block signals"))?;
    let child = init::start(&process, stdio)?;
    if opts.detach {
        return Ok(0);
    }
    let sfd = SignalFd::with_flags(&mask, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)
        .map_err(RunError::sys("signalfd"))?;
    let _raw = master.as_ref().and_then(|_| super::pty::RawMode::stdin());
    Ok(wait(child, &sfd, master.as_ref(), opts.stdin))
}

fn blocked() -> SigSet {
    let mut m = SigSet::empty();
    for s in [
        Signal::SIGCHLD,
        Signal::SIGINT,
        Signal::SIGTERM,
        Signal::SIGHUP,
        Signal::SIGQUIT,
        Signal::SIGWINCH,
    ] {
        m.add(s);
    }
    m
}

/// Relay the terminal (if any) and forward signals until `child` exits.
fn wait(child: Pid, sfd: &SignalFd, master: Option<&OwnedFd>, stdin: bool) -> i32 {
    let mut buf = vec![0u8; 64 * 1024];
    let mut stdin_open = stdin && master.is_some();
    let mut master_open = master.is_some();
    let mut status: Option<(i32, std::time::Instant)> = None;
    let input = std::io::stdin();
    let mut out = std::io::stdout();
    loop {
        if status.is_none()
            && let Ok(st) = waitpid(child, Some(WaitPidFlag::WNOHANG))
            && st != WaitStatus::StillAlive
        {
            status = Some((
                init::exit_code(st).unwrap_or(125),
                std::time::Instant::now(),
            ));
        }
        if let Some((code, at)) = status
            && (!master_open || at.elapsed() > std::time::Duration::from_millis(500))
        {
            return code;
        }
        let mut fds = vec![PollFd::new(sfd.as_fd(), PollFlags::POLLIN)];
        if let Some(m) = master.filter(|_| master_open) {
            fds.push(PollFd::new(m.as_fd(), PollFlags::POLLIN));
        }
        if stdin_open {
            fds.push(PollFd::new(input.as_fd(), PollFlags::POLLIN));
        }
        let _ = poll(&mut fds, PollTimeout::from(100u16));
        let ready: Vec<bool> = fds
            .iter()
            .map(|f| f.revents().is_some_and(|r| !r.is_empty()))
            .collect();
        drop(fds);
        if ready[0] {
            while let Ok(Some(si)) = sfd.read_signal() {
                let signo = si.ssi_signo as i32;
                if signo == Signal::SIGWINCH as i32 {
                    if let (Some(m), Some((r, c))) = (master, super::pty::caller_size()) {
                        let _ = crate::sys::term::set_window_size(m.as_fd(), r, c);
                    }
                } else if signo != Signal::SIGCHLD as i32
                    && let Ok(sig) = Signal::try_from(signo)
                {
                    let _ = nix::sys::signal::kill(child, sig);
                }
            }
        }
        let mut i = 1;
        if let Some(m) = master.filter(|_| master_open) {
            if ready[i] {
                match nix::unistd::read(m, &mut buf) {
                    Ok(0) | Err(_) => master_open = false,
                    Ok(n) => {
                        let _ = out.write_all(&buf[..n]);
                        let _ = out.flush();
                    }
                }
            }
            i += 1;
        }
        if stdin_open && ready.get(i).copied().unwrap_or(false) {
            match nix::unistd::read(input.as_fd(), &mut buf) {
                Ok(0) | Err(_) => stdin_open = false,
                Ok(n) => {
                    if let Some(m) = master {
                        let _ = nix::unistd::write(m, &buf[..n]);
                    }
                }
            }
        }
    }
}
