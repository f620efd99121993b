//! Zero-copy, validating reader for skiff metadata (the "bootstrap").
//!
//! [`Metadata::parse`] checks only the header and section bounds, in O(1).
//! Each accessor checks the records it touches, so lookups by inode or path
//! never parse the whole file, and hostile bytes yield errors, never panics.
//! [`Metadata::validate`] checks everything, for `skiff check` and the fuzzer.

use zerocopy::little_endian::U32;
use zerocopy::FromBytes;

use crate::compression::Compression;
use crate::digest::{Digest, DigestAlgorithm};
use crate::error::{corrupt, FormatError, Result};
use crate::layout::*;

/// File type bits of `st_mode`.
pub const S_IFMT: u32 = 0o170000;
pub const S_IFSOCK: u32 = 0o140000;
pub const S_IFLNK: u32 = 0o120000;
pub const S_IFREG: u32 = 0o100000;
pub const S_IFBLK: u32 = 0o060000;
pub const S_IFDIR: u32 = 0o040000;
pub const S_IFCHR: u32 = 0o020000;
pub const S_IFIFO: u32 = 0o010000;

/// Longest name, symlink target and xattr value the format admits (Linux limits).
pub const NAME_MAX: usize = 255;
pub const SYMLINK_MAX: usize = 4095;
pub const XATTR_NAME_MAX: usize = 255;
pub const XATTR_VALUE_MAX: usize = 65536;
/// Largest uncompressed chunk.
pub const CHUNK_MAX: u32 = 16 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum InodeKind {
    Directory,
    File,
    Symlink,
    CharDevice,
    BlockDevice,
    Fifo,
    Socket,
}

impl InodeKind {
    pub fn from_mode(mode: u32) -> Option<Self> {
        Some(match mode & S_IFMT {
            S_IFDIR => Self::Directory,
            S_IFREG => Self::File,
            S_IFLNK => Self::Symlink,
            S_IFCHR => Self::CharDevice,
            S_IFBLK => Self::BlockDevice,
            S_IFIFO => Self::Fifo,
            S_IFSOCK => Self::Socket,
            _ => return None,
        })
    }

    /// The `DT_*` value readdir reports.
    pub fn dirent_type(self) -> u8 {
        match self {
            Self::Fifo => 1,
            Self::CharDevice => 2,
            Self::Directory => 4,
            Self::BlockDevice => 6,
            Self::File => 8,
            Self::Symlink => 10,
            Self::Socket => 12,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Directory => "directory",
            Self::File => "file",
            Self::Symlink => "symlink",
            Self::CharDevice => "char device",
            Self::BlockDevice => "block device",
            Self::Fifo => "fifo",
            Self::Socket => "socket",
        }
    }
}

/// Decoded header fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub version: u32,
    pub digest_algorithm: DigestAlgorithm,
    pub compression: Compression,
    pub chunking: Chunking,
    pub inode_count: u32,
}

/// Chunking parameters an image was built with. A chunk dictionary is only
/// useful to a build that uses the same ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Chunking {
    pub min: u32,
    pub avg: u32,
    pub max: u32,
    /// Files smaller than this are packed together into shared chunks.
    pub pack_threshold: u32,
}

impl Default for Chunking {
    fn default() -> Self {
        Self::with_average(64 * 1024)
    }
}

impl Chunking {
    /// min = avg/4, max = avg*4, pack files under min.
    pub fn with_average(avg: u32) -> Self {
        Self {
            min: avg / 4,
            avg,
            max: avg.saturating_mul(4).min(CHUNK_MAX),
            pack_threshold: avg / 4,
        }
    }

    pub fn check(&self) -> Result<()> {
        let ok = self.min >= 64
            && self.min <= self.avg
            && self.avg <= self.max
            && self.max <= CHUNK_MAX
            && self.pack_threshold <= self.max;
        if ok {
            Ok(())
        } else {
            Err(corrupt(format!("invalid chunking parameters {self:?}")))
        }
    }
}

/// The attributes `stat` reports for an inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attributes {
    pub ino: u32,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub nlink: u32,
    pub size: u64,
    pub mtime: i64,
    pub mtime_nsec: u32,
    pub rdev_major: u32,
    pub rdev_minor: u32,
}

