//! `skiff check IMAGE`

use crate::out::{errln, outln};
use anyhow::Result;
use skiff_store::check_image;

use super::{print_json, ImageArgs};
use crate::progress::{bytes_bar, multi};
use crate::{exit, Global};

/// Verify a skiff image: its metadata against the root digest, every blob
/// against its digest, and every chunk against its own.
///
/// On failure names the first bad chunk and the files that read it, and
/// exits 3.
#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    image: ImageArgs,
    /// Print the report as JSON on stdout.
    #[arg(long)]
    json: bool,
}

pub fn run(global: &Global, a: Args) -> Result<i32> {
    let image = a.image.open(global)?;
    let total: u64 = image.blob_layers.iter().map(|l| l.size).sum();
    let m = multi(global.quiet || a.json);
    let bar = bytes_bar(&m, total, "checking");
    let report = check_image(&image, |n| bar.inc(n))?;
    bar.finish_and_clear();
    if a.json {
        print_json(&report)?;
    } else if report.ok() {
        outln!(
            "ok: {} (root {}): {} chunks in {} blobs verified, {} inodes",
            report.image,
            report.root_digest,
            report.chunks_checked,
            report.blobs,
            report.inodes
        )?;
    } else {
        errln!("FAILED: {}", report.image);
        for b in &report.bad_blobs {
            errln!("  {b}");
        }
        if let Some(first) = report.bad_chunks.first() {
            errln!(
                "  first bad chunk: #{} {} in blob {}: {}",
                first.index,
                first.digest,
                first.blob,
                first.reason
            );
            let shown: Vec<&str> = first.files.iter().take(20).map(String::as_str).collect();
            errln!(
                "  used by: {}",
                if shown.is_empty() {
                    "(no file)".into()
                } else {
                    shown.join(", ")
                }
            );
            if first.files.len() > shown.len() {
                errln!("  ... and {} more files", first.files.len() - shown.len());
            }
            errln!("  {} bad chunks in all", report.bad_chunks.len());
        }
    }
    Ok(if report.ok() {
        exit::OK
    } else {
        exit::VERIFY_FAILED
    })
}
