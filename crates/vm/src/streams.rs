//! The host's side of one guest process's streams, shared by the VM's
//! first process (`VmSandbox`) and an exec's (`VmExec`): the frames read
//! from the channel, the host's ends of stdio, stdin and terminal sizes
//! sent, and the routing of other processes' frames to their exec
//! clients.

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use skiff_agent_protocol::{self as proto, Kind, FIRST_PROCESS};
use skiff_sandbox::{SandboxError, Stdio};

use crate::sandbox::io;

/// Exec clients by the process number the supervisor gave them.
pub(crate) type Routes = Mutex<HashMap<u32, UnixStream>>;

/// A frame of process N to its exec client, as process 0; its exit (or
/// failure) is the route's last frame.
fn route(routes: &Routes, frame: proto::Frame) {
    let mut r = routes.lock().unwrap_or_else(|p| p.into_inner());
    let last = matches!(frame.kind, Kind::Exited | Kind::Failed | Kind::Stats);
    if let Some(client) = r.get_mut(&frame.process) {
        // A client that went away loses the rest of its output.
        let _ = proto::write_frame(client, frame.kind, FIRST_PROCESS, &frame.payload);
    }
    if last {
        r.remove(&frame.process);
    }
}

/// What the guest tells the host, in order.
pub(crate) enum Event {
    Ready(proto::Ready),
    /// Its pid in the guest.
    Started(i32),
    Failed(proto::Failed),
    Exited(proto::Exited),
    /// The channel ended: QEMU exited, or the guest broke the protocol.
    Closed(String),
}

/// Where the guest's output goes, set at the start.
#[derive(Default)]
pub(crate) struct Outputs {
    pub(crate) stdout: Option<File>,
    pub(crate) stderr: Option<File>,
}

/// The host's ends of the guest process's streams.
pub(crate) struct GuestStdio {
    /// What the process reads; `None` reads nothing (its stdin closes).
    pub(crate) input: Option<File>,
    pub(crate) stdout: File,
    pub(crate) stderr: File,
    /// The terminal's host side, whose size the guest's follows.
    pub(crate) terminal: Option<Arc<OwnedFd>>,
}

/// A unix socket's path as a process is given it: the path itself, or,
/// past what `sun_path` holds (a deep `--root`; `/var/lib/skiff` with a
/// 64-hex container ID is already close), `/proc/self/fd/N/NAME` through
/// its directory opened `O_PATH`. QEMU inherits that fd at the same
/// number, so the path means the same in it.
/// (`skiff_fs::socket` does the same for skiff's own sockets, but closes
/// the fd at once, and a sandbox crate does not depend on the fs layer.)
pub(crate) struct SocketPath {
    pub(crate) given: PathBuf,
    dir: Option<OwnedFd>,
}

impl SocketPath {
    const DIRECT_MAX: usize = 100;

    pub(crate) fn of(path: &Path) -> Result<SocketPath, SandboxError> {
        if path.as_os_str().len() <= Self::DIRECT_MAX {
            return Ok(SocketPath {
                given: path.to_path_buf(),
                dir: None,
            });
        }
        let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
            return Err(SandboxError::Invalid(format!(
                "{} is not a socket's path",
                path.display()
            )));
        };
        let fd = rustix::fs::open(
            dir,
            rustix::fs::OFlags::PATH | rustix::fs::OFlags::DIRECTORY | rustix::fs::OFlags::CLOEXEC,
            rustix::fs::Mode::empty(),
        )
        .map_err(|e| io(format!("opening {}", dir.display()), e.into()))?;
        use std::os::fd::AsRawFd;
        Ok(SocketPath {
            given: Path::new(&format!("/proc/self/fd/{}", fd.as_raw_fd())).join(name),
            dir: Some(fd),
        })
    }

    pub(crate) fn fd(&self) -> Option<i32> {
        use std::os::fd::AsRawFd;
        self.dir.as_ref().map(|d| d.as_raw_fd())
    }
}

