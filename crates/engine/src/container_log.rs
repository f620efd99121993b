//! A container's output log, `ROOT/containers/ID/container.log`: what the
//! container wrote, each read of its output kept as a frame that names
//! the stream, so that `skiff logs` prints stdout and stderr back apart, in
//! the order they came. Detached and foreground containers alike keep one
//! (a foreground run's output is copied to its terminal as well). The
//! format is in docs/format.md ("Container log").
//!
//! Written by hand: a container's output is a byte stream, not lines, and
//! the frames are five bytes of header; no logging crate keeps raw
//! streams apart this way.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use crate::container::supervise::Launch;
use crate::error::{EngineError, IoContext, Result};

/// The first bytes of a framed log (a log without them is raw output, from
/// a skiff before frames).
pub const MAGIC: &[u8; 8] = b"skiflog1";
/// The largest frame's payload: a pump reads at most this much at once.
pub const MAX_FRAME: usize = 64 * 1024;
const HEADER: usize = 5;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout = 1,
    Stderr = 2,
}

/// A log file's size at which it is rotated (to `container.log.1`, which
/// replaces the one before): a container keeps at most twice this.
pub const DEFAULT_MAX_FILE_BYTES: u64 = 32 << 20;

/// Where the log rotates to.
pub fn rotated_path(path: &Path) -> std::path::PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(".1");
    p.into()
}

/// A log open for appending frames, shared by a container's pumps.
pub struct LogFile {
    path: std::path::PathBuf,
    max_file_bytes: u64,
    open: Mutex<Open>,
    /// Set once a write failed (a full disk): the output still flows to
    /// its other destination; the log says no more.
    failed: std::sync::atomic::AtomicBool,
}

struct Open {
    file: File,
    size: u64,
}

fn open_for_append(path: &Path) -> std::io::Result<Open> {
    let mut file = File::options().create(true).append(true).open(path)?;
    let mut size = file.metadata()?.len();
    if size == 0 {
        file.write_all(MAGIC)?;
        size = MAGIC.len() as u64;
    }
    Ok(Open { file, size })
}

impl LogFile {
    /// The log at `path`, rotated once a file would pass `max_file_bytes`.
    pub fn open(path: &Path, max_file_bytes: u64) -> Result<Arc<LogFile>> {
        let open = open_for_append(path).ctx(|| format!("opening {}", path.display()))?;
        Ok(Arc::new(LogFile {
            path: path.to_path_buf(),
            max_file_bytes: max_file_bytes.max((MAX_FRAME + HEADER + MAGIC.len()) as u64),
            open: Mutex::new(open),
            failed: Default::default(),
        }))
    }

    fn append(&self, stream: Stream, bytes: &[u8]) {
        use std::sync::atomic::Ordering;
        if self.failed.load(Ordering::Relaxed) {
            return;
        }
        let mut frame = Vec::with_capacity(HEADER + bytes.len());
        frame.push(stream as u8);
        frame.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
        frame.extend_from_slice(bytes);
        let Ok(mut open) = self.open.lock() else {
            return;
        };
        let written = (|| -> std::io::Result<()> {
            if open.size + frame.len() as u64 > self.max_file_bytes {
                std::fs::rename(&self.path, rotated_path(&self.path))?;
                *open = open_for_append(&self.path)?;
            }
            open.file.write_all(&frame)?;
            open.size += frame.len() as u64;
            Ok(())
        })();
        if let Err(e) = written {
            tracing::warn!("the container's log stops here: {e}");
            self.failed.store(true, Ordering::Relaxed);
        }
    }
}

/// The threads copying a container's output into its log: made before the
/// sandbox (which needs the pipes), started after it (the namespace kind
/// clones its init from a single-threaded process); [`Pumps::finish`]
/// waits until every byte is in.
#[derive(Default)]
pub struct Pumps {
    waiting: Vec<Box<dyn FnOnce() + Send>>,
    threads: Vec<JoinHandle<()>>,
}

impl Pumps {
    /// Starts copying.
    pub fn start(&mut self) {
        for pump in self.waiting.drain(..) {
            self.threads.push(std::thread::spawn(pump));
        }
    }

    pub fn finish(mut self) {
        self.start();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }

    /// A pipe whose write end the container's output goes to: what comes
    /// out of it is logged as `stream`, and copied on to `tee` if given.
    /// When `tee` fails (its reader went away) the pump stops reading, so
    /// that the container sees its output closed, as without a log.
    fn pipe(
        &mut self,
        log: &Arc<LogFile>,
        stream: Stream,
        tee: Option<OwnedFd>,
    ) -> Result<OwnedFd> {
        let (reader, writer) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
            .map_err(|e| EngineError::io("making a pipe for the container's log", e.into()))?;
        let log = log.clone();
        self.waiting.push(Box::new(move || {
            let mut reader = File::from(reader);
            let mut tee = tee.map(File::from);
            let mut buf = vec![0u8; MAX_FRAME];
            loop {
                let n = match reader.read(&mut buf) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                };
                log.append(stream, &buf[..n]);
                if let Some(t) = &mut tee {
                    if t.write_all(&buf[..n]).is_err() {
                        return;
                    }
                }
            }
        }));
        Ok(writer)
    }
}