impl Attributes {
    pub fn kind(&self) -> InodeKind {
        // `Metadata::inode` rejects modes with an unknown type.
        InodeKind::from_mode(self.mode).unwrap_or(InodeKind::File)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DirEntry<'a> {
    pub name: &'a [u8],
    pub ino: u32,
    pub file_type: u8,
}

/// Where one range of a regular file's bytes lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkRef {
    pub file_offset: u64,
    /// `None` for a hole (reads as zeros).
    pub chunk: Option<u32>,
    pub chunk_offset: u32,
    pub length: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkInfo {
    pub digest: Digest,
    pub blob: u32,
    pub compression: Compression,
    pub compressed_offset: u64,
    pub compressed_size: u32,
    pub uncompressed_size: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlobInfo {
    /// sha256 of the blob (its OCI digest).
    pub digest: Digest,
    pub size: u64,
    pub chunk_count: u32,
}

impl BlobInfo {
    pub fn oci_digest(&self) -> String {
        format!("sha256:{}", self.digest.to_hex())
    }
}

/// A validated view of skiff metadata over any byte container (a `Vec`, an mmap).
pub struct Metadata<B> {
    buf: B,
    header: Header,
    sections: [(usize, usize); SECTION_COUNT],
}

impl<B: AsRef<[u8]>> Metadata<B> {
    /// Checks the header and section bounds. O(1) in the size of the tree.
    pub fn parse(buf: B) -> Result<Self> {
        let bytes = buf.as_ref();
        if bytes.len() < 8 || bytes[..8] != METADATA_MAGIC {
            return Err(FormatError::BadMagic);
        }
        let (raw, _) = RawHeader::read_from_prefix(bytes).map_err(|_| FormatError::Truncated {
            what: "header",
            need: HEADER_SIZE as u64,
            have: bytes.len() as u64,
        })?;
        if raw.version.get() != METADATA_VERSION {
            return Err(FormatError::UnsupportedVersion(
                raw.version.get(),
                METADATA_VERSION,
            ));
        }
        if raw.header_size.get() as usize != HEADER_SIZE
            || raw.flags.get() != 0
            || raw.reserved0 != [0; 2]
            || raw.reserved1.iter().any(|&b| b != 0)
        {
            return Err(corrupt("header has unknown flags or sizes"));
        }
        if raw.root_ino.get() != ROOT_INO {
            return Err(corrupt("root inode is not 1"));
        }
        let chunking = Chunking {
            min: raw.chunk_min.get(),
            avg: raw.chunk_avg.get(),
            max: raw.chunk_max.get(),
            pack_threshold: raw.pack_threshold.get(),
        };
        chunking.check()?;
        let header = Header {
            version: raw.version.get(),
            digest_algorithm: DigestAlgorithm::from_u8(raw.digest_algorithm)?,
            compression: Compression::from_u8(raw.compression)?,
            chunking,
            inode_count: raw.inode_count.get(),
        };
        let mut sections = [(0usize, 0usize); SECTION_COUNT];
        for (i, section) in Section::ALL.iter().enumerate() {
            let s = raw.sections[i];
            let bad = || FormatError::BadSection {
                section: section.name(),
            };
            let offset = usize::try_from(s.offset.get()).map_err(|_| bad())?;
            let length = usize::try_from(s.length.get()).map_err(|_| bad())?;
            let end = offset.checked_add(length).ok_or_else(bad)?;
            if offset < HEADER_SIZE || end > bytes.len() || length % section.record_size() != 0 {
                return Err(bad());
            }
            sections[i] = (offset, length);
        }
        let inode_records = sections[Section::Inodes as usize].1 / size_of::<RawInode>();
        if inode_records != header.inode_count as usize || header.inode_count == 0 {
            return Err(corrupt("inode count does not match the inode table"));
        }
        let md = Self {
            buf,
            header,
            sections,
        };
        if md.attributes(ROOT_INO)?.kind() != InodeKind::Directory {
            return Err(corrupt("root inode is not a directory"));
        }
        Ok(md)
    }

    pub fn header(&self) -> &Header {
        &self.header
    }

    pub fn as_bytes(&self) -> &[u8] {
        self.buf.as_ref()
    }

    pub fn into_inner(self) -> B {
        self.buf
    }

    fn section(&self, s: Section) -> &[u8] {
        let (off, len) = self.sections[s as usize];
        &self.buf.as_ref()[off..off + len]
    }

    fn records<T: FromBytes + zerocopy::KnownLayout + zerocopy::Immutable>(
        &self,
        s: Section,
    ) -> &[T] {
        // Section lengths were checked to be whole multiples of the record
        // size, and every record type has alignment 1.
        <[T]>::ref_from_bytes(self.section(s)).unwrap_or(&[])
    }

    fn bytes(&self, offset: u64, len: usize, what: &str) -> Result<&[u8]> {
        let pool = self.section(Section::Bytes);
        let start = usize::try_from(offset).map_err(|_| corrupt(format!("{what} out of range")))?;
        start
            .checked_add(len)
            .and_then(|end| pool.get(start..end))
            .ok_or_else(|| corrupt(format!("{what} out of range")))
    }

    fn slice<'a, T>(&self, table: &'a [T], start: u64, count: u64, what: &str) -> Result<&'a [T]> {
        let s = usize::try_from(start).ok();
        let n = usize::try_from(count).ok();
        s.zip(n)
            .and_then(|(s, n)| s.checked_add(n).and_then(|e| table.get(s..e)))
            .ok_or_else(|| corrupt(format!("{what} out of range")))
    }