/// The host's side of one process's streams while it runs.
pub(crate) struct Streams {
    pub(crate) outputs: Arc<Mutex<Outputs>>,
    /// Stops the terminal's resize watch.
    stop_watch: Arc<AtomicBool>,
    /// Written once the process has exited: stops the stdin relay.
    stop_input: Arc<OwnedFd>,
}

/// What is wired once the process runs.
pub(crate) struct Pending {
    input: Option<File>,
    terminal: Option<Arc<OwnedFd>>,
}

impl Streams {
    pub(crate) fn new() -> Result<Self, SandboxError> {
        Ok(Streams {
            outputs: Arc::new(Mutex::new(Outputs::default())),
            stop_watch: Arc::new(AtomicBool::new(false)),
            stop_input: Arc::new(
                rustix::event::eventfd(0, rustix::event::EventfdFlags::CLOEXEC)
                    .map_err(|e| io("making an eventfd".into(), e.into()))?,
            ),
        })
    }

    /// Before the start: output goes to `stdio`'s ends, and `start` gets
    /// the terminal's size.
    pub(crate) fn attach(&self, stdio: GuestStdio, start: &mut proto::Start) -> Pending {
        if let (Some(t), Some(size)) = (&stdio.terminal, start.terminal.as_mut()) {
            if let Ok(ws) = rustix::termios::tcgetwinsize(t.as_fd()) {
                *size = proto::TerminalSize {
                    rows: ws.ws_row,
                    cols: ws.ws_col,
                };
            }
        }
        let mut o = self.outputs.lock().unwrap_or_else(|p| p.into_inner());
        o.stdout = Some(stdio.stdout);
        o.stderr = Some(stdio.stderr);
        Pending {
            input: stdio.input,
            terminal: stdio.terminal,
        }
    }

    /// Once the process runs: its stdin (or its end) and its terminal's
    /// size follow, over `channel`.
    pub(crate) fn run(
        &self,
        pending: Pending,
        channel: &Arc<Mutex<UnixStream>>,
    ) -> Result<(), SandboxError> {
        match pending.input {
            Some(input) => {
                let (channel, stop) = (channel.clone(), self.stop_input.clone());
                std::thread::Builder::new()
                    .name("skiff-vm-stdin".into())
                    .spawn(move || send_input(input, &channel, &stop))
                    .map_err(|e| io("starting the stdin relay".into(), e))?;
            }
            None => {
                let mut c = channel.lock().unwrap_or_else(|p| p.into_inner());
                proto::write_frame(&mut *c, Kind::Stdin, FIRST_PROCESS, &[])
                    .map_err(|e| io("writing to the guest's agent".into(), e))?;
            }
        }
        if let Some(t) = pending.terminal {
            let (channel, stop) = (channel.clone(), self.stop_watch.clone());
            std::thread::Builder::new()
                .name("skiff-vm-resize".into())
                .spawn(move || watch_size(&t, &channel, &stop))
                .map_err(|e| io("starting the terminal's resize watch".into(), e))?;
        }
        Ok(())
    }

    /// Closes the host's ends of the output (so the relay sees their end)
    /// and stops the input and the resize watch.
    pub(crate) fn end(&self) {
        self.stop_watch.store(true, Ordering::SeqCst);
        let _ = rustix::io::write(&*self.stop_input, &1u64.to_ne_bytes());
        let mut o = self.outputs.lock().unwrap_or_else(|p| p.into_inner());
        o.stdout = None;
        o.stderr = None;
    }
}

/// How the agent says a process ended.
pub(crate) fn exit_of(e: &proto::Exited) -> skiff_sandbox::Exit {
    match (e.code, e.signal) {
        (_, Some(s)) => skiff_sandbox::Exit::Signal(s),
        (Some(c), None) => skiff_sandbox::Exit::Code(c),
        (None, None) => skiff_sandbox::Exit::Code(0),
    }
}

