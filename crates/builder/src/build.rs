//! Builds the skiff form of one image manifest: reads its layers top down
//! into the merge tree, chunks what survives, and writes blobs and metadata.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use skiff_format::metadata::{S_IFBLK, S_IFCHR, S_IFDIR, S_IFIFO, S_IFLNK, S_IFREG, S_IFSOCK};
use skiff_format::{
    Attributes, ChunkRef, Chunking, Codec, Content, Counts, DigestAlgorithm, InodeKind, InodeSpec,
    MetadataWriter,
};
use skiff_oci::manifest::layer_compression;
use skiff_oci::{Manifest, Repository};

use crate::chunker::{Chunker, ChunkerStats};
use crate::dict::ChunkDict;
use crate::error::{BuildError, Result};
use crate::layer::{EntryMeta, LayerStream};
use crate::pipeline::{OutBlob, Pipeline, WriteStats, WriterOutput};
use crate::progress::Progress;
use crate::trace::{trace_reads, TraceEntry, TraceRead};
use crate::tree::{
    Action, Content as TreeContent, FinalNode, FinalTree, InodeId, MergeTree, NodeId,
};

#[derive(Debug, Clone, Copy)]
pub struct BuildOptions {
    pub chunking: Chunking,
    pub codec: Codec,
    pub digest: DigestAlgorithm,
    /// Hashing and compression threads.
    pub threads: usize,
}

impl Default for BuildOptions {
    fn default() -> Self {
        Self {
            chunking: Chunking::default(),
            codec: Codec::default(),
            digest: DigestAlgorithm::Blake3,
            threads: std::thread::available_parallelism().map_or(2, |n| n.get()),
        }
    }
}

#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct BuildStats {
    pub layers: usize,
    /// Compressed bytes of the source layers.
    pub layer_bytes: u64,
    /// Uncompressed tar bytes read.
    pub tar_bytes: u64,
    pub inodes: u32,
    pub chunker: ChunkerStats,
    pub write: WriteStats,
    pub metadata_bytes: u64,
    pub seconds: f64,
    /// Layers read twice to recover hardlink targets.
    pub layers_reread: usize,
}

pub struct BuiltImage {
    /// The uncompressed metadata file.
    pub metadata: Vec<u8>,
    pub blobs: Vec<OutBlob>,
    pub stats: BuildStats,
}

/// Counts bytes as they pass, shared with the progress bar.
struct TarCounter(Arc<AtomicU64>);

fn open_layer(
    repo: &dyn Repository,
    manifest: &Manifest,
    index: usize,
    progress: &Arc<dyn Progress>,
    counter: &TarCounter,
) -> Result<LayerStream> {
    let p = progress.clone();
    let c = counter.0.clone();
    LayerStream::open(
        repo,
        &manifest.layers[index],
        Box::new(move |n| {
            c.fetch_add(n, Ordering::Relaxed);
            p.layer_read(n);
        }),
    )
}