    fn raw_inode(&self, ino: u32) -> Result<&RawInode> {
        let inodes: &[RawInode] = self.records(Section::Inodes);
        ino.checked_sub(1)
            .and_then(|i| inodes.get(i as usize))
            .ok_or(FormatError::NoSuchInode(ino as u64))
    }

    pub fn inode_count(&self) -> u32 {
        self.header.inode_count
    }

    pub fn attributes(&self, ino: u32) -> Result<Attributes> {
        let r = self.raw_inode(ino)?;
        let mode = r.mode.get();
        if InodeKind::from_mode(mode).is_none() {
            return Err(corrupt(format!(
                "inode {ino} has unknown file type in mode {mode:o}"
            )));
        }
        Ok(Attributes {
            ino,
            mode,
            uid: r.uid.get(),
            gid: r.gid.get(),
            nlink: r.nlink.get(),
            size: r.size.get(),
            mtime: r.mtime.get(),
            mtime_nsec: r.mtime_nsec.get(),
            rdev_major: r.rdev_major.get(),
            rdev_minor: r.rdev_minor.get(),
        })
    }

    fn expect(&self, ino: u32, kind: InodeKind) -> Result<&RawInode> {
        if self.attributes(ino)?.kind() != kind {
            return Err(FormatError::WrongKind {
                ino,
                expected: kind.name(),
            });
        }
        self.raw_inode(ino)
    }

    /// The parent directory of a directory (the root is its own parent).
    pub fn parent(&self, dir: u32) -> Result<u32> {
        let p = self.expect(dir, InodeKind::Directory)?.parent.get();
        self.raw_inode(p)?;
        Ok(p)
    }

    fn raw_dirents(&self, dir: u32) -> Result<&[RawDirent]> {
        let r = self.expect(dir, InodeKind::Directory)?;
        let all: &[RawDirent] = self.records(Section::Dirents);
        self.slice(
            all,
            r.data_start.get(),
            r.data_len.get() as u64,
            "directory entries",
        )
    }