/// `launch` with the container's output also going to the log at `path`.
/// Under a terminal the output is one stream (stdout). Where stdout and
/// stderr are one open file (`2>&1`), the container keeps one pipe, so
/// that their order stays exact, and the log keeps it as stdout.
pub(crate) fn logged(launch: Launch, path: &Path, max_file_bytes: u64) -> Result<(Launch, Pumps)> {
    let log = LogFile::open(path, max_file_bytes)?;
    let mut pumps = Pumps::default();
    let launch = match launch {
        Launch::Streams {
            stdin,
            stdout,
            stderr,
        } => {
            if skiff_sandbox::relay::same_open_file(stdout.as_fd(), stderr.as_fd()) {
                drop(stderr);
                let out = pumps.pipe(&log, Stream::Stdout, Some(stdout))?;
                let err = out.try_clone().ctx(|| "duplicating a pipe".into())?;
                Launch::Streams {
                    stdin,
                    stdout: out,
                    stderr: err,
                }
            } else {
                Launch::Streams {
                    stdin,
                    stdout: pumps.pipe(&log, Stream::Stdout, Some(stdout))?,
                    stderr: pumps.pipe(&log, Stream::Stderr, Some(stderr))?,
                }
            }
        }
        Launch::Terminal {
            interactive,
            output,
        } => Launch::Terminal {
            interactive,
            output: pumps
                .pipe(&log, Stream::Stdout, Some(output.into()))?
                .into(),
        },
        Launch::Logged { tty, stdin } => {
            if tty {
                Launch::Terminal {
                    interactive: false,
                    output: pumps.pipe(&log, Stream::Stdout, None)?.into(),
                }
            } else {
                Launch::Streams {
                    stdin,
                    stdout: pumps.pipe(&log, Stream::Stdout, None)?,
                    stderr: pumps.pipe(&log, Stream::Stderr, None)?,
                }
            }
        }
    };
    Ok((launch, pumps))
}

