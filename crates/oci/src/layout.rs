//! An OCI image layout directory (`oci-layout`, `index.json`, `blobs/sha256/`).

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::error::{IoContext, OciError, Result};
use crate::manifest::{
    sha256_digest, valid_digest_or_err, Descriptor, Index, ANNOTATION_REF_NAME, OCI_INDEX,
};
use crate::repository::{FetchedManifest, Repository};
use crate::verify::VerifyingReader;

pub struct OciLayout {
    dir: PathBuf,
    /// Serialises index.json updates from this process.
    index_lock: Mutex<()>,
}

impl OciLayout {
    pub fn open(dir: &Path) -> Result<Self> {
        let marker = dir.join("oci-layout");
        let text = fs::read_to_string(&marker).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => OciError::NotFound {
                what: format!("OCI image layout at {}", dir.display()),
                hint: Some("the directory needs an oci-layout file and index.json".into()),
            },
            _ => OciError::Io {
                context: format!("reading {}", marker.display()),
                source: e,
            },
        })?;
        let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| OciError::Json {
            context: marker.display().to_string(),
            source: e,
        })?;
        if v.get("imageLayoutVersion").and_then(|x| x.as_str()) != Some("1.0.0") {
            return Err(OciError::Unsupported(format!(
                "{} has an unsupported imageLayoutVersion",
                marker.display()
            )));
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            index_lock: Mutex::new(()),
        })
    }

    /// Opens a layout, creating an empty one if the directory has none.
    pub fn create(dir: &Path) -> Result<Self> {
        if !dir.join("oci-layout").exists() {
            fs::create_dir_all(dir.join("blobs/sha256"))
                .context(|| format!("creating {}", dir.display()))?;
            write_atomic(
                &dir.join("oci-layout"),
                br#"{"imageLayoutVersion":"1.0.0"}"#,
            )?;
            if !dir.join("index.json").exists() {
                let empty = Index {
                    schema_version: 2,
                    media_type: Some(OCI_INDEX.to_string()),
                    manifests: vec![],
                    annotations: None,
                };
                write_atomic(
                    &dir.join("index.json"),
                    &serde_json::to_vec(&empty).expect("serialisable"),
                )?;
            }
        }
        Self::open(dir)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn blob_path(&self, digest: &str) -> Result<PathBuf> {
        valid_digest_or_err(digest)?;
        Ok(self
            .dir
            .join("blobs/sha256")
            .join(&digest["sha256:".len()..]))
    }

    fn read_index(&self) -> Result<Index> {
        let path = self.dir.join("index.json");
        let bytes = fs::read(&path).context(|| format!("reading {}", path.display()))?;
        serde_json::from_slice(&bytes).map_err(|e| OciError::Json {
            context: path.display().to_string(),
            source: e,
        })
    }

    fn open_file(&self, digest: &str) -> Result<File> {
        let path = self.blob_path(digest)?;
        File::open(&path).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => OciError::NotFound {
                what: format!("blob {digest} in {}", self.dir.display()),
                hint: None,
            },
            _ => OciError::Io {
                context: format!("opening {}", path.display()),
                source: e,
            },
        })
    }
}

/// Writes a file by rename, so readers never see it half-written.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir)
        .context(|| format!("creating a file in {}", dir.display()))?;
    tmp.write_all(bytes)
        .context(|| format!("writing {}", path.display()))?;
    tmp.as_file()
        .sync_all()
        .context(|| format!("syncing {}", path.display()))?;
    tmp.persist(path).map_err(|e| OciError::Io {
        context: format!("renaming into {}", path.display()),
        source: e.error,
    })?;
    Ok(())
}

impl Repository for OciLayout {
    fn describe(&self) -> String {
        format!("oci:{}", self.dir.display())
    }

    fn fetch_manifest(&self, reference: &str) -> Result<FetchedManifest> {
        let index = self.read_index()?;
        let desc = if reference.starts_with("sha256:") {
            index
                .manifests
                .iter()
                .find(|d| d.digest == reference)
                .cloned()
                .unwrap_or_else(|| Descriptor::for_bytes("", b""))
        } else if reference.is_empty() {
            match index.manifests.as_slice() {
                [only] => only.clone(),
                [] => {
                    return Err(OciError::NotFound {
                        what: format!("an image in {}", self.describe()),
                        hint: Some("the layout's index.json is empty".into()),
                    })
                }
                many => {
                    let tags: Vec<&str> = many
                        .iter()
                        .filter_map(|d| d.annotation(ANNOTATION_REF_NAME))
                        .collect();
                    return Err(OciError::NotFound {
                        what: format!("a single image in {}", self.describe()),
                        hint: Some(format!("name one of its tags: {}", tags.join(", "))),
                    });
                }
            }
        } else {
            index
                .manifests
                .iter()
                .find(|d| d.annotation(ANNOTATION_REF_NAME) == Some(reference))
                .cloned()
                .ok_or_else(|| OciError::NotFound {
                    what: format!("tag {reference:?} in {}", self.describe()),
                    hint: None,
                })?
        };
        let digest = if reference.starts_with("sha256:") {
            reference
        } else {
            desc.digest.as_str()
        };
        let mut bytes = Vec::new();
        let what = format!("manifest {digest} in {}", self.describe());
        self.open_file(digest)?
            .take(crate::manifest::MAX_DOCUMENT)
            .read_to_end(&mut bytes)
            .context(|| format!("reading {what}"))?;
        let media_type = (!desc.media_type.is_empty()).then(|| desc.media_type.clone());
        FetchedManifest::new(bytes, media_type, digest, &what)
    }

