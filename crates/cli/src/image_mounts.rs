//! One shared, lazily fetching mount per image on the node, for
//! `skiff run`: `ROOT/images/KEY/tree`, served by a `skiff mount --daemon`
//! that outlives the containers, so later runs start warm and concurrent
//! containers share one page cache. KEY is derived from the image
//! reference and platform as given (a moved tag keeps the mounted image
//! until `skiff umount ROOT/images/KEY/tree`, as Docker keeps a pulled one).
//! The image's runtime config is kept beside it, so a warm start asks the
//! registry nothing.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use skiff_fs::IdShift;
use skiff_oci::{Platform, RuntimeConfig};

use crate::{mounts, Global};

const FUSE_SUPER_MAGIC: i64 = 0x6573_5546;

/// The mounted tree of `image` and its runtime config, mounting it first
/// if needed. With `shift`, file owners appear shifted for a user namespace;
/// with `trace`, reads are recorded to that file (see [`release`]). Each is
/// a mount of its own (the chunk cache is still shared).
pub fn ensure(
    global: &Global,
    image: &str,
    platform: Option<&Platform>,
    shift: Option<IdShift>,
    trace: Option<&Path>,
) -> Result<(PathBuf, RuntimeConfig)> {
    let platform_str = platform.map(|p| p.to_string()).unwrap_or_default();
    let mut id = format!("{image}\0{platform_str}");
    if let Some(s) = shift {
        id.push_str(&format!("\0{s}"));
    }
    if let Some(t) = trace {
        id.push_str(&format!("\0trace:{}", t.display()));
    }
    let key = blake3::hash(id.as_bytes()).to_hex()[..16].to_string();
    let dir = global.root.join("images").join(&key);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    // Serialize concurrent runs of one image: one mounts, the others reuse.
    let lock = std::fs::File::create(dir.join("lock"))
        .with_context(|| format!("creating {}", dir.join("lock").display()))?;
    rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockExclusive)
        .context("locking the image mount")?;
    let tree = dir.join("tree");
    let config_path = dir.join("config.json");
    if let Some(rec) = mounts::read(&global.root, &tree) {
        let saved = std::fs::read(&config_path)
            .ok()
            .and_then(|b| serde_json::from_slice::<RuntimeConfig>(&b).ok());
        if let (true, Some(config)) = (mounts::alive(rec.pid) && is_fuse(&tree), saved) {
            return Ok((tree, config));
        }
        tracing::info!(tree = %tree.display(), "clearing a stale image mount");
        let _ = rustix::mount::unmount(&tree, rustix::mount::UnmountFlags::DETACH);
        mounts::remove(&global.root, &tree);
    } else if is_fuse(&tree) {
        let _ = rustix::mount::unmount(&tree, rustix::mount::UnmountFlags::DETACH);
    }
    std::fs::write(dir.join("image"), format!("{image}\n{platform_str}\n"))?;

    let mut cmd = Command::new(std::env::current_exe()?);
    cmd.arg("--root").arg(&global.root);
    let reg = &global.registry;
    if reg.plain_http {
        cmd.arg("--plain-http");
    }
    if let Some(p) = &reg.proxy {
        cmd.arg("--proxy").arg(p);
    }
    if let Some(m) = &reg.mirror {
        cmd.arg("--mirror").arg(m);
    }
    cmd.arg("mount").arg("--daemon");
    if !platform_str.is_empty() {
        cmd.arg("--platform").arg(&platform_str);
    }
    if let Some(s) = shift {
        cmd.arg("--shift-ids").arg(s.to_string());
    }
    if let Some(t) = trace {
        cmd.arg("--record-trace").arg(t);
    }
    cmd.arg(image).arg(&tree);
    // The daemon resolves and mounts the image while this process fetches
    // its runtime config: two round trips to the registry at once.
    let daemon = cmd
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .context("starting the image mount daemon")?;
    let config = crate::commands::image_runtime_config(global, image, platform);
    let out = daemon
        .wait_with_output()
        .context("waiting for the image mount daemon")?;
    let config = match config {
        Ok(c) => c,
        Err(e) => {
            if out.status.success() {
                let _ = rustix::mount::unmount(&tree, rustix::mount::UnmountFlags::DETACH);
                mounts::remove(&global.root, &tree);
            }
            return Err(e);
        }
    };
    if !out.status.success() {
        bail!(
            "mounting {image} failed: {}",
            String::from_utf8_lossy(&out.stderr)
                .trim()
                .trim_start_matches("skiff: error: ")
        );
    }
    std::fs::write(&config_path, serde_json::to_vec(&config)?)
        .with_context(|| format!("writing {}", config_path.display()))?;
    Ok((tree, config))
}

/// Unmounts an image mount and waits for its daemon to exit, so that a
/// trace it recorded is complete. Failures are logged: the container has
/// already run.
pub fn release(global: &Global, tree: &Path) {
    let rec = mounts::read(&global.root, tree);
    if let Err(e) = rustix::mount::unmount(tree, rustix::mount::UnmountFlags::DETACH) {
        tracing::warn!(tree = %tree.display(), error = %e, "unmounting the recording image mount");
    }
    if let Some(rec) = rec {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while mounts::alive(rec.pid) && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
    mounts::remove(&global.root, tree);
}

fn is_fuse(p: &Path) -> bool {
    rustix::fs::statfs(p).is_ok_and(|s| s.f_type == FUSE_SUPER_MAGIC)
}
