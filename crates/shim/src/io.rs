//! A process's streams: containerd names FIFOs (or `file://` logs) for
//! stdin, stdout and stderr; the process gets pipes (or a pty) and the
//! shim copies between them, as containerd's runc shim does. Pipes, not
//! the FIFOs themselves: a process that reopens `/proc/self/fd/1` must
//! find a pipe, never a path on the host.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;

/// What the shim keeps of a process's streams.
#[derive(Default)]
pub struct ProcessIo {
    /// Dropped to end the stdin copy (CloseIO, or the process is gone).
    stop_stdin: Option<OwnedFd>,
    /// The pty master, for ResizePty.
    console: Option<File>,
    copies: Vec<JoinHandle<()>>,
}

/// Where a stream goes: nowhere, a FIFO, or a file (`file:///path`).
fn open_output(uri: &str) -> Result<Option<File>, String> {
    if uri.is_empty() {
        return Ok(None);
    }
    if let Some(path) = uri.strip_prefix("file://") {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .custom_flags(libc::O_CLOEXEC)
            .open(path)
            .map_err(|e| format!("opening the log file {path}: {e}"))?;
        return Ok(Some(file));
    }
    if uri.starts_with("binary://") {
        return Err(format!(
            "the log URI {uri} is a binary:// logger, which skiff's shim does not run; give a FIFO or file:///PATH"
        ));
    }
    open_fifo(uri).map(Some)
}

/// A FIFO opened read-write: the open never blocks on the other end, and a
/// reader that comes and goes never makes the copy fail.
fn open_fifo(path: &str) -> Result<File, String> {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| format!("opening the FIFO {path}: {e}"))
}

/// The stdin FIFO, read-only: when the client closes its end the process
/// reads end-of-file (CloseIO does the same). Non-blocking, so the open
/// does not wait for the writer; Linux reports no hang-up on a FIFO that
/// never had a writer, so the copy waits for it.
fn open_stdin(path: &str) -> Result<File, String> {
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_CLOEXEC | libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| format!("opening the FIFO {path}: {e}"))
}

fn pipe() -> Result<(OwnedFd, OwnedFd), String> {
    rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
        .map_err(|e| format!("making a pipe: {e}"))
}

fn dev_null() -> Result<OwnedFd, String> {
    File::options()
        .read(true)
        .write(true)
        .open("/dev/null")
        .map(OwnedFd::from)
        .map_err(|e| format!("opening /dev/null: {e}"))
}

/// Three descriptors on /dev/null: the streams of a helper step that has
/// no process's streams to carry (a terminal's come over its socket).
pub fn null_stdio() -> Result<[OwnedFd; 3], String> {
    Ok([dev_null()?, dev_null()?, dev_null()?])
}

impl ProcessIo {
    /// containerd's streams themselves, for a module in the Wasm pool:
    /// the pool reads and writes the FIFOs (or the log file) with no copy
    /// in the shim. Safe where a process's would not be: a module cannot
    /// reopen a descriptor by path (WASI has no `/proc`).
    pub fn direct(stdin: &str, stdout: &str, stderr: &str) -> Result<[OwnedFd; 3], String> {
        let input = if stdin.is_empty() {
            dev_null()?
        } else {
            open_stdin(stdin)?.into()
        };
        let output = |uri: &str| -> Result<OwnedFd, String> {
            match open_output(uri)? {
                None => dev_null(),
                Some(f) => Ok(f.into()),
            }
        };
        Ok([input, output(stdout)?, output(stderr)?])
    }

    /// Pipes for a process without a terminal: the three ends it gets, and
    /// the copies (already running) between the others and containerd's.
    pub fn pipes(stdin: &str, stdout: &str, stderr: &str) -> Result<(Self, [OwnedFd; 3]), String> {
        let mut io = ProcessIo::default();
        let child_stdin = if stdin.is_empty() {
            dev_null()?
        } else {
            let fifo = open_stdin(stdin)?;
            let (r, w) = pipe()?;
            io.copy_stdin(fifo, File::from(w))?;
            r
        };
        let mut out = |uri: &str| -> Result<OwnedFd, String> {
            match open_output(uri)? {
                None => dev_null(),
                Some(to) => {
                    let (r, w) = pipe()?;
                    io.copies.push(copy_out(File::from(r), to));
                    Ok(w)
                }
            }
        };
        let child_stdout = out(stdout)?;
        let child_stderr = out(stderr)?;
        Ok((io, [child_stdin, child_stdout, child_stderr]))
    }

