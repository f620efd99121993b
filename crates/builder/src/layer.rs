//! Reads one OCI layer: verifies its digest, decompresses it, parses it as
//! tar, and turns each member into a normalised [`LayerEntry`].
//!
//! Paths are normalised lexically: leading `/` and `./` dropped, `.` and
//! empty components removed, `..` applied; a path that climbs above the root
//! is an error. Nothing here touches the host filesystem.

use std::io::{self, Read};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use skiff_format::metadata::{NAME_MAX, SYMLINK_MAX, XATTR_NAME_MAX, XATTR_VALUE_MAX};
use skiff_oci::manifest::{layer_compression, LayerCompression};
use skiff_oci::{Descriptor, Repository};

use crate::error::{BuildError, Result};
use crate::tarstream::{TarEntry, TarKind, TarReader};

pub const WHITEOUT_PREFIX: &[u8] = b".wh.";
pub const OPAQUE_MARKER: &[u8] = b".wh..wh..opq";

/// A path inside the image, as components.
pub type Components = Vec<Vec<u8>>;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryKind {
    File,
    Directory,
    Symlink(Vec<u8>),
    HardLink(Components),
    CharDevice,
    BlockDevice,
    Fifo,
    /// `.wh.NAME`: deletes `NAME` from lower layers; `path` names `NAME`.
    Whiteout,
    /// `.wh..wh..opq`: hides lower layers' children; `path` names the directory.
    Opaque,
}

/// The attributes the image keeps for an entry.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct EntryMeta {
    /// Permission bits, including setuid, setgid and sticky.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: i64,
    pub mtime_nsec: u32,
    pub rdev_major: u32,
    pub rdev_minor: u32,
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

#[derive(Debug, Clone)]
pub struct LayerEntry {
    pub index: u64,
    pub path: Components,
    pub kind: EntryKind,
    pub meta: EntryMeta,
    pub size: u64,
    pub sparse: Option<Vec<(u64, u64)>>,
}

pub fn display_path(path: &[Vec<u8>]) -> String {
    if path.is_empty() {
        return "/".to_string();
    }
    path.iter()
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect::<Vec<_>>()
        .join("/")
}

/// Normalises a tar path. `Err` carries the reason.
pub fn normalize(raw: &[u8]) -> Result<Components, String> {
    let mut out: Components = Vec::new();
    for comp in raw.split(|&b| b == b'/') {
        match comp {
            b"" | b"." => {}
            b".." => {
                if out.pop().is_none() {
                    return Err("climbs above the image root".into());
                }
            }
            c if c.contains(&0) => return Err("contains a NUL byte".into()),
            c if c.len() > NAME_MAX => {
                return Err(format!(
                    "has a component of {} bytes (limit {NAME_MAX})",
                    c.len()
                ))
            }
            c => out.push(c.to_vec()),
        }
    }
    Ok(out)
}

/// Converts one tar member, or returns `None` for members the image ignores
/// (aufs metadata such as `.wh..wh.plnk`).
pub fn convert_entry(t: TarEntry, layer: &str) -> Result<Option<LayerEntry>> {
    let raw_path = String::from_utf8_lossy(&t.path).into_owned();
    let hostile = |reason: String| BuildError::HostileLayer {
        layer: layer.to_string(),
        path: raw_path.clone(),
        reason,
    };
    let mut path = normalize(&t.path).map_err(&hostile)?;
    let uid =
        u32::try_from(t.uid).map_err(|_| hostile(format!("uid {} is out of range", t.uid)))?;
    let gid =
        u32::try_from(t.gid).map_err(|_| hostile(format!("gid {} is out of range", t.gid)))?;
    let mut xattrs = Vec::with_capacity(t.xattrs.len());
    for (name, value) in t.xattrs {
        if name.is_empty() || name.len() > XATTR_NAME_MAX || name.contains(&0) {
            return Err(hostile("has an invalid xattr name".into()));
        }
        if value.len() > XATTR_VALUE_MAX {
            return Err(hostile(format!(
                "has an xattr value of {} bytes",
                value.len()
            )));
        }
        // overlayfs would act on these if the image were an overlay lower layer.
        if name.starts_with(b"trusted.overlay.") {
            continue;
        }
        xattrs.push((name, value));
    }
    xattrs.sort();
    xattrs.dedup_by(|a, b| a.0 == b.0);
    let meta = EntryMeta {
        mode: t.mode,
        uid,
        gid,
        mtime: t.mtime,
        mtime_nsec: t.mtime_nsec,
        rdev_major: t.dev_major,
        rdev_minor: t.dev_minor,
        xattrs,
    };
    let kind = match t.kind {
        TarKind::File
        | TarKind::Directory
        | TarKind::Fifo
        | TarKind::CharDevice
        | TarKind::BlockDevice
            if path.last().is_some_and(|n| n.starts_with(WHITEOUT_PREFIX)) =>
        {
            let name = path.pop().expect("checked");
            if name == OPAQUE_MARKER {
                EntryKind::Opaque
            } else if name.starts_with(b".wh..wh.") {
                return Ok(None);
            } else {
                let target = name[WHITEOUT_PREFIX.len()..].to_vec();
                if target.is_empty() || target == b"." || target == b".." {
                    return Err(hostile("is a whiteout of nothing".into()));
                }
                path.push(target);
                EntryKind::Whiteout
            }
        }
        TarKind::File => EntryKind::File,
        TarKind::Directory => EntryKind::Directory,
        TarKind::Fifo => EntryKind::Fifo,
        TarKind::CharDevice => EntryKind::CharDevice,
        TarKind::BlockDevice => EntryKind::BlockDevice,
        TarKind::Symlink => {
            if t.link.is_empty() || t.link.len() > SYMLINK_MAX || t.link.contains(&0) {
                return Err(hostile(format!(
                    "is a symlink with an invalid target of {} bytes",
                    t.link.len()
                )));
            }
            EntryKind::Symlink(t.link)
        }
        TarKind::HardLink => {
            let target = normalize(&t.link)
                .map_err(|r| hostile(format!("is a hardlink whose target {r}")))?;
            if target.is_empty() {
                return Err(hostile("is a hardlink to the image root".into()));
            }
            EntryKind::HardLink(target)
        }
    };
    if path.is_empty() && !matches!(kind, EntryKind::Directory | EntryKind::Opaque) {
        return Err(hostile("puts a non-directory at the image root".into()));
    }
    Ok(Some(LayerEntry {
        index: t.index,
        path,
        kind,
        meta,
        size: t.size,
        sparse: t.sparse,
    }))
}

