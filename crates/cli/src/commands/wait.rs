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
    let gone = std::sync::atomic::AtomicBool::new(false);
    let code = super::for_each_container(
        &a.containers,
        |key| engine.find(key).and_then(|r| engine.wait(&r)),
        |key, code| match code {
            Some(c) => outln!("{c}"),
            None => {
                exit::say(format_args!(
                    "skiff: error: container {key} was removed before its exit code could be read"
                ));
                gone.store(true, std::sync::atomic::Ordering::Relaxed);
                Ok(())
            }
        },
    )?;
    Ok(if gone.into_inner() {
        exit::FAILURE
    } else {
        code
    })
}
