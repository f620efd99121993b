//! The container's standard streams as pipes that skiff copies, so that no
//! host file description ever reaches the container.
//!
//! Handed skiff's own descriptors, a container could read the user's
//! terminal and change its modes, or reopen `/proc/self/fd/1` read-write
//! and read or truncate the file skiff's output was redirected to. Docker
//! and containerd give pipes; so does skiff. The copies keep the order of
//! each stream, pass stdin's end-of-file on, and use splice(2) where the
//! other end allows it (a pipe, a file not opened for appending), so large
//! transfers move pages rather than bytes.
//!
//! When skiff's stdout and stderr are one open file (a terminal, `2>&1`, a
//! log), the container gets one pipe for both, so their interleaving is
//! kept too.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::sync::Arc;
use std::thread::JoinHandle;

use rustix::event::{EventfdFlags, PollFd, PollFlags};
use rustix::io::Errno;
use rustix::pipe::{PipeFlags, SpliceFlags};

use crate::SandboxError;

/// The most one splice(2) call moves.
const SPLICE_CHUNK: usize = 1 << 20;
/// The buffer of a plain copy, where splice cannot be used.
const COPY_BUFFER: usize = 64 << 10;

/// The pipes of one container, made before its init is cloned, and where
/// their other ends go.
pub(crate) struct Pipes {
    /// The container's 0, 1 and 2.
    child: [OwnedFd; 3],
    /// The write end of the container's stdin, with its source.
    stdin: Option<(OwnedFd, OwnedFd)>,
    /// Read ends (non-blocking) and their destinations; one entry when
    /// stdout and stderr share a pipe.
    outputs: Vec<(OwnedFd, OwnedFd)>,
    tap: Option<Arc<dyn OutputTap>>,
}

/// Which of the container's streams output came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputStream {
    /// Stdout, or both where they share one pipe.
    Stdout,
    Stderr,
}

/// Receives a copy of the container's output as the relay moves it (the
/// engine's log). The copy is made with tee(2), so no byte passes through
/// user space on the way.
pub trait OutputTap: Send + Sync {
    /// `len` bytes of `stream` wait in the pipe `staged`, which holds
    /// nothing else: take them all (read, splice or drop them).
    fn take(&self, stream: OutputStream, staged: &OwnedFd, len: usize);
}

fn sys(what: &str) -> impl Fn(Errno) -> SandboxError + '_ {
    move |e| SandboxError::io(what.to_string(), e.into())
}

impl Pipes {
    /// Pipes for a container whose stdin comes from `stdin` (`None`: it
    /// reads /dev/null) and whose output goes to `stdout` and `stderr`.
    pub(crate) fn new(
        stdin: Option<OwnedFd>,
        stdout: OwnedFd,
        stderr: OwnedFd,
    ) -> Result<Self, SandboxError> {
        let make = || rustix::pipe::pipe_with(PipeFlags::CLOEXEC).map_err(sys("making a pipe"));
        let (child_in, stdin) = match stdin {
            Some(source) => {
                let (r, w) = make()?;
                (r, Some((w, source)))
            }
            None => (
                rustix::fs::open(
                    "/dev/null",
                    rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::CLOEXEC,
                    rustix::fs::Mode::empty(),
                )
                .map_err(sys("opening /dev/null"))?,
                None,
            ),
        };
        let (out_r, out_w) = make()?;
        let mut outputs = vec![(out_r, stdout)];
        let (child_out, child_err) = if same_open_file(outputs[0].1.as_fd(), stderr.as_fd()) {
            let w2 = out_w
                .try_clone()
                .map_err(|e| SandboxError::io("dup".into(), e))?;
            (out_w, w2)
        } else {
            let (err_r, err_w) = make()?;
            outputs.push((err_r, stderr));
            (out_w, err_w)
        };
        for (r, _) in &outputs {
            let flags = rustix::fs::fcntl_getfl(r).map_err(sys("reading pipe flags"))?;
            rustix::fs::fcntl_setfl(r, flags | rustix::fs::OFlags::NONBLOCK)
                .map_err(sys("making a pipe non-blocking"))?;
        }
        Ok(Pipes {
            child: [child_in, child_out, child_err],
            stdin,
            outputs,
            tap: None,
        })
    }

    /// The same pipes, with their output also given to `tap`.
    pub(crate) fn with_tap(mut self, tap: Option<Arc<dyn OutputTap>>) -> Self {
        self.tap = tap;
        self
    }

