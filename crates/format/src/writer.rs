//! Serializes a metadata tree. The builder hands inodes over in inode-number
//! order; the writer lays out the sections, pools strings, and checks its own
//! output with [`Metadata::validate`] before returning it.

use std::collections::HashMap;

use zerocopy::little_endian::{I64, U16, U32, U64};
use zerocopy::IntoBytes;

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

pub struct MetadataWriter {
    digest_algorithm: DigestAlgorithm,
    compression: Compression,
    chunking: Chunking,
    inodes: Vec<RawInode>,
    dirents: Vec<RawDirent>,
    refs: Vec<RawChunkRef>,
    chunks: Vec<RawChunk>,
    blobs: Vec<RawBlob>,
    xattrs: Vec<RawXattr>,
    pool: Vec<u8>,
    pooled: HashMap<Vec<u8>, u32>,
    prefetch: Vec<u32>,
}

fn too_large(what: &str) -> FormatError {
    FormatError::TooLarge(what.to_string())
}

impl MetadataWriter {
    pub fn new(
        digest_algorithm: DigestAlgorithm,
        compression: Compression,
        chunking: Chunking,
    ) -> Self {
        Self {
            digest_algorithm,
            compression,
            chunking,
            inodes: Vec::new(),
            dirents: Vec::new(),
            refs: Vec::new(),
            chunks: Vec::new(),
            blobs: Vec::new(),
            xattrs: Vec::new(),
            pool: Vec::new(),
            pooled: HashMap::new(),
            prefetch: Vec::new(),
        }
    }

    /// Stores bytes once in the pool, returning their offset.
    fn pool(&mut self, bytes: &[u8]) -> Result<u32> {
        if let Some(&off) = self.pooled.get(bytes) {
            return Ok(off);
        }
        let off =
            u32::try_from(self.pool.len()).map_err(|_| too_large("string pool over 4 GiB"))?;
        self.pool.extend_from_slice(bytes);
        self.pooled.insert(bytes.to_vec(), off);
        Ok(off)
    }

    pub fn add_blob(&mut self, blob: BlobInfo) -> u32 {
        self.blobs.push(RawBlob {
            digest: blob.digest.0,
            size: U64::new(blob.size),
            chunk_count: U32::new(blob.chunk_count),
            flags: U32::new(0),
        });
        self.blobs.len() as u32 - 1
    }

    pub fn add_chunk(&mut self, c: ChunkInfo) -> u32 {
        self.chunks.push(encode_chunk(&c));
        self.chunks.len() as u32 - 1
    }

    pub fn set_prefetch(&mut self, inodes: Vec<u32>) {
        self.prefetch = inodes;
    }

    /// Adds the next inode; returns its number (1 for the first).
    pub fn add_inode(&mut self, spec: InodeSpec<'_>) -> Result<u32> {
        let ino =
            u32::try_from(self.inodes.len() + 1).map_err(|_| too_large("more than 2^32 inodes"))?;
        let a = spec.attrs;
        let kind = InodeKind::from_mode(a.mode).ok_or_else(|| too_large("unknown file type"))?;
        let xattr_start = self.xattrs.len() as u32;
        for (name, value) in spec.xattrs {
            let name_offset = self.pool(name)?;
            let value_offset = self.pool(value)?;
            self.xattrs.push(RawXattr {
                name_offset: U32::new(name_offset),
                value_offset: U32::new(value_offset),
                name_len: U16::new(u16::try_from(name.len()).map_err(|_| too_large("xattr name"))?),
                reserved: U16::new(0),
                value_len: U32::new(
                    u32::try_from(value.len()).map_err(|_| too_large("xattr value"))?,
                ),
            });
        }
        let (data_start, data_len) = match spec.content {
            Content::Directory(mut entries) => {
                entries.sort_by(|x, y| x.0.cmp(y.0));
                let start = self.dirents.len() as u64;
                for (name, child) in &entries {
                    check_name(name)?;
                    let name_offset = self.pool(name)?;
                    self.dirents.push(RawDirent {
                        ino: U32::new(*child),
                        name_offset: U32::new(name_offset),
                        name_len: U16::new(name.len() as u16),
                        file_type: 0, // filled in by finish(), once every inode exists
                        reserved: 0,
                    });
                }
                (start, entries.len() as u32)
            }
            Content::File(refs) => {
                let start = self.refs.len() as u64;
                for r in refs {
                    self.refs.push(RawChunkRef {
                        file_offset: U64::new(r.file_offset),
                        chunk: U32::new(r.chunk.unwrap_or(HOLE_CHUNK)),
                        chunk_offset: U32::new(r.chunk_offset),
                        length: U32::new(r.length),
                        reserved: U32::new(0),
                    });
                }
                (
                    start,
                    u32::try_from(refs.len()).map_err(|_| too_large("chunk list"))?,
                )
            }
            Content::Symlink(target) => (self.pool(target)? as u64, target.len() as u32),
            Content::Special => (0, 0),
        };
        self.inodes.push(RawInode {
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
            xattr_start: U32::new(xattr_start),
            xattr_count: U32::new(spec.xattrs.len() as u32),
        });
        Ok(ino)
    }

    /// Lays out the file and validates it.
    pub fn finish(mut self) -> Result<Vec<u8>> {
        for i in 0..self.dirents.len() {
            let child = self.dirents[i].ino.get();
            let mode = child
                .checked_sub(1)
                .and_then(|c| self.inodes.get(c as usize))
                .map(|r| r.mode.get())
                .ok_or(FormatError::NoSuchInode(child as u64))?;
            self.dirents[i].file_type =
                InodeKind::from_mode(mode).map_or(0, InodeKind::dirent_type);
        }
        let prefetch: Vec<U32> = self.prefetch.iter().map(|&i| U32::new(i)).collect();
        let parts: [&[u8]; SECTION_COUNT] = [
            self.inodes.as_bytes(),
            self.dirents.as_bytes(),
            self.refs.as_bytes(),
            self.chunks.as_bytes(),
            self.blobs.as_bytes(),
            self.xattrs.as_bytes(),
            &self.pool,
            prefetch.as_bytes(),
        ];
        let mut out = vec![0u8; HEADER_SIZE];
        let mut sections = [RawSection::default(); SECTION_COUNT];
        for (i, part) in parts.iter().enumerate() {
            // Sections start 8-byte aligned so an mmap reader can use them in place.
            out.resize(out.len().next_multiple_of(8), 0);
            sections[i] = RawSection {
                offset: U64::new(out.len() as u64),
                length: U64::new(part.len() as u64),
            };
            out.extend_from_slice(part);
        }
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
            inode_count: U32::new(self.inodes.len() as u32),
            root_ino: U32::new(ROOT_INO),
            sections,
            reserved1: [0; 80],
        };
        out[..HEADER_SIZE].copy_from_slice(header.as_bytes());
        Metadata::parse(&out[..])?.validate()?;
        Ok(out)
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
