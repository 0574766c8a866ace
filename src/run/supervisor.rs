//! The supervisor of one run: `strata __supervise ID`, re-executed by `run`/`start` in a
//! session of its own (no resident daemon). It holds the container's run lock, forks the
//! container's processes ([`super::container`]) and answers their setup steps (id maps,
//! pasta, the go signal), then relays: the container's output to its log and to attached
//! clients, clients' input, window sizes and signals to the container. When the container
//! ends it records the exit status, stops pasta, removes the container with `--rm`, and
//! exits. Killed, it takes the container with it (parent-death signals), and `ps` shows
//! the container exited.

use super::attach::{Frame, FrameBuf};
use super::channel::Channel;
use super::container::{ChildIo, Plan};
use super::logs::{LogWriter, Stream};
use super::rootfs::RootfsPlan;
use super::spec::{self, ImageDefaults};
use super::{Result, RunError};
use crate::store::{ContainerRecord, RunStatus, Store};
use crate::sys::process::{Forked, fork};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{SigSet, SigmaskHow, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// The socket attach/stop/kill clients connect to.
pub fn attach_socket(store: &Store, rec: &ContainerRecord) -> PathBuf {
    store.container_dir(rec).join("attach.sock")
}

/// Start the supervisor of `rec` (a re-executed `strata`); returns the client end of its
/// channel: frames come as soon as it runs.
pub fn spawn(store: &Store, rec: &ContainerRecord) -> Result<UnixStream> {
    let exe = std::env::current_exe().map_err(RunError::io("find the strata binary"))?;
    let (ours, theirs) = UnixStream::pair().map_err(RunError::io("socketpair"))?;
    let theirs = OwnedFd::from(theirs);
    crate::sys::process::inherit_across_exec(&theirs).map_err(RunError::io("pass the channel"))?;
    let dir = store.container_dir(rec);
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("supervisor.log"))
        .map_err(RunError::io("open supervisor.log"))?;
    let mut cmd = std::process::Command::new(exe);
    cmd.arg("--root")
        .arg(store.root())
        .arg("__supervise")
        .arg(&rec.id)
        .arg("--attach-fd")
        .arg(theirs.as_raw_fd().to_string())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(log);
    crate::sys::process::new_session(&mut cmd);
    cmd.spawn().map_err(RunError::io("start the supervisor"))?;
    drop(theirs);
    Ok(ours)
}

/// Send signal `signo` to a running container (through its supervisor).
pub fn signal(store: &Store, rec: &ContainerRecord, signo: i32) -> Result<()> {
    let path = attach_socket(store, rec);
    let mut s = crate::sys::socket::connect_unix(&path)
        .map_err(|e| RunError::Invalid(format!("container {} is not running ({e})", rec.name)))?;
    s.write_all(&Frame::Signal(signo).encode())
        .map_err(RunError::io("signal the container"))?;
    Ok(())
}

struct Client {
    sock: UnixStream,
    frames: FrameBuf,
    dead: bool,
}

impl Client {
    fn new(sock: UnixStream) -> Client {
        let _ = sock.set_write_timeout(Some(Duration::from_secs(5)));
        Client {
            sock,
            frames: FrameBuf::default(),
            dead: false,
        }
    }
}

fn broadcast(clients: &mut [Client], f: &Frame) {
    let bytes = f.encode();
    for c in clients.iter_mut().filter(|c| !c.dead) {
        if c.sock.write_all(&bytes).is_err() {
            c.dead = true;
        }
    }
}

/// The body of `strata __supervise`: returns the exit status (also sent to clients).
pub fn supervise(store: &Store, id: &str, client: Option<OwnedFd>) -> i32 {
    let mut clients: Vec<Client> = client
        .map(|fd| Client::new(UnixStream::from(fd)))
        .into_iter()
        .collect();
    match run(store, id, &mut clients) {
        Ok(code) => code,
        Err(e) => {
            let code = e.exit_code();
            eprintln!("strata supervisor: {e}");
            broadcast(&mut clients, &Frame::Error(code, e.to_string()));
            code
        }
    }
}

