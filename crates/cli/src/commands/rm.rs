//! `skiff rm`

use crate::out::outln;
use anyhow::Result;

use crate::{exit, Global};

/// Remove containers: their writable layer, logs and state.
#[derive(clap::Args)]
pub struct Args {
    /// Kill a running container first.
    #[arg(short, long)]
    force: bool,
    /// Containers, by name or ID.
    #[arg(required = true)]
    containers: Vec<String>,
}

pub fn run(global: &Global, a: Args) -> Result<i32> {
    let mut code = exit::OK;
    for key in &a.containers {
        match global.engine.remove(key, a.force) {
            Ok(_) => outln!("{key}")?,
            Err(e) => {
                exit::say(format_args!("skiff: error: {e}"));
                code = exit::FAILURE;
            }
        }
    }
    Ok(code)
}
