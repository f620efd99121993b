//! `skiff rm`

use crate::out::outln;
use anyhow::Result;

use crate::Global;

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
    super::for_each_container(
        &a.containers,
        |key| global.engine.remove(key, a.force),
        |key, _| outln!("{key}"),
    )
}
