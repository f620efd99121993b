//! One interface over the places images live: a registry repository, an OCI
//! image layout directory, a docker-archive tarball.

use std::io::{self, Read};

use crate::error::{OciError, Result};
use crate::manifest::{
    sha256_digest, verify_bytes, Descriptor, Index, Manifest, ManifestDoc, Platform, MAX_DOCUMENT,
};

/// A manifest or index as fetched, with its digest.
#[derive(Debug, Clone)]
pub struct FetchedManifest {
    pub bytes: Vec<u8>,
    pub media_type: Option<String>,
    pub digest: String,
}

impl FetchedManifest {
    /// Computes the digest, and checks it when `reference` is itself a digest.
    pub fn new(
        bytes: Vec<u8>,
        media_type: Option<String>,
        reference: &str,
        what: &str,
    ) -> Result<Self> {
        if reference.starts_with("sha256:") {
            verify_bytes(&bytes, reference, what)?;
        }
        let digest = sha256_digest(&bytes);
        Ok(Self {
            bytes,
            media_type,
            digest,
        })
    }
}

pub trait Repository: Send + Sync {
    /// For messages: where this is.
    fn describe(&self) -> String;

    /// `(registry, repository)` when this is a registry repository.
    fn registry_location(&self) -> Option<(String, String)> {
        None
    }

    /// Fetches a manifest or index by tag or digest.
    fn fetch_manifest(&self, reference: &str) -> Result<FetchedManifest>;

    /// Streams a blob. The reader fails at the end if the digest or size is wrong.
    fn open_blob(&self, desc: &Descriptor) -> Result<Box<dyn Read + Send>>;

    /// Reads `len` bytes at `offset` of a blob, unverified: the caller checks them.
    fn read_range(&self, digest: &str, offset: u64, len: u64) -> Result<Vec<u8>>;

    fn has_blob(&self, digest: &str) -> Result<bool>;

    /// Makes a blob of `from` available here without copying it, if the
    /// backend can (cross-repository mount). Returns whether it did.
    fn mount_blob(&self, _digest: &str, _from: &dyn Repository) -> Result<bool> {
        Ok(false)
    }

    /// Uploads a blob unless already present. `open` yields its bytes, and is
    /// called again if an attempt has to be retried.
    fn push_blob(
        &self,
        desc: &Descriptor,
        open: &mut dyn FnMut() -> io::Result<Box<dyn Read + Send>>,
    ) -> Result<()>;

    /// Uploads a blob held in a local file whose digest the caller computed
    /// while writing it. Backends on the same filesystem may take the file.
    fn push_blob_file(&self, desc: &Descriptor, path: &std::path::Path) -> Result<()> {
        self.push_blob(desc, &mut || {
            Ok(Box::new(std::fs::File::open(path)?) as Box<dyn Read + Send>)
        })
    }

    /// Stores a manifest, under `tag` if given. Returns its digest.
    fn push_manifest(&self, bytes: &[u8], media_type: &str, tag: Option<&str>) -> Result<String>;

    /// Reads a small blob (config, manifest) whole, verified.
    fn read_blob(&self, desc: &Descriptor) -> Result<Vec<u8>> {
        if desc.size > MAX_DOCUMENT {
            return Err(OciError::Unsupported(format!(
                "{} is {} bytes, more than skiff reads into memory",
                desc.digest, desc.size
            )));
        }
        let mut out = Vec::with_capacity(desc.size as usize);
        self.open_blob(desc)?
            .read_to_end(&mut out)
            .map_err(|e| OciError::Io {
                context: format!("reading {} from {}", desc.digest, self.describe()),
                source: e,
            })?;
        Ok(out)
    }
}

/// One platform's image manifest.
#[derive(Debug, Clone)]
pub struct ResolvedImage {
    /// The manifest's descriptor (with the platform, when it came from an index).
    pub descriptor: Descriptor,
    pub manifest: Manifest,
    /// The manifest exactly as fetched; `descriptor.digest` is its digest.
    pub bytes: Vec<u8>,
}

/// What a reference resolved to.
#[derive(Debug, Clone)]
pub struct Resolved {
    /// The top-level document's digest.
    pub digest: String,
    /// Set when the reference named an index (before platform selection).
    pub index: Option<Index>,
    pub images: Vec<ResolvedImage>,
}

fn is_attestation(d: &Descriptor) -> bool {
    d.platform
        .as_ref()
        .is_some_and(|p| p.os == "unknown" || p.architecture == "unknown")
        || d.annotation("vnd.docker.reference.type").is_some()
}

/// Resolves a reference to its image manifests: all platforms of an index, or
/// only those matching `platform`.
pub fn resolve(
    repo: &dyn Repository,
    reference: &str,
    platform: Option<&Platform>,
) -> Result<Resolved> {
    let top = repo.fetch_manifest(reference)?;
    let what = format!("manifest {reference} in {}", repo.describe());
    match ManifestDoc::parse(&top.bytes, top.media_type.as_deref(), &what)? {
        ManifestDoc::Image(manifest) => {
            let mut descriptor = Descriptor::for_bytes(
                manifest
                    .media_type
                    .as_deref()
                    .unwrap_or(crate::manifest::OCI_MANIFEST),
                &top.bytes,
            );
            descriptor.digest = top.digest.clone();
            Ok(Resolved {
                digest: top.digest,
                index: None,
                images: vec![ResolvedImage {
                    descriptor,
                    manifest: *manifest,
                    bytes: top.bytes,
                }],
            })
        }
        ManifestDoc::Index(index) => {
            let mut images = Vec::new();
            for d in &index.manifests {
                if is_attestation(d) {
                    continue;
                }
                if let (Some(want), Some(have)) = (platform, &d.platform) {
                    if !have.matches(want) {
                        continue;
                    }
                }
                let fetched = repo.fetch_manifest(&d.digest)?;
                let what = format!("manifest {} in {}", d.digest, repo.describe());
                match ManifestDoc::parse(&fetched.bytes, Some(&d.media_type), &what)? {
                    ManifestDoc::Image(manifest) => images.push(ResolvedImage {
                        descriptor: d.clone(),
                        manifest: *manifest,
                        bytes: fetched.bytes,
                    }),
                    ManifestDoc::Index(_) => {
                        return Err(OciError::Unsupported(format!(
                            "{what}: nested indexes are not supported"
                        )))
                    }
                }
            }
            if images.is_empty() {
                let available: Vec<String> = index
                    .manifests
                    .iter()
                    .filter_map(|d| d.platform.as_ref().map(|p| p.to_string()))
                    .collect();
                return Err(OciError::NotFound {
                    what: match platform {
                        Some(p) => format!("platform {p} in {reference}"),
                        None => format!("an image manifest in {reference}"),
                    },
                    hint: Some(format!("available: {}", available.join(", "))),
                });
            }
            Ok(Resolved {
                digest: top.digest,
                index: Some(index),
                images,
            })
        }
    }
}

/// Makes `desc` present in `to`, mounting it across repositories where the
/// registry allows, else streaming it from `from`.
pub fn copy_blob(from: &dyn Repository, to: &dyn Repository, desc: &Descriptor) -> Result<()> {
    if to.has_blob(&desc.digest)? {
        return Ok(());
    }
    if to.mount_blob(&desc.digest, from)? {
        return Ok(());
    }
    to.push_blob(desc, &mut || from.open_blob(desc).map_err(io::Error::from))
}