    /// The descriptors the init makes its 0, 1 and 2.
    pub(crate) fn child_fds(&self) -> [RawFd; 3] {
        self.child.each_ref().map(|f| f.as_raw_fd())
    }

    /// Starts copying, once the init is cloned (threads may exist now); the
    /// container's ends are closed here, so its exit shows as end-of-file.
    pub(crate) fn start(self) -> Result<Relay, SandboxError> {
        drop(self.child);
        start_copies(self.stdin, self.outputs, self.tap)
    }
}

/// The relay of a container whose processes are not the host's (a VM's
/// guest): the three ends that stand for its 0, 1 and 2, and the running
/// copies. The sandbox reads what the container's stdin gets from the
/// first end, writes the container's stdout and stderr to the others,
/// and closes them all once the container has exited.
pub fn remote(
    stdin: Option<OwnedFd>,
    stdout: OwnedFd,
    stderr: OwnedFd,
    tap: Option<Arc<dyn OutputTap>>,
) -> Result<([OwnedFd; 3], Relay), SandboxError> {
    let Pipes {
        child,
        stdin,
        outputs,
        tap,
    } = Pipes::new(stdin, stdout, stderr)?.with_tap(tap);
    Ok((child, start_copies(stdin, outputs, tap)?))
}

fn start_copies(
    stdin: Option<(OwnedFd, OwnedFd)>,
    outputs: Vec<(OwnedFd, OwnedFd)>,
    tap: Option<Arc<dyn OutputTap>>,
) -> Result<Relay, SandboxError> {
    let done = rustix::event::eventfd(0, EventfdFlags::CLOEXEC)
        .map_err(sys("making the relay's eventfd"))?;
    let mut threads = Vec::new();
    for (i, (source, destination)) in outputs.into_iter().enumerate() {
        let done = done
            .try_clone()
            .map_err(|e| SandboxError::io("dup".into(), e))?;
        let stream = if i == 0 {
            OutputStream::Stdout
        } else {
            OutputStream::Stderr
        };
        let tap = match &tap {
            Some(t) => Some(Tapped::new(t.clone(), stream)?),
            None => None,
        };
        let t = std::thread::Builder::new()
            .name("skiff-relay-out".into())
            .spawn(move || copy_out(source, destination, done, tap))
            .map_err(|e| SandboxError::io("starting an output relay".into(), e))?;
        threads.push(t);
    }
    if let Some((pipe, source)) = stdin {
        // Not joined: it blocks reading skiff's stdin, which may never end.
        std::thread::Builder::new()
            .name("skiff-relay-in".into())
            .spawn(move || copy_in(source, pipe))
            .map_err(|e| SandboxError::io("starting the stdin relay".into(), e))?;
    }
    Ok(Relay {
        done: Some(done),
        threads,
    })
}

/// Whether two descriptors are one open file description (`2>&1`, one
/// terminal opened once). kcmp(2); where it is unavailable, they count as
/// different, which costs only the interleaving.
pub fn same_open_file(a: BorrowedFd<'_>, b: BorrowedFd<'_>) -> bool {
    const KCMP_FILE: libc::c_long = 0;
    let pid = std::process::id() as libc::c_long;
    // SAFETY: kcmp compares two of our own descriptors; no memory is passed.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_kcmp,
            pid,
            pid,
            KCMP_FILE,
            a.as_raw_fd() as libc::c_long,
            b.as_raw_fd() as libc::c_long,
        )
    };
    rc == 0
}

/// The running copies of a container's output.
pub struct Relay {
    done: Option<OwnedFd>,
    threads: Vec<JoinHandle<()>>,
}

impl Relay {
    /// Copies what is left and returns: call it once the container's init
    /// has been reaped. Every process of its pid namespace is gone by then,
    /// so what they wrote is already in the pipes; a descriptor that
    /// escaped (passed to a host process) cannot keep this waiting.
    pub fn finish(mut self) {
        self.signal_done();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }

    fn signal_done(&mut self) {
        if let Some(done) = self.done.take() {
            let _ = rustix::io::write(&done, &1u64.to_ne_bytes());
        }
    }
}

impl Drop for Relay {
    /// Not joined here: on an error path the copies finish on their own.
    fn drop(&mut self) {
        self.signal_done();
    }
}

