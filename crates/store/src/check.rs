//! `skiff check`: verifies every chunk of an image, blob by blob, in one
//! sequential pass each, and cross-checks each blob's own chunk table.

use std::collections::{BTreeMap, HashMap};
use std::io::{self, Read};

use serde::Serialize;
use skiff_format::blob::BlobFile;
use skiff_format::{ChunkInfo, InodeKind};

use crate::chunks::verify_chunk;
use crate::error::{format_err, Result, StoreError};
use crate::image::SkiffImage;
use crate::tail::read_blob_tail;

#[derive(Debug, Serialize)]
pub struct BadChunk {
    pub index: u32,
    pub digest: String,
    pub blob: String,
    pub reason: String,
    /// Paths of the files that read from this chunk.
    pub files: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct CheckReport {
    pub image: String,
    pub root_digest: String,
    pub inodes: u32,
    pub blobs: u32,
    pub chunks_checked: u64,
    pub bytes_checked: u64,
    /// Problems with whole blobs: digest, size, or chunk table.
    pub bad_blobs: Vec<String>,
    /// In blob order; the first is the first bad chunk found.
    pub bad_chunks: Vec<BadChunk>,
}

impl CheckReport {
    pub fn ok(&self) -> bool {
        self.bad_blobs.is_empty() && self.bad_chunks.is_empty()
    }
}

/// Checks the metadata's structure, then every blob. `progress` receives
/// compressed bytes as they are read.
pub fn check_image(image: &SkiffImage, mut progress: impl FnMut(u64)) -> Result<CheckReport> {
    let md = &image.metadata;
    md.validate()
        .map_err(format_err(format!("metadata of {}", image.name())))?;
    let mut by_blob: BTreeMap<u32, Vec<(u32, ChunkInfo)>> = BTreeMap::new();
    for i in 0..md.chunk_count() {
        let c = md.chunk(i).map_err(format_err("chunk table"))?;
        by_blob.entry(c.blob).or_default().push((i, c));
    }
    let mut report = CheckReport {
        image: image.name(),
        root_digest: image.root_digest.clone(),
        inodes: md.inode_count(),
        blobs: md.blob_count(),
        chunks_checked: 0,
        bytes_checked: 0,
        bad_blobs: Vec::new(),
        bad_chunks: Vec::new(),
    };
    let mut bad: Vec<(u32, String, String)> = Vec::new();
    for (blob_index, layer) in image.blob_layers.iter().enumerate() {
        let mut chunks = by_blob.remove(&(blob_index as u32)).unwrap_or_default();
        chunks.sort_by_key(|(_, c)| c.compressed_offset);
        chunks.dedup_by_key(|(_, c)| c.compressed_offset);
        // The blob's own tables must agree with the metadata; their file
        // entries are checked against the chunk data as it streams past.
        let mut packed: HashMap<u64, Vec<BlobFile>> = HashMap::new();
        let tail = md
            .blob(blob_index as u32)
            .map_err(crate::error::format_err(format!(
                "blob {} in the metadata",
                layer.digest
            )))
            .and_then(|info| read_blob_tail(image.repo.as_ref(), layer, &info));
        match tail {
            Ok(tail) => {
                let by_offset: HashMap<u64, &ChunkInfo> = tail
                    .chunks
                    .iter()
                    .map(|c| (c.compressed_offset, c))
                    .collect();
                for (index, c) in &chunks {
                    if by_offset.get(&c.compressed_offset).copied()
                        != Some(&ChunkInfo { blob: 0, ..*c })
                    {
                        report
                            .bad_blobs
                            .push(format!("blob {}: its chunk table disagrees with the metadata about chunk {index}", layer.digest));
                    }
                }
                for f in tail.files {
                    let off = tail.chunks[f.chunk as usize].compressed_offset;
                    packed.entry(off).or_default().push(f);
                }
            }
            Err(e) => report.bad_blobs.push(format!("blob {}: {e}", layer.digest)),
        }
        let mut stream = image.repo.open_blob(layer)?;
        let mut pos = 0u64;
        let mut failed: Option<String> = None;
        let mut buf = Vec::new();
        for (index, c) in &chunks {
            if failed.is_some() {
                bad.push((
                    *index,
                    layer.digest.clone(),
                    "not checked: the blob could not be read".into(),
                ));
                continue;
            }
            let step = (|| -> io::Result<()> {
                io::copy(
                    &mut (&mut stream).take(c.compressed_offset - pos),
                    &mut io::sink(),
                )?;
                buf.resize(c.compressed_size as usize, 0);
                stream.read_exact(&mut buf)
            })();
            match step {
                Ok(()) => {
                    progress(c.compressed_offset + c.compressed_size as u64 - pos);
                    pos = c.compressed_offset + c.compressed_size as u64;
                    report.chunks_checked += 1;
                    report.bytes_checked += c.compressed_size as u64;
                    match verify_chunk(md, *index, &buf) {
                        Ok(data) => {
                            for f in packed.get(&c.compressed_offset).into_iter().flatten() {
                                let slice = data.get(
                                    f.offset as usize..(f.offset as usize + f.length as usize),
                                );
                                if slice.is_none_or(|s| {
                                    md.header().digest_algorithm.digest(s) != f.digest
                                }) {
                                    report.bad_blobs.push(format!(
                                        "blob {}: its file table misdescribes bytes {}..{} of chunk {index}",
                                        layer.digest,
                                        f.offset,
                                        f.offset + f.length
                                    ));
                                }
                            }
                        }
                        Err(e) => {
                            let reason = match e {
                                StoreError::ChunkCorrupt { reason, .. } => reason,
                                other => other.to_string(),
                            };
                            bad.push((*index, layer.digest.clone(), reason));
                        }
                    }
                }
                Err(e) => {
                    failed = Some(e.to_string());
                    bad.push((*index, layer.digest.clone(), format!("unreadable: {e}")));
                }
            }
        }
        if failed.is_none() {
            match io::copy(&mut stream, &mut io::sink()) {
                Ok(n) => progress(n),
                Err(e) => failed = Some(e.to_string()),
            }
        }
        if let Some(e) = failed {
            report.bad_blobs.push(format!("blob {}: {e}", layer.digest));
        }
    }
    if !bad.is_empty() {
        let users = files_using(image, bad.iter().map(|b| b.0))?;
        let alg = md.header().digest_algorithm;
        for (index, blob, reason) in bad {
            let digest = md
                .chunk(index)
                .map(|c| c.digest.prefixed(alg))
                .unwrap_or_default();
            report.bad_chunks.push(BadChunk {
                index,
                digest,
                blob,
                reason,
                files: users.get(&index).cloned().unwrap_or_default(),
            });
        }
    }
    Ok(report)
}

/// Maps chunk index → paths of the regular files that read it.
pub fn files_using(
    image: &SkiffImage,
    chunks: impl Iterator<Item = u32>,
) -> Result<HashMap<u32, Vec<String>>> {
    let wanted: std::collections::HashSet<u32> = chunks.collect();
    let md = &image.metadata;
    let mut out: HashMap<u32, Vec<String>> = HashMap::new();
    md.walk(|path, entry| {
        if entry.file_type != InodeKind::File.dirent_type() {
            return Ok(());
        }
        for r in md.chunk_refs(entry.ino)? {
            if let Some(c) = r.chunk.filter(|c| wanted.contains(c)) {
                let files = out.entry(c).or_default();
                let p = format!("/{}", String::from_utf8_lossy(path));
                if files.last() != Some(&p) {
                    files.push(p);
                }
            }
        }
        Ok(())
    })
    .map_err(format_err("walking the tree"))?;
    Ok(out)
}
