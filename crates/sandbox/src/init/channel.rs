//! The init's report protocol, both ends: what the init sends its parent
//! over their `SOCK_SEQPACKET` socket, and how the parent reads it. One
//! message per packet; the init's socket end closes at exec, which the
//! parent reads as success.

use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};

use super::sys::{fail, Failure, Step};
use crate::SandboxError;

/// What the init sends its parent; one message per packet.
pub(crate) mod message {
    /// Set-up done; waiting for the start byte.
    pub const READY: u8 = b'R';
    /// The pty master rides along (SCM_RIGHTS).
    pub const CONSOLE: u8 = b'T';
    /// A failure: the next byte is a [`super::FailureKind`], then the text.
    pub const ERROR: u8 = b'E';
    /// Parent to child: the ID maps are written.
    pub const MAPPED: u8 = b'M';
    /// Parent to child: run the command.
    pub const START: u8 = b'S';
    /// Exec into a running container: the exec'd process's pid as the
    /// host sees it (4 bytes, native order), from the process that forks it.
    pub const PID: u8 = b'P';
    /// Stopped before `pivot_root` for the parent's `prestart` and
    /// `createRuntime` hooks.
    pub const HOOKS: u8 = b'H';
    /// Parent to child: the hooks ran; the body is the state JSON the
    /// init's own hooks read.
    pub const STATE: u8 = b'J';
}

/// Why the init gave up: the kinds map to Docker's exit codes (the byte
/// after [`message::ERROR`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    Setup = 0,
    NotFound = 1,
    NotExecutable = 2,
}

impl FailureKind {
    pub(crate) fn from_byte(b: u8) -> Self {
        match b {
            1 => FailureKind::NotFound,
            2 => FailureKind::NotExecutable,
            _ => FailureKind::Setup,
        }
    }
}

// The init's end.

pub(crate) fn send(sock: BorrowedFd<'_>, bytes: &[u8]) -> Step {
    rustix::net::send(sock, bytes, rustix::net::SendFlags::NOSIGNAL)
        .map(|_| ())
        .map_err(|e| fail(format!("reporting to skiff: {e}")))
}

pub(crate) fn expect(sock: BorrowedFd<'_>, want: u8) -> Step {
    let mut b = [0u8; 1];
    loop {
        match rustix::net::recv(sock, &mut b, rustix::net::RecvFlags::empty()) {
            Ok((1, _)) if b[0] == want => return Ok(()),
            Ok(_) => return Err(fail("skiff went away before the container started".into())),
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(fail(format!("waiting for skiff: {e}"))),
        }
    }
}

/// One packet that must be `want`; its body.
pub(crate) fn receive_body(sock: BorrowedFd<'_>, want: u8) -> Step<Vec<u8>> {
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        match rustix::net::recv(sock, &mut buf, rustix::net::RecvFlags::empty()) {
            Ok((n, _)) if n >= 1 && buf[0] == want => return Ok(buf[1..n].to_vec()),
            Ok(_) => return Err(fail("skiff went away before the container started".into())),
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(fail(format!("waiting for skiff: {e}"))),
        }
    }
}