/// The agent's answer to a start, as an error where it failed.
pub(crate) fn started(event: Event) -> Result<i32, SandboxError> {
    match event {
        Event::Started(pid) => Ok(pid),
        Event::Failed(f) => Err(match f.reason {
            proto::FailReason::NotFound => SandboxError::NotFound(f.message),
            proto::FailReason::NotExecutable => SandboxError::NotExecutable(f.message),
            proto::FailReason::Invalid => SandboxError::Invalid(f.message),
            proto::FailReason::Setup => SandboxError::Setup(f.message),
        }),
        _ => Err(SandboxError::Setup(
            "the guest's agent answered the start out of turn".into(),
        )),
    }
}

/// The guest's frames, until the channel ends. Output is written to the
/// host's ends as it comes, so that it is all there before the exit is
/// reported.
pub(crate) fn read_guest(
    mut stream: UnixStream,
    events: Sender<Event>,
    outputs: &Mutex<Outputs>,
    routes: Option<&Routes>,
) {
    let why = loop {
        let frame = match proto::read_frame(&mut stream) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                break "the agent channel closed".to_string()
            }
            Err(e) => break format!("the agent channel: {e}"),
        };
        if frame.process != FIRST_PROCESS {
            // Another process's (an exec's): to its client, as its own.
            if let Some(routes) = routes {
                route(routes, frame);
            }
            continue;
        }
        let event = match frame.kind {
            Kind::Stdout | Kind::Stderr => {
                let mut o = outputs.lock().unwrap_or_else(|p| p.into_inner());
                let sink = if frame.kind == Kind::Stdout {
                    o.stdout.as_mut()
                } else {
                    o.stderr.as_mut()
                };
                // A reader that went away drops the output, as a closed
                // pipe would.
                if let Some(f) = sink {
                    let _ = f.write_all(&frame.payload);
                }
                continue;
            }
            Kind::Ready => frame.body().map(Event::Ready),
            Kind::Started => frame
                .body::<proto::Started>()
                .map(|s| Event::Started(s.pid)),
            Kind::Failed => frame.body().map(Event::Failed),
            Kind::Exited => frame.body().map(Event::Exited),
            other => break format!("the agent sent a host's frame ({other:?})"),
        };
        match event {
            Ok(e) => {
                if events.send(e).is_err() {
                    return;
                }
            }
            Err(e) => break e.to_string(),
        }
    };
    let _ = events.send(Event::Closed(why));
}

/// Copies what the process is to read to the guest, then closes its
/// stdin; stops when `stop` is signalled (the process has exited), so
/// that a terminal's other side is not held open by a read that never
/// returns.
pub(crate) fn send_input(mut input: File, channel: &Mutex<UnixStream>, stop: &OwnedFd) {
    use rustix::event::{PollFd, PollFlags};
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        let mut fds = [
            PollFd::new(&input, PollFlags::IN),
            PollFd::new(stop, PollFlags::IN),
        ];
        match rustix::event::poll(&mut fds, None) {
            Ok(_) => {}
            Err(rustix::io::Errno::INTR) => continue,
            Err(_) => return,
        }
        if !fds[1].revents().is_empty() {
            return;
        }
        let n = match input.read(&mut buf) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            // A terminal whose other side closed reads EIO: its end.
            Err(_) => 0,
        };
        let mut c = channel.lock().unwrap_or_else(|p| p.into_inner());
        if proto::write_frame(&mut *c, Kind::Stdin, FIRST_PROCESS, &buf[..n]).is_err() || n == 0 {
            return;
        }
    }
}