/// What one step of a copy did.
enum Step {
    Moved,
    /// Nothing to read just now.
    Empty,
    /// The writers are gone, or the destination was closed (the container
    /// then gets EPIPE, as it would writing to it directly).
    Ended,
}

/// How the copy reaches its destination.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Sink {
    Splice,
    Copy,
    /// The destination failed (a full disk, say): the output is dropped
    /// so the container is not blocked by it.
    Discard,
}

/// A tap with the staging pipe its copies go through.
struct Tapped {
    tap: Arc<dyn OutputTap>,
    stream: OutputStream,
    staged_out: OwnedFd,
    staged_in: OwnedFd,
}

impl Tapped {
    fn new(tap: Arc<dyn OutputTap>, stream: OutputStream) -> Result<Self, SandboxError> {
        let (staged_out, staged_in) =
            rustix::pipe::pipe_with(PipeFlags::CLOEXEC).map_err(sys("making a pipe"))?;
        Ok(Tapped {
            tap,
            stream,
            staged_out,
            staged_in,
        })
    }
}

fn copy_out(source: OwnedFd, destination: OwnedFd, done: OwnedFd, tap: Option<Tapped>) {
    let mut sink = Sink::Splice;
    let mut buf = vec![0u8; COPY_BUFFER];
    let mut finishing = false;
    loop {
        let stepped = match &tap {
            Some(t) => tapped_step(&source, &destination, &mut sink, &mut buf, t),
            None => step(&source, &destination, &mut sink, &mut buf),
        };
        match stepped {
            Step::Moved => {}
            Step::Ended => return,
            Step::Empty if finishing => return,
            Step::Empty => {
                let mut fds = [
                    PollFd::new(&source, PollFlags::IN),
                    PollFd::new(&done, PollFlags::IN),
                ];
                match rustix::event::poll(&mut fds, None) {
                    Ok(_) | Err(Errno::INTR) => {}
                    Err(_) => return,
                }
                if !fds[1].revents().is_empty() {
                    finishing = true;
                }
            }
        }
    }
}

fn step(source: &OwnedFd, destination: &OwnedFd, sink: &mut Sink, buf: &mut [u8]) -> Step {
    if *sink == Sink::Splice {
        match rustix::pipe::splice(
            source,
            None,
            destination,
            None,
            SPLICE_CHUNK,
            SpliceFlags::MOVE | SpliceFlags::NONBLOCK,
        ) {
            Ok(0) => return Step::Ended,
            Ok(_) | Err(Errno::INTR) => return Step::Moved,
            Err(Errno::AGAIN) => {
                // Either side may be the one that would block.
                if bytes_waiting(source) == 0 {
                    return Step::Empty;
                }
                wait_writable(destination);
                return Step::Moved;
            }
            // The destination takes no splice (a terminal, a file opened
            // for appending): copy instead.
            Err(Errno::INVAL) => *sink = Sink::Copy,
            Err(e) => return destination_failed(e, sink),
        }
    }
    let n = match rustix::io::read(source, &mut *buf) {
        Ok(0) => return Step::Ended,
        Ok(n) => n,
        Err(Errno::AGAIN) => return Step::Empty,
        Err(Errno::INTR) => return Step::Moved,
        Err(_) => return Step::Ended,
    };
    write_out(destination, &buf[..n], sink)
}

/// Writes `bytes` to `destination`, unless the sink discards: `Ended` once
/// the destination is gone.
fn write_out(destination: &OwnedFd, bytes: &[u8], sink: &mut Sink) -> Step {
    if *sink == Sink::Discard {
        return Step::Moved;
    }
    let mut rest = bytes;
    while !rest.is_empty() {
        match rustix::io::write(destination, rest) {
            Ok(w) => rest = &rest[w..],
            Err(Errno::INTR) => {}
            Err(Errno::AGAIN) => wait_writable(destination),
            Err(e) => return destination_failed(e, sink),
        }
    }
    Step::Moved
}

