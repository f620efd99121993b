//! The node's images, as `skiff pull`, `skiff images` and `skiff rmi` see
//! them: each image mount directory `ROOT/images/KEY` (see
//! [`crate::image_mounts`]) with its record `image.json`, and the images
//! converted on this node, `ROOT/store/HEX` (an OCI layout each, named by
//! the source manifest's digest, so a second run of the same source
//! converts nothing).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use serde::{Deserialize, Serialize};
use skiff_oci::{ImageRef, Platform};

use crate::error::{EngineError, IoContext, Result};
use crate::{mount_records, record, Engine};

/// Where an image's bytes come from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum ImageSource {
    /// A skiff image, fetched lazily from its registry or layout.
    Lazy,
    /// An ordinary OCI image, converted on this node into `store`.
    Converted {
        /// The source manifest's digest.
        from_digest: String,
        /// The converted image, as a reference (`oci:ROOT/store/HEX:skiff`).
        store: String,
    },
}

/// `ROOT/images/KEY/image.json`: what an image mount serves.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ImageRecord {
    /// The reference as given.
    pub reference: String,
    /// The platform as given (empty: the host's).
    pub platform: String,
    /// The served skiff image's manifest digest.
    pub digest: String,
    pub source: ImageSource,
    /// What the skiff image references, compressed: metadata and blobs.
    pub size_bytes: u64,
    /// Seconds since the Unix epoch.
    pub pulled: u64,
}

/// One image on the node, for `skiff images`.
#[derive(Debug, Clone, Serialize)]
pub struct ImageEntry {
    #[serde(flatten)]
    pub record: ImageRecord,
    /// `lazy` or `converted`.
    pub mode: &'static str,
    /// Its mount directories (`ROOT/images/KEY`), one per variant (a user
    /// namespace's shifted IDs, a recording run).
    pub mounts: Vec<PathBuf>,
    /// Whether a mount daemon serves it now.
    pub mounted: bool,
    /// Bytes its running mount daemons fetched (compressed).
    pub fetched_bytes: u64,
    /// The containers (IDs) whose root it is.
    pub containers: Vec<String>,
    /// The WASI module its command names, for a `wasi/wasm` image that was
    /// pulled or run here.
    pub wasm_module: Option<crate::wasm_images::WasmModule>,
}

/// What a local conversion cost, for the one line a front end prints.
#[derive(Debug, Clone, Serialize)]
pub struct Conversion {
    pub reference: String,
    /// Compressed bytes of the source's layers read.
    pub source_bytes: u64,
    /// Bytes the converted image's blobs take in the node's store.
    pub stored_bytes: u64,
    pub seconds: f64,
}

pub(crate) fn record_path(dir: &Path) -> PathBuf {
    dir.join("image.json")
}

pub(crate) fn read_record(dir: &Path) -> Option<ImageRecord> {
    serde_json::from_slice(&std::fs::read(record_path(dir)).ok()?).ok()
}

pub(crate) fn write_record(dir: &Path, rec: &ImageRecord) -> Result<()> {
    let path = record_path(dir);
    let tmp = path.with_extension("tmp");
    let bytes = serde_json::to_vec_pretty(rec)
        .map_err(|e| EngineError::io("encoding an image record", e.into()))?;
    std::fs::write(&tmp, bytes).ctx(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, &path).ctx(|| format!("writing {}", path.display()))
}

impl Engine {
    fn store_dir(&self) -> PathBuf {
        self.config.root.join("store")
    }

