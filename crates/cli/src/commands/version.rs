//! `skiff version`

use anyhow::Result;

use super::print_json;
use crate::out::outln;
use crate::{exit, Global};

/// Show skiff's version, the image format it writes, and this node's kernel.
#[derive(clap::Args)]
pub struct Args {
    /// Print as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(serde::Serialize)]
struct Version {
    version: &'static str,
    /// The metadata format version `skiff convert` writes.
    format: u32,
    kernel: String,
    root: String,
}

pub fn run(global: &Global, a: Args) -> Result<i32> {
    let v = Version {
        version: env!("CARGO_PKG_VERSION"),
        format: skiff_format::layout::METADATA_VERSION,
        kernel: rustix::system::uname()
            .release()
            .to_string_lossy()
            .into_owned(),
        root: global.root.display().to_string(),
    };
    if a.json {
        print_json(&v)?;
        return Ok(exit::OK);
    }
    outln!("skiff {}", v.version)?;
    outln!(" image format   {}", v.format)?;
    outln!(" kernel         {}", v.kernel)?;
    outln!(" root           {}", v.root)?;
    Ok(exit::OK)
}
