//! `skiff pull IMAGE`

use crate::out::outln;
use anyhow::Result;

use super::{human, parse_platform, print_json};
use crate::{exit, Global};

/// Make an image ready on this node: resolve it, mount it, verify its
/// metadata. A skiff image fetches nothing else (its files come as they
/// are read); an ordinary OCI image is converted on this node first,
/// once, and kept.
#[derive(clap::Args)]
pub struct Args {
    /// The image (registry reference, oci:DIR[:TAG], docker-archive:FILE).
    image: String,
    /// For a multi-platform image (default: this host's platform).
    #[arg(long, value_parser = parse_platform, value_name = "OS/ARCH[/VARIANT]")]
    platform: Option<skiff_oci::Platform>,
    /// Print the image's entry as JSON.
    #[arg(long)]
    json: bool,
}

pub fn run(global: &Global, a: Args) -> Result<i32> {
    let (entry, conversion) = global.engine.pull(&a.image, a.platform.as_ref())?;
    if let Some(c) = &conversion {
        super::run::say_converted(c);
    }
    if a.json {
        print_json(&entry)?;
        return Ok(exit::OK);
    }
    outln!(
        "{}: {} ({}, {})",
        a.image,
        entry.record.digest,
        entry.mode,
        human(entry.record.size_bytes)
    )?;
    Ok(exit::OK)
}
