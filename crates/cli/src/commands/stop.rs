//! `skiff stop`

use crate::out::outln;
use std::time::Duration;

use anyhow::Result;

use crate::Global;

/// Stop running containers: the image's stop signal (default SIGTERM),
/// then SIGKILL after a grace period.
#[derive(clap::Args)]
pub struct Args {
    /// Seconds to wait before SIGKILL.
    #[arg(short, long, default_value_t = 10)]
    time: u64,
    /// Containers, by name or ID.
    #[arg(required = true)]
    containers: Vec<String>,
}

pub fn run(global: &Global, a: Args) -> Result<i32> {
    let engine = &global.engine;
    let grace = Duration::from_secs(a.time);
    super::for_each_container(
        &a.containers,
        |key| engine.find(key).and_then(|r| engine.stop(&r, grace)),
        |key, ()| outln!("{key}"),
    )
}