    /// Converts the ordinary OCI image `reference` (resolved to the
    /// manifest `digest`) into the node's store, unless it is there
    /// already; returns the converted image's reference and, if it
    /// converted now, what that cost.
    pub(crate) fn convert_locally(
        &self,
        reference: &str,
        platform: Option<&Platform>,
        digest: &str,
    ) -> Result<(String, Option<Conversion>)> {
        let hex = digest.trim_start_matches("sha256:");
        let dir = self.store_dir().join(hex);
        let target = format!("oci:{}:skiff", dir.display());
        if dir.join("index.json").exists() {
            return Ok((target, None));
        }
        let started = Instant::now();
        let tmp = self
            .store_dir()
            .join(format!("{hex}.tmp-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&tmp);
        let source = ImageRef::parse(reference)
            .and_then(|r| r.open(&self.config.registry))
            .map_err(EngineError::oci(format!("opening {reference}")))?;
        let staged = ImageRef::parse(&format!("oci:{}:skiff", tmp.display()))
            .and_then(|r| r.open_for_write(&self.config.registry))
            .map_err(EngineError::oci("opening the node's image store"))?;
        // The source by digest, so what is converted is what was resolved.
        let source = skiff_oci::OpenedRef {
            repo: source.repo,
            reference: Some(digest.to_string()),
        };
        let opts = skiff_builder::ConvertOptions {
            build: Default::default(),
            chunking_explicit: false,
            platform: platform.cloned(),
            staging: self.config.root.join("tmp"),
            prefetch: Vec::new(),
        };
        let progress = self
            .convert_progress
            .as_ref()
            .map(|f| f())
            .unwrap_or_else(|| Arc::new(skiff_builder::NoProgress));
        let report = skiff_builder::convert(
            &source,
            &staged,
            skiff_builder::ChunkDict::default(),
            &opts,
            progress,
        )
        .map_err(|e| {
            let _ = std::fs::remove_dir_all(&tmp);
            EngineError::Convert {
                context: format!("converting {reference} on this node"),
                source: e,
            }
        })?;
        // A concurrent conversion of the same source may have won; either
        // copy is the same.
        if std::fs::rename(&tmp, &dir).is_err() {
            let _ = std::fs::remove_dir_all(&tmp);
        }
        let source_bytes = report.images.iter().map(|i| i.stats.layer_bytes).sum();
        let stored_bytes = report.images.iter().map(|i| i.blob_bytes).sum();
        Ok((
            target,
            Some(Conversion {
                reference: reference.to_string(),
                source_bytes,
                stored_bytes,
                seconds: started.elapsed().as_secs_f64(),
            }),
        ))
    }

    /// Resolves and mounts `reference` on the node (verified; only its
    /// metadata is fetched, or it is converted here if it is not a skiff
    /// image), as `skiff run` would.
    pub fn pull(
        &self,
        reference: &str,
        platform: Option<&Platform>,
    ) -> Result<(ImageEntry, Option<Conversion>)> {
        let mounted = self.ensure_image_mount(reference, platform, None, None)?;
        self.note_wasm_module(&mounted.tree, &mounted.config, true);
        let entry = self
            .images()?
            .into_iter()
            .find(|e| e.mounts.iter().any(|m| m.join("tree") == mounted.tree))
            .ok_or_else(|| {
                EngineError::NotFound(format!("{reference} is mounted but has no image record"))
            })?;
        Ok((entry, mounted.conversion))
    }

    /// Every image on the node, one entry per reference and platform.
    pub fn images(&self) -> Result<Vec<ImageEntry>> {
        let root = &self.config.root;
        let dir = root.join("images");
        let containers = record::all(root)?;
        let mut out: Vec<ImageEntry> = Vec::new();
        let rd = match std::fs::read_dir(&dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(EngineError::io(format!("listing {}", dir.display()), e)),
        };
        let mut dirs: Vec<PathBuf> = rd.flatten().map(|e| e.path()).collect();
        dirs.sort();
        for d in dirs {
            let Some(rec) = read_record(&d) else { continue };
            let tree = d.join("tree");
            let daemon = mount_records::read(root, &tree).filter(|m| mount_records::alive(m.pid));
            let fetched = daemon
                .as_ref()
                .and_then(|m| skiff_fs::control::query(&m.socket, "/stats").ok())
                .and_then(|body| serde_json::from_str::<serde_json::Value>(&body).ok())
                .and_then(|v| v["metrics"]["fetched_bytes"].as_u64())
                .unwrap_or(0);
            let users: Vec<String> = containers
                .iter()
                .filter(|c| c.image_mount == tree)
                .map(|c| c.id.clone())
                .collect();
            let same = out
                .iter_mut()
                .find(|e| e.record.reference == rec.reference && e.record.platform == rec.platform);
            match same {
                Some(e) => {
                    if e.wasm_module.is_none() {
                        e.wasm_module = self.wasm_module(&d);
                    }
                    e.mounts.push(d);
                    e.mounted |= daemon.is_some();
                    e.fetched_bytes += fetched;
                    e.containers.extend(users);
                }
                None => out.push(ImageEntry {
                    wasm_module: self.wasm_module(&d),
                    mode: match rec.source {
                        ImageSource::Lazy => "lazy",
                        ImageSource::Converted { .. } => "converted",
                    },
                    record: rec,
                    mounts: vec![d],
                    mounted: daemon.is_some(),
                    fetched_bytes: fetched,
                    containers: users,
                }),
            }
        }
        Ok(out)
    }

    /// Removes an image (by reference, or a prefix of its digest): its
    /// mount daemons stop, its records go, a local conversion is deleted,
    /// and its chunks in the node's cache are no longer kept for it. An
    /// image a running container uses is refused; one that stopped
    /// containers use, unless `force`.
    pub fn remove_image(&self, key: &str, force: bool) -> Result<ImageEntry> {
        let images = self.images()?;
        let digest_key = key.trim_start_matches("sha256:");
        let matches: Vec<&ImageEntry> = images
            .iter()
            .filter(|e| {
                e.record.reference == key
                    || (digest_key.len() >= 6
                        && e.record
                            .digest
                            .trim_start_matches("sha256:")
                            .starts_with(digest_key))
            })
            .collect();
        let entry = match matches.as_slice() {
            [one] => (*one).clone(),
            [] => {
                return Err(EngineError::NotFound(format!(
                    "no image {key:?} on this node; `skiff images` lists them"
                )))
            }
            _ => {
                return Err(EngineError::Invalid(format!(
                    "{key:?} matches {} images; give the reference with its platform, or more of the digest",
                    matches.len()
                )))
            }
        };
        let root = &self.config.root;
        let users: Vec<record::Record> = record::all(root)?
            .into_iter()
            .filter(|c| entry.containers.contains(&c.id))
            .collect();
        if let Some(r) = users.iter().find(|r| r.running()) {
            return Err(EngineError::Conflict(format!(
                "image {} is the root of running container {}; stop it first",
                entry.record.reference, r.name
            )));
        }
        if !users.is_empty() && !force {
            let names: Vec<&str> = users.iter().map(|r| r.name.as_str()).collect();
            return Err(EngineError::Conflict(format!(
                "image {} is the root of stopped containers ({}); remove them with `skiff rm`, or use `skiff rmi -f`",
                entry.record.reference,
                names.join(", ")
            )));
        }
        for dir in &entry.mounts {
            let tree = dir.join("tree");
            if mount_records::read(root, &tree).is_some() || is_mounted(&tree) {
                if let Err(e) = self.unmount(&tree, true) {
                    tracing::warn!(tree = %tree.display(), "unmounting: {e}");
                }
            }
            // The VM guests' block device of the image.
            let block = dir.join("block.sock");
            if mount_records::read(root, &block).is_some() {
                if let Err(e) = self.unmount(&block, false) {
                    tracing::warn!(socket = %block.display(), "stopping the block device: {e}");
                }
            }
            self.unpin_chunks(dir);
            std::fs::remove_dir_all(dir).ctx(|| format!("removing {}", dir.display()))?;
        }
        // Its compiled Wasm module, unless another image runs the same one.
        if let Some(module) = &entry.wasm_module {
            let still = self.images()?.into_iter().any(|e| {
                e.wasm_module
                    .as_ref()
                    .is_some_and(|m| m.digest == module.digest)
            });
            if !still {
                self.forget_compiled_module(&module.digest);
            }
        }
        if let ImageSource::Converted { from_digest, .. } = &entry.record.source {
            let still = self.images()?.into_iter().any(|e| {
                matches!(&e.record.source, ImageSource::Converted { from_digest: f, .. } if f == from_digest)
            });
            if !still {
                let dir = self
                    .store_dir()
                    .join(from_digest.trim_start_matches("sha256:"));
                std::fs::remove_dir_all(&dir).ctx(|| format!("removing {}", dir.display()))?;
            }
        }
        Ok(entry)
    }
}

impl Engine {
    /// The node's cache no longer keeps this image mount's chunks first.
    fn unpin_chunks(&self, dir: &Path) {
        if let Some(name) = dir.file_name().and_then(|n| n.to_str()) {
            skiff_store::ChunkCache::unpin(&self.config.root, name);
        }
    }
}

fn is_mounted(tree: &Path) -> bool {
    const FUSE_SUPER_MAGIC: i64 = 0x6573_5546;
    rustix::fs::statfs(tree).is_ok_and(|s| s.f_type == FUSE_SUPER_MAGIC)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::EngineConfig;

    fn engine(root: &Path) -> Engine {
        Engine::new(EngineConfig {
            root: root.to_path_buf(),
            registry: Default::default(),
            helper: "/nonexistent".into(),
            cache_size: crate::DEFAULT_CACHE_SIZE,
            image_idle_timeout: None,
        })
        .unwrap()
    }

    fn image_dir(root: &Path, key: &str, reference: &str, source: ImageSource) -> PathBuf {
        let dir = root.join("images").join(key);
        std::fs::create_dir_all(&dir).unwrap();
        write_record(
            &dir,
            &ImageRecord {
                reference: reference.into(),
                platform: String::new(),
                digest: format!("sha256:{}", key.repeat(4)),
                source,
                size_bytes: 100,
                pulled: 1,
            },
        )
        .unwrap();
        dir
    }

    /// Mounts of one reference (a shifted one, say) are one image; the
    /// containers rooted on any of them are its users; removal refuses
    /// what a container still uses unless forced, and takes its records.
    #[test]
    fn images_group_their_mounts_and_know_their_containers() {
        let root = tempfile::tempdir().unwrap();
        let e = engine(root.path());
        let a1 = image_dir(
            root.path(),
            "aaaaaaaaaaaaaaaa",
            "reg/a:1",
            ImageSource::Lazy,
        );
        let _a2 = image_dir(
            root.path(),
            "bbbbbbbbbbbbbbbb",
            "reg/a:1",
            ImageSource::Lazy,
        );
        let conv = ImageSource::Converted {
            from_digest: "sha256:cccc".into(),
            store: "oci:/x:skiff".into(),
        };
        image_dir(root.path(), "cccccccccccccccc", "reg/plain:1", conv);
        std::fs::create_dir_all(e.store_dir().join("cccc")).unwrap();
        let c = crate::record::Record {
            id: "d".repeat(64),
            name: "user".into(),
            image: "reg/a:1".into(),
            command: vec![],
            created: 0,
            status: crate::record::Status::Exited,
            pid: None,
            pid_start: None,
            exit_code: Some(0),
            oom_killed: false,
            finished: None,
            detached: false,
            remove_on_exit: false,
            cgroups_path: "/skiff/d".into(),
            stop_signal: 15,
            private_network: true,
            image_mount: a1.join("tree"),
            layer_size: None,
            log_max_file_bytes: None,
            keeps_log: true,
            sandbox: "namespace".into(),
            block_device: None,
        };
        c.save(root.path()).unwrap();

        let list = e.images().unwrap();
        assert_eq!(list.len(), 2, "{list:?}");
        let a = list
            .iter()
            .find(|i| i.record.reference == "reg/a:1")
            .unwrap();
        assert_eq!(a.mounts.len(), 2);
        assert_eq!(a.containers, std::slice::from_ref(&c.id));
        assert_eq!(a.mode, "lazy");
        assert!(!a.mounted);
        let plain = list
            .iter()
            .find(|i| i.record.reference == "reg/plain:1")
            .unwrap();
        assert_eq!(plain.mode, "converted");

        assert!(matches!(
            e.remove_image("reg/a:1", false),
            Err(EngineError::Conflict(_))
        ));
        e.remove_image("reg/a:1", true).unwrap();
        e.remove_image("cccccccc", false).unwrap();
        assert!(e.images().unwrap().is_empty());
        assert!(
            !e.store_dir().join("cccc").exists(),
            "the conversion was kept"
        );
        assert!(matches!(
            e.remove_image("reg/a:1", false),
            Err(EngineError::NotFound(_))
        ));
    }
}
