//! `skiff umount MOUNTPOINT`

use crate::out::outln;
use std::path::PathBuf;

use anyhow::Result;
use skiff_engine::mount_records;

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
    let mountpoint = mount_records::absolute(&a.mountpoint)?;
    global.engine.unmount(&mountpoint, a.lazy)?;
    outln!("unmounted {}", mountpoint.display())?;
    Ok(exit::OK)
}
