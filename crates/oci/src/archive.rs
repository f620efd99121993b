//! A `docker save` tarball, read in place. Its layers are addressed by path,
//! not digest, so opening it hashes each layer once to build an OCI manifest.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use sha2::{Digest as _, Sha256};

use crate::error::{IoContext, OciError, Result};
use crate::manifest::{self, Descriptor, Manifest};
use crate::repository::{FetchedManifest, Repository};
use crate::verify::VerifyingReader;

#[derive(Deserialize)]
struct ArchiveEntry {
    #[serde(rename = "Config")]
    config: String,
    #[serde(rename = "RepoTags", default)]
    repo_tags: Option<Vec<String>>,
    #[serde(rename = "Layers")]
    layers: Vec<String>,
}

pub struct DockerArchive {
    path: PathBuf,
    /// digest → (offset of data in the tarball, size)
    blobs: HashMap<String, (u64, u64)>,
    manifest: Vec<u8>,
}

fn tag_matches(have: &str, want: &str) -> bool {
    let norm = |s: &str| {
        let s = s.strip_prefix("docker.io/").unwrap_or(s);
        s.strip_prefix("library/").unwrap_or(s).to_string()
    };
    norm(have) == norm(want)
}

impl DockerArchive {
    pub fn open(path: &Path, tag: Option<&str>) -> Result<Self> {
        let file =
            File::open(path).context(|| format!("opening docker archive {}", path.display()))?;
        let mut entries: HashMap<String, (u64, u64)> = HashMap::new();
        let mut archive = tar::Archive::new(&file);
        for entry in archive
            .entries()
            .context(|| format!("reading {}", path.display()))?
        {
            let entry = entry.context(|| format!("reading {} as a tar archive", path.display()))?;
            let name = String::from_utf8_lossy(&entry.path_bytes())
                .trim_start_matches("./")
                .to_string();
            entries.insert(name, (entry.raw_file_position(), entry.size()));
        }
        let read_entry = |name: &str| -> Result<Vec<u8>> {
            let (off, size) =
                *entries
                    .get(name.trim_start_matches("./"))
                    .ok_or_else(|| OciError::NotFound {
                        what: format!("{name} in docker archive {}", path.display()),
                        hint: None,
                    })?;
            if size > crate::manifest::MAX_DOCUMENT {
                return Err(OciError::Unsupported(format!(
                    "{name} in {} is too large",
                    path.display()
                )));
            }
            let mut buf = vec![0u8; size as usize];
            file.read_exact_at(&mut buf, off)
                .context(|| format!("reading {name} in {}", path.display()))?;
            Ok(buf)
        };
        let list: Vec<ArchiveEntry> = serde_json::from_slice(&read_entry("manifest.json")?)
            .map_err(|e| OciError::Json {
                context: format!("manifest.json in {}", path.display()),
                source: e,
            })?;
        let chosen = match tag {
            Some(t) => list
                .iter()
                .find(|e| {
                    e.repo_tags
                        .iter()
                        .flatten()
                        .any(|have| tag_matches(have, t))
                })
                .ok_or_else(|| OciError::NotFound {
                    what: format!("tag {t} in docker archive {}", path.display()),
                    hint: None,
                })?,
            None => match list.as_slice() {
                [one] => one,
                _ => {
                    let tags: Vec<&String> = list
                        .iter()
                        .flat_map(|e| e.repo_tags.iter().flatten())
                        .collect();
                    return Err(OciError::NotFound {
                        what: format!("a single image in docker archive {}", path.display()),
                        hint: Some(format!("add :REPO:TAG, one of {tags:?}")),
                    });
                }
            },
        };
        let config = read_entry(&chosen.config)?;
        let mut blobs = HashMap::new();
        let config_desc = Descriptor::for_bytes(manifest::OCI_CONFIG, &config);
        let (coff, csize) = entries[chosen.config.trim_start_matches("./")];
        blobs.insert(config_desc.digest.clone(), (coff, csize));
        let mut layers = Vec::new();
        for name in &chosen.layers {
            let (off, size) =
                *entries
                    .get(name.trim_start_matches("./"))
                    .ok_or_else(|| OciError::NotFound {
                        what: format!("layer {name} in docker archive {}", path.display()),
                        hint: None,
                    })?;
            let (digest, magic) =
                hash_range(&file, off, size).context(|| format!("hashing {name}"))?;
            let media_type = if magic.starts_with(&[0x1f, 0x8b]) {
                manifest::OCI_LAYER_GZIP
            } else if magic.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
                manifest::OCI_LAYER_ZSTD
            } else {
                manifest::OCI_LAYER_TAR
            };
            blobs.insert(digest.clone(), (off, size));
            layers.push(Descriptor {
                media_type: media_type.to_string(),
                digest,
                size,
                urls: None,
                annotations: None,
                platform: None,
            });
        }
        let m = Manifest {
            schema_version: 2,
            media_type: Some(manifest::OCI_MANIFEST.to_string()),
            config: config_desc,
            layers,
            annotations: None,
        };
        Ok(Self {
            path: path.to_path_buf(),
            blobs,
            manifest: serde_json::to_vec(&m).expect("serialisable"),
        })
    }

    fn locate(&self, digest: &str) -> Result<(u64, u64)> {
        self.blobs
            .get(digest)
            .copied()
            .ok_or_else(|| OciError::NotFound {
                what: format!("blob {digest} in {}", self.describe()),
                hint: None,
            })
    }
}

