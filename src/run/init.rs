//! The container's processes after the root switch: starting the command (as its user, in
//! its working directory, with its environment, on its terminal or pipes; PATH lookup with
//! Docker's 126/127 exit codes), and the small pid-1 init that forwards signals to it,
//! reaps every zombie and exits with the command's status (128+N when killed by signal N).

use super::spec::{User, env_value};
use super::{Result, RunError};
use crate::sys::process::{Forked, exit_now, fork};
use nix::sys::signal::{SigSet, SigmaskHow, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::{Gid, Pid, Uid};
use std::ffi::CString;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

/// The process to start.
#[derive(Debug, Clone)]
pub struct Process {
    /// argv (argv[0] looked up in the PATH of `env`).
    pub argv: Vec<String>,
    /// Environment, `K=V`.
    pub env: Vec<String>,
    /// Working directory (made if missing).
    pub cwd: String,
    /// The user.
    pub user: User,
}

/// Where the process's stdio comes from.
#[derive(Debug)]
pub enum Stdio {
    /// A pty slave (path in the container's devpts): stdin, stdout and stderr, as the
    /// controlling terminal.
    Tty(String),
    /// Three descriptors (stdin, stdout, stderr).
    Fds(OwnedFd, OwnedFd, OwnedFd),
}

/// Find `cmd` as Go's exec.LookPath does with the container's PATH: a name with a slash as is,
/// else the first executable regular file in PATH.
pub fn look_path(cmd: &str, env: &[String]) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    if cmd.contains('/') {
        return Some(PathBuf::from(cmd));
    }
    let path = env_value(env, "PATH").unwrap_or(super::spec::DEFAULT_PATH);
    path.split(':')
        .map(|d| if d.is_empty() { "." } else { d })
        .map(|d| Path::new(d).join(cmd))
        .find(|p| {
            std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

fn cstrings(v: &[String]) -> Result<Vec<CString>> {
    v.iter()
        .map(|s| {
            CString::new(s.as_bytes()).map_err(|_| RunError::Invalid(format!("NUL byte in {s:?}")))
        })
        .collect()
}

/// Switch to the process's user (groups, gid, uid).
pub fn switch_user(user: &User) -> Result<()> {
    if super::idmap::setgroups_allowed() {
        let groups: Vec<Gid> = user.groups.iter().map(|g| Gid::from_raw(*g)).collect();
        nix::unistd::setgroups(&groups).map_err(RunError::sys("setgroups"))?;
    }
    let g = Gid::from_raw(user.gid);
    nix::unistd::setresgid(g, g, g).map_err(|e| {
        RunError::Invalid(format!(
            "cannot switch to group {}: {e} (is it mapped in the user namespace?)",
            user.gid
        ))
    })?;
    let u = Uid::from_raw(user.uid);
    nix::unistd::setresuid(u, u, u).map_err(|e| {
        RunError::Invalid(format!(
            "cannot switch to user {}: {e} (is it mapped in the user namespace?)",
            user.uid
        ))
    })?;
    Ok(())
}

/// In a freshly forked child: set the process up and exec it. Never returns; a failure is
/// written to `status` as `CODE message` and ends the child with that code.
pub fn exec_child(p: &Process, stdio: Stdio, status: std::io::PipeWriter) -> ! {
    let fail = |mut status: std::io::PipeWriter, e: RunError| -> ! {
        let code = e.exit_code();
        let _ = write!(status, "{code} {e}");
        exit_now(code)
    };
    let r = (|| -> Result<CString> {
        nix::unistd::setsid().map_err(RunError::sys("setsid"))?;
        match stdio {
            Stdio::Tty(path) => {
                let slave = super::pty::open_slave(&path)?;
                let _ = nix::unistd::fchown(&slave, Some(Uid::from_raw(p.user.uid)), None);
                crate::sys::process::set_controlling_terminal(std::os::fd::AsFd::as_fd(&slave))
                    .map_err(RunError::io("set the controlling terminal"))?;
                dup_stdio(&slave, &slave, &slave)?;
            }
            Stdio::Fds(i, o, e) => dup_stdio(&i, &o, &e)?,
        }
        nix::unistd::chdir(p.cwd.as_str()).map_err(RunError::sys(format!(
            "chdir to the working directory {}",
            p.cwd
        )))?;
        switch_user(&p.user)?;
        let argv0 = p
            .argv
            .first()
            .ok_or_else(|| RunError::Invalid("no command".into()))?;
        let path = look_path(argv0, &p.env).ok_or_else(|| RunError::Exec {
            code: 127,
            msg: format!("exec: \"{argv0}\": executable file not found in $PATH"),
        })?;
        CString::new(path.as_os_str().as_encoded_bytes())
            .map_err(|_| RunError::Invalid("NUL in the command".into()))
    })();
    let path = match r {
        Ok(p) => p,
        Err(e) => fail(status, e),
    };
    let (argv, env) = match (cstrings(&p.argv), cstrings(&p.env)) {
        (Ok(a), Ok(e)) => (a, e),
        (Err(e), _) | (_, Err(e)) => fail(status, e),
    };
    crate::sys::process::close_fds_except(&[status.as_raw_fd()]);
    crate::sys::process::reset_signals();
    let e = match nix::unistd::execve(&path, &argv, &env) {
        Err(e) => e,
        Ok(never) => match never {},
    };
    let code = if e == nix::errno::Errno::ENOENT {
        127
    } else {
        126
    };
    let what = match e {
        nix::errno::Errno::ENOENT => "no such file or directory".to_string(),
        nix::errno::Errno::EACCES => "permission denied".to_string(),
        nix::errno::Errno::ENOEXEC => "exec format error".to_string(),
        e => e.desc().to_lowercase(),
    };
    fail(
        status,
        RunError::Exec {
            code,
            msg: format!("exec: \"{}\": {what}", p.argv[0]),
        },
    )
}

fn dup_stdio(i: &OwnedFd, o: &OwnedFd, e: &OwnedFd) -> Result<()> {
    nix::unistd::dup2_stdin(i).map_err(RunError::sys("dup stdin"))?;
    nix::unistd::dup2_stdout(o).map_err(RunError::sys("dup stdout"))?;
    nix::unistd::dup2_stderr(e).map_err(RunError::sys("dup stderr"))?;
    Ok(())
}

/// The signals init forwards to the command.
pub const FORWARDED: [Signal; 9] = [
    Signal::SIGTERM,
    Signal::SIGINT,
    Signal::SIGHUP,
    Signal::SIGQUIT,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
    Signal::SIGWINCH,
    Signal::SIGCONT,
    Signal::SIGALRM,
];

/// Block the signals init handles (before forking the command, so none is lost); the
/// command's exec resets its mask.
pub fn block_signals() -> Result<SignalFd> {
    let mut mask = SigSet::empty();
    for s in FORWARDED {
        mask.add(s);
    }
    mask.add(Signal::SIGCHLD);
    nix::sys::signal::sigprocmask(SigmaskHow::SIG_BLOCK, Some(&mask), None)
        .map_err(RunError::sys("block signals"))?;
    SignalFd::with_flags(&mask, SfdFlags::SFD_CLOEXEC).map_err(RunError::sys("signalfd"))
}

/// Start `p` in a child; returns its pid once exec succeeded, or the exec failure (126,
/// 127, 125) after reaping it.
pub fn start(p: &Process, stdio: Stdio) -> Result<Pid> {
    let (mut r, w) = std::io::pipe().map_err(RunError::io("pipe"))?;
    match fork().map_err(RunError::io("fork"))? {
        Forked::Child => {
            drop(r);
            exec_child(p, stdio, w)
        }
        Forked::Parent(pid) => {
            drop(w);
            drop(stdio);
            let mut msg = String::new();
            let _ = r.read_to_string(&mut msg);
            if msg.is_empty() {
                return Ok(pid);
            }
            let _ = waitpid(pid, None);
            let (code, m) = msg.split_once(' ').unwrap_or(("125", msg.as_str()));
            let code = code.parse().unwrap_or(125);
            Err(match code {
                126 | 127 => RunError::Exec {
                    code,
                    msg: m.to_string(),
                },
                _ => RunError::Invalid(m.to_string()),
            })
        }
    }
}

/// Exit status in Docker's terms.
pub fn exit_code(st: WaitStatus) -> Option<i32> {
    match st {
        WaitStatus::Exited(_, c) => Some(c),
        WaitStatus::Signaled(_, s, _) => Some(128 + s as i32),
        _ => None,
    }
}

/// Be init: forward signals to `main`, reap every child, return `main`'s exit status.
pub fn serve(main: Pid, sfd: &SignalFd) -> i32 {
    loop {
        // Reap first: the command may have ended before we got here.
        loop {
            match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) | Err(_) => break,
                Ok(st) => {
                    if st.pid() == Some(main)
                        && let Some(code) = exit_code(st)
                    {
                        return code;
                    }
                }
            }
        }
        match sfd.read_signal() {
            Ok(Some(si)) => {
                let signo = si.ssi_signo as i32;
                if signo != Signal::SIGCHLD as i32
                    && let Ok(sig) = Signal::try_from(signo)
                {
                    let _ = nix::sys::signal::kill(main, sig);
                }
            }
            Ok(None) => {}
            Err(nix::errno::Errno::EINTR) => {}
            Err(_) => std::thread::sleep(std::time::Duration::from_millis(50)),
        }
    }
}
