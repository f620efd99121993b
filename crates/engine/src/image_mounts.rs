//! One shared, lazily fetching mount per image on the node, for the
//! containers of every front end: `ROOT/images/KEY/tree`, served by a mount
//! daemon that outlives the containers, so later runs start warm and
//! concurrent containers share one page cache. KEY is derived from the
//! image reference and platform as given (a moved tag keeps the mounted
//! image until `skiff umount ROOT/images/KEY/tree`, as Docker keeps a
//! pulled one). The image's runtime config is kept beside it, so a warm
//! start asks the registry nothing.

use std::path::{Path, PathBuf};

use skiff_fs::IdShift;
use skiff_oci::{Platform, RuntimeConfig};

use crate::error::{EngineError, IoContext, Result};
use crate::mount_daemon::MountRequest;
use crate::mount_records;
use crate::Engine;

const FUSE_SUPER_MAGIC: i64 = 0x6573_5546;

impl Engine {
    /// The mounted tree of `image` and its runtime config, mounting it
    /// first if needed. With `shift`, file owners appear shifted for a user
    /// namespace; with `trace`, reads are recorded to that file (see
    /// [`Engine::release_image_mount`]). Each is a mount of its own (the
    /// chunk cache is still shared).
    pub fn ensure_image_mount(
        &self,
        image: &str,
        platform: Option<&Platform>,
        shift: Option<IdShift>,
        trace: Option<&Path>,
    ) -> Result<(PathBuf, RuntimeConfig)> {
        let root = &self.config.root;
        let platform_str = platform.map(|p| p.to_string()).unwrap_or_default();
        let mut id = format!("{image}\0{platform_str}");
        if let Some(s) = shift {
            id.push_str(&format!("\0{s}"));
        }
        if let Some(t) = trace {
            id.push_str(&format!("\0trace:{}", t.display()));
        }
        let key = blake3::hash(id.as_bytes()).to_hex()[..16].to_string();
        let dir = root.join("images").join(&key);
        std::fs::create_dir_all(&dir).ctx(|| format!("creating {}", dir.display()))?;
        // Serialize concurrent runs of one image: one mounts, the others reuse.
        let lock_path = dir.join("lock");
        let lock = std::fs::File::create(&lock_path)
            .ctx(|| format!("creating {}", lock_path.display()))?;
        rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockExclusive)
            .map_err(|e| EngineError::io("locking the image mount", e.into()))?;
        let tree = dir.join("tree");
        let config_path = dir.join("config.json");
        if let Some(rec) = mount_records::read(root, &tree) {
            let saved = std::fs::read(&config_path)
                .ok()
                .and_then(|b| serde_json::from_slice::<RuntimeConfig>(&b).ok());
            if let (true, Some(config)) = (mount_records::alive(rec.pid) && is_fuse(&tree), saved) {
                return Ok((tree, config));
            }
            tracing::info!(tree = %tree.display(), "clearing a stale image mount");
            let _ = rustix::mount::unmount(&tree, rustix::mount::UnmountFlags::DETACH);
            mount_records::remove(root, &tree);
        } else if is_fuse(&tree) {
            let _ = rustix::mount::unmount(&tree, rustix::mount::UnmountFlags::DETACH);
        }
        let image_file = dir.join("image");
        std::fs::write(&image_file, format!("{image}\n{platform_str}\n"))
            .ctx(|| format!("writing {}", image_file.display()))?;

        let mut req = MountRequest::new(image, &tree);
        req.platform = platform.cloned();
        req.shift_ids = shift;
        req.record_trace = trace.map(Path::to_path_buf);
        // The daemon resolves and mounts the image while this process
        // fetches its runtime config: two round trips to the registry at once.
        let daemon = self.spawn_mount_daemon(&req)?;
        let config = self.runtime_config(image, platform);
        let mounted = daemon.wait_ready();
        let config = match (config, mounted) {
            (Ok(c), Ok(_)) => c,
            (Err(e), mounted) => {
                if mounted.is_ok() {
                    let _ = rustix::mount::unmount(&tree, rustix::mount::UnmountFlags::DETACH);
                    mount_records::remove(root, &tree);
                }
                return Err(e);
            }
            (Ok(_), Err(e)) => {
                return Err(match e {
                    EngineError::Helper(text) => {
                        EngineError::Helper(format!("mounting {image} failed: {text}"))
                    }
                    e => e,
                })
            }
        };
        let bytes = serde_json::to_vec(&config)
            .map_err(|e| EngineError::io("encoding the image config", e.into()))?;
        std::fs::write(&config_path, bytes).ctx(|| format!("writing {}", config_path.display()))?;
        Ok((tree, config))
    }

    /// Unmounts an image mount and waits for its daemon to exit, so that a
    /// trace it recorded is complete. Failures are logged: the container
    /// has already run.
    pub fn release_image_mount(&self, tree: &Path) {
        let root = &self.config.root;
        let rec = mount_records::read(root, tree);
        if let Err(e) = rustix::mount::unmount(tree, rustix::mount::UnmountFlags::DETACH) {
            tracing::warn!(tree = %tree.display(), error = %e, "unmounting the recording image mount");
        }
        if let Some(rec) = rec {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            while mount_records::alive(rec.pid) && std::time::Instant::now() < deadline {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
        }
        mount_records::remove(root, tree);
    }
}

fn is_fuse(p: &Path) -> bool {
    rustix::fs::statfs(p).is_ok_and(|s| s.f_type == FUSE_SUPER_MAGIC)
}
