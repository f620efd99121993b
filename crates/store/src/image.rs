//! A skiff image opened for reading: manifest, verified metadata, blobs.

use std::io::Read;
use std::sync::Arc;

use skiff_format::mediatype::{
    is_blob_layer, is_metadata_layer, ANNOTATION_METADATA_SIZE, ANNOTATION_ROOT_DIGEST,
};
use skiff_format::{Digest, Metadata};
use skiff_oci::{Descriptor, Manifest, Repository, ResolvedImage};

use crate::error::{format_err, Result, StoreError};

/// Largest uncompressed metadata accepted (a tree of ~20 million inodes).
pub const MAX_METADATA: u64 = 4 << 30;

pub struct SkiffImage {
    pub repo: Arc<dyn Repository>,
    pub manifest_digest: String,
    pub manifest: Manifest,
    pub metadata: Metadata<Vec<u8>>,
    /// `ALG:HEX` of the uncompressed metadata, as the manifest pins it.
    pub root_digest: String,
    pub metadata_layer: Descriptor,
    /// The manifest layer of each entry of the metadata's blob table.
    pub blob_layers: Vec<Descriptor>,
}

impl SkiffImage {
    pub fn open(repo: Arc<dyn Repository>, image: &ResolvedImage) -> Result<Self> {
        let name = format!("{}@{}", repo.describe(), image.descriptor.digest);
        let manifest = image.manifest.clone();
        let mut meta_layers = manifest
            .layers
            .iter()
            .filter(|l| is_metadata_layer(&l.media_type));
        let layer = meta_layers
            .next()
            .ok_or_else(|| StoreError::NotSkiff(name.clone()))?
            .clone();
        if meta_layers.next().is_some() {
            return Err(StoreError::Invalid(format!(
                "{name} has more than one metadata layer"
            )));
        }
        let root = layer
            .annotation(ANNOTATION_ROOT_DIGEST)
            .ok_or_else(|| {
                StoreError::Invalid(format!(
                    "{name}: metadata layer lacks {ANNOTATION_ROOT_DIGEST}"
                ))
            })?
            .to_string();
        let (alg, want) = Digest::parse_prefixed(&root).ok_or_else(|| {
            StoreError::Invalid(format!("{name}: root digest {root:?} is malformed"))
        })?;
        let size: u64 = layer
            .annotation(ANNOTATION_METADATA_SIZE)
            .and_then(|s| s.parse().ok())
            .filter(|&s| s <= MAX_METADATA)
            .ok_or_else(|| {
                StoreError::Invalid(format!(
                    "{name}: {ANNOTATION_METADATA_SIZE} is missing or too large"
                ))
            })?;
        // The blob reader checks the layer's sha256; the decoder is capped at
        // the declared size so a hostile frame cannot balloon.
        let blob = repo.open_blob(&layer)?;
        let decoder = zstd::stream::read::Decoder::new(blob).map_err(|e| StoreError::Io {
            context: format!("decoding the metadata of {name}"),
            source: e,
        })?;
        let mut bytes = Vec::with_capacity(size as usize);
        decoder
            .take(size + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| StoreError::Io {
                context: format!("reading the metadata of {name}"),
                source: e,
            })?;
        if bytes.len() as u64 != size {
            return Err(StoreError::Invalid(format!(
                "{name}: metadata is {} bytes, the manifest says {size}",
                bytes.len()
            )));
        }
        let actual = alg.digest(&bytes);
        if actual != want {
            return Err(StoreError::RootDigestMismatch {
                image: name,
                expected: root,
                actual: actual.prefixed(alg),
            });
        }
        let metadata = Metadata::parse(bytes).map_err(format_err(format!("metadata of {name}")))?;
        if metadata.header().digest_algorithm != alg {
            return Err(StoreError::Invalid(format!(
                "{name}: root digest algorithm differs from the metadata's"
            )));
        }
        let mut blob_layers = Vec::new();
        for b in 0..metadata.blob_count() {
            let info = metadata
                .blob(b)
                .map_err(format_err(format!("metadata of {name}")))?;
            let digest = info.oci_digest();
            let l = manifest
                .layers
                .iter()
                .find(|l| l.digest == digest && is_blob_layer(&l.media_type))
                .ok_or_else(|| {
                    StoreError::Invalid(format!(
                        "{name}: blob {digest} is not among the manifest's layers"
                    ))
                })?;
            if l.size != info.size {
                return Err(StoreError::Invalid(format!(
                    "{name}: blob {digest} has two different sizes"
                )));
            }
            blob_layers.push(l.clone());
        }
        Ok(Self {
            repo,
            manifest_digest: image.descriptor.digest.clone(),
            manifest,
            metadata,
            root_digest: root,
            metadata_layer: layer,
            blob_layers,
        })
    }

    pub fn name(&self) -> String {
        format!("{}@{}", self.repo.describe(), self.manifest_digest)
    }
}