/// Counts bytes read, for progress and throughput.
pub struct Counting<R> {
    inner: R,
    on_read: Box<dyn FnMut(u64) + Send>,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        (self.on_read)(n as u64);
        Ok(n)
    }
}

/// Decompresses on its own thread, a few buffers ahead of the reader, so
/// inflating and digest checking overlap with tar parsing and chunking.
struct ReadAhead {
    rx: std::sync::mpsc::Receiver<io::Result<Vec<u8>>>,
    buf: Vec<u8>,
    pos: usize,
    done: bool,
}

const READ_AHEAD_BUF: usize = 256 * 1024;
/// Buffers decompressed ahead: enough to keep both cores busy while the
/// builder skips deleted files or waits on compression.
const READ_AHEAD_DEPTH: usize = 32;

impl ReadAhead {
    fn spawn(mut src: Box<dyn Read + Send>) -> io::Result<Self> {
        let (tx, rx) = std::sync::mpsc::sync_channel::<io::Result<Vec<u8>>>(READ_AHEAD_DEPTH);
        std::thread::Builder::new()
            .name("skiff-inflate".into())
            .spawn(move || loop {
                let mut buf = vec![0u8; READ_AHEAD_BUF];
                let mut filled = 0;
                let result = loop {
                    match src.read(&mut buf[filled..]) {
                        Ok(0) => break Ok(()),
                        Ok(n) => {
                            filled += n;
                            if filled == buf.len() {
                                break Ok(());
                            }
                        }
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => break Err(e),
                    }
                };
                buf.truncate(filled);
                let end = filled == 0 || result.is_err();
                let msg = match result {
                    Ok(()) => Ok(buf),
                    Err(e) if filled > 0 => {
                        // Deliver what arrived, then the error.
                        if tx.send(Ok(buf)).is_err() {
                            return;
                        }
                        Err(e)
                    }
                    Err(e) => Err(e),
                };
                // The reader went away (an error upstream): stop quietly.
                if tx.send(msg).is_err() || end {
                    return;
                }
            })?;
        Ok(Self {
            rx,
            buf: Vec::new(),
            pos: 0,
            done: false,
        })
    }
}

