//! `skiff convert SOURCE TARGET`

use crate::out::outln;
use std::sync::Arc;

use anyhow::{Context, Result};
use skiff_builder::{convert, BuildOptions, ConvertOptions};
use skiff_format::{Chunking, Codec, DigestAlgorithm};
use skiff_oci::{ImageRef, Platform};

use super::{human, open_image, parse_platform, print_json};
use crate::progress::{multi, ConvertBars};
use crate::{exit, Global};

/// Convert an OCI image into a skiff image.
///
/// Reads SOURCE's layers, merges them (whiteouts applied, so deleted files
/// are dropped), cuts file contents into content-defined chunks, compresses
/// and deduplicates them, and writes TARGET: an OCI image whose layers are
/// chunk blobs plus one metadata layer. The same input and options always
/// give the same digests.
#[derive(clap::Args)]
#[command(
    after_help = "Examples:\n  skiff convert 127.0.0.1:5000/app:v1 127.0.0.1:5000/app:v1-skiff\n  skiff convert oci:./layout:v2 oci:./out:v2 --chunk-dict oci:./out:v1"
)]
pub struct Args {
    /// The OCI image to read (registry reference, oci:DIR[:TAG] or docker-archive:FILE).
    source: String,
    /// Where to write the skiff image (registry reference or oci:DIR[:TAG]).
    target: String,
    /// Reuse chunks of this skiff image instead of storing them again
    /// (repeatable). Only chunks it lacks are written.
    #[arg(long = "chunk-dict", value_name = "IMAGE")]
    chunk_dict: Vec<String>,
    /// Convert only this platform of a multi-platform source (default: all).
    #[arg(long, value_parser = parse_platform, value_name = "OS/ARCH[/VARIANT]")]
    platform: Option<Platform>,
    /// Chunk codec: zstd[:LEVEL], lz4 or none.
    #[arg(long, default_value = "zstd:2", value_parser = parse_codec)]
    compression: Codec,
    /// Average chunk size, e.g. 64K or 1M (4K..4M). Minimum is a quarter,
    /// maximum four times; files under the minimum are packed together.
    #[arg(long, value_parser = parse_size, value_name = "BYTES")]
    chunk_size: Option<u32>,
    /// Chunk digest: blake3 or sha256.
    #[arg(long, default_value = "blake3", value_parser = parse_digest)]
    digest: DigestAlgorithm,
    /// Embed this read order so mounts prefetch the chunks the workload
    /// read, in that order: a trace from `skiff mount --record-trace`, or a
    /// plain list of absolute paths (each file prefetched whole).
    #[arg(long, value_name = "FILE")]
    prefetch_trace: Option<std::path::PathBuf>,
    /// Hashing and compression threads (default: one per CPU).
    #[arg(long)]
    threads: Option<usize>,
    /// Print the result as JSON on stdout.
    #[arg(long)]
    json: bool,
    /// Write TARGET even when it names SOURCE itself, replacing the
    /// source image's tag with the skiff image.
    #[arg(long)]
    force: bool,
}

fn parse_codec(s: &str) -> Result<Codec, String> {
    Codec::parse(s).ok_or_else(|| format!("{s:?} is not zstd[:1-19], lz4 or none"))
}

fn parse_digest(s: &str) -> Result<DigestAlgorithm, String> {
    DigestAlgorithm::parse(s).ok_or_else(|| format!("{s:?} is not blake3 or sha256"))
}

fn parse_size(s: &str) -> Result<u32, String> {
    let t = s.trim();
    let (num, mult) = if let Some(n) = t.strip_suffix(['k', 'K']) {
        (n, 1024)
    } else if let Some(n) = t.strip_suffix(['m', 'M']) {
        (n, 1024 * 1024)
    } else {
        (t, 1)
    };
    let v: u32 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a size like 64K"))?;
    let v = v.checked_mul(mult).ok_or("size too large")?;
    if !(4096..=4 << 20).contains(&v) {
        return Err(format!("{s} is outside 4K..4M"));
    }
    Ok(v)
}

