//! Reads chunks, verified. No byte leaves this module before the chunk it
//! belongs to has been decompressed within its declared size and matched
//! against its digest.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::{Arc, Mutex};

use skiff_format::{decompress, Metadata};

use crate::error::{format_err, Result, StoreError};
use crate::image::SkiffImage;

/// Decompresses and verifies one chunk's stored bytes.
pub fn verify_chunk<B: AsRef<[u8]>>(
    md: &Metadata<B>,
    index: u32,
    stored: &[u8],
) -> Result<Vec<u8>> {
    let info = md.chunk(index).map_err(format_err("chunk table"))?;
    let blob = md
        .blob(info.blob)
        .map(|b| b.oci_digest())
        .unwrap_or_else(|_| "?".into());
    let corrupt = |reason: String| StoreError::ChunkCorrupt {
        index,
        digest: info.digest.prefixed(md.header().digest_algorithm),
        blob: blob.clone(),
        reason,
    };
    if stored.len() != info.compressed_size as usize {
        return Err(corrupt(format!(
            "{} stored bytes, expected {}",
            stored.len(),
            info.compressed_size
        )));
    }
    let data = decompress(info.compression, stored, info.uncompressed_size as usize)
        .map_err(|e| corrupt(e.to_string()))?;
    let actual = md.header().digest_algorithm.digest(&data);
    if actual != info.digest {
        return Err(corrupt(format!("content digest is {}", actual.to_hex())));
    }
    Ok(data)
}

enum BlobSource {
    /// Range reads through the image's repository.
    Repository,
    /// Whole blobs downloaded (and verified) into local files first.
    Spooled(Vec<File>),
}

/// How many decompressed chunks to keep; packed small files share chunks.
const RECENT_CHUNKS: usize = 32;

pub struct ChunkReader<'a> {
    image: &'a SkiffImage,
    source: BlobSource,
    recent: Mutex<Vec<(u32, Arc<Vec<u8>>)>>,
}

impl<'a> ChunkReader<'a> {
    /// Reads chunks with one range request each.
    pub fn new(image: &'a SkiffImage) -> Self {
        Self {
            image,
            source: BlobSource::Repository,
            recent: Mutex::new(Vec::new()),
        }
    }

    /// Downloads every blob into `dir` first, each verified against its
    /// sha256: right for reading a whole image from a registry.
    pub fn spooled(
        image: &'a SkiffImage,
        dir: &Path,
        mut progress: impl FnMut(u64),
    ) -> Result<Self> {
        let mut files = Vec::new();
        for layer in &image.blob_layers {
            let mut f = tempfile::tempfile_in(dir).map_err(|e| StoreError::Io {
                context: format!("creating a spool file in {}", dir.display()),
                source: e,
            })?;
            let mut src = image.repo.open_blob(layer)?;
            let mut buf = vec![0u8; 1 << 20];
            loop {
                let n = io::Read::read(&mut src, &mut buf).map_err(|e| StoreError::Io {
                    context: format!("downloading blob {}", layer.digest),
                    source: e,
                })?;
                if n == 0 {
                    break;
                }
                io::Write::write_all(&mut f, &buf[..n]).map_err(|e| StoreError::Io {
                    context: format!("spooling blob {} in {}", layer.digest, dir.display()),
                    source: e,
                })?;
                progress(n as u64);
            }
            files.push(f);
        }
        Ok(Self {
            image,
            source: BlobSource::Spooled(files),
            recent: Mutex::new(Vec::new()),
        })
    }

    pub fn image(&self) -> &SkiffImage {
        self.image
    }

    fn stored_bytes(&self, blob: u32, offset: u64, len: u32) -> Result<Vec<u8>> {
        match &self.source {
            BlobSource::Repository => {
                let layer = &self.image.blob_layers[blob as usize];
                let bytes = self
                    .image
                    .repo
                    .read_range(&layer.digest, offset, len as u64)?;
                if bytes.len() != len as usize {
                    return Err(StoreError::Invalid(format!(
                        "blob {}: asked for {len} bytes at {offset}, got {}",
                        layer.digest,
                        bytes.len()
                    )));
                }
                Ok(bytes)
            }
            BlobSource::Spooled(files) => {
                let mut out = vec![0u8; len as usize];
                files[blob as usize]
                    .read_exact_at(&mut out, offset)
                    .map_err(|e| StoreError::Io {
                        context: format!("reading spooled blob {blob}"),
                        source: e,
                    })?;
                Ok(out)
            }
        }
    }

    /// One chunk's verified, uncompressed bytes.
    pub fn chunk(&self, index: u32) -> Result<Arc<Vec<u8>>> {
        if let Ok(mut recent) = self.recent.lock() {
            if let Some(pos) = recent.iter().position(|(i, _)| *i == index) {
                let hit = recent.remove(pos);
                let data = hit.1.clone();
                recent.insert(0, hit);
                return Ok(data);
            }
        }
        let md = &self.image.metadata;
        let info = md.chunk(index).map_err(format_err("chunk table"))?;
        let stored = self.stored_bytes(info.blob, info.compressed_offset, info.compressed_size)?;
        let data = Arc::new(verify_chunk(md, index, &stored)?);
        if let Ok(mut recent) = self.recent.lock() {
            recent.insert(0, (index, data.clone()));
            recent.truncate(RECENT_CHUNKS);
        }
        Ok(data)
    }

    /// Calls `sink(file_offset, bytes)` for each data range of a regular file,
    /// in order; holes are skipped (`bytes` is never a hole).
    pub fn read_file(
        &self,
        ino: u32,
        mut sink: impl FnMut(u64, &[u8]) -> io::Result<()>,
    ) -> Result<()> {
        let refs = self
            .image
            .metadata
            .chunk_refs(ino)
            .map_err(format_err(format!("inode {ino}")))?;
        for r in refs {
            let Some(c) = r.chunk else { continue };
            let data = self.chunk(c)?;
            let start = r.chunk_offset as usize;
            let bytes = data.get(start..start + r.length as usize).ok_or_else(|| {
                StoreError::Invalid(format!("inode {ino} reads past the end of chunk {c}"))
            })?;
            sink(r.file_offset, bytes).map_err(|e| StoreError::Io {
                context: format!("writing inode {ino}"),
                source: e,
            })?;
        }
        Ok(())
    }
}
