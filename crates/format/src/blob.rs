//! The tail of a data blob: its chunk table, its file table, and a footer.
//!
//! A blob is `[compressed chunks][chunk table][file table][footer]`. The
//! footer sits in the last [`BLOB_FOOTER_SIZE`] bytes, so a reader can fetch
//! it with one suffix range request, then the tables alone, without any chunk
//! data. The file table lists the small files packed into the blob's chunks,
//! so a later build using this image as a chunk dictionary can reference
//! them one by one; mounting never reads it.

use zerocopy::little_endian::{U32, U64};
use zerocopy::{FromBytes, IntoBytes};

use crate::digest::{Digest, DigestAlgorithm};
use crate::error::{corrupt, FormatError, Result};
use crate::layout::*;
use crate::metadata::{decode_chunk, ChunkInfo};
use crate::writer::encode_chunk;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlobFooter {
    pub digest_algorithm: DigestAlgorithm,
    /// Where the chunk table starts; also the length of the chunk data.
    pub toc_offset: u64,
    pub chunk_count: u64,
    pub file_count: u64,
}

/// A packed small file, as the file table records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlobFile {
    pub digest: Digest,
    /// Index into the blob's own chunk table.
    pub chunk: u32,
    pub offset: u32,
    pub length: u32,
}

impl BlobFooter {
    /// Length of the chunk and file tables together.
    pub fn tables_len(&self) -> u64 {
        self.chunk_count * size_of::<RawChunk>() as u64
            + self.file_count * size_of::<RawBlobFile>() as u64
    }

    /// The size of the blob this footer ends.
    pub fn blob_size(&self) -> u64 {
        self.toc_offset + self.tables_len() + BLOB_FOOTER_SIZE as u64
    }
}

/// Encodes the tables and footer for chunks already written at the given
/// offsets. Each chunk's `blob` field is written as 0.
pub fn encode_tail(
    alg: DigestAlgorithm,
    data_len: u64,
    chunks: &[ChunkInfo],
    files: &[BlobFile],
) -> Vec<u8> {
    let mut out = Vec::with_capacity(
        chunks.len() * size_of::<RawChunk>()
            + files.len() * size_of::<RawBlobFile>()
            + BLOB_FOOTER_SIZE,
    );
    for c in chunks {
        let mut raw = encode_chunk(c);
        raw.blob = U32::new(0);
        out.extend_from_slice(raw.as_bytes());
    }
    for f in files {
        let raw = RawBlobFile {
            digest: f.digest.0,
            chunk: U32::new(f.chunk),
            offset: U32::new(f.offset),
            length: U32::new(f.length),
            reserved: U32::new(0),
        };
        out.extend_from_slice(raw.as_bytes());
    }
    let footer = RawBlobFooter {
        magic: BLOB_MAGIC,
        version: U32::new(BLOB_VERSION),
        digest_algorithm: alg as u8,
        reserved: [0; 3],
        toc_offset: U64::new(data_len),
        chunk_count: U64::new(chunks.len() as u64),
        file_count: U64::new(files.len() as u64),
    };
    out.extend_from_slice(footer.as_bytes());
    out
}

/// Parses the last [`BLOB_FOOTER_SIZE`] bytes of a blob of `blob_size` bytes.
pub fn parse_footer(bytes: &[u8], blob_size: u64) -> Result<BlobFooter> {
    let raw = RawBlobFooter::read_from_bytes(bytes).map_err(|_| FormatError::Truncated {
        what: "blob footer",
        need: BLOB_FOOTER_SIZE as u64,
        have: bytes.len() as u64,
    })?;
    if raw.magic != BLOB_MAGIC {
        return Err(corrupt("blob footer has a bad magic number"));
    }
    if raw.version.get() != BLOB_VERSION || raw.reserved != [0; 3] {
        return Err(FormatError::UnsupportedVersion(
            raw.version.get(),
            BLOB_VERSION,
        ));
    }
    let footer = BlobFooter {
        digest_algorithm: DigestAlgorithm::from_u8(raw.digest_algorithm)?,
        toc_offset: raw.toc_offset.get(),
        chunk_count: raw.chunk_count.get(),
        file_count: raw.file_count.get(),
    };
    let size = footer
        .chunk_count
        .checked_mul(size_of::<RawChunk>() as u64)
        .and_then(|c| {
            footer
                .file_count
                .checked_mul(size_of::<RawBlobFile>() as u64)
                .and_then(|f| c.checked_add(f))
        })
        .and_then(|t| t.checked_add(footer.toc_offset))
        .and_then(|t| t.checked_add(BLOB_FOOTER_SIZE as u64));
    if size != Some(blob_size) {
        return Err(corrupt("blob footer does not match the blob's size"));
    }
    Ok(footer)
}