    /// For a process with a terminal: the pty master the runtime sent to
    /// the console socket; stdout carries it all (stderr is the same pty).
    pub fn terminal(master: OwnedFd, stdin: &str, stdout: &str) -> Result<Self, String> {
        let mut io = ProcessIo::default();
        let master = File::from(master);
        if !stdin.is_empty() {
            let to = master
                .try_clone()
                .map_err(|e| format!("duplicating the pty: {e}"))?;
            io.copy_stdin(open_stdin(stdin)?, to)?;
        }
        if let Some(to) = open_output(stdout)? {
            let from = master
                .try_clone()
                .map_err(|e| format!("duplicating the pty: {e}"))?;
            io.copies.push(copy_out(from, to));
        }
        io.console = Some(master);
        Ok(io)
    }

    fn copy_stdin(&mut self, fifo: File, to: File) -> Result<(), String> {
        let (stop_r, stop_w) = pipe()?;
        self.stop_stdin = Some(stop_w);
        std::thread::Builder::new()
            .name("stdin".into())
            .spawn(move || copy_in(fifo, to, stop_r))
            .map_err(|e| format!("starting the stdin copy: {e}"))?;
        Ok(())
    }

    /// CloseIO: the process reads end-of-file once what was sent is read.
    pub fn close_stdin(&mut self) {
        self.stop_stdin = None;
    }

    pub fn resize(&self, width: u16, height: u16) -> Result<(), String> {
        let Some(console) = &self.console else {
            return Err("the process has no terminal to resize".into());
        };
        let size = rustix::termios::Winsize {
            ws_row: height,
            ws_col: width,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        rustix::termios::tcsetwinsize(console, size).map_err(|e| format!("resizing the pty: {e}"))
    }

    /// The output copies, to wait for (they end at the process's
    /// end-of-file).
    pub fn take_copies(&mut self) -> Vec<JoinHandle<()>> {
        std::mem::take(&mut self.copies)
    }
}

fn copy_out(mut from: File, mut to: File) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            match from.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    if to.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                // EIO: a pty whose last slave descriptor closed.
                Err(_) => break,
            }
        }
    })
}

fn copy_in(mut fifo: File, mut to: File, stop: OwnedFd) {
    use rustix::event::{poll, PollFd, PollFlags};
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        let mut fds = [
            PollFd::new(&fifo, PollFlags::IN),
            PollFd::new(&stop, PollFlags::IN),
        ];
        match poll(&mut fds, None) {
            Ok(_) => {}
            Err(rustix::io::Errno::INTR) => continue,
            Err(_) => return,
        }
        if !fds[1].revents().is_empty() {
            return;
        }
        if fds[0].revents().is_empty() {
            continue;
        }
        match fifo.read(&mut buf) {
            // The writer closed (or hung up).
            Ok(0) => return,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    return;
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::Interrupted | std::io::ErrorKind::WouldBlock
                ) => {}
            Err(_) => return,
        }
    }
}

/// A listening socket the runtime hands a pty master to (its
/// `--console-socket`); root-only, removed when dropped.
pub struct ConsoleSocket {
    path: PathBuf,
    listener: std::os::unix::net::UnixListener,
}

impl ConsoleSocket {
    pub fn bind(dir: &Path) -> Result<Self, String> {
        use std::sync::atomic::{AtomicU64, Ordering};
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let path = dir.join(format!(
            ".console-{}-{}.sock",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_file(&path);
        let listener = std::os::unix::net::UnixListener::bind(&path)
            .map_err(|e| format!("binding the console socket {}: {e}", path.display()))?;
        Ok(ConsoleSocket { path, listener })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The pty master sent by a runtime that has already exited: its
    /// connection, if it made one, is queued.
    pub fn receive(&self) -> Result<OwnedFd, String> {
        use rustix::net::{RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags};
        self.listener
            .set_nonblocking(true)
            .map_err(|e| format!("the console socket: {e}"))?;
        let (conn, _) = self
            .listener
            .accept()
            .map_err(|e| format!("the runtime sent no pty to the console socket: {e}"))?;
        let mut space = [std::mem::MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(1))];
        let mut ancillary = RecvAncillaryBuffer::new(&mut space);
        let mut name = [0u8; 256];
        rustix::net::recvmsg(
            conn.as_fd(),
            &mut [std::io::IoSliceMut::new(&mut name)],
            &mut ancillary,
            RecvFlags::CMSG_CLOEXEC,
        )
        .map_err(|e| format!("receiving the pty: {e}"))?;
        for message in ancillary.drain() {
            if let RecvAncillaryMessage::ScmRights(mut fds) = message {
                if let Some(fd) = fds.next() {
                    return Ok(fd);
                }
            }
        }
        Err("the console socket's message carried no pty".into())
    }
}

impl Drop for ConsoleSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}
