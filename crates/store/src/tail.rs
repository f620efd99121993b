//! Reads a data blob's tail (chunk and file tables) with two range requests.

use skiff_format::blob::{parse_footer, parse_tables, BlobFile, BlobFooter};
use skiff_format::layout::BLOB_FOOTER_SIZE;
use skiff_format::ChunkInfo;
use skiff_oci::{Descriptor, Repository};

use crate::error::{format_err, Result, StoreError};

pub struct BlobTail {
    pub footer: BlobFooter,
    pub chunks: Vec<ChunkInfo>,
    pub files: Vec<BlobFile>,
}

pub fn read_blob_tail(repo: &dyn Repository, layer: &Descriptor) -> Result<BlobTail> {
    let size = layer.size;
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
    let tables = repo.read_range(&layer.digest, footer.toc_offset, footer.tables_len())?;
    let (chunks, files) = parse_tables(&tables, &footer).map_err(format_err(what))?;
    Ok(BlobTail {
        footer,
        chunks,
        files,
    })
}
