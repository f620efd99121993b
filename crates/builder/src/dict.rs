//! Chunk dictionaries: chunks of existing skiff images that a new build may
//! reference instead of storing again (`skiff convert --chunk-dict`).

use std::collections::HashMap;
use std::sync::Arc;

use skiff_format::{BlobInfo, ChunkInfo, Chunking, Digest, DigestAlgorithm};
use skiff_oci::{Descriptor, Repository};
use skiff_store::{read_blob_tail, SkiffImage};

use crate::error::{BuildError, Result};

pub struct DictBlob {
    pub layer: Descriptor,
    pub info: BlobInfo,
    pub repo: Arc<dyn Repository>,
}

#[derive(Default)]
pub struct ChunkDict {
    chunks: HashMap<Digest, (usize, ChunkInfo)>,
    blobs: Vec<DictBlob>,
    by_digest: HashMap<Digest, usize>,
    /// Small-file digest → (chunk digest, offset, length) inside a packed chunk.
    files: HashMap<Digest, (Digest, u32, u32)>,
    params: Option<(DigestAlgorithm, Chunking)>,
    pub images: Vec<String>,
}

impl ChunkDict {
    pub fn is_empty(&self) -> bool {
        self.chunks.is_empty()
    }

    pub fn len(&self) -> usize {
        self.chunks.len()
    }

    /// The digest algorithm and chunking every dictionary image shares.
    pub fn params(&self) -> Option<(DigestAlgorithm, Chunking)> {
        self.params
    }

    pub fn get(&self, digest: &Digest) -> Option<(usize, ChunkInfo)> {
        self.chunks.get(digest).copied()
    }

    /// Where a small file with this content sits in a dictionary pack.
    pub fn file(&self, digest: &Digest) -> Option<(Digest, u32, u32)> {
        self.files.get(digest).copied()
    }

    pub fn blob(&self, index: usize) -> &DictBlob {
        &self.blobs[index]
    }

    /// Adds every chunk of a skiff image.
    pub fn add_image(&mut self, image: &SkiffImage) -> Result<()> {
        let md = &image.metadata;
        let params = (md.header().digest_algorithm, md.header().chunking);
        match self.params {
            None => self.params = Some(params),
            Some(p) if p != params => {
                return Err(BuildError::Invalid(format!(
                    "chunk dictionary {} was built with {:?}/{:?}, unlike the other dictionaries ({:?}/{:?})",
                    image.name(),
                    params.0,
                    params.1,
                    p.0,
                    p.1
                )))
            }
            Some(_) => {}
        }
        let mut local = Vec::with_capacity(md.blob_count() as usize);
        for b in 0..md.blob_count() {
            let info = md.blob(b)?;
            let idx = *self.by_digest.entry(info.digest).or_insert_with(|| {
                self.blobs.push(DictBlob {
                    layer: image.blob_layers[b as usize].clone(),
                    info,
                    repo: image.repo.clone(),
                });
                self.blobs.len() - 1
            });
            local.push(idx);
            // The blob's file table lets single small files be reused.
            let tail = read_blob_tail(
                image.repo.as_ref(),
                &image.blob_layers[b as usize],
                &md.blob(b)?,
            )?;
            for f in tail.files {
                let chunk = tail.chunks[f.chunk as usize].digest;
                self.files
                    .entry(f.digest)
                    .or_insert((chunk, f.offset, f.length));
            }
        }
        for c in 0..md.chunk_count() {
            let info = md.chunk(c)?;
            self.chunks
                .entry(info.digest)
                .or_insert((local[info.blob as usize], ChunkInfo { blob: 0, ..info }));
        }
        // Only files whose chunk is known can be referenced.
        self.files
            .retain(|_, (chunk, _, _)| self.chunks.contains_key(chunk));
        self.images.push(image.name());
        Ok(())
    }
}
