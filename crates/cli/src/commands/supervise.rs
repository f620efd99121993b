//! `skiff supervise ID` (internal, a helper of the engine): the detached
//! parent of a container (see `skiff_engine::Engine::run_supervisor`).

use std::path::PathBuf;

use anyhow::Result;

use crate::Global;

/// Internal: supervise a created container (started by `skiff run -d`, or
/// by a front end through the engine).
#[derive(clap::Args)]
pub struct Args {
    /// The container ID.
    id: String,
    /// Give the container a pseudo-terminal, relayed to its log.
    #[arg(long)]
    tty: bool,
    /// Create the container, then wait for `start` on its control socket.
    #[arg(long)]
    wait_start: bool,
    /// Keep the container's stdin open (default /dev/null).
    #[arg(long)]
    keep_stdin: bool,
    /// The container's stdin (default /dev/null).
    #[arg(long, value_name = "PATH")]
    stdin: Option<PathBuf>,
    /// The container's stdout (default: its log).
    #[arg(long, value_name = "PATH")]
    stdout: Option<PathBuf>,
    /// The container's stderr (default: its log).
    #[arg(long, value_name = "PATH")]
    stderr: Option<PathBuf>,
}

pub fn run(global: &Global, a: Args) -> Result<i32> {
    let opts = skiff_engine::SupervisorOptions {
        tty: a.tty,
        keep_stdin_open: a.keep_stdin,
        wait_for_start: a.wait_start,
        stdin: a.stdin,
        stdout: a.stdout,
        stderr: a.stderr,
    };
    Ok(global.engine.run_supervisor(&a.id, &opts)?)
}
