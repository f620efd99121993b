//! `skiff supervise ID` (internal): the detached parent of a `skiff run -d`
//! container. It starts the container with its output in
//! `ROOT/containers/ID/container.log`, reports readiness on stdout, then
//! waits for the container and records its exit.

use anyhow::{Context, Result};

use super::run::{supervise, Launch};
use crate::containers::{self, Record};
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
    let record = Record::load(&global.root, &a.id)?;
    let log_path = containers::log_path(&global.root, &a.id);
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .with_context(|| format!("opening {}", log_path.display()))?;
    // Readiness goes to the starter's pipe; nothing else may: the pipe must
    // close when the starter stops reading.
    let ready: std::fs::File = rustix::io::dup(rustix::stdio::stdout())?.into();
    let devnull = std::fs::File::options().write(true).open("/dev/null")?;
    rustix::stdio::dup2_stdout(&devnull)?;
    let launch = if a.tty {
        Launch::Terminal {
            interactive: false,
            output: log,
        }
    } else {
        // One open file for both: the container gets one pipe, and the
        // log keeps the order of everything it wrote.
        Launch::Streams {
            stdin: None,
            stdout: log.try_clone()?.into(),
            stderr: log.into(),
        }
    };
    supervise(global, record, launch, Some(ready))
}
