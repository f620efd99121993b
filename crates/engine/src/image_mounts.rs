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

use skiff_format::mediatype::is_metadata_layer;

use crate::error::{EngineError, IoContext, Result};
use crate::image_store::{self, Conversion, ImageRecord, ImageSource};
use crate::mount_daemon::MountRequest;
use crate::{mount_records, record, Engine};

const FUSE_SUPER_MAGIC: i64 = 0x6573_5546;

/// An image mount ready for containers.
pub struct Mounted {
    pub tree: PathBuf,
    pub config: RuntimeConfig,
    /// Set when the image was an ordinary OCI image converted just now.
    pub conversion: Option<Conversion>,
}

impl Engine {
    /// The mounted tree of `image` and its runtime config, mounting it
    /// first if needed. With `shift`, file owners appear shifted for a user
    /// namespace; with `trace`, reads are recorded to that file (see
    /// [`Engine::release_image_mount`]). Each is a mount of its own (the
    /// chunk cache is still shared). An image that is not a skiff image is
    /// converted on the node first (see [`crate::image_store`]).
    pub fn ensure_image_mount(
        &self,
        image: &str,
        platform: Option<&Platform>,
        shift: Option<IdShift>,
        trace: Option<&Path>,
    ) -> Result<Mounted> {
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
        let _lock = lock_image_dir(&dir)?;
        let tree = dir.join("tree");
        let config_path = dir.join("config.json");
        if let Some(rec) = mount_records::read(root, &tree) {
            let saved = std::fs::read(&config_path)
                .ok()
                .and_then(|b| serde_json::from_slice::<RuntimeConfig>(&b).ok());
            if let (true, Some(config)) = (mount_records::alive(rec.pid) && is_fuse(&tree), saved) {
                return Ok(Mounted {
                    tree,
                    config,
                    conversion: None,
                });
            }
            tracing::info!(tree = %tree.display(), "clearing a stale image mount");
            let _ = rustix::mount::unmount(&tree, rustix::mount::UnmountFlags::DETACH);
            mount_records::remove(root, &tree);
        } else if is_fuse(&tree) {
            let _ = rustix::mount::unmount(&tree, rustix::mount::UnmountFlags::DETACH);
        }

        let mut req = MountRequest::new(image, &tree, self.config.cache_size.bytes(root));
        req.platform = platform.cloned();
        req.shift_ids = shift;
        req.record_trace = trace.map(Path::to_path_buf);
        req.pin = Some(key.clone());
        // A recording mount is this run's alone, released at its end.
        req.idle_timeout = self.config.image_idle_timeout.filter(|_| trace.is_none());
        // An image converted here before is served from the node's store
        // once its source is seen to be the same; any other is assumed to
        // be a skiff image, and the daemon resolves and mounts it while
        // this process reads its config: two round trips at once.
        let known_conversion = matches!(
            image_store::read_record(&dir).map(|r| r.source),
            Some(ImageSource::Converted { .. })
        );
        let daemon = if known_conversion {
            None
        } else {
            Some(self.spawn_mount_daemon(&req)?)
        };
        let (repo, resolved) = match self.resolve_image(image, platform) {
            Ok(r) => r,
            Err(e) => {
                if let Some(d) = daemon {
                    let _ = d.wait_ready();
                }
                self.drop_mount(&tree);
                return Err(e);
            }
        };
        let is_skiff = resolved
            .manifest
            .layers
            .iter()
            .any(|l| is_metadata_layer(&l.media_type));
        let mut conversion = None;
        let mut source = ImageSource::Lazy;
        let (digest, size_bytes, config) = if is_skiff {
            let daemon = match daemon {
                Some(d) => d,
                None => self.spawn_mount_daemon(&req)?,
            };
            let config =
                self.config_while_mounting(daemon, repo.as_ref(), &resolved, &tree, image)?;
            let size = resolved.manifest.layers.iter().map(|l| l.size).sum();
            (resolved.descriptor.digest.clone(), size, config)
        } else {
            // Not a skiff image: whatever the daemon tried failed.
            if let Some(d) = daemon {
                let _ = d.wait_ready();
                self.drop_mount(&tree);
            }
            let from = resolved.descriptor.digest.clone();
            let (store_ref, converted) = self.convert_locally(image, platform, &from)?;
            conversion = converted;
            let (store_repo, stored) = self.resolve_image(&store_ref, None)?;
            req.image = store_ref.clone();
            req.platform = None;
            let daemon = self.spawn_mount_daemon(&req)?;
            let config = self.config_while_mounting(
                daemon,
                store_repo.as_ref(),
                &stored,
                &tree,
                &store_ref,
            )?;
            source = ImageSource::Converted {
                from_digest: from,
                store: store_ref,
            };
            let size = stored.manifest.layers.iter().map(|l| l.size).sum();
            (stored.descriptor.digest.clone(), size, config)
        };
        let bytes = serde_json::to_vec(&config)
            .map_err(|e| EngineError::io("encoding the image config", e.into()))?;
        std::fs::write(&config_path, bytes).ctx(|| format!("writing {}", config_path.display()))?;
        image_store::write_record(
            &dir,
            &ImageRecord {
                reference: image.to_string(),
                platform: platform_str,
                digest,
                source,
                size_bytes,
                pulled: record::now(),
            },
        )?;
        Ok(Mounted {
            tree,
            config,
            conversion,
        })
    }

