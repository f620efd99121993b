//! Serializes a metadata tree. The builder declares the record counts, then
//! hands inodes over in inode-number order; each record is written once, in
//! place. The writer checks its own output with [`Metadata::validate`].

use std::collections::HashMap;

use zerocopy::little_endian::{I64, U16, U32, U64};
use zerocopy::{Immutable, IntoBytes};

use crate::compression::Compression;
use crate::digest::DigestAlgorithm;
use crate::error::{FormatError, Result};
use crate::layout::*;
use crate::metadata::{
    check_name, Attributes, BlobInfo, ChunkInfo, ChunkRef, Chunking, InodeKind, Metadata,
};

/// What an inode holds besides its attributes.
pub enum Content<'a> {
    /// Entries (name, inode), in any order; the writer sorts them.
    Directory(Vec<(&'a [u8], u32)>),
    File(&'a [ChunkRef]),
    Symlink(&'a [u8]),
    /// Devices, fifos and sockets: attributes only.
    Special,
}

pub struct InodeSpec<'a> {
    /// `ino` is ignored: inodes are numbered in the order they are added.
    pub attrs: Attributes,
    /// The parent directory, for directories.
    pub parent: u32,
    pub xattrs: &'a [(Vec<u8>, Vec<u8>)],
    pub content: Content<'a>,
}

/// How many records of each kind the tree has, and an upper bound on the
/// byte pool, declared up front so every record is written once, straight
/// into the output buffer: peak memory stays near the metadata's own size.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    pub inodes: u32,
    pub dirents: u64,
    pub chunk_refs: u64,
    pub chunks: u32,
    pub blobs: u32,
    pub xattrs: u64,
    /// At least the total length of all names, symlink targets, xattr names
    /// and values.
    pub pool_bytes: u64,
}

pub struct MetadataWriter {
    digest_algorithm: DigestAlgorithm,
    compression: Compression,
    chunking: Chunking,
    counts: Counts,
    out: Vec<u8>,
    /// Start of sections 0 to 5, whose sizes are fixed by `counts`.
    starts: [usize; 6],
    written: [u64; 6],
    pool_start: usize,
    /// Shared pool entries: symlink targets and xattrs repeat; names do not.
    pooled: HashMap<Vec<u8>, u32>,
    prefetch: Vec<u32>,
}

fn too_large(what: &str) -> FormatError {
    FormatError::TooLarge(what.to_string())
}

const FIXED: [Section; 6] = [
    Section::Inodes,
    Section::Dirents,
    Section::ChunkRefs,
    Section::Chunks,
    Section::Blobs,
    Section::Xattrs,
];

impl MetadataWriter {
    pub fn new(
        digest_algorithm: DigestAlgorithm,
        compression: Compression,
        chunking: Chunking,
        counts: Counts,
    ) -> Result<Self> {
        let records = [
            counts.inodes as u64,
            counts.dirents,
            counts.chunk_refs,
            counts.chunks as u64,
            counts.blobs as u64,
            counts.xattrs,
        ];
        let mut starts = [0usize; 6];
        let mut pos = HEADER_SIZE as u64;
        for (i, section) in FIXED.iter().enumerate() {
            pos = pos.next_multiple_of(8);
            starts[i] = usize::try_from(pos).map_err(|_| too_large("metadata"))?;
            pos = records[i]
                .checked_mul(section.record_size() as u64)
                .and_then(|b| b.checked_add(pos))
                .ok_or_else(|| too_large("metadata"))?;
        }
        let pool_start =
            usize::try_from(pos.next_multiple_of(8)).map_err(|_| too_large("metadata"))?;
        let capacity = usize::try_from(counts.pool_bytes).map_err(|_| too_large("metadata"))?;
        let mut out = Vec::with_capacity(pool_start + capacity + 8);
        out.resize(pool_start, 0);
        Ok(Self {
            digest_algorithm,
            compression,
            chunking,
            counts,
            out,
            starts,
            written: [0; 6],
            pool_start,
            pooled: HashMap::new(),
            prefetch: Vec::new(),
        })
    }

    fn declared(&self, i: usize) -> u64 {
        [
            self.counts.inodes as u64,
            self.counts.dirents,
            self.counts.chunk_refs,
            self.counts.chunks as u64,
            self.counts.blobs as u64,
            self.counts.xattrs,
        ][i]
    }

    /// Writes the next record of fixed section `i`; returns its index.
    fn put<T: IntoBytes + Immutable>(&mut self, i: usize, record: &T) -> Result<u64> {
        let index = self.written[i];
        if index >= self.declared(i) {
            return Err(too_large(&format!(
                "more {} than declared",
                FIXED[i].name()
            )));
        }
        let bytes = record.as_bytes();
        let at = self.starts[i] + index as usize * bytes.len();
        self.out[at..at + bytes.len()].copy_from_slice(bytes);
        self.written[i] += 1;
        Ok(index)
    }

    /// Appends bytes to the pool; returns their offset in it.
    fn append(&mut self, bytes: &[u8]) -> Result<u32> {
        let off = u32::try_from(self.out.len() - self.pool_start)
            .map_err(|_| too_large("string pool over 4 GiB"))?;
        self.out.extend_from_slice(bytes);
        Ok(off)
    }

    /// Stores bytes once in the pool, returning their offset.
    fn pool(&mut self, bytes: &[u8]) -> Result<u32> {
        if let Some(&off) = self.pooled.get(bytes) {
            return Ok(off);
        }
        let off = self.append(bytes)?;
        self.pooled.insert(bytes.to_vec(), off);
        Ok(off)
    }

    pub fn add_blob(&mut self, blob: BlobInfo) -> Result<u32> {
        let raw = RawBlob {
            digest: blob.digest.0,
            size: U64::new(blob.size),
            chunk_count: U32::new(blob.chunk_count),
            flags: U32::new(0),
        };
        Ok(self.put(4, &raw)? as u32)
    }

    pub fn add_chunk(&mut self, c: ChunkInfo) -> Result<u32> {
        Ok(self.put(3, &encode_chunk(&c))? as u32)
    }

    /// Chunk indices in the order mounts prefetch them.
    pub fn set_prefetch(&mut self, chunks: Vec<u32>) {
        self.prefetch = chunks;
    }

    /// Adds the next inode; returns its number (1 for the first).
    pub fn add_inode(&mut self, spec: InodeSpec<'_>) -> Result<u32> {
        let a = spec.attrs;
        let kind = InodeKind::from_mode(a.mode).ok_or_else(|| too_large("unknown file type"))?;
        let xattr_start = self.written[5];
        for (name, value) in spec.xattrs {
            let name_offset = self.pool(name)?;
            let value_offset = self.pool(value)?;
            self.put(
                5,
                &RawXattr {
                    name_offset: U32::new(name_offset),
                    value_offset: U32::new(value_offset),
                    name_len: U16::new(
                        u16::try_from(name.len()).map_err(|_| too_large("xattr name"))?,
                    ),
                    reserved: U16::new(0),
                    value_len: U32::new(
                        u32::try_from(value.len()).map_err(|_| too_large("xattr value"))?,
                    ),
                },
            )?;
        }
        let (data_start, data_len) = match spec.content {
            Content::Directory(mut entries) => {
                entries.sort_by(|x, y| x.0.cmp(y.0));
                let start = self.written[1];
                for (name, child) in &entries {
                    check_name(name)?;
                    // Entry names are mostly unique: append, do not index.
                    let name_offset = self.append(name)?;
                    self.put(
                        1,
                        &RawDirent {
                            ino: U32::new(*child),
                            name_offset: U32::new(name_offset),
                            name_len: U16::new(name.len() as u16),
                            file_type: 0, // filled in by finish(), once every inode exists
                            reserved: 0,
                        },
                    )?;
                }
                (start, entries.len() as u32)
            }
            Content::File(refs) => {
                let start = self.written[2];
                for r in refs {
                    self.put(
                        2,
                        &RawChunkRef {
                            file_offset: U64::new(r.file_offset),
                            chunk: U32::new(r.chunk.unwrap_or(HOLE_CHUNK)),
                            chunk_offset: U32::new(r.chunk_offset),
                            length: U32::new(r.length),
                            reserved: U32::new(0),
                        },
                    )?;
                }
                (
                    start,
                    u32::try_from(refs.len()).map_err(|_| too_large("chunk list"))?,
                )
            }
            Content::Symlink(target) => (self.pool(target)? as u64, target.len() as u32),
            Content::Special => (0, 0),
        };
        let raw = RawInode {
            mode: U32::new(a.mode),
            uid: U32::new(a.uid),
            gid: U32::new(a.gid),
            nlink: U32::new(a.nlink),
            size: U64::new(a.size),
            mtime: I64::new(a.mtime),
            mtime_nsec: U32::new(a.mtime_nsec),
            flags: U32::new(0),
            rdev_major: U32::new(a.rdev_major),
            rdev_minor: U32::new(a.rdev_minor),
            data_start: U64::new(data_start),
            data_len: U32::new(data_len),
            parent: U32::new(if kind == InodeKind::Directory {
                spec.parent
            } else {
                0
            }),
            xattr_start: U32::new(u32::try_from(xattr_start).map_err(|_| too_large("xattrs"))?),
            xattr_count: U32::new(spec.xattrs.len() as u32),
        };
        Ok(self.put(0, &raw)? as u32 + 1)
    }

    /// Finishes the layout and validates it.
    pub fn finish(mut self) -> Result<Vec<u8>> {
        for (i, section) in FIXED.iter().enumerate() {
            if self.written[i] != self.declared(i) {
                return Err(FormatError::Corrupt(format!(
                    "{} {} written, {} declared",
                    self.written[i],
                    section.name(),
                    self.declared(i)
                )));
            }
        }
        let inode_size = size_of::<RawInode>();
        let dirent_size = size_of::<RawDirent>();
        for d in 0..self.counts.dirents as usize {
            let at = self.starts[1] + d * dirent_size;
            let child = u32::from_le_bytes(self.out[at..at + 4].try_into().expect("4 bytes"));
            if child == 0 || child > self.counts.inodes {
                return Err(FormatError::NoSuchInode(child as u64));
            }
            let m = self.starts[0] + (child as usize - 1) * inode_size;
            let mode = u32::from_le_bytes(self.out[m..m + 4].try_into().expect("4 bytes"));
            self.out[at + 10] = InodeKind::from_mode(mode).map_or(0, InodeKind::dirent_type);
        }
        self.pooled = HashMap::new();
        let pool_len = self.out.len() - self.pool_start;
        self.out.resize(self.out.len().next_multiple_of(8), 0);
        let prefetch_start = self.out.len();
        for &chunk in &self.prefetch {
            self.out.extend_from_slice(&chunk.to_le_bytes());
        }
        let mut sections = [RawSection::default(); SECTION_COUNT];
        for (i, section) in FIXED.iter().enumerate() {
            sections[i] = RawSection {
                offset: U64::new(self.starts[i] as u64),
                length: U64::new(self.declared(i) * section.record_size() as u64),
            };
        }
        sections[Section::Bytes as usize] = RawSection {
            offset: U64::new(self.pool_start as u64),
            length: U64::new(pool_len as u64),
        };
        sections[Section::Prefetch as usize] = RawSection {
            offset: U64::new(prefetch_start as u64),
            length: U64::new(self.prefetch.len() as u64 * 4),
        };
        let header = RawHeader {
            magic: METADATA_MAGIC,
            version: U32::new(METADATA_VERSION),
            header_size: U32::new(HEADER_SIZE as u32),
            flags: U32::new(0),
            digest_algorithm: self.digest_algorithm as u8,
            compression: self.compression as u8,
            reserved0: [0; 2],
            chunk_min: U32::new(self.chunking.min),
            chunk_avg: U32::new(self.chunking.avg),
            chunk_max: U32::new(self.chunking.max),
            pack_threshold: U32::new(self.chunking.pack_threshold),
            inode_count: U32::new(self.counts.inodes),
            root_ino: U32::new(ROOT_INO),
            sections,
            reserved1: [0; 80],
        };
        self.out[..HEADER_SIZE].copy_from_slice(header.as_bytes());
        Metadata::parse(&self.out[..])?.validate()?;
        Ok(self.out)
    }
}

pub(crate) fn encode_chunk(c: &ChunkInfo) -> RawChunk {
    RawChunk {
        digest: c.digest.0,
        blob: U32::new(c.blob),
        compression: c.compression as u8,
        reserved: [0; 3],
        compressed_offset: U64::new(c.compressed_offset),
        compressed_size: U32::new(c.compressed_size),
        uncompressed_size: U32::new(c.uncompressed_size),
    }
}
