//! The supervisor's side of a running container: forwarding signals to
//! its init, and relaying a pseudo-terminal (`-t`).

use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::thread::JoinHandle;

use signal_hook::consts::{SIGHUP, SIGINT, SIGQUIT, SIGTERM, SIGUSR1, SIGUSR2, SIGWINCH};
use signal_hook::iterator::{Handle, Signals};

use crate::error::{IoContext, Result};

/// Forwards signals sent to this process to the container's init until
/// dropped. Ctrl-C is forwarded once; a second one kills the container,
/// since an init without a SIGINT handler ignores it.
pub struct Forwarder {
    handle: Handle,
    thread: Option<JoinHandle<()>>,
}

///
/// Under a terminal (`line`), a SIGHUP (ours closed) hangs up the
/// container's terminal instead, as a closed terminal does to a session.
pub fn forward_signals(
    signal: skiff_sandbox::SignalHandle,
    line: Option<TerminalLine>,
) -> Result<Forwarder> {
    let has_tty = line.is_some();
    let mut signals = Signals::new([SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2])
        .ctx(|| "handling signals".into())?;
    let handle = signals.handle();
    let thread = std::thread::spawn(move || {
        let mut interrupts = 0;
        for sig in signals.forever() {
            if let (SIGHUP, Some(line)) = (sig, &line) {
                line.hang_up();
                continue;
            }
            if sig == SIGINT {
                interrupts += 1;
                if interrupts > 1 {
                    say(format_args!("skiff: killing the container"));
                    let _ = signal(libc::SIGKILL);
                    continue;
                }
                if !has_tty {
                    say(format_args!(
                        "skiff: sent SIGINT to the container; Ctrl-C again to kill it"
                    ));
                }
            }
            let _ = signal(sig);
        }
    });
    Ok(Forwarder {
        handle,
        thread: Some(thread),
    })
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        self.handle.close();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The container's terminal, held to hang it up: a duplicate of its pty
/// master.
#[derive(Clone)]
pub struct TerminalLine(std::sync::Arc<OwnedFd>);

impl TerminalLine {
    pub fn new(master: &OwnedFd) -> Result<TerminalLine> {
        let dup = master.try_clone().ctx(|| "duplicating the pty".into())?;
        Ok(TerminalLine(std::sync::Arc::new(dup)))
    }

    /// Hangs up the container's terminal, as closing a terminal does: the
    /// kernel sends SIGHUP (and SIGCONT) to its session leader and its
    /// foreground process group, and their reads see end-of-file. Done on
    /// the pty's other side, opened from the master (`TIOCGPTPEER`: its
    /// path is in the container's devpts), with `TIOCVHANGUP`.
    pub fn hang_up(&self) {
        use std::os::fd::{AsRawFd, FromRawFd};
        tracing::info!("our terminal hung up; hanging up the container's");
        let flags = libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC;
        // SAFETY: an ioctl on a descriptor we own, returning a new one.
        let peer = unsafe { libc::ioctl(self.0.as_raw_fd(), libc::TIOCGPTPEER, flags) };
        if peer < 0 {
            let e = std::io::Error::last_os_error();
            tracing::warn!("opening the container's terminal to hang it up: {e}");
            return;
        }
        // SAFETY: `peer` was just returned to us, and is owned here alone.
        let peer = unsafe { OwnedFd::from_raw_fd(peer) };
        // SAFETY: an ioctl without arguments on a descriptor we own.
        if unsafe { libc::ioctl(peer.as_raw_fd(), libc::TIOCVHANGUP) } < 0 {
            let e = std::io::Error::last_os_error();
            tracing::warn!("hanging up the container's terminal: {e}");
        }
    }
}

/// A relayed pty: output copied to `output`, and our stdin (if
/// interactive) to the container.
pub struct Console {
    output: Option<JoinHandle<()>>,
    restore: Option<rustix::termios::Termios>,
    winch: Option<Handle>,
}

/// Relays the pty master. When our stdin is a terminal it goes raw, so
/// keys (Ctrl-C included) reach the container's terminal unchanged.
pub fn attach(
    master: OwnedFd,
    interactive: bool,
    output: std::fs::File,
    log: Option<std::sync::Arc<crate::container_log::LogFile>>,
) -> Result<Console> {
    let stdin = rustix::stdio::stdin();
    let stdin_tty = rustix::termios::isatty(stdin);
    let mut restore = None;
    let mut winch = None;
    if stdin_tty {
        if let Ok(ws) = rustix::termios::tcgetwinsize(stdin) {
            let _ = rustix::termios::tcsetwinsize(&master, ws);
        }
        if interactive {
            let term =
                |e: rustix::io::Errno| crate::EngineError::io("setting up the terminal", e.into());
            let saved = rustix::termios::tcgetattr(stdin).map_err(term)?;
            let mut raw = saved.clone();
            raw.make_raw();
            rustix::termios::tcsetattr(stdin, rustix::termios::OptionalActions::Now, &raw)
                .map_err(term)?;
            restore = Some(saved);
        }
        let mut signals = Signals::new([SIGWINCH]).ctx(|| "handling SIGWINCH".into())?;
        winch = Some(signals.handle());
        let m = master.try_clone().ctx(|| "duplicating the pty".into())?;
        std::thread::spawn(move || {
            for _ in signals.forever() {
                if let Ok(ws) = rustix::termios::tcgetwinsize(rustix::stdio::stdin()) {
                    let _ = rustix::termios::tcsetwinsize(&m, ws);
                }
            }
        });
    }
    if interactive {
        let mut to_container =
            std::fs::File::from(master.try_clone().ctx(|| "duplicating the pty".into())?);
        let line = TerminalLine::new(&master)?;
        // Not joined: it blocks reading our stdin until the process exits.
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            let mut input = std::io::stdin().lock();
            loop {
                match input.read(&mut buf) {
                    Ok(n) if n > 0 => {
                        if to_container.write_all(&buf[..n]).is_err() {
                            return;
                        }
                    }
                    // A raw terminal passes Ctrl-D on as a byte: its end
                    // is a hangup, and so is the container's.
                    _ if stdin_tty => return line.hang_up(),
                    _ => return,
                }
            }
        });
    }
    let mut from_container = std::fs::File::from(master);
    let mut out = output;
    let output = std::thread::spawn(move || {
        let mut buf = [0u8; 16384];
        // The master reads EIO once every slave side is closed.
        while let Ok(n) = from_container.read(&mut buf) {
            if n == 0 {
                break;
            }
            if let Some(log) = &log {
                log.append(crate::container_log::Stream::Stdout, &buf[..n]);
            }
            if out.write_all(&buf[..n]).is_err() {
                break;
            }
            let _ = out.flush();
        }
    });
    Ok(Console {
        output: Some(output),
        restore,
        winch,
    })
}

impl Console {
    /// Waits for the remaining output and restores the terminal.
    pub fn finish(mut self) {
        if let Some(t) = self.output.take() {
            let _ = t.join();
        }
        self.restore_terminal();
    }

    fn restore_terminal(&mut self) {
        if let Some(saved) = self.restore.take() {
            let _ = rustix::termios::tcsetattr(
                rustix::stdio::stdin(),
                rustix::termios::OptionalActions::Now,
                &saved,
            );
        }
        if let Some(h) = self.winch.take() {
            h.close();
        }
    }
}

/// Writes a line to stderr, ignoring a closed or full stderr: a message
/// must never abort what follows it (`eprintln!` panics when stderr is a
/// pipe whose reader has gone, e.g. `skiff run ... 2>&1 | head`).
pub fn say(args: std::fmt::Arguments) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "{args}");
}

impl Drop for Console {
    fn drop(&mut self) {
        self.restore_terminal();
    }
}
