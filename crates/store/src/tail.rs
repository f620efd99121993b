//! Reads a data blob's tail (chunk and file tables) with two range requests.

use skiff_format::blob::{parse_footer, parse_tables, BlobFile, BlobFooter};
use skiff_format::layout::BLOB_FOOTER_SIZE;
use skiff_format::metadata::BlobInfo;
use skiff_format::ChunkInfo;
use skiff_oci::{Descriptor, Repository};

use crate::error::{format_err, Result, StoreError};

pub struct BlobTail {
    pub footer: BlobFooter,
    pub chunks: Vec<ChunkInfo>,
    pub files: Vec<BlobFile>,
}

/// The most a blob's tables may take: a chunk table of millions of chunks
/// fits easily; more is a hostile footer, not a blob (docs/format.md).
pub const MAX_TABLES_BYTES: u64 = 256 << 20;

/// Reads the tail of the blob `layer`, which the image's (verified)
/// metadata describes as `info`. The footer's counts come from the blob,
/// which nothing has verified yet: its chunk count must be the metadata's,
/// and its tables no larger than [`MAX_TABLES_BYTES`], before anything is
/// read or allocated for them.
pub fn read_blob_tail(
    repo: &dyn Repository,
    layer: &Descriptor,
    info: &BlobInfo,
) -> Result<BlobTail> {
    let size = layer.size;
    if size != info.size {
        return Err(StoreError::Invalid(format!(
            "blob {} is {size} bytes by its descriptor but {} by the image's metadata",
            layer.digest, info.size
        )));
    }
    if size < BLOB_FOOTER_SIZE as u64 {
        return Err(StoreError::Invalid(format!(
            "blob {} is too small to hold a footer",
            layer.digest
        )));
    }
    let foot = repo.read_range(
        &layer.digest,
        size - BLOB_FOOTER_SIZE as u64,
        BLOB_FOOTER_SIZE as u64,
    )?;
    let what = format!("tail of blob {}", layer.digest);
    let footer = parse_footer(&foot, size).map_err(format_err(what.clone()))?;
    if footer.chunk_count != info.chunk_count as u64 {
        return Err(StoreError::Invalid(format!(
            "blob {}: its footer lists {} chunks, the image's metadata {}",
            layer.digest, footer.chunk_count, info.chunk_count
        )));
    }
    if footer.tables_len() > MAX_TABLES_BYTES {
        return Err(StoreError::Invalid(format!(
            "blob {}: its tables take {} bytes, more than skiff reads ({MAX_TABLES_BYTES})",
            layer.digest,
            footer.tables_len()
        )));
    }
    let tables = repo.read_range(&layer.digest, footer.toc_offset, footer.tables_len())?;
    let (chunks, files) = parse_tables(&tables, &footer).map_err(format_err(what))?;
    Ok(BlobTail {
        footer,
        chunks,
        files,
    })
}

#[cfg(test)]
mod tests {
    use std::io::Read;
    use std::sync::Mutex;

    use skiff_format::blob::encode_tail;
    use skiff_format::{Digest, DigestAlgorithm};
    use skiff_oci::{FetchedManifest, OciError};

    use super::*;

    /// A blob of which only the footer exists; any read of more than a
    /// footer is recorded (a table read is an allocation of its size).
    struct FooterOnly {
        footer: Vec<u8>,
        size: u64,
        big_reads: Mutex<Vec<u64>>,
    }

    impl Repository for FooterOnly {
        fn describe(&self) -> String {
            "a test blob".into()
        }
        fn fetch_manifest(&self, _: &str) -> skiff_oci::Result<FetchedManifest> {
            Err(OciError::Unsupported("test".into()))
        }
        fn open_blob(&self, _: &Descriptor) -> skiff_oci::Result<Box<dyn Read + Send>> {
            Err(OciError::Unsupported("test".into()))
        }
        fn read_range(&self, _: &str, offset: u64, len: u64) -> skiff_oci::Result<Vec<u8>> {
            if offset == self.size - BLOB_FOOTER_SIZE as u64 && len == BLOB_FOOTER_SIZE as u64 {
                return Ok(self.footer.clone());
            }
            self.big_reads.lock().unwrap().push(len);
            Err(OciError::Unsupported("only the footer exists".into()))
        }
        fn has_blob(&self, _: &str) -> skiff_oci::Result<bool> {
            Ok(true)
        }
        fn push_blob(
            &self,
            _: &Descriptor,
            _: &mut dyn FnMut() -> std::io::Result<Box<dyn Read + Send>>,
        ) -> skiff_oci::Result<()> {
            Err(OciError::Unsupported("test".into()))
        }
        fn push_manifest(&self, _: &[u8], _: &str, _: Option<&str>) -> skiff_oci::Result<String> {
            Err(OciError::Unsupported("test".into()))
        }
    }

    /// A footer claiming `chunks` chunks after `data` bytes of chunk data,
    /// consistent with its blob's size (as a hostile author would write).
    fn hostile(chunks: u64, data: u64) -> (Vec<u8>, u64) {
        let alg = DigestAlgorithm::Blake3;
        let empty = encode_tail(alg, data, &[], &[]);
        let one = encode_tail(
            alg,
            data,
            &[ChunkInfo {
                digest: Digest::default(),
                blob: 0,
                compression: skiff_format::Compression::Zstd,
                compressed_offset: 0,
                compressed_size: 1,
                uncompressed_size: 1,
            }],
            &[],
        );
        let per_chunk = (one.len() - empty.len()) as u64;
        let mut footer = empty;
        footer[24..32].copy_from_slice(&chunks.to_le_bytes());
        let size = data + chunks * per_chunk + BLOB_FOOTER_SIZE as u64;
        (footer, size)
    }

    fn layer(size: u64) -> Descriptor {
        Descriptor {
            media_type: "application/octet-stream".into(),
            digest: format!("sha256:{}", "0".repeat(64)),
            size,
            urls: None,
            annotations: None,
            platform: None,
        }
    }

    #[test]
    fn a_hostile_footer_allocates_nothing() {
        // A footer of a billion chunks: its tables would be tens of GB.
        let (footer, size) = hostile(1_000_000_000, 10);
        let repo = FooterOnly {
            footer,
            size,
            big_reads: Mutex::new(Vec::new()),
        };
        // Metadata that agrees with it (a self-consistent hostile image)
        // still meets the size bound.
        let info = BlobInfo {
            digest: Digest::default(),
            size,
            chunk_count: 1_000_000_000,
        };
        let e = read_blob_tail(&repo, &layer(size), &info)
            .err()
            .expect("accepted");
        assert!(e.to_string().contains("more than skiff reads"), "{e}");
        // Metadata that disagrees is caught first.
        let info = BlobInfo {
            digest: Digest::default(),
            size,
            chunk_count: 3,
        };
        let e = read_blob_tail(&repo, &layer(size), &info)
            .err()
            .expect("accepted");
        assert!(
            e.to_string().contains("its footer lists 1000000000 chunks"),
            "{e}"
        );
        // And a descriptor whose size is not the metadata's.
        let e = read_blob_tail(&repo, &layer(size + 1), &info)
            .err()
            .expect("accepted");
        assert!(e.to_string().contains("by its descriptor"), "{e}");
        assert!(
            repo.big_reads.lock().unwrap().is_empty(),
            "the tables were read"
        );
    }
}