pub fn run(global: &Global, a: Args) -> Result<i32> {
    let source = ImageRef::parse(&a.source)?;
    let target = ImageRef::parse(&a.target)?;
    if !a.force && target.names_same_image(&source) {
        anyhow::bail!(
            "the target {} names the source image itself: converting would replace it; \
             write to another tag (such as {}-skiff), or pass --force",
            a.target,
            a.target
        );
    }
    let source = source
        .open(&global.registry)
        .with_context(|| format!("opening {}", a.source))?;
    let target = target
        .open_for_write(&global.registry)
        .with_context(|| format!("opening {}", a.target))?;
    let mut dict_images = Vec::new();
    for d in &a.chunk_dict {
        dict_images.push(
            open_image(global, d, a.platform.as_ref())
                .with_context(|| format!("loading chunk dictionary {d}"))?,
        );
    }
    let dict = skiff_builder::load_dict(&dict_images)?;
    let mut build = BuildOptions {
        codec: a.compression,
        digest: a.digest,
        ..Default::default()
    };
    if let Some(avg) = a.chunk_size {
        build.chunking = Chunking::with_average(avg);
    }
    if let Some(t) = a.threads {
        build.threads = t.max(1);
    }
    let opts = ConvertOptions {
        build,
        chunking_explicit: a.chunk_size.is_some(),
        platform: a.platform,
        staging: global.root.join("tmp"),
        prefetch: match &a.prefetch_trace {
            Some(p) => skiff_builder::parse_trace(
                &std::fs::read(p)
                    .with_context(|| format!("reading the prefetch trace {}", p.display()))?,
            )
            .with_context(|| format!("reading the prefetch trace {}", p.display()))?,
            None => Vec::new(),
        },
    };
    let bars = Arc::new(ConvertBars::new(multi(global.quiet)));
    let report = convert(&source, &target, dict, &opts, bars).context("converting")?;
    if a.json {
        print_json(&report)?;
        return Ok(exit::OK);
    }
    for img in &report.images {
        let s = &img.stats;
        let mbps = s.tar_bytes as f64 / s.seconds.max(1e-9) / 1e6;
        outln!(
            "{}{} -> {}",
            a.target,
            img.platform
                .as_ref()
                .map(|p| format!(" [{p}]"))
                .unwrap_or_default(),
            img.manifest
        )?;
        outln!(
            "  {} layers, {} tar read in {:.1}s ({mbps:.0} MB/s); {} inodes",
            s.layers,
            human(s.tar_bytes),
            s.seconds,
            s.inodes
        )?;
        outln!(
            "  chunks: {} new ({} -> {} compressed), {} duplicate, {} from dictionaries ({})",
            s.write.new_chunks,
            human(s.write.new_bytes),
            human(s.write.new_compressed_bytes),
            s.write.dup_chunks_in_image,
            s.write.dict_chunks,
            human(s.write.dict_bytes)
        )?;
        outln!(
            "  blobs written {}, referenced {}; metadata {} ({} compressed); source layers {}",
            human(img.new_blob_bytes),
            human(img.blob_bytes),
            human(s.metadata_bytes),
            human(img.metadata_layer_bytes),
            human(s.layer_bytes)
        )?;
        outln!("  root digest {}", img.root_digest)?;
    }
    if report.images.len() > 1 {
        outln!("index {}", report.digest)?;
    }
    Ok(exit::OK)
}

#[cfg(test)]
mod tests {
    use super::parse_size;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("64K"), Ok(65536));
        assert_eq!(parse_size("64k"), Ok(65536));
        assert_eq!(parse_size("1M"), Ok(1 << 20));
        assert_eq!(parse_size("8192"), Ok(8192));
        assert!(parse_size("1K").is_err());
        assert!(parse_size("8M").is_err());
        assert!(parse_size("x").is_err());
    }
}