fn open_dev_fuse() -> Result<()> {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/fuse")
        .map(|_| ())
        .map_err(|e| {
            RunError::Unavailable(if e.kind() == std::io::ErrorKind::NotFound {
                "/dev/fuse is missing (no FUSE in this kernel or container)".to_string()
            } else {
                format!("cannot open /dev/fuse: {e}")
            })
        })
}

fn pipe() -> Result<(OwnedFd, OwnedFd)> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(RunError::sys("pipe"))
}

fn set_nonblocking(fd: &OwnedFd) {
    let _ = nix::fcntl::fcntl(
        fd,
        nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
    );
}

/// What the setup of the container's processes ended with.
struct Started {
    init: u32,
    placeholders: Vec<String>,
    master: Option<OwnedFd>,
    pasta: Option<super::network::Pasta>,
}

fn run(store: &Store, id: &str, clients: &mut Vec<Client>) -> Result<i32> {
    let rec = store.container(id)?;
    let st = rec.run.clone().ok_or_else(|| {
        RunError::Invalid(format!(
            "container {} was made by `strata mount`, not `strata run`",
            rec.name
        ))
    })?;
    let dir = store.container_dir(&rec);
    let lock_file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(store.run_lock_path(&rec))
        .map_err(RunError::io("open run.lock"))?;
    if lock_file.try_lock().is_err() {
        return Err(RunError::Invalid(format!(
            "container {} is already running",
            rec.name
        )));
    }
    let cfg = st.config.clone();
    let img = store.image(&rec.image)?;
    let image = ImageDefaults::from_image_config(&store.image_config(&img)?);
    spec::argv(&image, &cfg)?;
    let hostname = cfg
        .hostname
        .clone()
        .unwrap_or_else(|| rec.id[..12].to_string());
    let chosen = super::idmap::choose()?;
    if let Some((_, Some(w))) = &chosen {
        broadcast(clients, &Frame::Warning(w.clone()));
    }
    let id_map = chosen.map(|(m, _)| m);
    if id_map.is_some() {
        super::namespaces::check_userns()?;
    }
    if cfg.network == "private" {
        super::network::check_private()?;
    }
    open_dev_fuse()?;
    let merged = dir.join("merged");
    std::fs::create_dir_all(&merged).map_err(RunError::io("create merged/"))?;
    if crate::store::containers::is_mounted(&merged) {
        return Err(RunError::Invalid(format!(
            "container {} is mounted on the host; strata umount it first",
            rec.name
        )));
    }
    super::network::write_etc_files(&dir, &hostname, &cfg.network)?;
    let mut mount = store.mount_config(&rec)?;
    mount.mountpoint = merged.clone();
    if store.rootless() {
        mount.fuse_options.push("strata:override_stat".into());
    }
    let control = store.control_socket(&rec);
    let _ = std::fs::remove_file(&control);
    let sock_path = attach_socket(store, &rec);
    let _ = std::fs::remove_file(&sock_path);
    let listener = crate::sys::socket::bind_unix(&sock_path)
        .map_err(RunError::io(format!("listen on {}", sock_path.display())))?;
    listener
        .set_nonblocking(true)
        .map_err(RunError::io("attach socket"))?;

    // The container's stdio.
    let devnull = || -> Result<OwnedFd> {
        std::fs::File::open("/dev/null")
            .map(OwnedFd::from)
            .map_err(RunError::io("open /dev/null"))
    };
    let (child_stdin, stdin_w) = if cfg.stdin && !cfg.tty {
        let (r, w) = pipe()?;
        set_nonblocking(&w);
        (r, Some(w))
    } else {
        (devnull()?, None)
    };
    let (out_pipes, child_out) = if cfg.tty {
        (Vec::new(), None)
    } else {
        let (or, ow) = pipe()?;
        let (er, ew) = pipe()?;
        (
            vec![(or, Stream::Stdout), (er, Stream::Stderr)],
            Some((ow, ew)),
        )
    };
    let plan = Plan {
        id: rec.id.clone(),
        hostname,
        mount,
        rootfs: RootfsPlan {
            root: merged.clone(),
            dir: dir.clone(),
            own_pid_ns: !cfg.pid_host,
            binds: cfg.binds.clone(),
            read_only: cfg.read_only,
        },
        id_map: id_map.clone(),
        image,
        config: cfg.clone(),
        supervisor: std::process::id(),
    };
    let (chan, child_chan) = Channel::pair()?;
    let holder = match fork().map_err(RunError::io("fork"))? {
        Forked::Child => {
            drop(chan);
            super::container::holder(
                &plan,
                child_chan,
                ChildIo {
                    stdin: child_stdin,
                    out: child_out,
                },
            )
        }
        Forked::Parent(pid) => pid,
    };
    drop(child_chan);
    drop(child_stdin);
    drop(child_out);

    let started = match setup(&chan, holder, &plan) {
        Ok(s) => s,
        Err(e) => {
            let _ = nix::sys::signal::kill(holder, Signal::SIGKILL);
            let _ = waitpid(holder, None);
            let code = e.exit_code();
            let msg = e.to_string();
            let _ = std::fs::remove_file(&sock_path);
            let _ = std::fs::remove_file(&control);
            let rec = store.update_run(&rec.id, |r| {
                if code == 126 || code == 127 {
                    r.status = RunStatus::Exited;
                    r.exit_code = Some(code);
                    r.finished = Some(super::state::now());
                }
                r.error = Some(msg.clone());
                r.init_pid = None;
            })?;
            if cfg.auto_remove {
                drop(lock_file);
                let _ = super::userns::remove_container(store, &rec);
            }
            return Err(e);
        }
    };
    let now = super::state::now();
    store.update_run(&rec.id, |r| {
        r.status = RunStatus::Running;
        r.supervisor_pid = Some(std::process::id());
        r.init_pid = Some(started.init);
        r.started = Some(now.clone());
        r.finished = None;
        r.exit_code = None;
        r.error = None;
        r.id_map = id_map.clone();
        for p in &started.placeholders {
            if !r.placeholders.contains(p) {
                r.placeholders.push(p.clone());
            }
        }
    })?;
    broadcast(clients, &Frame::Started(rec.id.clone()));

    let mut relay = Relay {
        outputs: out_pipes,
        stdin: stdin_w,
        pending: Vec::new(),
        stdin_eof: false,
        master: None,
        init: Pid::from_raw(started.init as i32),
        log: LogWriter::open(&dir.join("container.log"))?,
    };
    if let Some(m) = started.master {
        set_nonblocking(&m);
        let w = m.try_clone().map_err(RunError::io("dup the pty"))?;
        relay.outputs.push((m, Stream::Stdout));
        if cfg.stdin {
            relay.stdin = Some(w);
        }
        relay.master = relay.outputs.last().and_then(|(m, _)| m.try_clone().ok());
    }
    let code = relay.run(holder, &listener, clients)?;
    drop(started.pasta);
    drop(listener);
    let _ = std::fs::remove_file(&sock_path);
    let _ = std::fs::remove_file(&control);
    let rec = store.update_run(&rec.id, |r| {
        r.status = RunStatus::Exited;
        r.exit_code = Some(code);
        r.finished = Some(super::state::now());
        r.init_pid = None;
    })?;
    if cfg.auto_remove {
        drop(lock_file);
        if let Err(e) = super::userns::remove_container(store, &rec) {
            broadcast(clients, &Frame::Warning(format!("--rm: {e}")));
        }
    }
    broadcast(clients, &Frame::Exit(code));
    Ok(code)
}