/// Parses a blob's two tables (`bytes` is everything between the chunk data
/// and the footer). Checks that the chunks tile the data region in order and
/// that every file lies inside its chunk.
pub fn parse_tables(bytes: &[u8], footer: &BlobFooter) -> Result<(Vec<ChunkInfo>, Vec<BlobFile>)> {
    if bytes.len() as u64 != footer.tables_len() {
        return Err(corrupt("blob tables have the wrong length"));
    }
    let split = footer.chunk_count as usize * size_of::<RawChunk>();
    let raws = <[RawChunk]>::ref_from_bytes(&bytes[..split])
        .map_err(|_| corrupt("blob chunk table is malformed"))?;
    let mut pos = 0u64;
    let mut chunks = Vec::with_capacity(raws.len());
    for raw in raws {
        let c = decode_chunk(raw)?;
        if c.blob != 0 || c.compressed_offset != pos {
            return Err(corrupt("blob chunk table is out of order"));
        }
        pos += c.compressed_size as u64;
        chunks.push(c);
    }
    if pos != footer.toc_offset {
        return Err(corrupt("blob chunk table does not cover the data"));
    }
    let raw_files = <[RawBlobFile]>::ref_from_bytes(&bytes[split..])
        .map_err(|_| corrupt("blob file table is malformed"))?;
    let mut files = Vec::with_capacity(raw_files.len());
    for f in raw_files {
        let file = BlobFile {
            digest: Digest(f.digest),
            chunk: f.chunk.get(),
            offset: f.offset.get(),
            length: f.length.get(),
        };
        let chunk = chunks
            .get(file.chunk as usize)
            .ok_or_else(|| corrupt("blob file table names a chunk that does not exist"))?;
        if file.length == 0
            || file.offset as u64 + file.length as u64 > chunk.uncompressed_size as u64
        {
            return Err(corrupt("blob file table entry lies outside its chunk"));
        }
        files.push(file);
    }
    Ok((chunks, files))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compression::Compression;

    fn chunk(off: u64, size: u32) -> ChunkInfo {
        ChunkInfo {
            digest: Digest([off as u8; 32]),
            blob: 0,
            compression: Compression::Zstd,
            compressed_offset: off,
            compressed_size: size,
            uncompressed_size: size * 2,
        }
    }

    fn file(chunk: u32, offset: u32, length: u32) -> BlobFile {
        BlobFile {
            digest: Digest([7; 32]),
            chunk,
            offset,
            length,
        }
    }

    fn split(tail: &[u8], size: u64) -> (BlobFooter, &[u8]) {
        let f = parse_footer(&tail[tail.len() - BLOB_FOOTER_SIZE..], size).unwrap();
        (f, &tail[..tail.len() - BLOB_FOOTER_SIZE])
    }

    #[test]
    fn tail_round_trip() {
        let chunks = vec![chunk(0, 100), chunk(100, 50)];
        let files = vec![file(1, 10, 20)];
        let tail = encode_tail(DigestAlgorithm::Blake3, 150, &chunks, &files);
        let size = 150 + tail.len() as u64;
        let (footer, tables) = split(&tail, size);
        assert_eq!((footer.toc_offset, footer.blob_size()), (150, size));
        assert_eq!(parse_tables(tables, &footer).unwrap(), (chunks, files));
    }

    #[test]
    fn rejects_inconsistent_tails() {
        let tail = encode_tail(
            DigestAlgorithm::Blake3,
            150,
            &[chunk(0, 100), chunk(100, 50)],
            &[],
        );
        let foot = &tail[tail.len() - BLOB_FOOTER_SIZE..];
        let size = 150 + tail.len() as u64;
        assert!(parse_footer(foot, size + 1).is_err());
        let mut bad = foot.to_vec();
        bad[0] ^= 1;
        assert!(parse_footer(&bad, size).is_err());
        let overlapping = encode_tail(
            DigestAlgorithm::Blake3,
            150,
            &[chunk(0, 100), chunk(90, 60)],
            &[],
        );
        let (f, t) = split(&overlapping, size);
        assert!(parse_tables(t, &f).is_err());
        for bad_file in [file(2, 0, 1), file(0, 190, 20), file(0, 0, 0)] {
            let t = encode_tail(
                DigestAlgorithm::Blake3,
                150,
                &[chunk(0, 100), chunk(100, 50)],
                &[bad_file],
            );
            let (f, tables) = split(&t, 150 + t.len() as u64);
            assert!(parse_tables(tables, &f).is_err(), "{bad_file:?} accepted");
        }
    }
}
