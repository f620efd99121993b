//! `skiff kill`

use anyhow::Result;

use crate::out::outln;
use crate::Global;

/// Send a signal to running containers (default SIGKILL).
#[derive(clap::Args)]
#[command(after_help = "Examples:\n  skiff kill web\n  skiff kill -s HUP web worker")]
pub struct Args {
    /// The signal: a name (HUP, SIGHUP) or a number.
    #[arg(short, long, default_value = "KILL", value_parser = parse_signal)]
    signal: i32,
    /// Containers, by name or ID.
    #[arg(required = true)]
    containers: Vec<String>,
}

fn parse_signal(s: &str) -> Result<i32, String> {
    skiff_engine::request::parse_signal(s).ok_or_else(|| {
        format!("{s:?} is not a signal: give a name such as TERM or HUP, or a number")
    })
}

pub fn run(global: &Global, a: Args) -> Result<i32> {
    let engine = &global.engine;
    super::for_each_container(
        &a.containers,
        |key| engine.find(key).and_then(|r| engine.kill(&r, a.signal)),
        |key, ()| outln!("{key}"),
    )
}