    /// Reads the image's runtime config while its daemon mounts it, then
    /// waits for the daemon; either failing undoes the mount.
    fn config_while_mounting(
        &self,
        daemon: crate::helper::Starting,
        repo: &dyn skiff_oci::Repository,
        resolved: &skiff_oci::ResolvedImage,
        tree: &Path,
        image: &str,
    ) -> Result<RuntimeConfig> {
        let config = repo
            .read_blob(&resolved.manifest.config)
            .and_then(|b| RuntimeConfig::parse(&b))
            .map(|mut c| {
                c.annotations = resolved.manifest.annotations.clone().unwrap_or_default();
                c
            })
            .map_err(EngineError::oci(format!(
                "reading the image config of {image}"
            )));
        match (config, daemon.wait_ready()) {
            (Ok(c), Ok(_)) => Ok(c),
            (Err(e), mounted) => {
                if mounted.is_ok() {
                    self.drop_mount(tree);
                }
                Err(e)
            }
            (Ok(_), Err(e)) => Err(mount_failed(image, e)),
        }
    }

    /// Unmounts a mount this process just started, and forgets it.
    fn drop_mount(&self, tree: &Path) {
        let _ = rustix::mount::unmount(tree, rustix::mount::UnmountFlags::DETACH);
        mount_records::remove(&self.config.root, tree);
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

impl Engine {
    /// The Prometheus text of the daemon serving the image mount at
    /// `tree`, if one is alive (for a front end's metrics endpoint).
    pub fn image_mount_metrics(&self, tree: &Path) -> Option<String> {
        let rec = mount_records::read(&self.config.root, tree)?;
        if !mount_records::alive(rec.pid) {
            return None;
        }
        skiff_fs::control::query(&rec.socket, "/metrics").ok()
    }
}

/// The image mount's init layer, `ROOT/images/KEY/init`, a lower layer
/// above the image's tree (as Docker's `-init` layer): empty mount points
/// for the `/etc` files skiff writes for every container
/// (`skiff_sandbox::spec::ETC_FILES`). Without it, each start would look
/// them up through the lazy mount, and copy `/etc` up into its own layer
/// where the image has no such file. Made once, beside the tree, and
/// renamed into place; owned by `owner` (a user namespace's host ID for
/// root), as the shifted tree is. Never changed once made (an overlay's
/// lower layers must not change under it). `None` where the image's
/// `/etc` is not a directory (a symlink the layer's `/etc` would hide).
pub(crate) fn init_layer(tree: &Path, owner: Option<u32>) -> Result<Option<PathBuf>> {
    match std::fs::symlink_metadata(tree.join("etc")) {
        Ok(m) if !m.is_dir() => return Ok(None),
        _ => {}
    }
    let dir = tree.parent().unwrap_or(tree).join("init");
    if dir.is_dir() {
        return Ok(Some(dir));
    }
    let staging = dir.with_extension(format!("new-{}", std::process::id()));
    let made = (|| -> std::io::Result<()> {
        use std::os::unix::fs::PermissionsExt;
        let etc = staging.join("etc");
        std::fs::create_dir_all(&etc)?;
        for d in [&staging, &etc] {
            std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755))?;
        }
        let mut made = vec![staging.clone(), etc.clone()];
        for name in skiff_sandbox::spec::ETC_FILES {
            let f = etc.join(name);
            std::fs::write(&f, b"")?;
            std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644))?;
            made.push(f);
        }
        if let Some(id) = owner {
            for p in &made {
                std::os::unix::fs::lchown(p, Some(id), Some(id))?;
            }
        }
        std::fs::rename(&staging, &dir)
    })();
    match made {
        Ok(()) => Ok(Some(dir)),
        // Another start made it first.
        Err(_) if dir.is_dir() => {
            let _ = std::fs::remove_dir_all(&staging);
            Ok(Some(dir))
        }
        Err(e) => {
            let _ = std::fs::remove_dir_all(&staging);
            Err(EngineError::io(format!("making {}", dir.display()), e))
        }
    }
}