/// Follows the host terminal's size: a pty's other side gets no SIGWINCH,
/// so it is read every 100 ms and sent when it changes.
pub(crate) fn watch_size(terminal: &OwnedFd, channel: &Mutex<UnixStream>, stop: &AtomicBool) {
    let mut last = None;
    while !stop.load(Ordering::SeqCst) {
        if let Ok(ws) = rustix::termios::tcgetwinsize(terminal) {
            let size = (ws.ws_row, ws.ws_col);
            if last.is_some_and(|l| l != size) {
                let mut b = [0u8; 4];
                b[..2].copy_from_slice(&size.0.to_be_bytes());
                b[2..].copy_from_slice(&size.1.to_be_bytes());
                let mut c = channel.lock().unwrap_or_else(|p| p.into_inner());
                if proto::write_frame(&mut *c, Kind::Resize, FIRST_PROCESS, &b).is_err() {
                    return;
                }
            }
            last = Some(size);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The guest's streams, the terminal's master side if there is one, and
/// the relay that copies the host's streams.
pub(crate) type Wired = (
    GuestStdio,
    Option<OwnedFd>,
    Option<skiff_sandbox::relay::Relay>,
);

/// The streams as the sandbox kind's caller gave them, and the host's
/// ends the guest's process reads and writes through.
pub(crate) fn wire(stdio: Stdio) -> Result<Wired, SandboxError> {
    Ok(match stdio {
        Stdio::Files {
            stdin,
            stdout,
            stderr,
        } => (
            GuestStdio {
                input: Some(stdin.into()),
                stdout: stdout.into(),
                stderr: stderr.into(),
                terminal: None,
            },
            None,
            None,
        ),
        Stdio::Relay {
            stdin,
            stdout,
            stderr,
            tap,
        } => {
            let has_input = stdin.is_some();
            let ([input, out, err], relay) =
                skiff_sandbox::relay::remote(stdin, stdout, stderr, tap)?;
            (
                GuestStdio {
                    input: has_input.then(|| input.into()),
                    stdout: out.into(),
                    stderr: err.into(),
                    terminal: None,
                },
                None,
                Some(relay),
            )
        }
        Stdio::Terminal => {
            let pty = rustix::pty::openpt(
                rustix::pty::OpenptFlags::RDWR
                    | rustix::pty::OpenptFlags::NOCTTY
                    | rustix::pty::OpenptFlags::CLOEXEC,
            )
            .map_err(|e| io("opening a terminal".into(), e.into()))?;
            rustix::pty::grantpt(&pty).map_err(|e| io("granting the terminal".into(), e.into()))?;
            rustix::pty::unlockpt(&pty)
                .map_err(|e| io("unlocking the terminal".into(), e.into()))?;
            let name = rustix::pty::ptsname(&pty, Vec::new())
                .map_err(|e| io("naming the terminal".into(), e.into()))?;
            let slave: OwnedFd = rustix::fs::open(
                name.as_c_str(),
                rustix::fs::OFlags::RDWR | rustix::fs::OFlags::NOCTTY | rustix::fs::OFlags::CLOEXEC,
                rustix::fs::Mode::empty(),
            )
            .map_err(|e| io("opening the terminal's other side".into(), e.into()))?;
            // A transparent line: the guest's own terminal echoes, edits
            // and translates.
            let mut t = rustix::termios::tcgetattr(&slave)
                .map_err(|e| io("reading the terminal's modes".into(), e.into()))?;
            t.make_raw();
            rustix::termios::tcsetattr(&slave, rustix::termios::OptionalActions::Now, &t)
                .map_err(|e| io("making the terminal raw".into(), e.into()))?;
            let dup = |fd: &OwnedFd| -> Result<File, SandboxError> {
                Ok(fd
                    .try_clone()
                    .map_err(|e| io("duplicating the terminal".into(), e))?
                    .into())
            };
            let slave = Arc::new(slave);
            (
                GuestStdio {
                    input: Some(dup(&slave)?),
                    stdout: dup(&slave)?,
                    stderr: dup(&slave)?,
                    terminal: Some(slave),
                },
                Some(pty),
                None,
            )
        }
    })
}
