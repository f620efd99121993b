//! A read-only NBD server for an image's EROFS view: the block device a
//! VM's guest mounts, through QEMU's built-in NBD client on a unix socket.
//! Every block read that falls in a file becomes a verified read of that
//! file through the mount's [`Fetcher`], so the guest gets lazy fetching,
//! the node's chunk cache and per-chunk verification like a FUSE mount.
//!
//! Written by hand: the protocol part needed here (fixed newstyle
//! handshake, `NBD_OPT_GO`/`EXPORT_NAME`, simple replies to READ) is small,
//! and no maintained crate serves NBD from a callback. The protocol is
//! NBD's own (nbd's doc/proto.md); what skiff speaks of it is in docs/vm.md.

use std::io::{self, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::Arc;

use skiff_store::Fetcher;

use crate::erofs::{ErofsImage, Piece};

const NBDMAGIC: u64 = 0x4e42_444d_4147_4943;
const IHAVEOPT: u64 = 0x4948_4156_454f_5054;
const REPLY_MAGIC: u64 = 0x0003_e889_0455_65a9;
const REQUEST_MAGIC: u32 = 0x2560_9513;
const SIMPLE_REPLY_MAGIC: u32 = 0x6744_6698;

const FLAG_FIXED_NEWSTYLE: u16 = 1;
const FLAG_NO_ZEROES: u16 = 2;
const CLIENT_NO_ZEROES: u32 = 2;

const OPT_EXPORT_NAME: u32 = 1;
const OPT_ABORT: u32 = 2;
const OPT_INFO: u32 = 6;
const OPT_GO: u32 = 7;

const REP_ACK: u32 = 1;
const REP_INFO: u32 = 3;
const REP_ERR_UNSUP: u32 = (1 << 31) | 1;
const INFO_EXPORT: u16 = 0;

/// HAS_FLAGS | READ_ONLY | CAN_MULTI_CONN: reads only, so any number of
/// connections see the same bytes.
const TRANSMISSION_FLAGS: u16 = 1 | 2 | (1 << 8);

const CMD_READ: u16 = 0;
const CMD_DISC: u16 = 2;
const CMD_FLUSH: u16 = 3;

const EPERM: u32 = 1;
const EIO: u32 = 5;
const EINVAL: u32 = 22;
/// Reads larger than this are refused (QEMU asks for at most 32 MiB).
const MAX_READ: u32 = 32 << 20;

/// What a connection reads from.
pub struct BlockDevice {
    pub image: Arc<ErofsImage>,
    pub fetcher: Arc<Fetcher>,
    pub clients: Clients,
}

/// The clients connected now, and when that last changed: a daemon with
/// none for long enough may stop. A probe of the socket (is it served?)
/// counts as a client, so a caller that has just seen it served has a
/// whole idle period to connect.
#[derive(Debug)]
pub struct Clients {
    state: std::sync::Mutex<(usize, std::time::Instant)>,
}

impl Default for Clients {
    fn default() -> Self {
        Self {
            state: std::sync::Mutex::new((0, std::time::Instant::now())),
        }
    }
}

impl Clients {
    fn change(&self, up: bool) {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        s.0 = if up { s.0 + 1 } else { s.0.saturating_sub(1) };
        s.1 = std::time::Instant::now();
    }

    /// How long there has been no client; `None` while there is one.
    pub fn idle_for(&self) -> Option<std::time::Duration> {
        let s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        (s.0 == 0).then(|| s.1.elapsed())
    }
}

impl BlockDevice {
    /// Fills `buf` with the device's bytes at `offset`.
    fn read(&self, offset: u64, buf: &mut [u8]) -> Result<(), String> {
        let mut at = 0;
        for piece in self.image.pieces(offset, buf.len()) {
            match piece {
                Piece::Meta { offset, len } => {
                    let o = offset as usize;
                    buf[at..at + len].copy_from_slice(&self.image.meta[o..o + len]);
                    at += len;
                }
                Piece::Zero { len } => {
                    buf[at..at + len].fill(0);
                    at += len;
                }
                Piece::File { ino, offset, len } => {
                    let data = self
                        .fetcher
                        .read(ino, offset, len as u32)
                        .map_err(|e| format!("inode {ino} at {offset}: {e}"))?;
                    if data.len() != len {
                        return Err(format!("inode {ino} at {offset}: short read"));
                    }
                    buf[at..at + len].copy_from_slice(&data);
                    at += len;
                }
            }
        }
        buf[at..].fill(0);
        Ok(())
    }
}

/// Serves `device` to every client of `listener`, one thread each, until
/// the listener fails.
pub fn serve(listener: UnixListener, device: Arc<BlockDevice>) -> io::Result<()> {
    for conn in listener.incoming() {
        let conn = conn?;
        let device = device.clone();
        device.clients.change(true);
        std::thread::spawn(move || {
            if let Err(e) = serve_client(conn, &device) {
                if e.kind() != io::ErrorKind::UnexpectedEof {
                    tracing::warn!(error = %e, "NBD client dropped");
                }
            }
            device.clients.change(false);
        });
    }
    Ok(())
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}
fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}
fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_be_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

fn option_reply(s: &mut UnixStream, option: u32, kind: u32, data: &[u8]) -> io::Result<()> {
    let mut m = Vec::with_capacity(20 + data.len());
    m.extend_from_slice(&REPLY_MAGIC.to_be_bytes());
    m.extend_from_slice(&option.to_be_bytes());
    m.extend_from_slice(&kind.to_be_bytes());
    m.extend_from_slice(&(data.len() as u32).to_be_bytes());
    m.extend_from_slice(data);
    s.write_all(&m)
}