/// Answer the setup steps of the container's processes until the command runs.
fn setup(chan: &Channel, holder: Pid, plan: &Plan) -> Result<Started> {
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut s = Started {
        init: 0,
        placeholders: Vec::new(),
        master: None,
        pasta: None,
    };
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let Some((msg, fd)) = chan.recv(Some(left))? else {
            if left.is_zero() {
                return Err(RunError::Invalid(
                    "the container did not start within 120 s".into(),
                ));
            }
            return Err(RunError::Invalid(
                "the container's processes exited during setup".into(),
            ));
        };
        let (word, rest) = msg.split_once(' ').unwrap_or((msg.as_str(), ""));
        match word {
            "userns" => {
                if let Some(map) = &plan.id_map {
                    super::idmap::apply(holder.as_raw() as u32, map)?;
                }
                chan.send("mapped", None)?;
            }
            "init" => {
                s.init = rest
                    .parse()
                    .map_err(|_| RunError::Invalid(format!("bad message {msg:?}")))?;
                if plan.config.network == "private" {
                    let dir = &plan.rootfs.dir;
                    s.pasta = Some(super::network::Pasta::start(
                        holder.as_raw() as u32,
                        &plan.config.ports,
                        dir,
                    )?);
                }
            }
            "placeholders" => s.placeholders = serde_json::from_str(rest).unwrap_or_default(),
            "pty" => s.master = fd,
            "ready" => chan.send("go", None)?,
            "started" => return Ok(s),
            "error" => {
                let (code, m) = rest.split_once(' ').unwrap_or(("125", rest));
                let code: i32 = code.parse().unwrap_or(125);
                return Err(match code {
                    126 | 127 => RunError::Exec {
                        code,
                        msg: m.to_string(),
                    },
                    _ => RunError::Invalid(m.to_string()),
                });
            }
            _ => return Err(RunError::Invalid(format!("bad message {msg:?}"))),
        }
    }
}