/// The image directory's lock, held while its mount or block device is
/// looked at and started: concurrent runs of one image serialize.
pub(crate) fn lock_image_dir(dir: &Path) -> Result<std::fs::File> {
    let path = dir.join("lock");
    let lock = std::fs::File::create(&path).ctx(|| format!("creating {}", path.display()))?;
    rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockExclusive)
        .map_err(|e| EngineError::io("locking the image mount", e.into()))?;
    Ok(lock)
}

fn is_fuse(p: &Path) -> bool {
    rustix::fs::statfs(p).is_ok_and(|s| s.f_type == FUSE_SUPER_MAGIC)
}

fn mount_failed(image: &str, e: EngineError) -> EngineError {
    match e {
        EngineError::Helper(text) => {
            EngineError::Helper(format!("mounting {image} failed: {text}"))
        }
        e => e,
    }
}

impl Engine {
    /// The image mounted at `tree` (by [`Engine::ensure_image_mount`]) as
    /// a block device for VM guests: `ROOT/images/KEY/block.sock`, an NBD
    /// daemon on the image's lazy, verified store, shared by every VM of
    /// the image and started here if none serves. `skiff umount` of the
    /// socket, or `skiff rmi`, stops it.
    pub fn ensure_block_device(
        &self,
        tree: &Path,
        image: &str,
        platform: Option<&Platform>,
    ) -> Result<PathBuf> {
        let root = &self.config.root;
        let dir = tree.parent().unwrap_or(tree);
        let _lock = lock_image_dir(dir)?;
        let socket = dir.join("block.sock");
        if let Some(rec) = mount_records::read(root, &socket) {
            if mount_records::alive(rec.pid) && skiff_fs::socket::connect(&socket).is_ok() {
                return Ok(socket);
            }
            tracing::info!(socket = %socket.display(), "clearing a stale block device");
            mount_records::remove(root, &socket);
        }
        let _ = std::fs::remove_file(&socket);
        // The same image the tree serves: a converted one from the node's
        // store.
        let mut req = match image_store::read_record(dir).map(|r| r.source) {
            Some(ImageSource::Converted { store, .. }) => {
                MountRequest::new(&store, &socket, self.config.cache_size.bytes(root))
            }
            _ => {
                let mut r = MountRequest::new(image, &socket, self.config.cache_size.bytes(root));
                r.platform = platform.cloned();
                r
            }
        };
        req.nbd = true;
        req.idle_timeout = self.config.image_idle_timeout;
        self.spawn_mount_daemon(&req)?
            .wait_ready()
            .map_err(|e| mount_failed(image, e))?;
        Ok(socket)
    }
}