fn hash_range(file: &File, off: u64, size: u64) -> io::Result<(String, Vec<u8>)> {
    let mut f = file.try_clone()?;
    f.seek(SeekFrom::Start(off))?;
    let mut r = f.take(size);
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut magic = Vec::new();
    loop {
        let n = r.read(&mut buf)?;
        if n == 0 {
            break;
        }
        if magic.len() < 4 {
            magic.extend_from_slice(&buf[..n.min(4)]);
        }
        h.update(&buf[..n]);
    }
    Ok((format!("sha256:{}", hex::encode(h.finalize())), magic))
}

fn read_only(what: &str) -> OciError {
    OciError::Unsupported(format!("docker-archive is read-only; cannot {what}"))
}

impl Repository for DockerArchive {
    fn describe(&self) -> String {
        format!("docker-archive:{}", self.path.display())
    }

    fn fetch_manifest(&self, reference: &str) -> Result<FetchedManifest> {
        let what = format!("manifest of {}", self.describe());
        FetchedManifest::new(
            self.manifest.clone(),
            Some(manifest::OCI_MANIFEST.to_string()),
            reference,
            &what,
        )
    }

    fn open_blob(&self, desc: &Descriptor) -> Result<Box<dyn Read + Send>> {
        let (off, size) = self.locate(&desc.digest)?;
        let mut f =
            File::open(&self.path).context(|| format!("opening {}", self.path.display()))?;
        f.seek(SeekFrom::Start(off))
            .context(|| format!("seeking in {}", self.path.display()))?;
        let r = io::BufReader::with_capacity(1 << 20, f.take(size));
        Ok(Box::new(VerifyingReader::new(
            r,
            &desc.digest,
            desc.size,
            format!("blob {}", desc.digest),
        )))
    }

    fn read_range(&self, digest: &str, offset: u64, len: u64) -> Result<Vec<u8>> {
        let (off, size) = self.locate(digest)?;
        if offset.checked_add(len).is_none_or(|e| e > size) {
            return Err(OciError::Unsupported(format!(
                "range past the end of {digest}"
            )));
        }
        let f = File::open(&self.path).context(|| format!("opening {}", self.path.display()))?;
        let mut out = vec![0u8; len as usize];
        f.read_exact_at(&mut out, off + offset)
            .context(|| format!("reading {digest}"))?;
        Ok(out)
    }

    fn has_blob(&self, digest: &str) -> Result<bool> {
        Ok(self.blobs.contains_key(digest))
    }

    fn push_blob(
        &self,
        _: &Descriptor,
        _: &mut dyn FnMut() -> io::Result<Box<dyn Read + Send>>,
    ) -> Result<()> {
        Err(read_only("write blobs"))
    }

    fn push_manifest(&self, _: &[u8], _: &str, _: Option<&str>) -> Result<String> {
        Err(read_only("write manifests"))
    }
}
