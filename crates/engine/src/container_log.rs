//! A container's output log, `ROOT/containers/ID/container.log`: what the
//! container wrote, each pass of the relay kept as a frame that names the
//! stream, so that `skiff logs` prints stdout and stderr back apart, in the
//! order they came. The relay hands each pass to [`LogFile`] as its
//! [`skiff_sandbox::relay::OutputTap`] (tee'd into a staging pipe, spliced
//! into the file); a terminal's output comes from the console thread.
//! Detached and foreground containers alike keep one, but a foreground
//! `--rm` one whose output goes to a pipe or file ([`location`]). The
//! format is in docs/format.md ("Container log").
//!
//! Written by hand: a container's output is a byte stream, not lines, and
//! the frames are five bytes of header; no logging crate keeps raw
//! streams apart this way.

use std::fs::File;
use std::io::Read;
use std::os::fd::OwnedFd;
use std::path::Path;
use std::sync::{Arc, Mutex};

use crate::container::supervise::Launch;
use crate::error::{EngineError, IoContext, Result};

/// The first bytes of a framed log (a log without them is raw output, from
/// a skiff before frames).
pub const MAGIC: &[u8; 8] = b"skiflog1";
/// The largest frame's payload: one pass of the relay moves at most this.
pub const MAX_FRAME: usize = 64 * 1024;
const HEADER: usize = 5;

/// Which stream a frame holds: the relay's own name for it.
pub use skiff_sandbox::relay::OutputStream as Stream;

/// A frame's stream byte (docs/format.md, section 7).
fn stream_code(stream: Stream) -> u8 {
    match stream {
        Stream::Stdout => 1,
        Stream::Stderr => 2,
    }
}

/// A log file's size at which it is rotated (to `container.log.1`, which
/// replaces the one before): a container keeps at most twice this.
pub const DEFAULT_MAX_FILE_BYTES: u64 = 32 << 20;

/// Where a container's log is, and the size at which it rotates; `None`
/// for a container that keeps none (a foreground `--rm` one whose output
/// goes to a pipe or a file: it is removed at its exit, its output is its
/// caller's already, and writing everything a pipeline streams through
/// `skiff run` into a log costs more than the relay; docs/run.md).
pub fn location(root: &Path, record: &crate::Record) -> Option<(std::path::PathBuf, u64)> {
    record.keeps_log.then(|| {
        (
            crate::record::log_path(root, &record.id),
            record.log_max_file_bytes.unwrap_or(DEFAULT_MAX_FILE_BYTES),
        )
    })
}

/// Whether a container started with `launch` keeps a log.
pub(crate) fn keeps_log(record: &crate::Record, launch: &Launch) -> bool {
    if !record.remove_on_exit || record.detached {
        return true;
    }
    match launch {
        Launch::Streams { stdout, .. } => rustix::termios::isatty(stdout),
        Launch::Terminal { output, .. } => rustix::termios::isatty(output),
        Launch::Logged { .. } => true,
    }
}

/// Where the log rotates to.
pub fn rotated_path(path: &Path) -> std::path::PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(".1");
    p.into()
}

/// A log open for appending frames, shared by the relay's copies of a
/// container's streams.
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