    fn open_blob(&self, desc: &Descriptor) -> Result<Box<dyn Read + Send>> {
        let f = self.open_file(&desc.digest)?;
        let what = format!("blob {} in {}", desc.digest, self.describe());
        Ok(Box::new(VerifyingReader::new(
            io::BufReader::with_capacity(1 << 20, f),
            &desc.digest,
            desc.size,
            what,
        )))
    }

    fn read_range(&self, digest: &str, offset: u64, len: u64) -> Result<Vec<u8>> {
        let f = self.open_file(digest)?;
        // The length comes from the caller, which may have it from an
        // unverified blob: nothing is allocated for bytes the file lacks.
        let have = f
            .metadata()
            .context(|| format!("reading the size of {digest} in {}", self.describe()))?
            .len();
        if offset.checked_add(len).is_none_or(|end| end > have) {
            return Err(OciError::Io {
                context: format!(
                    "reading {len} bytes at {offset} of {digest} in {}",
                    self.describe()
                ),
                source: io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("the blob has only {have} bytes"),
                ),
            });
        }
        let mut out = vec![0u8; len as usize];
        f.read_exact_at(&mut out, offset).context(|| {
            format!(
                "reading {len} bytes at {offset} of {digest} in {}",
                self.describe()
            )
        })?;
        Ok(out)
    }

    fn has_blob(&self, digest: &str) -> Result<bool> {
        Ok(self.blob_path(digest)?.exists())
    }

    fn push_blob(
        &self,
        desc: &Descriptor,
        open: &mut dyn FnMut() -> io::Result<Box<dyn Read + Send>>,
    ) -> Result<()> {
        let path = self.blob_path(&desc.digest)?;
        if path.exists() {
            return Ok(());
        }
        let dir = path.parent().expect("blob path has a parent");
        fs::create_dir_all(dir).context(|| format!("creating {}", dir.display()))?;
        let mut tmp = tempfile::NamedTempFile::new_in(dir)
            .context(|| format!("creating a file in {}", dir.display()))?;
        let what = format!("blob {}", desc.digest);
        let mut src = VerifyingReader::new(
            open().context(|| format!("opening {what}"))?,
            &desc.digest,
            desc.size,
            &what,
        );
        io::copy(&mut src, &mut tmp)
            .context(|| format!("writing {what} into {}", self.describe()))?;
        tmp.as_file()
            .sync_all()
            .context(|| format!("syncing {what}"))?;
        tmp.persist(&path).map_err(|e| OciError::Io {
            context: format!("renaming into {}", path.display()),
            source: e.error,
        })?;
        Ok(())
    }

    fn push_blob_file(&self, desc: &Descriptor, path: &Path) -> Result<()> {
        let dest = self.blob_path(&desc.digest)?;
        if dest.exists() {
            return Ok(());
        }
        // The caller hashed the file as it wrote it; on the same filesystem
        // a rename publishes it without copying. Elsewhere, copy and verify.
        let size = fs::metadata(path)
            .context(|| format!("reading {}", path.display()))?
            .len();
        if size == desc.size && fs::rename(path, &dest).is_ok() {
            return Ok(());
        }
        self.push_blob(desc, &mut || {
            Ok(Box::new(File::open(path)?) as Box<dyn Read + Send>)
        })
    }

    fn push_manifest(&self, bytes: &[u8], media_type: &str, tag: Option<&str>) -> Result<String> {
        let digest = sha256_digest(bytes);
        let path = self.blob_path(&digest)?;
        if !path.exists() {
            write_atomic(&path, bytes)?;
        }
        let _guard = self.index_lock.lock().unwrap_or_else(|p| p.into_inner());
        // Other processes may write this layout too: hold an exclusive lock
        // on the directory across the read-modify-write of index.json.
        let dir = File::open(&self.dir).context(|| format!("opening {}", self.dir.display()))?;
        rustix::fs::flock(&dir, rustix::fs::FlockOperation::LockExclusive).map_err(|e| {
            OciError::Io {
                context: format!("locking {}", self.dir.display()),
                source: e.into(),
            }
        })?;
        let mut index = self.read_index()?;
        let mut desc = Descriptor::for_bytes(media_type, bytes);
        if let Some(t) = tag {
            index
                .manifests
                .retain(|d| d.annotation(ANNOTATION_REF_NAME) != Some(t));
            desc.annotations = Some([(ANNOTATION_REF_NAME.to_string(), t.to_string())].into());
        } else if index.manifests.iter().any(|d| d.digest == digest) {
            return Ok(digest);
        }
        index.manifests.push(desc);
        let json = serde_json::to_vec_pretty(&index).expect("serialisable");
        write_atomic(&self.dir.join("index.json"), &json)?;
        Ok(digest)
    }
}
