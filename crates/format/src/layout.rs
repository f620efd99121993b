//! Raw on-disk records. All integers are little-endian and every record type
//! has alignment 1, so a reader can view them straight from an mmap.
//! `docs/format.md` is the normative description of these layouts.

use zerocopy::little_endian::{I64, U16, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

pub const METADATA_MAGIC: [u8; 8] = *b"SKIFMETA";
pub const METADATA_VERSION: u32 = 2;
pub const HEADER_SIZE: usize = 256;

pub const BLOB_MAGIC: [u8; 8] = *b"SKIFBLOB";
pub const BLOB_VERSION: u32 = 1;
pub const BLOB_FOOTER_SIZE: usize = 40;

/// Sentinel chunk index in a chunk reference: the range reads as zeros.
pub const HOLE_CHUNK: u32 = u32::MAX;

/// The root directory's inode number.
pub const ROOT_INO: u32 = 1;

/// Section slots in the header, in this order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(usize)]
pub enum Section {
    Inodes = 0,
    Dirents = 1,
    ChunkRefs = 2,
    Chunks = 3,
    Blobs = 4,
    Xattrs = 5,
    Bytes = 6,
    Prefetch = 7,
}

pub const SECTION_COUNT: usize = 8;

impl Section {
    pub const ALL: [Section; SECTION_COUNT] = [
        Section::Inodes,
        Section::Dirents,
        Section::ChunkRefs,
        Section::Chunks,
        Section::Blobs,
        Section::Xattrs,
        Section::Bytes,
        Section::Prefetch,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Section::Inodes => "inodes",
            Section::Dirents => "dirents",
            Section::ChunkRefs => "chunk-refs",
            Section::Chunks => "chunks",
            Section::Blobs => "blobs",
            Section::Xattrs => "xattrs",
            Section::Bytes => "bytes",
            Section::Prefetch => "prefetch",
        }
    }

    /// The size of one record, or 1 for the byte pool.
    pub fn record_size(self) -> usize {
        match self {
            Section::Inodes => size_of::<RawInode>(),
            Section::Dirents => size_of::<RawDirent>(),
            Section::ChunkRefs => size_of::<RawChunkRef>(),
            Section::Chunks => size_of::<RawChunk>(),
            Section::Blobs => size_of::<RawBlob>(),
            Section::Xattrs => size_of::<RawXattr>(),
            Section::Bytes => 1,
            Section::Prefetch => size_of::<U32>(),
        }
    }
}

#[derive(Debug, Clone, Copy, Default, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct RawSection {
    pub offset: U64,
    pub length: U64,
}

#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct RawHeader {
    pub magic: [u8; 8],
    pub version: U32,
    pub header_size: U32,
    pub flags: U32,
    pub digest_algorithm: u8,
    pub compression: u8,
    pub reserved0: [u8; 2],
    pub chunk_min: U32,
    pub chunk_avg: U32,
    pub chunk_max: U32,
    pub pack_threshold: U32,
    pub inode_count: U32,
    pub root_ino: U32,
    pub sections: [RawSection; SECTION_COUNT],
    pub reserved1: [u8; 80],
}

#[derive(Debug, Clone, Copy, Default, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct RawInode {
    pub mode: U32,
    pub uid: U32,
    pub gid: U32,
    pub nlink: U32,
    pub size: U64,
    pub mtime: I64,
    pub mtime_nsec: U32,
    pub flags: U32,
    pub rdev_major: U32,
    pub rdev_minor: U32,
    /// Directory: first dirent. Regular file: first chunk ref.
    /// Symlink: offset of the target in the byte pool.
    pub data_start: U64,
    /// Directory: dirent count. Regular file: chunk ref count.
    /// Symlink: target length.
    pub data_len: U32,
    pub parent: U32,
    pub xattr_start: U32,
    pub xattr_count: U32,
}

#[derive(Debug, Clone, Copy, Default, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct RawDirent {
    pub ino: U32,
    pub name_offset: U32,
    pub name_len: U16,
    /// `DT_*` type of the target, for readdir without an inode lookup.
    pub file_type: u8,
    pub reserved: u8,
}

#[derive(Debug, Clone, Copy, Default, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct RawChunkRef {
    pub file_offset: U64,
    /// Index into the chunk table, or [`HOLE_CHUNK`].
    pub chunk: U32,
    /// Where this file's bytes start inside the uncompressed chunk.
    pub chunk_offset: U32,
    pub length: U32,
    pub reserved: U32,
}

#[derive(Debug, Clone, Copy, Default, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct RawChunk {
    pub digest: [u8; 32],
    /// Index into the blob table (always 0 inside a blob's own table).
    pub blob: U32,
    pub compression: u8,
    pub reserved: [u8; 3],
    pub compressed_offset: U64,
    pub compressed_size: U32,
    pub uncompressed_size: U32,
}

#[derive(Debug, Clone, Copy, Default, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct RawBlob {
    /// sha256 of the whole blob: its OCI layer digest.
    pub digest: [u8; 32],
    pub size: U64,
    pub chunk_count: U32,
    pub flags: U32,
}

#[derive(Debug, Clone, Copy, Default, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct RawXattr {
    pub name_offset: U32,
    pub value_offset: U32,
    pub name_len: U16,
    pub reserved: U16,
    pub value_len: U32,
}

#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct RawBlobFooter {
    pub magic: [u8; 8],
    pub version: U32,
    pub digest_algorithm: u8,
    pub reserved: [u8; 3],
    pub toc_offset: U64,
    pub chunk_count: U64,
    pub file_count: U64,
}

/// A small file packed into one of the blob's chunks, for dictionary builds.
#[derive(Debug, Clone, Copy, Default, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct RawBlobFile {
    /// Digest of the file's content (same algorithm as the chunks).
    pub digest: [u8; 32],
    /// Index into this blob's chunk table.
    pub chunk: U32,
    pub offset: U32,
    pub length: U32,
    pub reserved: U32,
}

const _: () = {
    assert!(size_of::<RawHeader>() == HEADER_SIZE);
    assert!(size_of::<RawInode>() == 72);
    assert!(size_of::<RawDirent>() == 12);
    assert!(size_of::<RawChunkRef>() == 24);
    assert!(size_of::<RawChunk>() == 56);
    assert!(size_of::<RawBlob>() == 48);
    assert!(size_of::<RawXattr>() == 16);
    assert!(size_of::<RawBlobFooter>() == BLOB_FOOTER_SIZE);
    assert!(size_of::<RawBlobFile>() == 48);
};
