//! Attaching to a container's supervisor: the framed protocol spoken over a unix socket
//! (the socketpair of `run`/`start -a`, or `containers/<id>/attach.sock` for `attach`) and
//! the client's relay between it and the caller's terminal or pipes.
//!
//! A frame is a kind byte, a little-endian u32 length and the payload. Supervisor to client:
//! output (stdout, stderr), started (the container ID), warning, error (`CODE message`) and
//! exit (`CODE`). Client to supervisor: stdin data, end of stdin, window size (`ROWS COLS`)
//! and a signal number to deliver to the container.

use super::{Result, RunError};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{SigSet, SigmaskHow, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;

/// One message of the protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// Container output on stdout (or its terminal).
    Stdout(Vec<u8>),
    /// Container output on stderr.
    Stderr(Vec<u8>),
    /// The process runs (payload: container ID).
    Started(String),
    /// A message to show on stderr.
    Warning(String),
    /// The run failed: exit code and message.
    Error(i32, String),
    /// The process exited with this status.
    Exit(i32),
    /// Data for the container's stdin.
    Stdin(Vec<u8>),
    /// End of the container's stdin.
    StdinEof,
    /// The client's terminal size: rows, columns.
    Resize(u16, u16),
    /// Deliver this signal to the container.
    Signal(i32),
}

impl Frame {
    /// The frame's bytes.
    pub fn encode(&self) -> Vec<u8> {
        let (kind, payload): (u8, Vec<u8>) = match self {
            Frame::Stdout(d) => (1, d.clone()),
            Frame::Stderr(d) => (2, d.clone()),
            Frame::Started(id) => (3, id.as_bytes().to_vec()),
            Frame::Warning(m) => (4, m.as_bytes().to_vec()),
            Frame::Error(c, m) => (5, format!("{c} {m}").into_bytes()),
            Frame::Exit(c) => (6, c.to_string().into_bytes()),
            Frame::Stdin(d) => (10, d.clone()),
            Frame::StdinEof => (11, Vec::new()),
            Frame::Resize(r, c) => (12, format!("{r} {c}").into_bytes()),
            Frame::Signal(s) => (13, s.to_string().into_bytes()),
        };
        let mut out = Vec::with_capacity(5 + payload.len());
        out.push(kind);
        out.extend((payload.len() as u32).to_le_bytes());
        out.extend(payload);
        out
    }

    fn decode(kind: u8, p: &[u8]) -> Option<Frame> {
        let text = || String::from_utf8_lossy(p).into_owned();
        let num = |s: &str| s.trim().parse::<i32>().ok();
        Some(match kind {
            1 => Frame::Stdout(p.to_vec()),
            2 => Frame::Stderr(p.to_vec()),
            3 => Frame::Started(text()),
            4 => Frame::Warning(text()),
            5 => {
                let t = text();
                let (c, m) = t.split_once(' ').unwrap_or((t.as_str(), ""));
                Frame::Error(num(c)?, m.to_string())
            }
            6 => Frame::Exit(num(&text())?),
            10 => Frame::Stdin(p.to_vec()),
            11 => Frame::StdinEof,
            12 => {
                let t = text();
                let (r, c) = t.split_once(' ')?;
                Frame::Resize(r.parse().ok()?, c.parse().ok()?)
            }
            13 => Frame::Signal(num(&text())?),
            _ => return None,
        })
    }
}

/// Splits a byte stream into frames.
#[derive(Debug, Default)]
pub struct FrameBuf {
    buf: Vec<u8>,
}

impl FrameBuf {
    /// Add bytes read from the stream.
    pub fn feed(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// The next complete frame (unknown kinds are skipped).
    pub fn next_frame(&mut self) -> Option<Frame> {
        loop {
            if self.buf.len() < 5 {
                return None;
            }
            let len =
                u32::from_le_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]]) as usize;
            if self.buf.len() < 5 + len {
                return None;
            }
            let kind = self.buf[0];
            let f = Frame::decode(kind, &self.buf[5..5 + len]);
            self.buf.drain(..5 + len);
            if f.is_some() {
                return f;
            }
        }
    }
}

/// How the client relays.
#[derive(Debug, Clone, Copy, Default)]
pub struct ClientOptions {
    /// Forward the caller's stdin to the container.
    pub stdin: bool,
    /// The container has a terminal: raw mode, window size.
    pub tty: bool,
    /// Return as soon as the container runs (`run -d`).
    pub detach_when_started: bool,
}

/// How a relay ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The container runs (with `detach_when_started`): its ID.
    Started(String),
    /// The container's process exited with this status (or the run failed with it).
    Exited(i32),
    /// The supervisor went away without an exit status.
    Lost,
}

const FORWARDED: [Signal; 6] = [
    Signal::SIGINT,
    Signal::SIGTERM,
    Signal::SIGHUP,
    Signal::SIGQUIT,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
];

fn send(sock: &mut UnixStream, f: &Frame) -> bool {
    sock.write_all(&f.encode()).is_ok()
}