impl Read for ReadAhead {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.buf.len() {
            if self.done {
                return Ok(0);
            }
            match self.rx.recv() {
                Ok(Ok(b)) if b.is_empty() => self.done = true,
                Ok(Ok(b)) => {
                    self.buf = b;
                    self.pos = 0;
                }
                Ok(Err(e)) => {
                    self.done = true;
                    return Err(e);
                }
                Err(_) => {
                    self.done = true;
                    return Err(io::Error::other("the decompression thread stopped"));
                }
            }
        }
        let n = out.len().min(self.buf.len() - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// A Wasm artifact's module blob of `size` bytes, read as a tar holding it
/// alone at [`skiff_oci::manifest::WASM_ARTIFACT_MODULE`], executable. The
/// blob is read to its end, so its digest is still checked.
fn wasm_module_as_tar(blob: impl Read + Send + 'static, size: u64) -> Box<dyn Read + Send> {
    let mut header = tar::Header::new_ustar();
    let path = skiff_oci::manifest::WASM_ARTIFACT_MODULE.trim_start_matches('/');
    // A short fixed name: it fits the header's name field.
    let _ = header.set_path(path);
    header.set_size(size);
    header.set_mode(0o755);
    header.set_entry_type(tar::EntryType::Regular);
    header.set_cksum();
    let padding = (512 - size % 512) % 512;
    // The two zero blocks that end a tar.
    let end = vec![0u8; padding as usize + 1024];
    Box::new(
        io::Cursor::new(header.as_bytes().to_vec())
            .chain(blob)
            .chain(io::Cursor::new(end)),
    )
}

/// An open layer: a tar reader over the decompressed, digest-checked blob.
pub struct LayerStream {
    pub name: String,
    tar: TarReader<Box<dyn Read + Send>>,
    tar_bytes: Arc<AtomicU64>,
}

impl LayerStream {
    /// Opens a layer blob. `on_read` receives compressed byte counts.
    pub fn open(
        repo: &dyn Repository,
        desc: &Descriptor,
        on_read: Box<dyn FnMut(u64) + Send>,
    ) -> Result<Self> {
        let name = format!("layer {}", desc.digest);
        let compression =
            layer_compression(&desc.media_type).ok_or_else(|| BuildError::NotALayer {
                digest: desc.digest.clone(),
                media_type: desc.media_type.clone(),
            })?;
        if desc.urls.as_ref().is_some_and(|u| !u.is_empty()) {
            tracing::warn!(digest = %desc.digest, "layer has foreign URLs; fetching it from the repository");
        }
        let blob = Counting {
            inner: repo.open_blob(desc)?,
            on_read,
        };
        let blob = io::BufReader::with_capacity(256 * 1024, blob);
        // Sniff: some producers label gzip layers as plain tar and vice versa.
        let mut blob = blob;
        let head = io::BufRead::fill_buf(&mut blob).map_err(|e| BuildError::layer_io(&name, e))?;
        let sniffed = if compression == LayerCompression::WasmModule {
            LayerCompression::WasmModule
        } else if head.starts_with(&[0x1f, 0x8b]) {
            LayerCompression::Gzip
        } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            LayerCompression::Zstd
        } else {
            LayerCompression::None
        };
        if sniffed != compression {
            tracing::debug!(digest = %desc.digest, ?compression, ?sniffed, "layer compression differs from its media type");
        }
        let reader: Box<dyn Read + Send> = match sniffed {
            LayerCompression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(blob)),
            LayerCompression::Zstd => Box::new(
                zstd::stream::read::Decoder::with_buffer(blob)
                    .map_err(|e| BuildError::layer_io(&name, e))?,
            ),
            LayerCompression::None => Box::new(blob),
            LayerCompression::WasmModule => wasm_module_as_tar(blob, desc.size),
        };
        let reader = ReadAhead::spawn(reader).map_err(|e| BuildError::layer_io(&name, e))?;
        let tar_bytes = Arc::new(AtomicU64::new(0));
        let counter = tar_bytes.clone();
        let reader: Box<dyn Read + Send> = Box::new(Counting {
            inner: reader,
            on_read: Box::new(move |n| {
                counter.fetch_add(n, Ordering::Relaxed);
            }),
        });
        Ok(Self {
            name,
            tar: TarReader::new(reader),
            tar_bytes,
        })
    }

    /// The next entry that matters to the image, if any.
    pub fn next_entry(&mut self) -> Result<Option<LayerEntry>> {
        loop {
            let t = self
                .tar
                .next_entry()
                .map_err(|e| BuildError::layer_io(&self.name, e))?;
            let Some(t) = t else { return Ok(None) };
            if let Some(e) = convert_entry(t, &self.name)? {
                return Ok(Some(e));
            }
        }
    }

    /// The current regular file's stored bytes.
    pub fn data(&mut self) -> crate::tarstream::MemberData<'_, Box<dyn Read + Send>> {
        self.tar.data()
    }

    /// Uncompressed tar bytes read so far.
    pub fn tar_bytes(&self) -> u64 {
        self.tar_bytes.load(Ordering::Relaxed)
    }

    /// Reads the rest of the blob so its digest is checked, and fails if it
    /// does not match. Call after the last entry.
    pub fn finish(self) -> Result<()> {
        let name = self.name;
        let mut inner = self.tar.into_inner();
        io::copy(&mut inner, &mut io::sink()).map_err(|e| BuildError::layer_io(&name, e))?;
        Ok(())
    }
}
