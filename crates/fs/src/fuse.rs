//! The read-only FUSE filesystem behind `skiff mount`.
//!
//! Inode numbers are the metadata's own (the root is 1, as FUSE wants).
//! Everything but file data is answered from the in-memory metadata; file
//! data comes from the [`Fetcher`], verified. The image never changes, so
//! entries and attributes are cached by the kernel for a day, and file pages
//! are kept across opens. Every call that would modify it gets `EROFS`.

use std::ffi::OsStr;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{
    AccessFlags, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation,
    INodeNo, InitFlags, IoctlFlags, KernelConfig, LockOwner, OpenAccMode, OpenFlags, ReplyAttr,
    ReplyData, ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyIoctl, ReplyOpen,
    ReplyStatfs, ReplyXattr, Request,
};
use skiff_format::{Attributes, InodeKind, Metadata};
use skiff_store::{FetchError, Fetcher};

/// Kernel cache lifetime for entries and attributes: the tree is immutable.
const TTL: Duration = Duration::from_secs(24 * 3600);
const BLOCK: u64 = 4096;

/// Records the order in which files are first opened and their chunks first
/// read. Lines are a path (a file's first open), or a path, a tab and the
/// file offset where a chunk starts (that chunk's first read): paths and
/// offsets, unlike chunk numbers, mean the same thing in a reconverted image.
pub struct TraceRecorder {
    state: Mutex<TraceState>,
}

struct TraceState {
    file: std::fs::File,
    paths: std::collections::HashMap<u32, Vec<u8>>,
    chunks: std::collections::HashSet<u32>,
}

impl TraceRecorder {
    pub fn create(path: &Path) -> std::io::Result<Self> {
        Ok(Self {
            state: Mutex::new(TraceState {
                file: std::fs::File::create(path)?,
                paths: Default::default(),
                chunks: Default::default(),
            }),
        })
    }

    fn opened<B: AsRef<[u8]>>(&self, md: &Metadata<B>, ino: u32) {
        let Ok(mut g) = self.state.lock() else { return };
        if g.paths.contains_key(&ino) {
            return;
        }
        let Some(path) = path_of(md, ino) else { return };
        let _ = g.file.write_all(&[&path[..], b"\n"].concat());
        g.paths.insert(ino, path);
    }

    fn read<B: AsRef<[u8]>>(&self, md: &Metadata<B>, ino: u32, offset: u64, len: u32) {
        let Ok(refs) = md.chunk_refs_in(ino, offset, len as u64) else {
            return;
        };
        let Ok(mut g) = self.state.lock() else { return };
        let Some(path) = g.paths.get(&ino).cloned() else {
            return;
        };
        for r in refs {
            let Some(c) = r.chunk else { continue };
            if g.chunks.insert(c) {
                let line = [&path[..], format!("\t{}\n", r.file_offset).as_bytes()].concat();
                let _ = g.file.write_all(&line);
            }
        }
    }
}

/// Some path of `ino` (the first found), found by walking; traces are rare.
fn path_of<B: AsRef<[u8]>>(md: &Metadata<B>, ino: u32) -> Option<Vec<u8>> {
    let mut found = None;
    let _ = md.walk(|p, e| {
        if found.is_none() && e.ino == ino {
            found = Some([b"/", p].concat());
        }
        Ok(())
    });
    found
}

/// Files below this size are not worth a backing copy: the page cache
/// serves their warm reads as well.
const PASSTHROUGH_MIN: u64 = 64 * 1024;

/// A verified local copy of a file that the kernel reads directly.
struct Backing {
    id: fuser::BackingId,
    _file: std::fs::File,
}

pub struct SkiffFs {
    fetcher: Arc<Fetcher>,
    trace: Option<TraceRecorder>,
    /// Where unnamed backing copies are created; `None` disables passthrough.
    passthrough_dir: Option<std::path::PathBuf>,
    passthrough: bool,
    backing: Mutex<std::collections::HashMap<u32, Arc<Backing>>>,
    /// Open files per inode, by mode. The kernel refuses (EIO) a
    /// passthrough open while the inode has cached opens, and the reverse,
    /// so an inode keeps the mode of its first open until all are closed.
    open_modes: Mutex<std::collections::HashMap<u32, OpenModes>>,
    id_shift: Option<IdShift>,
}

