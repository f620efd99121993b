//! `skiff supervise ID` (internal, a helper of the engine): the detached
//! parent of a `skiff run -d` container (see
//! `skiff_engine::Engine::run_supervisor`).

use anyhow::Result;

use crate::Global;

/// Internal: supervise a detached container (started by `skiff run -d`).
#[derive(clap::Args)]
pub struct Args {
    /// The container ID.
    id: String,
    /// Give the container a pseudo-terminal, relayed to its log.
    #[arg(long)]
    tty: bool,
}

pub fn run(global: &Global, a: Args) -> Result<i32> {
    Ok(global.engine.run_supervisor(&a.id, a.tty)?)
}
