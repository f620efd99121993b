//! `skiff cache stats|prune`

use crate::out::outln;
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
    /// Remove least recently used chunks, those of images on the node last,
    /// until the cache fits its limit (--cache-size, 20% of its filesystem
    /// by default), or SIZE, or nothing with --all.
    #[command(
        after_help = "Examples:\n  skiff cache prune          # down to --cache-size\n  skiff cache prune 2G\n  skiff cache prune --all    # empty it"
    )]
    Prune {
        /// At most this much remains (512M, 2G).
        #[arg(value_parser = super::mount::parse_size, conflicts_with = "all")]
        size: Option<u64>,
        /// Empty the cache.
        #[arg(long)]
        all: bool,
        #[arg(long)]
        json: bool,
    },
}

pub fn run(global: &Global, a: Args) -> Result<i32> {
    let limit = global.engine.config().cache_size.bytes(&global.root);
    let cache = ChunkCache::open(&global.root, limit)
        .with_context(|| format!("opening the chunk cache under {}", global.root.display()))?;
    match a.command {
        Cmd::Stats { json } => {
            let s = cache.stats();
            if json {
                print_json(&s)?;
            } else {
                outln!(
                    "{} chunks, {} in {} (limit {})",
                    s.entries,
                    human(s.bytes),
                    cache.dir().display(),
                    s.limit.map_or("none".to_string(), human)
                )?;
            }
        }
        Cmd::Prune { size, all, json } => {
            let r = cache.prune_to(if all { 0 } else { size.unwrap_or(limit) });
            if json {
                print_json(&r)?;
            } else {
                outln!(
                    "removed {} chunks ({}); {} remain",
                    r.removed,
                    human(r.freed),
                    human(r.remaining)
                )?;
            }
        }
    }
    Ok(exit::OK)
}