fn serve_client(mut s: UnixStream, device: &BlockDevice) -> io::Result<()> {
    let size = device.image.size();
    let mut hello = Vec::with_capacity(18);
    hello.extend_from_slice(&NBDMAGIC.to_be_bytes());
    hello.extend_from_slice(&IHAVEOPT.to_be_bytes());
    hello.extend_from_slice(&(FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES).to_be_bytes());
    s.write_all(&hello)?;
    let mut flags = [0u8; 4];
    s.read_exact(&mut flags)?;
    let no_zeroes = u32::from_be_bytes(flags) & CLIENT_NO_ZEROES != 0;
    // Options, until the client picks the export.
    loop {
        let mut head = [0u8; 16];
        s.read_exact(&mut head)?;
        if u64_at(&head, 0) != IHAVEOPT {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "bad option magic",
            ));
        }
        let (option, len) = (u32_at(&head, 8), u32_at(&head, 12));
        if len > 64 << 10 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "option too long",
            ));
        }
        let mut data = vec![0u8; len as usize];
        s.read_exact(&mut data)?;
        match option {
            OPT_EXPORT_NAME => {
                let mut m = Vec::with_capacity(134);
                m.extend_from_slice(&size.to_be_bytes());
                m.extend_from_slice(&TRANSMISSION_FLAGS.to_be_bytes());
                if !no_zeroes {
                    m.extend_from_slice(&[0u8; 124]);
                }
                s.write_all(&m)?;
                break;
            }
            OPT_INFO | OPT_GO => {
                let mut info = Vec::with_capacity(12);
                info.extend_from_slice(&INFO_EXPORT.to_be_bytes());
                info.extend_from_slice(&size.to_be_bytes());
                info.extend_from_slice(&TRANSMISSION_FLAGS.to_be_bytes());
                option_reply(&mut s, option, REP_INFO, &info)?;
                option_reply(&mut s, option, REP_ACK, &[])?;
                if option == OPT_GO {
                    break;
                }
            }
            OPT_ABORT => {
                let _ = option_reply(&mut s, option, REP_ACK, &[]);
                return Ok(());
            }
            // Structured replies, TLS, listing, meta contexts: declined.
            _ => option_reply(&mut s, option, REP_ERR_UNSUP, &[])?,
        }
    }
    // Transmission: requests are read here and answered by a few workers,
    // out of order (matched by handle, as NBD allows), so one read waiting
    // on the registry does not hold up the guest's others.
    let writer = std::sync::Mutex::new(s.try_clone()?);
    let reply = |handle: [u8; 8], error: u32, data: &[u8]| -> io::Result<()> {
        let mut m = Vec::with_capacity(16 + data.len());
        m.extend_from_slice(&SIMPLE_REPLY_MAGIC.to_be_bytes());
        m.extend_from_slice(&error.to_be_bytes());
        m.extend_from_slice(&handle);
        m.extend_from_slice(data);
        writer
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .write_all(&m)
    };
    let (jobs, queue) = std::sync::mpsc::sync_channel::<ReadJob>(READ_WORKERS);
    let queue = std::sync::Mutex::new(queue);
    std::thread::scope(|scope| {
        for _ in 0..READ_WORKERS {
            scope.spawn(|| loop {
                let job = queue.lock().unwrap_or_else(|p| p.into_inner()).recv();
                let Ok(job) = job else { return };
                let mut buf = vec![0u8; job.len as usize];
                let sent = match device.read(job.offset, &mut buf) {
                    Ok(()) => reply(job.handle, 0, &buf),
                    Err(e) => {
                        tracing::error!(offset = job.offset, len = job.len, error = %e, "block read failed");
                        reply(job.handle, EIO, &[])
                    }
                };
                // The client is gone; the reader sees it too and ends.
                if sent.is_err() {
                    return;
                }
            });
        }
        let result = read_requests(&mut s, size, &jobs, &reply);
        drop(jobs);
        result
    })
}

/// One guest read for a worker.
struct ReadJob {
    handle: [u8; 8],
    offset: u64,
    len: u32,
}

/// Sends one simple reply: the handle, an error (0 for none), the data.
type Reply<'a> = dyn Fn([u8; 8], u32, &[u8]) -> io::Result<()> + Sync + 'a;

/// Reads on one connection handled at once.
const READ_WORKERS: usize = 8;

fn read_requests(
    s: &mut UnixStream,
    size: u64,
    jobs: &std::sync::mpsc::SyncSender<ReadJob>,
    reply: &Reply<'_>,
) -> io::Result<()> {
    loop {
        let mut req = [0u8; 28];
        s.read_exact(&mut req)?;
        if u32_at(&req, 0) != REQUEST_MAGIC {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "bad request magic",
            ));
        }
        let kind = u16_at(&req, 6);
        let handle: [u8; 8] = req[8..16].try_into().expect("8 bytes");
        let (offset, len) = (u64_at(&req, 16), u32_at(&req, 24));
        match kind {
            CMD_READ => {
                if len > MAX_READ || offset.checked_add(len as u64).is_none_or(|e| e > size) {
                    reply(handle, EINVAL, &[])?;
                    continue;
                }
                let job = ReadJob {
                    handle,
                    offset,
                    len,
                };
                if jobs.send(job).is_err() {
                    return Err(io::Error::other("the read workers are gone"));
                }
            }
            CMD_DISC => return Ok(()),
            // Nothing is ever written, so there is nothing to flush.
            CMD_FLUSH => reply(handle, 0, &[])?,
            // A write carries its data: read and drop it, then refuse.
            1 => {
                if len > MAX_READ {
                    return Err(io::Error::new(io::ErrorKind::InvalidData, "write too long"));
                }
                io::copy(&mut (&mut *s).take(len as u64), &mut io::sink())?;
                reply(handle, EPERM, &[])?
            }
            _ => reply(handle, EINVAL, &[])?,
        }
    }
}
