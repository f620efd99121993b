//! `skiff cache stats|prune`

use anyhow::{Context, Result};
use skiff_store::ChunkCache;

use super::{human, print_json};
use crate::{exit, Global};

/// Inspect or shrink the node's chunk cache (under --root).
#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(clap::Subcommand)]
enum Cmd {
    /// Entries and bytes in the cache.
    Stats {
        #[arg(long)]
        json: bool,
    },
    /// Remove least recently used chunks until at most SIZE remain (0 empties it).
    Prune {
        #[arg(long, default_value = "0", value_parser = super::mount::parse_size)]
        max_size: u64,
        #[arg(long)]
        json: bool,
    },
}

pub fn run(global: &Global, a: Args) -> Result<i32> {
    let cache = ChunkCache::open(&global.root, u64::MAX)
        .with_context(|| format!("opening the chunk cache under {}", global.root.display()))?;
    match a.command {
        Cmd::Stats { json } => {
            let s = cache.stats();
            if json {
                print_json(&s)?;
            } else {
                println!(
                    "{} chunks, {} in {}",
                    s.entries,
                    human(s.bytes),
                    cache.dir().display()
                );
            }
        }
        Cmd::Prune { max_size, json } => {
            let r = cache.prune_to(max_size);
            if json {
                print_json(&r)?;
            } else {
                println!(
                    "removed {} chunks ({}); {} remain",
                    r.removed,
                    human(r.freed),
                    human(r.remaining)
                );
            }
        }
    }
    Ok(exit::OK)
}
