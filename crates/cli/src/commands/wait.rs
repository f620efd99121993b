//! `skiff wait`

use anyhow::Result;

use crate::out::outln;
use crate::{exit, Global};

/// Block until containers stop, then print each one's exit code.
#[derive(clap::Args)]
pub struct Args {
    /// Containers, by name or ID.
    #[arg(required = true)]
    containers: Vec<String>,
}

pub fn run(global: &Global, a: Args) -> Result<i32> {
    let engine = &global.engine;
    let mut code = exit::OK;
    for key in &a.containers {
        match engine.find(key).and_then(|r| engine.wait(&r)) {
            Ok(Some(c)) => outln!("{c}")?,
            Ok(None) => {
                exit::say(format_args!(
                    "skiff: error: container {key} was removed before its exit code could be read"
                ));
                code = exit::FAILURE;
            }
            Err(e) => {
                exit::say(format_args!("skiff: error: {e}"));
                code = exit::FAILURE;
            }
        }
    }
    Ok(code)
}
