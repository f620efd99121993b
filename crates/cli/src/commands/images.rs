//! `skiff images`

use crate::out::outln;
use anyhow::Result;

use super::{human, print_json};
use crate::{exit, Global};

/// List the images on this node: reference, digest, whether served lazily
/// or converted here, bytes fetched against the image's size, and the
/// containers using each.
#[derive(clap::Args)]
pub struct Args {
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

pub fn run(global: &Global, a: Args) -> Result<i32> {
    let images = global.engine.images()?;
    if a.json {
        print_json(&images)?;
        return Ok(exit::OK);
    }
    if global.quiet_flag {
        for i in &images {
            outln!("{}", short(&i.record.digest))?;
        }
        return Ok(exit::OK);
    }
    outln!(
        "{:<40}  {:<12}  {:<9}  {:>10}  {:>10}  {:<9}  {:<10}  CONTAINERS",
        "IMAGE",
        "DIGEST",
        "MODE",
        "FETCHED",
        "SIZE",
        "MOUNTED",
        "WASM"
    )?;
    for i in &images {
        let name = if i.record.platform.is_empty() {
            i.record.reference.clone()
        } else {
            format!("{} [{}]", i.record.reference, i.record.platform)
        };
        // A wasi/wasm image's module: compiled on this node, or not yet.
        let wasm = match &i.wasm_module {
            Some(m) if m.compiled => "compiled",
            Some(_) => "not yet",
            None => "-",
        };
        outln!(
            "{:<40}  {:<12}  {:<9}  {:>10}  {:>10}  {:<9}  {:<10}  {}",
            name,
            short(&i.record.digest),
            i.mode,
            human(i.fetched_bytes),
            human(i.record.size_bytes),
            if i.mounted { "yes" } else { "no" },
            wasm,
            i.containers.len()
        )?;
    }
    // Never silent: what containerd unpacked itself, not lazily.
    if let Some(l) = skiff_snapshotter::snapshots::layer_summary(&global.root) {
        outln!(
            "containerd (skiff snapshotter): {} layers served lazily, {} not lazy (ordinary OCI layers containerd downloaded and unpacked, {})",
            l.lazy,
            l.not_lazy,
            human(l.not_lazy_bytes.max(0) as u64)
        )?;
    }
    Ok(exit::OK)
}

fn short(digest: &str) -> &str {
    let hex = digest.trim_start_matches("sha256:");
    &hex[..12.min(hex.len())]
}
