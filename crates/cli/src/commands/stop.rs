//! `skiff stop`

use crate::out::outln;
use std::time::Duration;

use anyhow::Result;

use crate::{exit, Global};

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
    let mut code = exit::OK;
    for key in &a.containers {
        let stopped = engine
            .find(key)
            .and_then(|r| engine.stop(&r, Duration::from_secs(a.time)));
        match stopped {
            Ok(()) => outln!("{key}")?,
            Err(e) => {
                exit::say(format_args!("skiff: error: {e}"));
                code = exit::FAILURE;
            }
        }
    }
    Ok(code)
}
