//! `skiff inspect CONTAINER|IMAGE`

use crate::out::outln;
use std::collections::HashSet;

use anyhow::Result;
use serde::Serialize;
use skiff_format::{InodeKind, Metadata};
use skiff_oci::{ImageRef, Platform};

use super::{human, open_image, parse_platform, print_json};
use crate::{exit, Global};

/// Show a container (its record and OCI config, as JSON), or a skiff image:
/// sizes, chunks, dedup and compression, and its tree.
///
/// A name is a container's first. A short image name (no registry, as in
/// `debian:12`) is looked up only among the node's images; give a registry
/// (`docker.io/library/debian:12`) or `oci:DIR` to read any image.
#[derive(clap::Args)]
pub struct Args {
    /// A container (name, ID or unique prefix), or a skiff image (registry
    /// reference, oci:DIR[:TAG]).
    target: String,
    /// Look only for this kind of object.
    #[arg(long = "type", value_enum)]
    kind: Option<Kind>,
    /// For a multi-platform image (default: this host's platform).
    #[arg(long, value_parser = parse_platform, value_name = "OS/ARCH[/VARIANT]")]
    platform: Option<Platform>,
    /// Also list every entry of the image's tree.
    #[arg(long)]
    tree: bool,
    /// Print JSON on stdout (a container is always shown as JSON).
    #[arg(long)]
    json: bool,
}

#[derive(clap::ValueEnum, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Container,
    Image,
}

/// A container as `inspect` shows it.
#[derive(Serialize)]
struct ContainerDetails {
    #[serde(flatten)]
    record: skiff_engine::Record,
    running: bool,
    /// The container's OCI runtime spec, as its sandbox was given it.
    spec: skiff_engine::Spec,
}

pub fn run(global: &Global, a: Args) -> Result<i32> {
    let image_only = a.kind == Some(Kind::Image) || a.tree || a.platform.is_some();
    if !image_only {
        match global.engine.find(&a.target) {
            Ok(record) => return show_container(global, record),
            Err(e) if a.kind == Some(Kind::Container) => return Err(e.into()),
            Err(skiff_engine::EngineError::NotFound(_)) => {}
            Err(e) => return Err(e.into()),
        }
        // Checked here, so that a bad reference is named as one.
        let reference = ImageRef::parse(&a.target)?;
        if is_short_name(&a.target, &reference)
            && !global
                .engine
                .images()?
                .iter()
                .any(|i| i.record.reference == a.target)
        {
            anyhow::bail!(
                "no container or image named {:?} on this node (`skiff ps -a` lists containers, `skiff images` images); to read an image from a registry, name the registry, as in docker.io/{}",
                a.target,
                match &reference {
                    ImageRef::Registry(r) => format!("{}:{}", r.repository, r.reference()),
                    _ => a.target.clone(),
                }
            );
        }
    }
    show_image(global, &a)
}

/// A registry reference written without its registry, which Docker would
/// send to Docker Hub: `debian`, `debian:12`, `library/debian`.
fn is_short_name(written: &str, reference: &ImageRef) -> bool {
    let ImageRef::Registry(_) = reference else {
        return false;
    };
    let name = written.strip_prefix("docker://").unwrap_or(written);
    match name.split_once('/') {
        Some((first, _)) => {
            !(first.contains('.')
                || first.contains(':')
                || first == "localhost"
                || first.starts_with('['))
        }
        None => true,
    }
}

fn show_container(global: &Global, mut record: skiff_engine::Record) -> Result<i32> {
    let spec = skiff_engine::record::load_spec(&global.root, &record.id)?;
    let running = record.running();
    record.status = record.effective_status();
    print_json(&ContainerDetails {
        record,
        running,
        spec,
    })?;
    Ok(exit::OK)
}

#[derive(Serialize, Default)]
pub struct Summary {
    pub image: String,
    pub root_digest: String,
    pub digest_algorithm: String,
    pub chunk_size: ChunkSizes,
    pub inodes: u32,
    pub directories: u64,
    pub files: u64,
    pub symlinks: u64,
    pub other: u64,
    /// Sum of regular file sizes (as `du --apparent-size` counts them).
    pub file_bytes: u64,
    /// File bytes that are holes (never stored).
    pub hole_bytes: u64,
    pub chunks: u32,
    /// Uncompressed bytes of all distinct chunks.
    pub chunk_bytes: u64,
    /// Compressed bytes of all distinct chunks.
    pub compressed_bytes: u64,
    pub blobs: u32,
    pub blob_bytes: u64,
    pub metadata_bytes: u64,
    pub metadata_layer_bytes: u64,
    /// Chunks the image prefetches at mount, in order.
    pub prefetch_chunks: usize,
    /// Their compressed size.
    pub prefetch_bytes: u64,
    /// Stored file bytes over distinct chunk bytes (1.0 = no duplication).
    pub dedup_ratio: f64,
    /// Distinct chunk bytes over their compressed size.
    pub compression_ratio: f64,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tree: Vec<TreeEntry>,
}

#[derive(Serialize, Default)]
pub struct ChunkSizes {
    pub min: u32,
    pub avg: u32,
    pub max: u32,
    pub pack_threshold: u32,
}