/// File owners as a user namespace's processes should see them: IDs below
/// `size` appear as `base + id`, others as the overflow ID 65534. One mount
/// per remap, so containers with a user namespace own their image's files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdShift {
    pub base: u32,
    pub size: u32,
}

/// What the kernel shows for an ID with no mapping (overflowuid).
pub const OVERFLOW_ID: u32 = 65534;

impl IdShift {
    pub fn apply(&self, id: u32) -> u32 {
        if id < self.size {
            self.base + id
        } else {
            OVERFLOW_ID
        }
    }
}

impl std::str::FromStr for IdShift {
    type Err = String;

    /// `BASE:SIZE`, e.g. `100000:65536`.
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("{s:?} is not BASE:SIZE (e.g. 100000:65536)");
        let (base, size) = s.split_once(':').ok_or_else(bad)?;
        let base: u32 = base.trim().parse().map_err(|_| bad())?;
        let size: u32 = size.trim().parse().map_err(|_| bad())?;
        if size == 0 || base.checked_add(size).is_none() {
            return Err(format!(
                "{s:?}: SIZE must be at least 1 and BASE + SIZE at most {}",
                u32::MAX
            ));
        }
        Ok(IdShift { base, size })
    }
}

impl std::fmt::Display for IdShift {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.base, self.size)
    }
}

#[derive(Default, Clone, Copy)]
struct OpenModes {
    cached: u32,
    passthrough: u32,
}

/// File handles say which mode a file was opened in, for `release`.
const FH_CACHED: u64 = 0;
const FH_PASSTHROUGH: u64 = 1;

fn errno_of(e: &skiff_format::FormatError) -> Errno {
    match e {
        skiff_format::FormatError::NoSuchInode(_) => Errno::ENOENT,
        skiff_format::FormatError::WrongKind { .. } => Errno::EINVAL,
        _ => Errno::EIO,
    }
}

fn time(secs: i64, nsec: u32) -> SystemTime {
    if secs >= 0 {
        UNIX_EPOCH + Duration::new(secs as u64, nsec)
    } else {
        UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs()) + Duration::from_nanos(nsec as u64)
    }
}

fn file_type(kind: InodeKind) -> FileType {
    match kind {
        InodeKind::Directory => FileType::Directory,
        InodeKind::File => FileType::RegularFile,
        InodeKind::Symlink => FileType::Symlink,
        InodeKind::CharDevice => FileType::CharDevice,
        InodeKind::BlockDevice => FileType::BlockDevice,
        InodeKind::Fifo => FileType::NamedPipe,
        InodeKind::Socket => FileType::Socket,
    }
}

impl SkiffFs {
    pub fn new(
        fetcher: Arc<Fetcher>,
        trace: Option<TraceRecorder>,
        passthrough_dir: Option<std::path::PathBuf>,
    ) -> Self {
        Self {
            fetcher,
            trace,
            passthrough_dir,
            passthrough: false,
            backing: Mutex::new(Default::default()),
            open_modes: Mutex::new(Default::default()),
            id_shift: None,
        }
    }

    /// Shows file owners shifted for a user namespace (see [`IdShift`]).
    pub fn with_id_shift(mut self, shift: Option<IdShift>) -> Self {
        self.id_shift = shift;
        self
    }

    fn owner(&self, id: u32) -> u32 {
        self.id_shift.map_or(id, |s| s.apply(id))
    }

    /// Copies a file whose chunks are all local into an unnamed temporary
    /// file, from verified chunks only. Having no name, the copy cannot be
    /// altered by path after it is checked; it vanishes with the mount.
    fn materialize(&self, ino: u32, size: u64) -> std::io::Result<Option<std::fs::File>> {
        let Some(dir) = &self.passthrough_dir else {
            return Ok(None);
        };
        let fd = rustix::fs::open(
            dir,
            rustix::fs::OFlags::TMPFILE | rustix::fs::OFlags::RDWR | rustix::fs::OFlags::CLOEXEC,
            rustix::fs::Mode::from_raw_mode(0o600),
        )?;
        let file = std::fs::File::from(fd);
        const STEP: u64 = 1 << 20;
        let mut off = 0;
        while off < size {
            let n = STEP.min(size - off) as u32;
            match self.fetcher.read_local(ino, off, n) {
                Ok(data) => {
                    // Skip zeros so holes stay holes.
                    if data.iter().any(|&b| b != 0) {
                        std::os::unix::fs::FileExt::write_all_at(&file, &data, off)?;
                    }
                }
                Err(FetchError::NotLocal) => return Ok(None),
                Err(e) => return Err(std::io::Error::other(e.to_string())),
            }
            off += n as u64;
        }
        file.set_len(size)?;
        Ok(Some(file))
    }