struct Relay {
    outputs: Vec<(OwnedFd, Stream)>,
    stdin: Option<OwnedFd>,
    pending: Vec<u8>,
    /// A client ended stdin: close it once `pending` is written.
    stdin_eof: bool,
    master: Option<OwnedFd>,
    init: Pid,
    log: LogWriter,
}

impl Relay {
    fn run(
        &mut self,
        holder: Pid,
        listener: &UnixListener,
        clients: &mut Vec<Client>,
    ) -> Result<i32> {
        let mut mask = SigSet::empty();
        for s in [
            Signal::SIGCHLD,
            Signal::SIGTERM,
            Signal::SIGINT,
            Signal::SIGHUP,
        ] {
            mask.add(s);
        }
        nix::sys::signal::sigprocmask(SigmaskHow::SIG_BLOCK, Some(&mask), None)
            .map_err(RunError::sys("block signals"))?;
        let sfd = SignalFd::with_flags(&mask, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)
            .map_err(RunError::sys("signalfd"))?;
        let mut exited: Option<(i32, Instant)> = None;
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            if exited.is_none()
                && let Ok(st) = waitpid(holder, Some(WaitPidFlag::WNOHANG))
                && st != WaitStatus::StillAlive
            {
                exited = Some((super::init::exit_code(st).unwrap_or(125), Instant::now()));
            }
            if let Some((code, at)) = exited
                && (self.outputs.is_empty() || at.elapsed() > Duration::from_secs(2))
            {
                return Ok(code);
            }
            clients.retain(|c| !c.dead);
            let n_out = self.outputs.len();
            let n_clients = clients.len();
            let mut fds: Vec<PollFd> = Vec::new();
            for (fd, _) in &self.outputs {
                fds.push(PollFd::new(fd.as_fd(), PollFlags::POLLIN));
            }
            for c in clients.iter() {
                fds.push(PollFd::new(c.sock.as_fd(), PollFlags::POLLIN));
            }
            fds.push(PollFd::new(listener.as_fd(), PollFlags::POLLIN));
            fds.push(PollFd::new(sfd.as_fd(), PollFlags::POLLIN));
            let stdin_idx = fds.len();
            if let Some(w) = self.stdin.as_ref().filter(|_| !self.pending.is_empty()) {
                fds.push(PollFd::new(w.as_fd(), PollFlags::POLLOUT));
            }
            match poll(&mut fds, PollTimeout::from(200u16)) {
                Ok(_) | Err(nix::errno::Errno::EINTR) => {}
                Err(e) => return Err(RunError::sys("poll")(e)),
            }
            let ready: Vec<bool> = fds
                .iter()
                .map(|f| f.revents().is_some_and(|r| !r.is_empty()))
                .collect();
            drop(fds);
            // Output of the container.
            let mut closed = Vec::new();
            for (i, (fd, stream)) in self.outputs.iter().enumerate() {
                if !ready[i] {
                    continue;
                }
                match nix::unistd::read(fd, &mut buf) {
                    Ok(0) => closed.push(i),
                    Ok(n) => {
                        self.log.write(*stream, &buf[..n]);
                        let f = match stream {
                            Stream::Stdout => Frame::Stdout(buf[..n].to_vec()),
                            Stream::Stderr => Frame::Stderr(buf[..n].to_vec()),
                        };
                        broadcast(clients, &f);
                    }
                    Err(nix::errno::Errno::EAGAIN) | Err(nix::errno::Errno::EINTR) => {}
                    Err(_) => closed.push(i),
                }
            }
            for i in closed.into_iter().rev() {
                self.outputs.remove(i);
            }
            // Clients.
            for (i, c) in clients.iter_mut().enumerate() {
                if !ready[n_out + i] {
                    continue;
                }
                match c.sock.read(&mut buf) {
                    Ok(0) | Err(_) => c.dead = true,
                    Ok(n) => c.frames.feed(&buf[..n]),
                }
                while let Some(f) = c.frames.next_frame() {
                    match f {
                        Frame::Stdin(d) if self.stdin.is_some() => self.pending.extend(d),
                        Frame::StdinEof if self.master.is_none() => {
                            self.stdin_eof = true;
                            self.flush_stdin();
                        }
                        Frame::Resize(r, cols) => {
                            if let Some(m) = &self.master {
                                let _ = crate::sys::term::set_window_size(m.as_fd(), r, cols);
                            }
                        }
                        Frame::Signal(s) => {
                            if let Ok(sig) = Signal::try_from(s) {
                                let _ = nix::sys::signal::kill(self.init, sig);
                            }
                        }
                        _ => {}
                    }
                }
            }
            if ready[n_out + n_clients] {
                while let Ok((s, _)) = listener.accept() {
                    let _ = s.set_nonblocking(false);
                    clients.push(Client::new(s));
                }
            }
            if ready[n_out + n_clients + 1] {
                while let Ok(Some(si)) = sfd.read_signal() {
                    let signo = si.ssi_signo as i32;
                    if signo != Signal::SIGCHLD as i32 && exited.is_none() {
                        let _ = nix::sys::signal::kill(self.init, Signal::SIGTERM);
                    }
                }
            }
            if ready.get(stdin_idx).copied().unwrap_or(false) {
                self.flush_stdin();
            }
        }
    }

    fn flush_stdin(&mut self) {
        let Some(w) = &self.stdin else {
            self.pending.clear();
            return;
        };
        while !self.pending.is_empty() {
            match nix::unistd::write(w, &self.pending) {
                Ok(n) => {
                    self.pending.drain(..n);
                }
                Err(nix::errno::Errno::EINTR) => {}
                Err(nix::errno::Errno::EAGAIN) => return,
                Err(_) => {
                    self.pending.clear();
                    self.stdin = None;
                    return;
                }
            }
        }
        if self.stdin_eof {
            self.stdin = None;
        }
    }
}