/// Hands the pty master to the parent ([`message::CONSOLE`]).
pub(crate) fn send_fd(sock: BorrowedFd<'_>, fd: BorrowedFd<'_>) -> Step {
    use rustix::net::{SendAncillaryBuffer, SendAncillaryMessage, SendFlags};
    let fds = [fd];
    let mut space = [std::mem::MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut ancillary = SendAncillaryBuffer::new(&mut space);
    ancillary.push(SendAncillaryMessage::ScmRights(&fds));
    rustix::net::sendmsg(
        sock,
        &[std::io::IoSlice::new(&[message::CONSOLE])],
        &mut ancillary,
        SendFlags::NOSIGNAL,
    )
    .map(drop)
    .map_err(|e| fail(format!("handing the pty to skiff: {e}")))
}

/// The init's last words: [`message::ERROR`], the failure's kind, its
/// text. Raw send(2), as the init calls it right before `_exit`.
pub(crate) fn report_failure(sock: BorrowedFd<'_>, failure: &Failure) {
    let mut packet = vec![message::ERROR, failure.kind as u8];
    packet.extend_from_slice(failure.message.as_bytes());
    // SAFETY: send(2) of a local buffer on our own socket.
    unsafe {
        libc::send(
            sock.as_raw_fd(),
            packet.as_ptr().cast(),
            packet.len(),
            libc::MSG_NOSIGNAL,
        );
    }
}

// The parent's end.

/// One packet from the init: tag, body, and a descriptor if one came.
pub(crate) type Packet = (u8, Vec<u8>, Option<OwnedFd>);

/// Reads the init's reports until it is ready; the pty master comes first
/// under a terminal.
pub(crate) fn await_ready(
    channel: &OwnedFd,
    terminal: bool,
    run_hooks: &mut dyn FnMut() -> Result<Vec<u8>, SandboxError>,
) -> Result<Option<OwnedFd>, SandboxError> {
    let mut console = None;
    loop {
        match receive(channel)? {
            Some((message::HOOKS, _, _)) => {
                let mut packet = vec![message::STATE];
                packet.extend(run_hooks()?);
                rustix::net::send(channel, &packet, rustix::net::SendFlags::NOSIGNAL).map_err(
                    |e| SandboxError::io("sending the state to the init".into(), e.into()),
                )?;
            }
            None => {
                return Err(SandboxError::Setup(
                    "the container's init exited while setting up".into(),
                ))
            }
            Some((message::READY, _, _)) => break,
            Some((message::CONSOLE, _, fd)) => console = fd,
            Some((tag, body, _)) => return Err(failure(tag, &body)),
        }
    }
    if terminal && console.is_none() {
        return Err(SandboxError::Setup(
            "the container did not send its pty".into(),
        ));
    }
    Ok(console)
}

/// Sends one byte (`MAPPED`, `START`) to the init.
pub(crate) fn tell(channel: &OwnedFd, tag: u8, what: &str) -> Result<(), SandboxError> {
    rustix::net::send(channel, &[tag], rustix::net::SendFlags::NOSIGNAL)
        .map(drop)
        .map_err(|e| SandboxError::io(what.into(), e.into()))
}

/// The next [`Packet`]; `None` when the init's end closed (it exec'd or
/// died).
pub(crate) fn receive(channel: &OwnedFd) -> Result<Option<Packet>, SandboxError> {
    use rustix::net::{RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags};
    let mut space = [std::mem::MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut buf = vec![0u8; 4096];
    loop {
        let mut ancillary = RecvAncillaryBuffer::new(&mut space);
        let got = rustix::net::recvmsg(
            channel,
            &mut [std::io::IoSliceMut::new(&mut buf)],
            &mut ancillary,
            RecvFlags::CMSG_CLOEXEC,
        );
        let n = match got {
            Ok(r) => r.bytes,
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => {
                return Err(SandboxError::io(
                    "reading from the container's init".into(),
                    e.into(),
                ))
            }
        };
        if n == 0 {
            return Ok(None);
        }
        let mut fd = None;
        for msg in ancillary.drain() {
            if let RecvAncillaryMessage::ScmRights(mut fds) = msg {
                fd = fds.next();
            }
        }
        return Ok(Some((buf[0], buf[1..n].to_vec(), fd)));
    }
}

/// The init's error packet as an error of the right kind.
pub(crate) fn failure(tag: u8, body: &[u8]) -> SandboxError {
    if tag != message::ERROR || body.is_empty() {
        return SandboxError::Setup(format!(
            "the container's init sent an unexpected message ({tag})"
        ));
    }
    let text = String::from_utf8_lossy(&body[1..]).into_owned();
    match FailureKind::from_byte(body[0]) {
        FailureKind::NotFound => SandboxError::NotFound(text),
        FailureKind::NotExecutable => SandboxError::NotExecutable(text),
        FailureKind::Setup => SandboxError::Setup(format!("setting up the container: {text}")),
    }
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsFd;

    use super::*;

    fn pair() -> (OwnedFd, OwnedFd) {
        use rustix::net::{AddressFamily, SocketFlags, SocketType};
        rustix::net::socketpair(
            AddressFamily::UNIX,
            SocketType::SEQPACKET,
            SocketFlags::CLOEXEC,
            None,
        )
        .unwrap()
    }

    /// Both ends of the protocol, without a container: the init's sends
    /// read back as the parent reads them.
    #[test]
    fn reports_round_trip_over_a_socketpair() {
        let (parent, init) = pair();
        let file = std::fs::File::open("/dev/null").unwrap();
        send_fd(init.as_fd(), file.as_fd()).unwrap();
        send(init.as_fd(), &[message::READY]).unwrap();
        let console = await_ready(&parent, true, &mut || Ok(Vec::new())).unwrap();
        assert!(console.is_some(), "the pty rides along with CONSOLE");

        tell(&parent, message::START, "starting").unwrap();
        expect(init.as_fd(), message::START).unwrap();
        tell(&parent, message::MAPPED, "mapped").unwrap();
        assert!(
            expect(init.as_fd(), message::START).is_err(),
            "a wrong byte is refused"
        );

        for (kind, check) in [
            (FailureKind::NotFound, "127"),
            (FailureKind::NotExecutable, "126"),
            (FailureKind::Setup, "125"),
        ] {
            report_failure(
                init.as_fd(),
                &Failure {
                    kind,
                    message: format!("no {check}"),
                },
            );
            let (tag, body, _) = receive(&parent).unwrap().unwrap();
            let e = failure(tag, &body);
            let got = match e {
                SandboxError::NotFound(t) => ("127", t),
                SandboxError::NotExecutable(t) => ("126", t),
                SandboxError::Setup(t) => ("125", t),
                other => panic!("{other}"),
            };
            assert_eq!(got.0, check);
            assert!(got.1.ends_with(&format!("no {check}")), "{}", got.1);
        }
        drop(init);
        assert!(
            receive(&parent).unwrap().is_none(),
            "a closed end reads as None"
        );
        assert!(await_ready(&parent, false, &mut || Ok(Vec::new())).is_err());
    }

    #[test]
    fn a_terminal_without_its_pty_is_an_error() {
        let (parent, init) = pair();
        send(init.as_fd(), &[message::READY]).unwrap();
        assert!(await_ready(&parent, true, &mut || Ok(Vec::new())).is_err());
    }
}