    /// Opens `ino` in passthrough if it can; otherwise hands the reply back.
    fn try_passthrough(&self, ino: u32, size: u64, reply: ReplyOpen) -> Option<ReplyOpen> {
        if !self.passthrough || size < PASSTHROUGH_MIN {
            return Some(reply);
        }
        let existing = self.backing.lock().ok().and_then(|b| b.get(&ino).cloned());
        let backing = match existing {
            Some(b) => b,
            None => {
                let file = match self.materialize(ino, size) {
                    Ok(Some(f)) => f,
                    Ok(None) => return Some(reply),
                    Err(e) => {
                        tracing::warn!(ino, error = %e, "no local copy for passthrough");
                        return Some(reply);
                    }
                };
                let id = match reply.open_backing(&file) {
                    Ok(id) => id,
                    Err(e) => {
                        tracing::warn!(ino, error = %e, "kernel refused the passthrough backing file");
                        return Some(reply);
                    }
                };
                let b = Arc::new(Backing { id, _file: file });
                match self.backing.lock() {
                    // Every open of one inode must use the same backing id.
                    Ok(mut map) => map.entry(ino).or_insert(b).clone(),
                    Err(_) => b,
                }
            }
        };
        self.fetcher
            .metrics()
            .passthrough_opens
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        reply.opened_passthrough(FileHandle(FH_PASSTHROUGH), FopenFlags::empty(), &backing.id);
        None
    }

    fn md(&self) -> &Metadata<Vec<u8>> {
        &self.fetcher.image().metadata
    }

    fn attr(&self, ino: u32) -> Result<FileAttr, Errno> {
        let a: Attributes = self.md().attributes(ino).map_err(|e| errno_of(&e))?;
        let kind = a.kind();
        // Blocks as a 4 KiB-block filesystem would allocate them: holes take none.
        let (size, blocks) = match kind {
            InodeKind::Directory => (BLOCK, BLOCK / 512),
            InodeKind::File => {
                let stored: u64 = self
                    .md()
                    .chunk_refs(ino)
                    .map_err(|e| errno_of(&e))?
                    .iter()
                    .filter(|r| r.chunk.is_some())
                    .map(|r| r.length as u64)
                    .sum();
                (a.size, stored.div_ceil(BLOCK) * (BLOCK / 512))
            }
            _ => (a.size, 0),
        };
        let t = time(a.mtime, a.mtime_nsec);
        Ok(FileAttr {
            ino: INodeNo(ino as u64),
            size,
            blocks,
            atime: t,
            mtime: t,
            ctime: t,
            crtime: t,
            kind: file_type(kind),
            perm: (a.mode & 0o7777) as u16,
            nlink: a.nlink,
            uid: self.owner(a.uid),
            gid: self.owner(a.gid),
            rdev: (a.rdev_major << 8 & 0xfff00)
                | (a.rdev_minor & 0xff)
                | ((a.rdev_minor & !0xff) << 12),
            blksize: BLOCK as u32,
            flags: 0,
        })
    }

    /// The directory entry at readdir offset `n`: 0 is ".", 1 is "..",
    /// and 2 + i is the directory's entry i.
    fn entry_at(&self, dir: INodeNo, n: u64) -> Result<Option<(u32, &[u8])>, Errno> {
        let dir = Self::ino(dir)?;
        let md = self.md();
        match n {
            0 => Ok(Some((dir, b"."))),
            1 => Ok(Some((md.parent(dir).map_err(|_| Errno::ENOTDIR)?, b".."))),
            n => match md.dir_entry(dir, (n - 2) as usize) {
                Ok(e) => Ok(e.map(|e| (e.ino, e.name))),
                Err(e) => Err(errno_of(&e)),
            },
        }
    }

    fn ino(n: INodeNo) -> Result<u32, Errno> {
        u32::try_from(n.0).map_err(|_| Errno::ENOENT)
    }
}