/// Builds one image.
pub fn build_image(
    repo: &dyn Repository,
    manifest: &Manifest,
    dict: Arc<ChunkDict>,
    opts: &BuildOptions,
    staging: &Path,
    progress: Arc<dyn Progress>,
    prefetch: &[TraceEntry],
) -> Result<BuiltImage> {
    let started = Instant::now();
    let layers = &manifest.layers;
    if layers.len() >= u16::MAX as usize - 1 {
        return Err(BuildError::Invalid(format!(
            "image has {} layers; the limit is 65533",
            layers.len()
        )));
    }
    for l in layers {
        if layer_compression(&l.media_type).is_none() {
            if l.media_type.starts_with("application/vnd.skiff.") {
                return Err(BuildError::Invalid(
                    "the source is already a skiff image; convert its original OCI image instead"
                        .into(),
                ));
            }
            return Err(BuildError::NotALayer {
                digest: l.digest.clone(),
                media_type: l.media_type.clone(),
            });
        }
    }
    let mut tree = MergeTree::new();
    let mut chunker = Chunker::new(opts.chunking, opts.digest, dict.clone());
    let mut pipeline = Pipeline::start(opts.digest, opts.codec, staging, dict, opts.threads);
    let compressed = TarCounter(Arc::new(AtomicU64::new(0)));
    let mut stats = BuildStats {
        layers: layers.len(),
        ..Default::default()
    };
    let result = (|| -> Result<()> {
        for (i, desc) in layers.iter().enumerate().rev() {
            let slot = i as u32;
            progress.layer_started(layers.len() - i, layers.len(), &desc.digest, desc.size);
            let mut stream = open_layer(repo, manifest, i, &progress, &compressed)?;
            tree.begin_layer(i as u16 + 1, &stream.name);
            while let Some(e) = stream.next_entry()? {
                if let Action::Capture(inode) = tree.add_entry(&e)? {
                    let refs = chunker.capture(&mut stream, &e, slot, &mut pipeline)?;
                    tree.set_file(inode, refs);
                }
            }
            stats.tar_bytes += stream.tar_bytes();
            stream.finish()?;
            let wanted = tree.end_layer();
            if !wanted.is_empty() {
                // Hardlinks to members this layer shadowed: read those again.
                stats.layers_reread += 1;
                let quiet: Arc<dyn Progress> = Arc::new(crate::progress::NoProgress);
                let mut stream = open_layer(
                    repo,
                    manifest,
                    i,
                    &quiet,
                    &TarCounter(Arc::new(AtomicU64::new(0))),
                )?;
                let mut want = wanted.iter().peekable();
                while let Some(e) = stream.next_entry()? {
                    while let Some(&&(index, ph)) = want.peek() {
                        if index != e.index {
                            break;
                        }
                        want.next();
                        if let Action::Capture(inode) = tree.fill(&e, ph)? {
                            let refs = chunker.capture(&mut stream, &e, slot, &mut pipeline)?;
                            tree.set_file(inode, refs);
                        }
                    }
                    if want.peek().is_none() {
                        break;
                    }
                }
                if want.peek().is_some() {
                    return Err(BuildError::Invalid(format!(
                        "{} changed between two reads",
                        stream.name
                    )));
                }
            }
            chunker.seal_pack(slot, &mut pipeline)?;
            progress.layer_finished();
        }
        Ok(())
    })();
    // Always stop the pipeline's threads; report the first error.
    let written = pipeline.finish();
    result?;
    let written = written?;
    stats.layer_bytes = compressed.0.load(Ordering::Relaxed);
    stats.chunker = chunker.stats;
    stats.write = written.stats;
    let units = chunker.into_units()?;
    let tree = tree.finish()?;
    let metadata = assemble(&tree, &written, &units, opts, prefetch)?;
    stats.inodes = skiff_format::Metadata::parse(&metadata[..])?.inode_count();
    stats.metadata_bytes = metadata.len() as u64;
    stats.seconds = started.elapsed().as_secs_f64();
    Ok(BuiltImage {
        metadata,
        blobs: written.blobs,
        stats,
    })
}

fn mode_bits(kind: InodeKind) -> u32 {
    match kind {
        InodeKind::Directory => S_IFDIR,
        InodeKind::File => S_IFREG,
        InodeKind::Symlink => S_IFLNK,
        InodeKind::CharDevice => S_IFCHR,
        InodeKind::BlockDevice => S_IFBLK,
        InodeKind::Fifo => S_IFIFO,
        InodeKind::Socket => S_IFSOCK,
    }
}

fn attributes(kind: InodeKind, meta: &EntryMeta, size: u64, nlink: u32) -> Attributes {
    Attributes {
        ino: 0,
        mode: mode_bits(kind) | (meta.mode & 0o7777),
        uid: meta.uid,
        gid: meta.gid,
        nlink,
        size,
        mtime: meta.mtime,
        mtime_nsec: meta.mtime_nsec.min(999_999_999),
        rdev_major: meta.rdev_major,
        rdev_minor: meta.rdev_minor,
    }
}

/// What an inode number stands for.
enum Slot {
    Dir { node: NodeId, parent: u32 },
    Other(InodeId),
}

/// The image's chunks in the order the trace first reads them, once each.
fn prefetch_order(
    tree: &FinalTree,
    written: &WriterOutput,
    units: &[u64],
    prefetch: &[TraceEntry],
) -> Vec<u32> {
    let mut order = Vec::new();
    let mut listed = std::collections::HashSet::new();
    for read in trace_reads(prefetch) {
        let path = match read {
            TraceRead::At(p, _) | TraceRead::Whole(p) => p,
        };
        let refs = match tree.lookup(path).and_then(|n| tree.node(n)) {
            Some(FinalNode::Other { inode }) => match &tree.inode(inode).content {
                TreeContent::File(refs) => refs.as_slice(),
                _ => &[],
            },
            _ => &[],
        };
        if refs.is_empty() {
            tracing::debug!(path = %String::from_utf8_lossy(path), "prefetch trace entry names no data of a regular file; skipped");
            continue;
        }
        let wanted = refs.iter().filter(|r| match read {
            TraceRead::Whole(_) => true,
            TraceRead::At(_, at) => r.file_offset <= at && at - r.file_offset < r.length as u64,
        });
        for r in wanted {
            if let Some(u) = r.unit {
                let chunk = written.seq_chunk[units[u as usize] as usize];
                if listed.insert(chunk) {
                    order.push(chunk);
                }
            }
        }
    }
    order
}