    fn dirent<'a>(&'a self, d: &RawDirent) -> Result<DirEntry<'a>> {
        let name = self.bytes(
            d.name_offset.get() as u64,
            d.name_len.get() as usize,
            "entry name",
        )?;
        check_name(name)?;
        let ino = d.ino.get();
        if ino == 0 || ino > self.header.inode_count {
            return Err(FormatError::NoSuchInode(ino as u64));
        }
        Ok(DirEntry {
            name,
            ino,
            file_type: d.file_type,
        })
    }

    pub fn dir_len(&self, dir: u32) -> Result<usize> {
        Ok(self.raw_dirents(dir)?.len())
    }

    /// The `index`th entry of a directory, in name order.
    pub fn dir_entry(&self, dir: u32, index: usize) -> Result<Option<DirEntry<'_>>> {
        match self.raw_dirents(dir)?.get(index) {
            Some(d) => self.dirent(d).map(Some),
            None => Ok(None),
        }
    }

    /// All entries of a directory, in name order.
    pub fn dir_entries(&self, dir: u32) -> Result<Vec<DirEntry<'_>>> {
        self.raw_dirents(dir)?
            .iter()
            .map(|d| self.dirent(d))
            .collect()
    }

    /// Binary search for `name` in a directory.
    pub fn lookup(&self, dir: u32, name: &[u8]) -> Result<Option<u32>> {
        let ents = self.raw_dirents(dir)?;
        let (mut lo, mut hi) = (0usize, ents.len());
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            let e = self.dirent(&ents[mid])?;
            match e.name.cmp(name) {
                std::cmp::Ordering::Equal => return Ok(Some(e.ino)),
                std::cmp::Ordering::Less => lo = mid + 1,
                std::cmp::Ordering::Greater => hi = mid,
            }
        }
        Ok(None)
    }

    /// Resolves an absolute or relative path from the root without following
    /// symlinks. `.` components are skipped; `..` is refused.
    pub fn resolve(&self, path: &[u8]) -> Result<Option<u32>> {
        let mut ino = ROOT_INO;
        for comp in path.split(|&b| b == b'/') {
            match comp {
                b"" | b"." => continue,
                b".." => return Err(corrupt("'..' in a metadata path lookup")),
                name => match self.lookup(ino, name)? {
                    Some(child) => ino = child,
                    None => return Ok(None),
                },
            }
        }
        Ok(Some(ino))
    }

    pub fn symlink_target(&self, ino: u32) -> Result<&[u8]> {
        let r = self.expect(ino, InodeKind::Symlink)?;
        let len = r.data_len.get() as usize;
        if len == 0 || len > SYMLINK_MAX {
            return Err(corrupt(format!(
                "symlink {ino} has a target of {len} bytes"
            )));
        }
        self.bytes(r.data_start.get(), len, "symlink target")
    }

    /// A regular file's chunk references, in file order.
    pub fn chunk_refs(&self, ino: u32) -> Result<Vec<ChunkRef>> {
        Ok(self.raw_chunk_refs(ino)?.iter().map(decode_ref).collect())
    }

    fn raw_chunk_refs(&self, ino: u32) -> Result<&[RawChunkRef]> {
        let r = self.expect(ino, InodeKind::File)?;
        let all: &[RawChunkRef] = self.records(Section::ChunkRefs);
        self.slice(
            all,
            r.data_start.get(),
            r.data_len.get() as u64,
            "chunk references",
        )
    }

    /// The references covering `[offset, offset + len)` of a regular file,
    /// found by binary search.
    pub fn chunk_refs_in(&self, ino: u32, offset: u64, len: u64) -> Result<Vec<ChunkRef>> {
        let refs = self.raw_chunk_refs(ino)?;
        let end = offset.saturating_add(len);
        let first = refs.partition_point(|r| r.file_offset.get() + r.length.get() as u64 <= offset);
        Ok(refs[first..]
            .iter()
            .take_while(|r| r.file_offset.get() < end)
            .map(decode_ref)
            .collect())
    }

    pub fn xattrs(&self, ino: u32) -> Result<Vec<(&[u8], &[u8])>> {
        let r = self.raw_inode(ino)?;
        let all: &[RawXattr] = self.records(Section::Xattrs);
        let xs = self.slice(
            all,
            r.xattr_start.get() as u64,
            r.xattr_count.get() as u64,
            "xattrs",
        )?;
        xs.iter()
            .map(|x| {
                let name = self.bytes(
                    x.name_offset.get() as u64,
                    x.name_len.get() as usize,
                    "xattr name",
                )?;
                let value = self.bytes(
                    x.value_offset.get() as u64,
                    x.value_len.get() as usize,
                    "xattr value",
                )?;
                if name.is_empty() || name.len() > XATTR_NAME_MAX || name.contains(&0) {
                    return Err(corrupt(format!("inode {ino} has an invalid xattr name")));
                }
                if value.len() > XATTR_VALUE_MAX {
                    return Err(corrupt(format!("inode {ino} has an oversized xattr value")));
                }
                Ok((name, value))
            })
            .collect()
    }

    pub fn chunk_count(&self) -> u32 {
        self.records::<RawChunk>(Section::Chunks).len() as u32
    }

    pub fn chunk(&self, index: u32) -> Result<ChunkInfo> {
        let raw = self
            .records::<RawChunk>(Section::Chunks)
            .get(index as usize)
            .ok_or_else(|| corrupt(format!("chunk {index} does not exist")))?;
        let info = decode_chunk(raw)?;
        if info.blob >= self.blob_count() {
            return Err(corrupt(format!(
                "chunk {index} names blob {} which does not exist",
                info.blob
            )));
        }
        Ok(info)
    }

    pub fn blob_count(&self) -> u32 {
        self.records::<RawBlob>(Section::Blobs).len() as u32
    }

    pub fn blob(&self, index: u32) -> Result<BlobInfo> {
        let raw = self
            .records::<RawBlob>(Section::Blobs)
            .get(index as usize)
            .ok_or_else(|| corrupt(format!("blob {index} does not exist")))?;
        Ok(BlobInfo {
            digest: Digest(raw.digest),
            size: raw.size.get(),
            chunk_count: raw.chunk_count.get(),
        })
    }

    /// Chunk indices in the order the image's workload first reads them.
    pub fn prefetch(&self) -> Result<Vec<u32>> {
        let list: &[U32] = self.records(Section::Prefetch);
        let count = self.chunk_count();
        list.iter()
            .map(|i| {
                let chunk = i.get();
                if chunk >= count {
                    return Err(corrupt(format!(
                        "prefetch entry names chunk {chunk}; the image has {count}"
                    )));
                }
                Ok(chunk)
            })
            .collect()
    }

    /// Visits every entry below the root, depth first in name order, with its
    /// path (`/`-separated, no leading slash). A directory reached twice is an
    /// error, so a corrupt tree cannot loop.
    pub fn walk(&self, mut visit: impl FnMut(&[u8], &DirEntry<'_>) -> Result<()>) -> Result<()> {
        let mut seen_dirs = vec![false; self.header.inode_count as usize + 1];
        seen_dirs[ROOT_INO as usize] = true;
        // (directory, index of next entry, length of its path prefix)
        let mut stack: Vec<(u32, usize, usize)> = vec![(ROOT_INO, 0, 0)];
        let mut path: Vec<u8> = Vec::new();
        while let Some(top) = stack.last_mut() {
            let (dir, index, prefix) = *top;
            let Some(entry) = self.dir_entry(dir, index)? else {
                stack.pop();
                continue;
            };
            top.1 += 1;
            path.truncate(prefix);
            if prefix > 0 {
                path.push(b'/');
            }
            path.extend_from_slice(entry.name);
            visit(&path, &entry)?;
            if entry.file_type == InodeKind::Directory.dirent_type() {
                let seen = &mut seen_dirs[entry.ino as usize];
                if *seen {
                    return Err(corrupt(format!(
                        "directory {} is reachable twice",
                        entry.ino
                    )));
                }
                *seen = true;
                stack.push((entry.ino, 0, path.len()));
            }
        }
        Ok(())
    }

    /// Checks every record and the shape of the tree: names, ranges, sorted
    /// directories, a tree rooted at inode 1 with no directory cycles, link
    /// counts, and chunk references that exactly cover each file.
    pub fn validate(&self) -> Result<()> {
        let n = self.header.inode_count;
        let chunk_count = self.chunk_count();
        for b in 0..self.blob_count() {
            self.blob(b)?;
        }
        for c in 0..chunk_count {
            let info = self.chunk(c)?;
            let blob = self.blob(info.blob)?;
            let end = info
                .compressed_offset
                .checked_add(info.compressed_size as u64);
            if end.is_none_or(|e| e > blob.size) {
                return Err(corrupt(format!(
                    "chunk {c} lies outside blob {}",
                    info.blob
                )));
            }
        }
        let mut links = vec![0u32; n as usize + 1];
        let mut subdirs = vec![0u32; n as usize + 1];
        let mut dir_parent = vec![0u32; n as usize + 1];
        links[ROOT_INO as usize] = 1;
        dir_parent[ROOT_INO as usize] = ROOT_INO;
        for ino in 1..=n {
            let a = self.attributes(ino)?;
            self.xattrs(ino)?;
            match a.kind() {
                InodeKind::Directory => {
                    let ents = self.dir_entries(ino)?;
                    for w in ents.windows(2) {
                        if w[0].name >= w[1].name {
                            return Err(corrupt(format!(
                                "directory {ino} is not sorted or has duplicates"
                            )));
                        }
                    }
                    for e in &ents {
                        let child = self.attributes(e.ino)?;
                        if e.file_type != child.kind().dirent_type() {
                            return Err(corrupt(format!("entry type mismatch in directory {ino}")));
                        }
                        links[e.ino as usize] += 1;
                        if child.kind() == InodeKind::Directory {
                            if e.ino == ROOT_INO || dir_parent[e.ino as usize] != 0 {
                                return Err(corrupt(format!(
                                    "directory {} has more than one parent",
                                    e.ino
                                )));
                            }
                            dir_parent[e.ino as usize] = ino;
                            subdirs[ino as usize] += 1;
                        }
                    }
                }
                InodeKind::File => {
                    let mut pos = 0u64;
                    for r in self.raw_chunk_refs(ino)? {
                        let r = decode_ref(r);
                        if r.file_offset != pos || r.length == 0 {
                            return Err(corrupt(format!(
                                "file {ino} has gaps or overlaps in its chunks"
                            )));
                        }
                        if let Some(c) = r.chunk {
                            let info = self.chunk(c)?;
                            if r.chunk_offset as u64 + r.length as u64
                                > info.uncompressed_size as u64
                            {
                                return Err(corrupt(format!(
                                    "file {ino} reads past the end of chunk {c}"
                                )));
                            }
                        } else if r.chunk_offset != 0 {
                            return Err(corrupt(format!("file {ino} has a malformed hole")));
                        }
                        pos += r.length as u64;
                    }
                    if pos != a.size {
                        return Err(corrupt(format!(
                            "file {ino} chunks cover {pos} bytes, size is {}",
                            a.size
                        )));
                    }
                }
                InodeKind::Symlink => {
                    self.symlink_target(ino)?;
                }
                _ => {}
            }
        }
        for ino in 1..=n {
            let a = self.attributes(ino)?;
            if links[ino as usize] == 0 {
                return Err(corrupt(format!(
                    "inode {ino} is not reachable from the root"
                )));
            }
            let expected = if a.kind() == InodeKind::Directory {
                if self.parent(ino)? != dir_parent[ino as usize] {
                    return Err(corrupt(format!("directory {ino} has a wrong parent")));
                }
                2 + subdirs[ino as usize]
            } else {
                links[ino as usize]
            };
            if a.nlink != expected {
                return Err(corrupt(format!(
                    "inode {ino} has nlink {}, expected {expected}",
                    a.nlink
                )));
            }
        }
        // Every directory's parent chain must reach the root: no cycles.
        let mut state = vec![0u8; n as usize + 1]; // 0 unknown, 1 visiting, 2 rooted
        state[ROOT_INO as usize] = 2;
        for ino in 1..=n {
            if self.attributes(ino)?.kind() != InodeKind::Directory {
                continue;
            }
            let mut chain = Vec::new();
            let mut cur = ino;
            while state[cur as usize] == 0 {
                state[cur as usize] = 1;
                chain.push(cur);
                cur = dir_parent[cur as usize];
            }
            if state[cur as usize] == 1 {
                return Err(corrupt(format!("directory cycle through inode {cur}")));
            }
            for c in chain {
                state[c as usize] = 2;
            }
        }
        self.prefetch()?;
        Ok(())
    }
}

