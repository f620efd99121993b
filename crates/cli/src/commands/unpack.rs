//! `skiff unpack IMAGE DIR`

use crate::out::{errln, outln};
use std::path::PathBuf;

use anyhow::{Context, Result};
use skiff_fs::{unpack, UnpackOptions};
use skiff_store::ChunkReader;

use super::{human, print_json, ImageArgs};
use crate::progress::{bytes_bar, multi};
use crate::{exit, Global};

/// Write a skiff image's root filesystem into a directory.
///
/// Every byte is verified before it is written. DIR must not exist or be
/// empty. As root, owners, device nodes and capabilities are kept.
#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    image: ImageArgs,
    /// The directory to create the tree in (with --erofs, the file).
    dir: PathBuf,
    /// Write an EROFS filesystem image into a new file instead, as a VM's
    /// block device would see the image (`mount -t erofs FILE DIR`).
    #[arg(long)]
    erofs: bool,
    /// Print statistics as JSON on stdout.
    #[arg(long)]
    json: bool,
}

pub fn run(global: &Global, a: Args) -> Result<i32> {
    let image = a.image.open(global)?;
    let m = multi(global.quiet || a.json);
    let spool_dir = global.root.join("tmp");
    let reader = if image.repo.registry_location().is_some() {
        // Whole blobs in one request each beat a range request per chunk.
        std::fs::create_dir_all(&spool_dir)
            .with_context(|| format!("creating {}", spool_dir.display()))?;
        let total: u64 = image.blob_layers.iter().map(|l| l.size).sum();
        let bar = bytes_bar(&m, total, "fetching");
        let r = ChunkReader::spooled(&image, &spool_dir, |n| bar.inc(n))?;
        bar.finish_and_clear();
        r
    } else {
        ChunkReader::new(&image)
    };
    if a.erofs {
        let out = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&a.dir)
            .with_context(|| format!("creating {} (it must not exist)", a.dir.display()))?;
        let img = skiff_fs::erofs::write(&reader, &out).map_err(|e| {
            let _ = std::fs::remove_file(&a.dir);
            anyhow::anyhow!(
                "writing an EROFS image of {} into {}: {e}",
                image.name(),
                a.dir.display()
            )
        })?;
        if a.json {
            print_json(&serde_json::json!({
                "bytes": img.size(),
                "metadata_bytes": img.meta.len(),
                "files": img.extents.len(),
                "dropped_xattrs": img.dropped_xattrs,
            }))?;
        } else {
            outln!(
                "wrote an EROFS image of {} into {}: {} ({} of metadata), {} files with data",
                image.name(),
                a.dir.display(),
                human(img.size()),
                human(img.meta.len() as u64),
                img.extents.len()
            )?;
        }
        if img.dropped_xattrs > 0 {
            errln!(
                "warning: left out {} xattrs that EROFS has no prefix for",
                img.dropped_xattrs
            );
        }
        return Ok(exit::OK);
    }
    let stats = unpack(&reader, &a.dir, UnpackOptions::default())
        .with_context(|| format!("unpacking into {}", a.dir.display()))?;
    if a.json {
        print_json(&stats)?;
    } else {
        outln!(
            "unpacked {} into {}: {} files ({}), {} directories, {} symlinks, {} hardlinks, {} special",
            image.name(),
            a.dir.display(),
            stats.files,
            human(stats.bytes),
            stats.directories,
            stats.symlinks,
            stats.hardlinks,
            stats.special
        )?;
        if stats.skipped_devices > 0 {
            errln!(
                "warning: skipped {} device nodes (run as root to create them)",
                stats.skipped_devices
            );
        }
    }
    Ok(exit::OK)
}