/// A step that first copies what waits to the tap (tee(2) leaves it in
/// `source`), then moves exactly that much on, so the tap and the
/// destination see the same bytes.
fn tapped_step(
    source: &OwnedFd,
    destination: &OwnedFd,
    sink: &mut Sink,
    buf: &mut [u8],
    t: &Tapped,
) -> Step {
    // At most one plain copy's worth: the log's frames stay that small.
    let len = match rustix::pipe::tee(source, &t.staged_in, COPY_BUFFER, SpliceFlags::NONBLOCK) {
        Ok(0) => return Step::Ended,
        Ok(n) => n,
        Err(Errno::AGAIN) => return Step::Empty,
        Err(Errno::INTR) => return Step::Moved,
        Err(_) => return Step::Ended,
    };
    t.tap.take(t.stream, &t.staged_out, len);
    let mut left = len;
    while left > 0 {
        if *sink == Sink::Splice {
            let flags = SpliceFlags::MOVE | SpliceFlags::NONBLOCK;
            match rustix::pipe::splice(source, None, destination, None, left, flags) {
                Ok(0) => return Step::Ended,
                Ok(n) => left -= n,
                Err(Errno::INTR) => {}
                Err(Errno::AGAIN) => wait_writable(destination),
                Err(Errno::INVAL) => *sink = Sink::Copy,
                Err(e) => {
                    if let Step::Ended = destination_failed(e, sink) {
                        return Step::Ended;
                    }
                }
            }
            continue;
        }
        // The bytes are in the pipe already: a read never waits here.
        let want = left.min(buf.len());
        let n = match rustix::io::read(source, &mut buf[..want]) {
            Ok(0) => return Step::Ended,
            Ok(n) => n,
            Err(Errno::INTR) => continue,
            Err(_) => return Step::Ended,
        };
        left -= n;
        if let Step::Ended = write_out(destination, &buf[..n], sink) {
            return Step::Ended;
        }
    }
    Step::Moved
}

fn destination_failed(e: Errno, sink: &mut Sink) -> Step {
    if e == Errno::PIPE {
        return Step::Ended;
    }
    tracing::warn!("writing the container's output: {e}; dropping the rest");
    *sink = Sink::Discard;
    Step::Moved
}

fn bytes_waiting(fd: &OwnedFd) -> usize {
    rustix::io::ioctl_fionread(fd).map_or(0, |n| n as usize)
}

fn wait_writable(fd: &OwnedFd) {
    let mut fds = [PollFd::new(fd, PollFlags::OUT)];
    let _ = rustix::event::poll(&mut fds, None);
}

/// Copies skiff's stdin into the container's until either ends; closing
/// the pipe then gives the container its end-of-file.
fn copy_in(source: OwnedFd, pipe: OwnedFd) {
    let mut spliced = true;
    let mut buf = vec![0u8; COPY_BUFFER];
    loop {
        if spliced {
            match rustix::pipe::splice(&source, None, &pipe, None, SPLICE_CHUNK, SpliceFlags::MOVE)
            {
                Ok(0) => return,
                Ok(_) | Err(Errno::INTR) => continue,
                Err(Errno::INVAL) => spliced = false,
                Err(Errno::AGAIN) => {
                    wait_readable(&source);
                    continue;
                }
                Err(_) => return,
            }
        }
        let n = match rustix::io::read(&source, &mut buf) {
            Ok(0) => return,
            Ok(n) => n,
            Err(Errno::INTR) => continue,
            Err(Errno::AGAIN) => {
                wait_readable(&source);
                continue;
            }
            Err(_) => return,
        };
        let mut rest = &buf[..n];
        while !rest.is_empty() {
            match rustix::io::write(&pipe, rest) {
                Ok(w) => rest = &rest[w..],
                Err(Errno::INTR) => {}
                Err(_) => return,
            }
        }
    }
}