/// What a log holds, decoded as far as it is complete.
pub enum Decoded<'a> {
    /// Raw output from a skiff before frames: print it as stdout.
    Raw(&'a [u8]),
    /// The complete frames, and how many bytes they took (a frame still
    /// being written waits for the next read).
    Frames(Vec<(Stream, &'a [u8])>, usize),
}

/// Decodes `buf`, which starts at a frame boundary (or at the log's start,
/// if `at_start`).
pub fn decode(buf: &[u8], at_start: bool) -> std::result::Result<Decoded<'_>, String> {
    let mut at = 0;
    if at_start {
        if buf.len() < MAGIC.len() {
            return Ok(if MAGIC.starts_with(buf) {
                Decoded::Frames(Vec::new(), 0)
            } else {
                Decoded::Raw(buf)
            });
        }
        if &buf[..MAGIC.len()] != MAGIC {
            return Ok(Decoded::Raw(buf));
        }
        at = MAGIC.len();
    }
    let mut frames = Vec::new();
    while buf.len() - at >= HEADER {
        let stream = match buf[at] {
            1 => Stream::Stdout,
            2 => Stream::Stderr,
            b => return Err(format!("an unknown stream {b} at byte {at}")),
        };
        let len = u32::from_le_bytes([buf[at + 1], buf[at + 2], buf[at + 3], buf[at + 4]]) as usize;
        if len > MAX_FRAME {
            return Err(format!("a frame of {len} bytes at byte {at}"));
        }
        if buf.len() - at - HEADER < len {
            break;
        }
        frames.push((stream, &buf[at + HEADER..at + HEADER + len]));
        at += HEADER + len;
    }
    Ok(Decoded::Frames(frames, at))
}

/// Reads a container's log as it grows, across rotations: the rotated
/// file first, then the current one, and its successor once the writer
/// rotates it.
pub struct LogReader {
    path: std::path::PathBuf,
    file: File,
    pending: Vec<u8>,
    at_start: bool,
    raw: bool,
    /// Whether `file` is the current log (not the rotated one).
    on_current: bool,
}

impl LogReader {
    /// `None` if the container has no log.
    pub fn open(path: &Path) -> Result<Option<LogReader>> {
        let (file, on_current) = match File::open(rotated_path(path)) {
            Ok(f) => (f, false),
            Err(_) => match File::open(path) {
                Ok(f) => (f, true),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(EngineError::io(format!("opening {}", path.display()), e)),
            },
        };
        Ok(Some(LogReader {
            path: path.to_path_buf(),
            file,
            pending: Vec::new(),
            at_start: true,
            raw: false,
            on_current,
        }))
    }

    /// Hands each complete frame read now to `each`; `false` once there
    /// is nothing more to read for the moment.
    pub fn read(
        &mut self,
        each: &mut dyn FnMut(Stream, &[u8]) -> std::io::Result<()>,
    ) -> Result<bool> {
        let out = |e| EngineError::io("printing the log", e);
        let mut buf = vec![0u8; MAX_FRAME];
        let n = self
            .file
            .read(&mut buf)
            .ctx(|| format!("reading {}", self.path.display()))?;
        if n == 0 {
            return Ok(self.next_file());
        }
        if self.raw {
            each(Stream::Stdout, &buf[..n]).map_err(out)?;
            return Ok(true);
        }
        self.pending.extend_from_slice(&buf[..n]);
        let decoded = decode(&self.pending, self.at_start).map_err(|why| {
            EngineError::Invalid(format!("{} is damaged: {why}", self.path.display()))
        })?;
        let used = match decoded {
            Decoded::Raw(bytes) => {
                // From a skiff before frames: its bytes as written.
                each(Stream::Stdout, bytes).map_err(out)?;
                self.raw = true;
                self.pending.len()
            }
            Decoded::Frames(frames, used) => {
                for (stream, bytes) in frames {
                    each(stream, bytes).map_err(out)?;
                }
                if used > 0 {
                    self.at_start = false;
                }
                used
            }
        };
        self.pending.drain(..used);
        Ok(true)
    }

    /// At the end of a file: on to the current log, or to the file that
    /// replaced it when it was rotated. Whether there is one.
    fn next_file(&mut self) -> bool {
        use std::os::unix::fs::MetadataExt;
        let Ok(current) = std::fs::metadata(&self.path) else {
            return false;
        };
        let ours = self.file.metadata().map(|m| m.ino()).unwrap_or(0);
        if self.on_current && current.ino() == ours {
            return false;
        }
        match File::open(&self.path) {
            Ok(f) => {
                self.file = f;
                self.on_current = true;
                self.pending.clear();
                self.at_start = true;
                self.raw = false;
                true
            }
            Err(_) => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_a_partial_one_waits() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let log = LogFile::open(&path, DEFAULT_MAX_FILE_BYTES).unwrap();
        log.append(Stream::Stdout, b"out\n");
        log.append(Stream::Stderr, b"err\n");
        let bytes = std::fs::read(&path).unwrap();
        let Decoded::Frames(frames, used) = decode(&bytes, true).unwrap() else {
            panic!("not framed")
        };
        assert_eq!(used, bytes.len());
        assert_eq!(
            frames,
            [
                (Stream::Stdout, &b"out\n"[..]),
                (Stream::Stderr, &b"err\n"[..])
            ]
        );
        let Decoded::Frames(frames, used) = decode(&bytes[..bytes.len() - 1], true).unwrap() else {
            panic!("not framed")
        };
        assert_eq!((frames.len(), used), (1, MAGIC.len() + HEADER + 4));
        assert!(matches!(decode(b"plain text", true), Ok(Decoded::Raw(_))));
        assert!(decode(&[9, 0, 0, 0, 0], false).is_err());
        assert!(decode(&[1, 0xff, 0xff, 0xff, 0xff], false).is_err());
    }

    #[test]
    fn a_full_log_rotates_and_the_reader_follows_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let log = LogFile::open(&path, 0).unwrap();
        let chunk = vec![b'x'; 40_000];
        let mut reader = LogReader::open(&path).unwrap().unwrap();
        let mut seen = 0usize;
        for _ in 0..5 {
            log.append(Stream::Stdout, &chunk);
            let mut count = |_: Stream, b: &[u8]| -> std::io::Result<()> {
                seen += b.len();
                Ok(())
            };
            while reader.read(&mut count).unwrap() {}
        }
        assert_eq!(seen, 5 * chunk.len(), "every byte, across rotations");
        let total = std::fs::metadata(&path).unwrap().len()
            + std::fs::metadata(rotated_path(&path)).unwrap().len();
        assert!(total < 2 * (MAX_FRAME + 16) as u64, "bounded: {total}");
        // A reader opened now starts at the rotated file.
        let mut fresh = LogReader::open(&path).unwrap().unwrap();
        let mut again = 0usize;
        let mut count = |_: Stream, b: &[u8]| -> std::io::Result<()> {
            again += b.len();
            Ok(())
        };
        while fresh.read(&mut count).unwrap() {}
        assert_eq!(again, 2 * chunk.len(), "the two files kept");
    }
}