/// A directory entry name must be a single, non-special path component.
pub fn check_name(name: &[u8]) -> Result<()> {
    if name.is_empty()
        || name.len() > NAME_MAX
        || name == b"."
        || name == b".."
        || name.contains(&b'/')
        || name.contains(&0)
    {
        return Err(corrupt(format!(
            "invalid entry name {:?}",
            String::from_utf8_lossy(name)
        )));
    }
    Ok(())
}

fn decode_ref(r: &RawChunkRef) -> ChunkRef {
    let c = r.chunk.get();
    ChunkRef {
        file_offset: r.file_offset.get(),
        chunk: (c != HOLE_CHUNK).then_some(c),
        chunk_offset: r.chunk_offset.get(),
        length: r.length.get(),
    }
}

pub(crate) fn decode_chunk(raw: &RawChunk) -> Result<ChunkInfo> {
    let info = ChunkInfo {
        digest: Digest(raw.digest),
        blob: raw.blob.get(),
        compression: Compression::from_u8(raw.compression)?,
        compressed_offset: raw.compressed_offset.get(),
        compressed_size: raw.compressed_size.get(),
        uncompressed_size: raw.uncompressed_size.get(),
    };
    if info.uncompressed_size == 0
        || info.uncompressed_size > CHUNK_MAX
        || info.compressed_size == 0
    {
        return Err(corrupt("chunk has an invalid size"));
    }
    if info.compressed_size > info.uncompressed_size {
        return Err(corrupt("chunk is larger compressed than raw"));
    }
    if info.compression == Compression::None && info.compressed_size != info.uncompressed_size {
        return Err(corrupt("uncompressed chunk has two sizes"));
    }
    Ok(info)
}