/// Opened for writing at its end, without `O_APPEND`: splice(2) refuses an
/// append-mode file. One supervisor writes a log, so it keeps the offset.
fn open_for_append(path: &Path) -> std::io::Result<Open> {
    let file = File::options()
        .create(true)
        .write(true)
        .truncate(false)
        .open(path)?;
    let mut size = file.metadata()?.len();
    if size == 0 {
        rustix::io::pwrite(&file, MAGIC, 0)?;
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

    /// Appends one frame of `bytes` (a terminal's output, read already).
    pub fn append(&self, stream: Stream, bytes: &[u8]) {
        self.write_frame(stream, bytes.len(), &mut |file, off| {
            let wrote = rustix::io::pwrite(file, bytes, *off)?;
            *off += wrote as u64;
            Ok(wrote)
        });
    }

    /// Moves the `len` bytes waiting in `staged` (a pipe holding nothing
    /// else) into one frame, without copying them through user space. The
    /// pipe is empty afterwards, whatever happened.
    fn append_from_pipe(&self, stream: Stream, staged: &OwnedFd, len: usize) {
        let mut moved = 0;
        self.write_frame(stream, len, &mut |file, off| {
            let n = rustix::pipe::splice(
                staged,
                None,
                file,
                Some(off),
                len - moved,
                rustix::pipe::SpliceFlags::empty(),
            )?;
            moved += n;
            Ok(n)
        });
        drain(staged, len - moved);
    }

    /// Writes a frame's header, then calls `body` until `len` bytes are
    /// written after it (each call writes at `off` and advances it). A
    /// frame that fails is cut off: the log ends at the frame before.
    fn write_frame(
        &self,
        stream: Stream,
        len: usize,
        body: &mut dyn FnMut(&File, &mut u64) -> rustix::io::Result<usize>,
    ) {
        use std::sync::atomic::Ordering;
        if self.failed.load(Ordering::Relaxed) {
            return;
        }
        let Ok(mut open) = self.open.lock() else {
            return;
        };
        let written = (|| -> std::io::Result<()> {
            if open.size + (HEADER + len) as u64 > self.max_file_bytes {
                std::fs::rename(&self.path, rotated_path(&self.path))?;
                *open = open_for_append(&self.path)?;
            }
            let mut header = [0u8; HEADER];
            header[0] = stream_code(stream);
            header[1..].copy_from_slice(&(len as u32).to_le_bytes());
            if rustix::io::pwrite(&open.file, &header, open.size)? != HEADER {
                return Err(std::io::Error::other("a short write of a frame header"));
            }
            let mut off = open.size + HEADER as u64;
            let end = off + len as u64;
            while off < end {
                if body(&open.file, &mut off)? == 0 {
                    return Err(std::io::Error::other("a frame's bytes ran dry"));
                }
            }
            open.size = end;
            Ok(())
        })();
        if let Err(e) = written {
            tracing::warn!("the container's log stops here: {e}");
            self.failed.store(true, Ordering::Relaxed);
            let _ = open.file.set_len(open.size);
        }
    }
}

impl skiff_sandbox::relay::OutputTap for LogFile {
    fn take(&self, stream: Stream, staged: &OwnedFd, len: usize) {
        self.append_from_pipe(stream, staged, len);
    }
}

/// Reads and drops `len` bytes from a pipe.
fn drain(pipe: &OwnedFd, mut len: usize) {
    let mut buf = [0u8; 8192];
    while len > 0 {
        match rustix::io::read(pipe, &mut buf[..len.min(8192)]) {
            Ok(0) | Err(_) => return,
            Ok(n) => len -= n,
        }
    }
}

/// `launch` with the container's output also kept in the log at `path`:
/// the log, which the caller gives the relay as its tap (or the console,
/// under a terminal), and a launch in which `Logged` became the streams it
/// means (output to /dev/null besides the log).
pub(crate) fn logged(
    launch: Launch,
    path: &Path,
    max_file_bytes: u64,
) -> Result<(Launch, Arc<LogFile>)> {
    let log = LogFile::open(path, max_file_bytes)?;
    // Opened apart, so the relay keeps stdout and stderr apart too.
    let null = || -> Result<OwnedFd> {
        Ok(File::options()
            .write(true)
            .open("/dev/null")
            .ctx(|| "opening /dev/null".into())?
            .into())
    };
    let launch = match launch {
        Launch::Logged { tty: true, .. } => Launch::Terminal {
            interactive: false,
            output: File::from(null()?),
        },
        Launch::Logged { tty: false, stdin } => Launch::Streams {
            stdin,
            stdout: null()?,
            stderr: null()?,
        },
        other => other,
    };
    Ok((launch, log))
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
