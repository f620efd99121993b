//! `skiff umount MOUNTPOINT`

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use rustix::mount::{unmount, UnmountFlags};

use crate::mounts;
use crate::{exit, Global};

/// Unmount a skiff mount, and stop its daemon.
///
/// Works on a mount whose daemon died (the kernel then reports "Transport
/// endpoint is not connected"): the stale mount is detached.
#[derive(clap::Args)]
pub struct Args {
    /// The mountpoint.
    mountpoint: PathBuf,
    /// Detach even if files are open (they keep working until closed).
    #[arg(long)]
    lazy: bool,
}

pub fn run(global: &Global, a: Args) -> Result<i32> {
    let mountpoint = mounts::absolute(&a.mountpoint)?;
    let record = mounts::read(&global.root, &mountpoint);
    let flags = if a.lazy {
        UnmountFlags::DETACH
    } else {
        UnmountFlags::empty()
    };
    match unmount(&mountpoint, flags) {
        Ok(()) => {}
        Err(rustix::io::Errno::BUSY) => bail!(
            "{} is busy: a process still uses files under it; stop it, or use --lazy",
            mountpoint.display()
        ),
        // Not mounted (anymore): only stale state to clear.
        Err(rustix::io::Errno::INVAL) if record.is_some() => {}
        Err(rustix::io::Errno::INVAL) => bail!("{} is not mounted", mountpoint.display()),
        Err(rustix::io::Errno::NOTCONN) | Err(rustix::io::Errno::IO) => {
            unmount(&mountpoint, UnmountFlags::DETACH)?;
        }
        Err(e) => bail!("unmounting {}: {e}", mountpoint.display()),
    }
    if let Some(rec) = &record {
        // The daemon exits once its session ends.
        let deadline = Instant::now() + Duration::from_secs(10);
        while mounts::alive(rec.pid) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        if mounts::alive(rec.pid) {
            tracing::warn!(pid = rec.pid, "daemon still running after unmount");
        }
    }
    mounts::remove(&global.root, &mountpoint);
    println!("unmounted {}", mountpoint.display());
    Ok(exit::OK)
}
