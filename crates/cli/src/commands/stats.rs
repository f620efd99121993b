//! `skiff stats MOUNTPOINT`

use crate::out::out;
use std::path::PathBuf;

use anyhow::{Context, Result};

use skiff_engine::mount_records as mounts;

use crate::{exit, Global};

/// Show a mount's counters: bytes and chunks fetched, cache hits and misses,
/// verification failures, requests in flight, read latency.
#[derive(clap::Args)]
pub struct Args {
    /// The mountpoint.
    mountpoint: PathBuf,
    /// Print Prometheus text instead of JSON.
    #[arg(long)]
    prometheus: bool,
}

pub fn run(global: &Global, a: Args) -> Result<i32> {
    let mountpoint = mounts::absolute(&a.mountpoint)?;
    let rec = mounts::read(&global.root, &mountpoint).with_context(|| {
        format!(
            "no skiff mount is recorded at {} under {}",
            mountpoint.display(),
            global.root.display()
        )
    })?;
    let path = if a.prometheus { "/metrics" } else { "/stats" };
    let body = skiff_fs::control::query(&rec.socket, path).with_context(|| {
        format!(
            "asking the mount daemon (pid {}) at {}",
            rec.pid,
            rec.socket.display()
        )
    })?;
    out!("{body}")?;
    Ok(exit::OK)
}