/// Numbers the final tree depth first in name order (so a directory's files
/// sit together) and writes the metadata.
fn assemble(
    tree: &FinalTree,
    written: &WriterOutput,
    units: &[u64],
    opts: &BuildOptions,
    prefetch: &[TraceEntry],
) -> Result<Vec<u8>> {
    let implicit_dir = EntryMeta {
        mode: 0o755,
        ..Default::default()
    };
    let mut slots: Vec<Slot> = Vec::new();
    let mut node_ino: HashMap<NodeId, u32> = HashMap::new();
    let mut inode_ino: HashMap<InodeId, u32> = HashMap::new();
    let mut links: Vec<u32> = Vec::new();
    let mut subdirs: Vec<u32> = Vec::new();
    let mut stack: Vec<(NodeId, u32)> = vec![(tree.root(), 1)];
    let mut counts = Counts {
        chunks: written.chunks.len() as u32,
        blobs: written.blobs.len() as u32,
        ..Default::default()
    };
    let xattr_bytes = |m: &EntryMeta| {
        m.xattrs
            .iter()
            .map(|(n, v)| (n.len() + v.len()) as u64)
            .sum::<u64>()
    };
    while let Some((node, parent)) = stack.pop() {
        match tree.node(node) {
            Some(FinalNode::Directory { children, meta }) => {
                slots.push(Slot::Dir { node, parent });
                links.push(0);
                subdirs.push(0);
                let ino = slots.len() as u32;
                node_ino.insert(node, ino);
                if ino != 1 {
                    subdirs[parent as usize - 1] += 1;
                }
                if let Some(m) = meta {
                    counts.xattrs += m.xattrs.len() as u64;
                    counts.pool_bytes += xattr_bytes(m);
                }
                for &(name, child) in children.iter().rev() {
                    counts.dirents += 1;
                    counts.pool_bytes += name.len() as u64;
                    stack.push((child, ino));
                }
            }
            Some(FinalNode::Other { inode }) => {
                let ino = *inode_ino.entry(inode).or_insert_with(|| {
                    slots.push(Slot::Other(inode));
                    links.push(0);
                    subdirs.push(0);
                    let ind = tree.inode(inode);
                    counts.xattrs += ind.meta.xattrs.len() as u64;
                    counts.pool_bytes += xattr_bytes(&ind.meta);
                    match &ind.content {
                        TreeContent::File(refs) => {
                            counts.chunk_refs += refs.as_slice().len() as u64
                        }
                        TreeContent::Symlink(t) => counts.pool_bytes += t.len() as u64,
                        _ => {}
                    }
                    slots.len() as u32
                });
                links[ino as usize - 1] += 1;
            }
            None => {}
        }
    }
    counts.inodes = slots.len() as u32;
    let mut w = MetadataWriter::new(opts.digest, opts.codec.compression, opts.chunking, counts)?;
    w.set_prefetch(prefetch_order(tree, written, units, prefetch));
    for b in &written.blobs {
        w.add_blob(*b.info())?;
    }
    for c in &written.chunks {
        w.add_chunk(*c)?;
    }
    let no_xattrs: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    for (i, slot) in slots.iter().enumerate() {
        match *slot {
            Slot::Dir { node, parent } => {
                let Some(FinalNode::Directory { meta, children }) = tree.node(node) else {
                    unreachable!("numbered as a directory")
                };
                let meta = meta.unwrap_or(&implicit_dir);
                let entries: Vec<(&[u8], u32)> = children
                    .iter()
                    .filter_map(|&(name, child)| {
                        let ino = match tree.node(child)? {
                            FinalNode::Directory { .. } => node_ino[&child],
                            FinalNode::Other { inode } => inode_ino[&inode],
                        };
                        Some((name, ino))
                    })
                    .collect();
                w.add_inode(InodeSpec {
                    attrs: attributes(InodeKind::Directory, meta, 0, 2 + subdirs[i]),
                    parent,
                    xattrs: &meta.xattrs,
                    content: Content::Directory(entries),
                })?;
            }
            Slot::Other(inode) => {
                let ind = tree.inode(inode);
                let nlink = links[i];
                let refs: Vec<ChunkRef>;
                let content = match &ind.content {
                    TreeContent::File(pending) => {
                        refs = pending
                            .as_slice()
                            .iter()
                            .map(|p| ChunkRef {
                                file_offset: p.file_offset,
                                chunk: p
                                    .unit
                                    .map(|u| written.seq_chunk[units[u as usize] as usize]),
                                chunk_offset: p.unit_offset,
                                length: p.length,
                            })
                            .collect();
                        Content::File(&refs)
                    }
                    TreeContent::Symlink(t) => Content::Symlink(t),
                    TreeContent::None => Content::Special,
                    TreeContent::Unfilled => {
                        return Err(BuildError::Invalid(
                            "internal: a hardlink target was never read".into(),
                        ))
                    }
                };
                let xattrs = if ind.meta.xattrs.is_empty() {
                    &no_xattrs
                } else {
                    &ind.meta.xattrs
                };
                w.add_inode(InodeSpec {
                    attrs: attributes(ind.kind, &ind.meta, ind.size, nlink),
                    parent: 0,
                    xattrs,
                    content,
                })?;
            }
        }
    }
    Ok(w.finish()?)
}
