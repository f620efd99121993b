//! `skiff rm`

use std::time::Duration;

use anyhow::{bail, Result};

use crate::containers;
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
        match remove(global, key, a.force) {
            Ok(()) => println!("{key}"),
            Err(e) => {
                exit::say(format_args!("skiff: error: {}", exit::render(&e)));
                code = exit::FAILURE;
            }
        }
    }
    Ok(code)
}

fn remove(global: &Global, key: &str, force: bool) -> Result<()> {
    let record = containers::find(&global.root, key)?;
    if record.running() {
        if !force {
            bail!(
                "container {} is running; stop it with `skiff stop {}`, or use `skiff rm -f`",
                record.name,
                record.name
            );
        }
        if let Some(pid) = record.pid {
            skiff_sandbox::container::signal(pid, libc::SIGKILL)?;
        }
        if !super::stop::wait_exit(global, &record, Duration::from_secs(10)) {
            bail!("container {} did not die after SIGKILL", record.name);
        }
    }
    super::run::cleanup(global, &record, true);
    Ok(())
}
