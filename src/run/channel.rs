//! The supervisor's private channel to the container's processes: a SOCK_SEQPACKET
//! socketpair carrying one short text message per packet (and, once, the pty master).

use super::{Result, RunError};
use nix::sys::socket::{
    AddressFamily, ControlMessage, ControlMessageOwned, MsgFlags, SockFlag, SockType, recvmsg,
    sendmsg, socketpair,
};
use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::Duration;

/// One end of the channel.
#[derive(Debug)]
pub struct Channel {
    fd: OwnedFd,
}

impl Channel {
    /// A connected pair (supervisor end, container end).
    pub fn pair() -> Result<(Channel, Channel)> {
        let (a, b) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .map_err(RunError::sys("socketpair"))?;
        Ok((Channel { fd: a }, Channel { fd: b }))
    }

    /// The descriptor (to keep across a fork).
    pub fn raw(&self) -> std::os::fd::RawFd {
        self.fd.as_raw_fd()
    }

    /// Send one message, with a descriptor attached if given.
    pub fn send(&self, msg: &str, fd: Option<&OwnedFd>) -> Result<()> {
        let iov = [IoSlice::new(msg.as_bytes())];
        let raw = fd.map(|f| [f.as_raw_fd()]);
        let cmsgs: Vec<ControlMessage> = raw
            .as_ref()
            .map(|r| ControlMessage::ScmRights(r))
            .into_iter()
            .collect();
        sendmsg::<()>(self.fd.as_raw_fd(), &iov, &cmsgs, MsgFlags::empty(), None)
            .map_err(RunError::sys("send to the supervisor channel"))?;
        Ok(())
    }

    /// Receive one message (and a descriptor if one came); `None` when the other side is
    /// gone or nothing came within `timeout`.
    pub fn recv(&self, timeout: Option<Duration>) -> Result<Option<(String, Option<OwnedFd>)>> {
        if let Some(t) = timeout {
            use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
            use std::os::fd::AsFd;
            let ms = PollTimeout::try_from(t).unwrap_or(PollTimeout::MAX);
            let mut fds = [PollFd::new(self.fd.as_fd(), PollFlags::POLLIN)];
            loop {
                match poll(&mut fds, ms) {
                    Ok(0) => return Ok(None),
                    Ok(_) => break,
                    Err(nix::errno::Errno::EINTR) => continue,
                    Err(e) => return Err(RunError::sys("poll")(e)),
                }
            }
        }
        let mut buf = vec![0u8; 65536];
        let mut cbuf = nix::cmsg_space!([std::os::fd::RawFd; 1]);
        let (n, fds) = loop {
            let mut iov = [IoSliceMut::new(&mut buf)];
            match recvmsg::<()>(
                self.fd.as_raw_fd(),
                &mut iov,
                Some(&mut cbuf),
                MsgFlags::MSG_CMSG_CLOEXEC,
            ) {
                Ok(m) => {
                    let mut fds = Vec::new();
                    if let Ok(cmsgs) = m.cmsgs() {
                        for c in cmsgs {
                            if let ControlMessageOwned::ScmRights(r) = c {
                                fds.extend(r);
                            }
                        }
                    }
                    break (m.bytes, fds);
                }
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(RunError::sys("receive from the supervisor channel")(e)),
            }
        };
        let mut owned = None;
        for raw in fds {
            let fd = crate::sys::process::take_fd(raw).map_err(RunError::io("received fd"))?;
            owned.get_or_insert(fd);
        }
        if n == 0 && owned.is_none() {
            return Ok(None);
        }
        Ok(Some((
            String::from_utf8_lossy(&buf[..n]).into_owned(),
            owned,
        )))
    }
}