/// Relay between the caller and the supervisor at the other end of `sock` until the
/// container exits (or runs, with `detach_when_started`). Signals the caller gets are sent
/// to the container; with a terminal, the caller's is put in raw mode and its size follows.
pub fn relay(mut sock: UnixStream, opts: ClientOptions) -> Result<Outcome> {
    let mut mask = SigSet::empty();
    for s in FORWARDED {
        mask.add(s);
    }
    mask.add(Signal::SIGWINCH);
    let mut old = SigSet::empty();
    nix::sys::signal::sigprocmask(SigmaskHow::SIG_BLOCK, Some(&mask), Some(&mut old))
        .map_err(RunError::sys("block signals"))?;
    let sfd = SignalFd::with_flags(&mask, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)
        .map_err(RunError::sys("signalfd"))?;
    let _raw = (opts.tty && !opts.detach_when_started)
        .then(super::pty::RawMode::stdin)
        .flatten();
    if opts.tty
        && let Some((r, c)) = super::pty::caller_size()
    {
        send(&mut sock, &Frame::Resize(r, c));
    }
    let result = relay_loop(&mut sock, &sfd, opts);
    drop(_raw);
    let _ = nix::sys::signal::sigprocmask(SigmaskHow::SIG_SETMASK, Some(&old), None);
    result
}

fn relay_loop(sock: &mut UnixStream, sfd: &SignalFd, opts: ClientOptions) -> Result<Outcome> {
    let mut frames = FrameBuf::default();
    let mut stdin_open = opts.stdin && !opts.detach_when_started;
    let mut out = std::io::stdout();
    let mut err = std::io::stderr();
    let mut buf = vec![0u8; 64 * 1024];
    let sock_r = sock.try_clone().map_err(RunError::io("attach socket"))?;
    let stdin = std::io::stdin();
    loop {
        let mut fds = vec![
            PollFd::new(sock_r.as_fd(), PollFlags::POLLIN),
            PollFd::new(sfd.as_fd(), PollFlags::POLLIN),
        ];
        if stdin_open {
            fds.push(PollFd::new(stdin.as_fd(), PollFlags::POLLIN));
        }
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(RunError::sys("poll")(e)),
        }
        let ready = |i: usize| {
            fds.get(i)
                .and_then(|f| f.revents())
                .is_some_and(|r| !r.is_empty())
        };
        let (sock_ready, sig_ready, stdin_ready) = (ready(0), ready(1), ready(2));
        drop(fds);
        if sig_ready {
            while let Ok(Some(si)) = sfd.read_signal() {
                let signo = si.ssi_signo as i32;
                if signo == Signal::SIGWINCH as i32 {
                    if let Some((r, c)) = super::pty::caller_size() {
                        send(sock, &Frame::Resize(r, c));
                    }
                } else {
                    send(sock, &Frame::Signal(signo));
                }
            }
        }
        if stdin_ready {
            match nix::unistd::read(stdin.as_fd(), &mut buf) {
                Ok(0) | Err(_) => {
                    stdin_open = false;
                    send(sock, &Frame::StdinEof);
                }
                Ok(n) => {
                    if !send(sock, &Frame::Stdin(buf[..n].to_vec())) {
                        stdin_open = false;
                    }
                }
            }
        }
        if sock_ready {
            let n = (&sock_r).read(&mut buf).unwrap_or(0);
            if n == 0 {
                return Ok(Outcome::Lost);
            }
            frames.feed(&buf[..n]);
            while let Some(f) = frames.next_frame() {
                match f {
                    Frame::Stdout(d) => {
                        let _ = out.write_all(&d);
                        let _ = out.flush();
                    }
                    Frame::Stderr(d) => {
                        let _ = err.write_all(&d);
                    }
                    Frame::Warning(m) => {
                        let _ = writeln!(err, "strata: {m}");
                    }
                    Frame::Started(id) if opts.detach_when_started => {
                        return Ok(Outcome::Started(id));
                    }
                    Frame::Error(code, m) => {
                        let _ = writeln!(err, "strata: {m}");
                        return Ok(Outcome::Exited(code));
                    }
                    Frame::Exit(code) => return Ok(Outcome::Exited(code)),
                    _ => {}
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip() {
        let all = [
            Frame::Stdout(b"out".to_vec()),
            Frame::Stderr(vec![]),
            Frame::Started("abc".into()),
            Frame::Warning("w".into()),
            Frame::Error(127, "exec: not found".into()),
            Frame::Exit(143),
            Frame::Stdin(b"in".to_vec()),
            Frame::StdinEof,
            Frame::Resize(24, 80),
            Frame::Signal(15),
        ];
        let mut fb = FrameBuf::default();
        let bytes: Vec<u8> = all.iter().flat_map(Frame::encode).collect();
        for chunk in bytes.chunks(3) {
            fb.feed(chunk);
        }
        let mut got = Vec::new();
        while let Some(f) = fb.next_frame() {
            got.push(f);
        }
        assert_eq!(got, all);
    }
}
