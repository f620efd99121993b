//! The tail of a data blob: its chunk table and a fixed-size footer.
//!
//! A blob is `[compressed chunks][chunk table][footer]`. The footer sits in
//! the last [`BLOB_FOOTER_SIZE`] bytes, so a reader can fetch it with one
//! suffix range request, then the table alone, without any chunk data.

use zerocopy::little_endian::{U32, U64};
use zerocopy::{FromBytes, IntoBytes};

use crate::digest::DigestAlgorithm;
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
}

impl BlobFooter {
    pub fn toc_len(&self) -> u64 {
        self.chunk_count * size_of::<RawChunk>() as u64
    }

    /// The size of the blob this footer ends.
    pub fn blob_size(&self) -> u64 {
        self.toc_offset + self.toc_len() + BLOB_FOOTER_SIZE as u64
    }
}

/// Encodes the table and footer for chunks already written at the given
/// offsets. Each chunk's `blob` field is written as 0.
pub fn encode_tail(alg: DigestAlgorithm, data_len: u64, chunks: &[ChunkInfo]) -> Vec<u8> {
    let mut out = Vec::with_capacity(chunks.len() * size_of::<RawChunk>() + BLOB_FOOTER_SIZE);
    for c in chunks {
        let mut raw = encode_chunk(c);
        raw.blob = U32::new(0);
        out.extend_from_slice(raw.as_bytes());
    }
    let footer = RawBlobFooter {
        magic: BLOB_MAGIC,
        version: U32::new(BLOB_VERSION),
        digest_algorithm: alg as u8,
        reserved: [0; 3],
        toc_offset: U64::new(data_len),
        chunk_count: U64::new(chunks.len() as u64),
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
    };
    let size = footer
        .chunk_count
        .checked_mul(size_of::<RawChunk>() as u64)
        .and_then(|t| t.checked_add(footer.toc_offset))
        .and_then(|t| t.checked_add(BLOB_FOOTER_SIZE as u64));
    if size != Some(blob_size) {
        return Err(corrupt("blob footer does not match the blob's size"));
    }
    Ok(footer)
}

/// Parses a blob's chunk table and checks that the chunks tile the data
/// region in order, without gaps or overlaps.
pub fn parse_toc(bytes: &[u8], footer: &BlobFooter) -> Result<Vec<ChunkInfo>> {
    if bytes.len() as u64 != footer.toc_len() {
        return Err(corrupt("blob chunk table has the wrong length"));
    }
    let raws = <[RawChunk]>::ref_from_bytes(bytes)
        .map_err(|_| corrupt("blob chunk table is malformed"))?;
    let mut pos = 0u64;
    let mut out = Vec::with_capacity(raws.len());
    for raw in raws {
        let c = decode_chunk(raw)?;
        if c.blob != 0 || c.compressed_offset != pos {
            return Err(corrupt("blob chunk table is out of order"));
        }
        pos += c.compressed_size as u64;
        out.push(c);
    }
    if pos != footer.toc_offset {
        return Err(corrupt("blob chunk table does not cover the data"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compression::Compression;
    use crate::digest::Digest;

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

    #[test]
    fn tail_round_trip() {
        let chunks = vec![chunk(0, 100), chunk(100, 50)];
        let tail = encode_tail(DigestAlgorithm::Blake3, 150, &chunks);
        let size = 150 + tail.len() as u64;
        let footer = parse_footer(&tail[tail.len() - BLOB_FOOTER_SIZE..], size).unwrap();
        assert_eq!(footer.toc_offset, 150);
        assert_eq!(footer.blob_size(), size);
        let toc = &tail[..footer.toc_len() as usize];
        assert_eq!(parse_toc(toc, &footer).unwrap(), chunks);
    }

    #[test]
    fn rejects_inconsistent_tails() {
        let tail = encode_tail(
            DigestAlgorithm::Blake3,
            150,
            &[chunk(0, 100), chunk(100, 50)],
        );
        let foot = &tail[tail.len() - BLOB_FOOTER_SIZE..];
        let size = 150 + tail.len() as u64;
        assert!(parse_footer(foot, size + 1).is_err());
        let mut bad = foot.to_vec();
        bad[0] ^= 1;
        assert!(parse_footer(&bad, size).is_err());
        // A table whose chunks overlap.
        let overlapping = encode_tail(
            DigestAlgorithm::Blake3,
            150,
            &[chunk(0, 100), chunk(90, 60)],
        );
        let f = parse_footer(&overlapping[overlapping.len() - BLOB_FOOTER_SIZE..], size).unwrap();
        assert!(parse_toc(&overlapping[..f.toc_len() as usize], &f).is_err());
    }
}