fn wait_readable(fd: &OwnedFd) {
    let mut fds = [PollFd::new(fd, PollFlags::IN)];
    let _ = rustix::event::poll(&mut fds, None);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    fn pipe() -> (std::fs::File, std::fs::File) {
        let (r, w) = rustix::pipe::pipe_with(PipeFlags::CLOEXEC).unwrap();
        (r.into(), w.into())
    }

    /// The whole relay without a container: the test plays the container
    /// on the child ends.
    #[test]
    fn streams_keep_order_eof_and_every_byte() {
        let (out_r, out_w) = pipe();
        let (err_r, err_w) = pipe();
        let (in_r, mut in_w) = pipe();
        let pipes = Pipes::new(Some(in_r.into()), out_w.into(), err_w.into()).unwrap();
        let [c_in, c_out, c_err] = pipes.child.each_ref().map(|f| f.try_clone().unwrap());
        let relay = pipes.start().unwrap();
        let payload: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        let feeder = {
            let p = payload.clone();
            std::thread::spawn(move || {
                in_w.write_all(&p).unwrap();
            })
        };
        // The "container": echoes stdin to stdout until EOF, then writes
        // to stderr, then exits (its ends close).
        let container = std::thread::spawn(move || {
            let (mut i, mut o, mut e) = (
                std::fs::File::from(c_in),
                std::fs::File::from(c_out),
                std::fs::File::from(c_err),
            );
            std::io::copy(&mut i, &mut o).unwrap();
            e.write_all(b"bye\n").unwrap();
        });
        let reader = std::thread::spawn(move || {
            let mut got = Vec::new();
            let mut r = out_r;
            r.read_to_end(&mut got).unwrap();
            got
        });
        feeder.join().unwrap();
        container.join().unwrap();
        relay.finish();
        assert!(reader.join().unwrap() == payload);
        let mut e = String::new();
        let mut err_r = err_r;
        err_r.read_to_string(&mut e).unwrap();
        assert_eq!(e, "bye\n");
    }

    #[test]
    fn one_open_file_gets_one_pipe() {
        let (_r, w) = pipe();
        let w2 = w.try_clone().unwrap();
        let pipes = Pipes::new(None, w.into(), w2.into()).unwrap();
        assert_eq!(pipes.outputs.len(), 1);
        let (_r2, w3) = pipe();
        let (_r4, w4) = pipe();
        let pipes = Pipes::new(None, w3.into(), w4.into()).unwrap();
        assert_eq!(pipes.outputs.len(), 2);
    }

    /// A finished relay does not wait for a writer that is still around
    /// (a descriptor that escaped the container).
    #[test]
    fn finish_does_not_wait_for_a_leaked_writer() {
        let (out_r, out_w) = pipe();
        let (_err_r, err_w) = pipe();
        let pipes = Pipes::new(None, out_w.into(), err_w.into()).unwrap();
        let leaked = pipes.child[1].try_clone().unwrap();
        rustix::io::write(&leaked, b"partial").unwrap();
        let relay = pipes.start().unwrap();
        relay.finish();
        drop(leaked);
        let mut got = String::new();
        let mut r = out_r;
        r.read_to_string(&mut got).unwrap();
        assert_eq!(got, "partial");
    }

    /// Keeps what the tap is given, by stream.
    #[derive(Default)]
    struct Collect(std::sync::Mutex<Vec<(OutputStream, Vec<u8>)>>);

    impl OutputTap for Collect {
        fn take(&self, stream: OutputStream, staged: &OwnedFd, len: usize) {
            let mut buf = vec![0u8; len];
            let mut got = 0;
            while got < len {
                got += rustix::io::read(staged, &mut buf[got..]).unwrap();
            }
            self.0.lock().unwrap().push((stream, buf));
        }
    }

    #[test]
    fn a_tap_sees_every_byte_the_destination_gets() {
        let (mut out_r, out_w) = pipe();
        let (mut err_r, err_w) = pipe();
        let tap = Arc::new(Collect::default());
        let pipes = Pipes::new(None, out_w.into(), err_w.into())
            .unwrap()
            .with_tap(Some(tap.clone()));
        let [_, child_out, child_err] = pipes.child.each_ref().map(|f| f.try_clone().unwrap());
        let relay = pipes.start().unwrap();
        let big = vec![b'o'; 300_000];
        let writer = std::thread::spawn(move || {
            let mut out = std::fs::File::from(child_out);
            out.write_all(&big).unwrap();
            rustix::io::write(&child_err, b"err").unwrap();
        });
        let mut got_out = Vec::new();
        let reader = std::thread::spawn(move || {
            out_r.read_to_end(&mut got_out).unwrap();
            got_out
        });
        writer.join().unwrap();
        relay.finish();
        let got_out = reader.join().unwrap();
        let mut got_err = Vec::new();
        err_r.read_to_end(&mut got_err).unwrap();
        assert_eq!(got_out.len(), 300_000);
        assert_eq!(got_err, b"err");
        let seen = tap.0.lock().unwrap();
        let tapped = |s: OutputStream| -> Vec<u8> {
            seen.iter()
                .filter(|(x, _)| *x == s)
                .flat_map(|(_, b)| b.clone())
                .collect()
        };
        assert_eq!(tapped(OutputStream::Stdout), got_out);
        assert_eq!(tapped(OutputStream::Stderr), b"err");
        assert!(seen.iter().all(|(_, b)| b.len() <= COPY_BUFFER));
    }
}
