//! Process-level system calls: fork (only when single-threaded), descriptor hygiene around
//! fork and exec, signal state before exec, parent-death signal, controlling terminal.

use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use nix::sys::signal::{self, SigHandler, SigSet, SigmaskHow, Signal};
use nix::unistd::Pid;

/// The outcome of [`fork`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Forked {
    /// In the parent: the child's pid.
    Parent(Pid),
    /// In the child.
    Child,
}

/// Number of threads of this process (from /proc/self/status; 0 if unknown).
pub fn thread_count() -> usize {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Threads:"))
                .and_then(|n| n.trim().parse().ok())
        })
        .unwrap_or(0)
}

/// fork(2), refused when this process has more than one thread (when /proc is not this
/// process's, e.g. after joining a container's mount namespace, the caller must have checked
/// before). The child must end with [`exit_now`] (or exec) and never return into code that
/// drops the parent's objects.
pub fn fork() -> std::io::Result<Forked> {
    if thread_count() > 1 {
        return Err(std::io::Error::other(
            "internal error: fork from a multithreaded process",
        ));
    }
    // SAFETY: the process has a single thread (checked above, or by the caller), so the child gets a consistent
    // copy of every lock and allocator state; fork itself has no memory-safety preconditions
    // beyond that.
    match unsafe { nix::unistd::fork() }? {
        nix::unistd::ForkResult::Parent { child } => Ok(Forked::Parent(child)),
        nix::unistd::ForkResult::Child => Ok(Forked::Child),
    }
}

/// End this process at once with `code`: no destructors, no atexit handlers, no flushing of
/// buffers copied from a parent (for forked children).
pub fn exit_now(code: i32) -> ! {
    // SAFETY: _exit(2) takes no pointers and never returns; skipping destructors is the point
    // (a forked child must not drop or flush what it copied from its parent).
    unsafe { libc::_exit(code) }
}

/// Close every descriptor above stderr except those in `keep` (in a forked child that
/// owns nothing of its parent's: the objects that own those descriptors in the parent are
/// never used or dropped in the child).
pub fn close_fds_except(keep: &[RawFd]) {
    let mut keep: Vec<RawFd> = keep.iter().copied().filter(|f| *f > 2).collect();
    keep.sort_unstable();
    keep.dedup();
    let mut from: u32 = 3;
    for k in keep.iter().map(|k| *k as u32) {
        if k > from {
            close_range(from, k - 1);
        }
        from = k + 1;
    }
    close_range(from, u32::MAX);
}

fn close_range(first: u32, last: u32) {
    // SAFETY: close_range only closes descriptors; the caller guarantees (see
    // `close_fds_except`) that nothing alive in this process still uses them.
    unsafe {
        libc::syscall(libc::SYS_close_range, first, last, 0u32);
    }
}

/// Take ownership of descriptor `fd` that this process was handed: inherited from its parent
/// (a number passed on the command line) or just received with SCM_RIGHTS. Fails unless
/// `fd` is open.
pub fn take_fd(fd: RawFd) -> std::io::Result<OwnedFd> {
    if fd < 3 {
        return Err(std::io::Error::from_raw_os_error(libc::EBADF));
    }
    nix::fcntl::fcntl(
        // SAFETY: only used for the duration of this F_GETFD check.
        unsafe { BorrowedFd::borrow_raw(fd) },
        nix::fcntl::FcntlArg::F_GETFD,
    )?;
    // SAFETY: the descriptor is open (checked above) and was handed to this process alone
    // (inherited or received); nothing else in this process owns it, and callers take each
    // number once.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Keep `fd` open across exec (clears FD_CLOEXEC), for a descriptor handed to a child.
pub fn inherit_across_exec(fd: &OwnedFd) -> std::io::Result<()> {
    nix::fcntl::fcntl(
        fd,
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::empty()),
    )?;
    Ok(())
}

/// Ask for SIGKILL when the parent exits; fails if the parent (`parent`, as seen before the
/// fork) is already gone.
pub fn die_with_parent(parent: u32) -> std::io::Result<()> {
    nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)?;
    if nix::unistd::getppid().as_raw() as u32 != parent {
        return Err(std::io::Error::other("the parent process is gone"));
    }
    Ok(())
}