#[derive(Serialize)]
pub struct TreeEntry {
    pub path: String,
    pub kind: &'static str,
    pub mode: String,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub nlink: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    pub chunks: usize,
}

pub fn summarize<B: AsRef<[u8]>>(md: &Metadata<B>, with_tree: bool) -> Result<Summary> {
    let h = md.header();
    let mut s = Summary {
        inodes: md.inode_count(),
        digest_algorithm: h.digest_algorithm.name().into(),
        chunk_size: ChunkSizes {
            min: h.chunking.min,
            avg: h.chunking.avg,
            max: h.chunking.max,
            pack_threshold: h.chunking.pack_threshold,
        },
        chunks: md.chunk_count(),
        blobs: md.blob_count(),
        metadata_bytes: md.as_bytes().len() as u64,
        ..Default::default()
    };
    for c in md.prefetch()? {
        s.prefetch_chunks += 1;
        s.prefetch_bytes += md.chunk(c)?.compressed_size as u64;
    }
    for c in 0..md.chunk_count() {
        let c = md.chunk(c)?;
        s.chunk_bytes += c.uncompressed_size as u64;
        s.compressed_bytes += c.compressed_size as u64;
    }
    for b in 0..md.blob_count() {
        s.blob_bytes += md.blob(b)?.size;
    }
    let mut seen = HashSet::new();
    let mut stored = 0u64;
    let mut tree = Vec::new();
    md.walk(|path, e| {
        let a = md.attributes(e.ino)?;
        let first = seen.insert(e.ino);
        let mut chunks = 0;
        match a.kind() {
            InodeKind::Directory => s.directories += 1,
            InodeKind::File if first => {
                s.files += 1;
                s.file_bytes += a.size;
                for r in md.chunk_refs(e.ino)? {
                    match r.chunk {
                        Some(_) => {
                            stored += r.length as u64;
                            chunks += 1;
                        }
                        None => s.hole_bytes += r.length as u64,
                    }
                }
            }
            InodeKind::File => {}
            InodeKind::Symlink => s.symlinks += 1,
            _ => s.other += 1,
        }
        if with_tree {
            tree.push(TreeEntry {
                path: format!("/{}", String::from_utf8_lossy(path)),
                kind: a.kind().name(),
                mode: format!("{:04o}", a.mode & 0o7777),
                uid: a.uid,
                gid: a.gid,
                size: a.size,
                nlink: a.nlink,
                target: (a.kind() == InodeKind::Symlink)
                    .then(|| {
                        md.symlink_target(e.ino)
                            .map(|t| String::from_utf8_lossy(t).into_owned())
                    })
                    .transpose()?,
                chunks,
            });
        }
        Ok(())
    })?;
    s.dedup_ratio = if s.chunk_bytes > 0 {
        stored as f64 / s.chunk_bytes as f64
    } else {
        1.0
    };
    s.compression_ratio = if s.compressed_bytes > 0 {
        s.chunk_bytes as f64 / s.compressed_bytes as f64
    } else {
        1.0
    };
    s.tree = tree;
    Ok(s)
}

fn show_image(global: &Global, a: &Args) -> Result<i32> {
    let image = open_image(global, &a.target, a.platform.as_ref())?;
    let mut s = summarize(&image.metadata, a.tree)?;
    s.image = image.name();
    s.root_digest = image.root_digest.clone();
    s.metadata_layer_bytes = image.metadata_layer.size;
    if a.json {
        print_json(&s)?;
        return Ok(exit::OK);
    }
    outln!("image        {}", s.image)?;
    outln!("root digest  {}", s.root_digest)?;
    outln!(
        "tree         {} inodes: {} directories, {} files, {} symlinks, {} other",
        s.inodes,
        s.directories,
        s.files,
        s.symlinks,
        s.other
    )?;
    outln!(
        "file data    {} ({} of it holes)",
        human(s.file_bytes),
        human(s.hole_bytes)
    )?;
    outln!(
        "chunks       {} distinct, {} -> {} compressed (x{:.2}), dedup x{:.2}",
        s.chunks,
        human(s.chunk_bytes),
        human(s.compressed_bytes),
        s.compression_ratio,
        s.dedup_ratio
    )?;
    outln!(
        "chunking     {} digests, avg {} (min {}, max {}), files under {} packed",
        s.digest_algorithm,
        human(s.chunk_size.avg as u64),
        human(s.chunk_size.min as u64),
        human(s.chunk_size.max as u64),
        human(s.chunk_size.pack_threshold as u64)
    )?;
    outln!("blobs        {} totalling {}", s.blobs, human(s.blob_bytes))?;
    outln!(
        "prefetch     {} chunks, {} compressed",
        s.prefetch_chunks,
        human(s.prefetch_bytes)
    )?;
    outln!(
        "metadata     {} ({} compressed layer)",
        human(s.metadata_bytes),
        human(s.metadata_layer_bytes)
    )?;
    for e in &s.tree {
        let target = e
            .target
            .as_ref()
            .map(|t| format!(" -> {t}"))
            .unwrap_or_default();
        outln!(
            "{:>4} {:>5}:{:<5} {:>12} {}{target}",
            e.mode,
            e.uid,
            e.gid,
            e.size,
            e.path
        )?;
    }
    Ok(exit::OK)
}