impl Filesystem for SkiffFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        let _ = config.set_max_readahead(1 << 20);
        let wanted = InitFlags::FUSE_DO_READDIRPLUS
            | InitFlags::FUSE_READDIRPLUS_AUTO
            | InitFlags::FUSE_PARALLEL_DIROPS;
        let _ = config.add_capabilities(wanted & config.capabilities());
        if config.capabilities().contains(InitFlags::FUSE_PASSTHROUGH) {
            self.passthrough = config.add_capabilities(InitFlags::FUSE_PASSTHROUGH).is_ok()
                && self.passthrough_dir.is_some()
                // Depth 1: backing files live on a plain filesystem, and an
                // overlayfs may still stack on this mount.
                && config.set_max_stack_depth(1).is_ok();
        }
        tracing::info!(passthrough = self.passthrough, "FUSE session started");
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let result = Self::ino(parent).and_then(|p| match self.md().lookup(p, name.as_bytes()) {
            Ok(Some(ino)) => self.attr(ino),
            Ok(None) => Err(Errno::ENOENT),
            Err(e) => Err(errno_of(&e)),
        });
        match result {
            Ok(attr) => reply.entry(&TTL, &attr, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match Self::ino(ino).and_then(|i| self.attr(i)) {
            Ok(attr) => reply.attr(&TTL, &attr),
            Err(e) => reply.error(e),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        match Self::ino(ino).and_then(|i| self.md().symlink_target(i).map_err(|e| errno_of(&e))) {
            Ok(t) => reply.data(t),
            Err(e) => reply.error(e),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        if flags.acc_mode() != OpenAccMode::O_RDONLY || flags.0 & libc_o_trunc() != 0 {
            return reply.error(Errno::EROFS);
        }
        let Ok(i) = Self::ino(ino) else {
            return reply.error(Errno::ENOENT);
        };
        let size = match self.md().attributes(i) {
            Ok(a) if a.kind() == InodeKind::File => a.size,
            Ok(_) => return reply.error(Errno::EINVAL),
            Err(e) => return reply.error(errno_of(&e)),
        };
        if let Some(t) = &self.trace {
            t.opened(self.md(), i);
        }
        // Held across the open so concurrent opens agree on the mode.
        let Ok(mut modes) = self.open_modes.lock() else {
            return reply.error(Errno::EIO);
        };
        let m = modes.entry(i).or_default();
        let reply = if m.cached == 0 {
            match self.try_passthrough(i, size, reply) {
                None => {
                    m.passthrough += 1;
                    return;
                }
                Some(r) if m.passthrough == 0 => r,
                Some(r) => {
                    // Passthrough opens exist: a cached open would fail.
                    tracing::warn!(ino = i, "passthrough unavailable for a passthrough inode");
                    return r.error(Errno::EIO);
                }
            }
        } else {
            reply
        };
        m.cached += 1;
        // The kernel may keep this file's pages across opens: it never changes.
        reply.opened(FileHandle(FH_CACHED), FopenFlags::FOPEN_KEEP_CACHE);
    }

    /// Nothing to flush in a read-only image. ENOSYS (not success) tells
    /// the kernel to stop sending FLUSH on every close; answering here only
    /// saves fuser's "not implemented" warning per mount.
    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        reply.error(Errno::ENOSYS);
    }

    fn release(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        if let (Ok(i), Ok(mut modes)) = (Self::ino(ino), self.open_modes.lock()) {
            if let Some(m) = modes.get_mut(&i) {
                if fh.0 == FH_PASSTHROUGH {
                    m.passthrough = m.passthrough.saturating_sub(1);
                } else {
                    m.cached = m.cached.saturating_sub(1);
                }
                if m.cached == 0 && m.passthrough == 0 {
                    modes.remove(&i);
                }
            }
        }
        reply.ok();
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let Ok(i) = Self::ino(ino) else {
            return reply.error(Errno::ENOENT);
        };
        if let Some(t) = &self.trace {
            t.read(self.md(), i, offset, size);
        }
        match self.fetcher.read(i, offset, size) {
            Ok(data) => reply.data(&data),
            Err(_) => reply.error(Errno::EIO),
        }
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match Self::ino(ino).and_then(|i| self.md().dir_len(i).map_err(|e| errno_of(&e))) {
            Ok(_) => reply.opened(
                FileHandle(0),
                FopenFlags::FOPEN_KEEP_CACHE | FopenFlags::FOPEN_CACHE_DIR,
            ),
            Err(e) => reply.error(if e == Errno::EINVAL {
                Errno::ENOTDIR
            } else {
                e
            }),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let mut next = offset;
        loop {
            let (child, name) = match self.entry_at(ino, next) {
                Ok(Some(e)) => e,
                Ok(None) => break,
                Err(e) => return reply.error(e),
            };
            let kind = self
                .md()
                .attributes(child)
                .map(|a| file_type(a.kind()))
                .unwrap_or(FileType::RegularFile);
            if reply.add(
                INodeNo(child as u64),
                next + 1,
                kind,
                OsStr::from_bytes(name),
            ) {
                break;
            }
            next += 1;
        }
        reply.ok();
    }

    fn readdirplus(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectoryPlus,
    ) {
        let mut next = offset;
        loop {
            let (child, name) = match self.entry_at(ino, next) {
                Ok(Some(e)) => e,
                Ok(None) => break,
                Err(e) => return reply.error(e),
            };
            let attr = match self.attr(child) {
                Ok(a) => a,
                Err(e) => return reply.error(e),
            };
            if reply.add(
                INodeNo(child as u64),
                next + 1,
                OsStr::from_bytes(name),
                &TTL,
                &attr,
                Generation(0),
            ) {
                break;
            }
            next += 1;
        }
        reply.ok();
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let md = self.md();
        let mut stored = 0u64;
        for c in 0..md.chunk_count() {
            if let Ok(info) = md.chunk(c) {
                stored += info.uncompressed_size as u64;
            }
        }
        reply.statfs(
            stored.div_ceil(BLOCK),
            0,
            0,
            md.inode_count() as u64,
            0,
            BLOCK as u32,
            255,
            BLOCK as u32,
        );
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        let Ok(i) = Self::ino(ino) else {
            return reply.error(Errno::ENOENT);
        };
        let xs = match self.md().xattrs(i) {
            Ok(x) => x,
            Err(e) => return reply.error(errno_of(&e)),
        };
        match xs.iter().find(|(n, _)| *n == name.as_bytes()) {
            None => reply.error(Errno::ENODATA),
            Some((_, v)) if size == 0 => reply.size(v.len() as u32),
            Some((_, v)) if v.len() > size as usize => reply.error(Errno::ERANGE),
            Some((_, v)) => reply.data(v),
        }
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        let Ok(i) = Self::ino(ino) else {
            return reply.error(Errno::ENOENT);
        };
        let xs = match self.md().xattrs(i) {
            Ok(x) => x,
            Err(e) => return reply.error(errno_of(&e)),
        };
        let mut list = Vec::new();
        for (n, _) in xs {
            list.extend_from_slice(n);
            list.push(0);
        }
        if size == 0 {
            reply.size(list.len() as u32)
        } else if list.len() > size as usize {
            reply.error(Errno::ERANGE)
        } else {
            reply.data(&list)
        }
    }

    fn access(&self, _req: &Request, ino: INodeNo, mask: AccessFlags, reply: ReplyEmpty) {
        if mask.contains(AccessFlags::W_OK) {
            return reply.error(Errno::EROFS);
        }
        match Self::ino(ino).and_then(|i| self.md().attributes(i).map_err(|e| errno_of(&e))) {
            Ok(_) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    /// No ioctl applies to a read-only image: ENOTTY, what a regular file
    /// answers, and without fuser's warning per call (programs probe, e.g.
    /// FS_IOC_GETFLAGS, on every file they copy).
    #[allow(clippy::too_many_arguments)]
    fn ioctl(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _flags: IoctlFlags,
        _cmd: u32,
        _in_data: &[u8],
        _out_size: u32,
        reply: ReplyIoctl,
    ) {
        reply.error(Errno::ENOTTY);
    }
}

fn libc_o_trunc() -> i32 {
    0o1000
}

#[cfg(test)]
mod tests {
    use super::IdShift;

    #[test]
    fn id_shift_parses_and_maps() {
        let s: IdShift = "100000:65536".parse().unwrap();
        assert_eq!(s.apply(0), 100000);
        assert_eq!(s.apply(65535), 165535);
        assert_eq!(s.apply(65536), super::OVERFLOW_ID);
        assert_eq!(s.to_string(), "100000:65536");
        for bad in ["", "100000", "a:1", "1:0", "4294967295:2", "-1:5"] {
            assert!(bad.parse::<IdShift>().is_err(), "{bad:?} accepted");
        }
    }
}