/// Ask for SIGKILL when the parent exits, without checking that it still lives (for pid 1 of
/// a new PID namespace, whose parent is outside it and shows as pid 0).
pub fn die_with_parent_unchecked() -> std::io::Result<()> {
    nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)?;
    Ok(())
}

/// Default dispositions for every catchable signal and an empty signal mask: what a program
/// expects at exec (the Rust runtime ignores SIGPIPE; supervisors block signals).
pub fn reset_signals() {
    for sig in Signal::iterator() {
        if matches!(sig, Signal::SIGKILL | Signal::SIGSTOP) {
            continue;
        }
        // SAFETY: installing SIG_DFL runs no code of ours in signal context; this is done
        // right before exec, when no handler of this process is needed any more.
        let _ = unsafe { signal::signal(sig, SigHandler::SigDfl) };
    }
    let _ = signal::sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None);
}

/// Make the terminal `fd` the controlling terminal of this (new session leader) process.
pub fn set_controlling_terminal(fd: BorrowedFd<'_>) -> std::io::Result<()> {
    // SAFETY: TIOCSCTTY takes an int argument (0: do not steal); no memory is passed.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCSCTTY, 0) };
    if r != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Have the child `cmd` spawns get SIGKILL when the spawning thread exits, so that helpers
/// such as pasta never outlive their supervisor.
pub fn kill_with_parent(cmd: &mut std::process::Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: the closure runs in the forked child before exec and only calls prctl(2), which
    // is async-signal-safe and allocates nothing.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Have the child `cmd` spawns start a new session (setsid) before exec: no controlling
/// terminal, and no signal the caller's terminal sends to its process group.
pub fn new_session(cmd: &mut std::process::Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: the closure runs in the forked child before exec and only calls setsid(2),
    // which is async-signal-safe and allocates nothing.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Have the child `cmd` spawns start a new session whose controlling terminal is its stdin
/// (setsid, then TIOCSCTTY on fd 0), as a terminal emulator starts a shell.
pub fn new_session_on_terminal(cmd: &mut std::process::Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: the closure runs in the forked child before exec and only calls setsid(2) and
    // ioctl(2) with an int argument, both async-signal-safe; it allocates nothing.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Have the child `cmd` spawns run in a private mount namespace of its own where `src` is
/// bound on `dst` (e.g. a network namespace file bound where a tool that only takes a path
/// can open it); the bind goes away with the child.
pub fn bind_in_private_mount_ns(
    cmd: &mut std::process::Command,
    src: &std::path::Path,
    dst: &std::path::Path,
) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::process::CommandExt;
    let cstr = |p: &std::path::Path| {
        std::ffi::CString::new(p.as_os_str().as_bytes())
            .map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))
    };
    let (src, dst, root) = (cstr(src)?, cstr(dst)?, cstr(std::path::Path::new("/"))?);
    // SAFETY: the closure runs in the forked child before exec and only makes the system
    // calls unshare(2) and mount(2) with NUL-terminated strings prepared before the fork
    // (no allocation, async-signal-safe).
    unsafe {
        cmd.pre_exec(move || {
            if libc::unshare(libc::CLONE_NEWNS) != 0
                || libc::mount(
                    std::ptr::null(),
                    root.as_ptr(),
                    std::ptr::null(),
                    libc::MS_REC | libc::MS_PRIVATE,
                    std::ptr::null(),
                ) != 0
                || libc::mount(
                    src.as_ptr(),
                    dst.as_ptr(),
                    std::ptr::null(),
                    libc::MS_BIND,
                    std::ptr::null(),
                ) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    Ok(())
}

/// Point stdin, stdout and stderr at /dev/null (or, where /dev/null cannot be opened, at an
/// empty memory file), so that a daemon holds none of its caller's.
pub fn stdio_to_null() {
    let devnull = std::ffi::CString::new("/dev/null").unwrap_or_default();
    let name = std::ffi::CString::new("strata-null").unwrap_or_default();
    // SAFETY: plain fd calls on fds this process owns; the strings are NUL-terminated.
    unsafe {
        let mut fd = libc::open(devnull.as_ptr(), libc::O_RDWR);
        if fd < 0 {
            fd = libc::memfd_create(name.as_ptr(), 0);
        }
        if fd >= 0 {
            libc::dup2(fd, 0);
            libc::dup2(fd, 1);
            libc::dup2(fd, 2);
            if fd > 2 {
                libc::close(fd);
            }
        }
    }
}
