//! `skiff rmi IMAGE...`

use crate::out::outln;
use anyhow::Result;

use crate::{exit, Global};

/// Remove images from this node: their mount daemons stop, a local
/// conversion is deleted, and their chunks in the node's cache are no
/// longer kept for them (the cache evicts them first when it needs room).
/// An image that a running container uses is refused; one that stopped
/// containers use needs -f.
#[derive(clap::Args)]
pub struct Args {
    /// Remove it even if stopped containers use it.
    #[arg(short, long)]
    force: bool,
    /// Images, by reference or digest prefix (as `skiff images` shows).
    #[arg(required = true)]
    images: Vec<String>,
}

pub fn run(global: &Global, a: Args) -> Result<i32> {
    let mut code = exit::OK;
    for key in &a.images {
        match global.engine.remove_image(key, a.force) {
            Ok(e) => outln!("removed {} ({})", e.record.reference, e.record.digest)?,
            Err(e) => {
                exit::say(format_args!("skiff: error: {e}"));
                code = exit::FAILURE;
            }
        }
    }
    Ok(code)
}
