//! Turns a regular file's bytes into chunk references.
//!
//! Files below the pack threshold are packed together into shared chunks so
//! that a directory of tiny files costs a few requests, not one each. Pack
//! boundaries are content-defined too: a pack closes after a file with
//! probability proportional to the file's size, decided by the file's digest,
//! so removing one file from a layer changes only the pack that held it.
//! Larger files are cut with FastCDC (2020); all-zero chunks and sparse
//! holes become holes that are never stored or fetched.

use std::collections::HashMap;
use std::io::Read;
use std::sync::Arc;

use skiff_format::{Chunking, Digest, DigestAlgorithm};

use crate::dict::ChunkDict;
use crate::error::{BuildError, Result};
use crate::layer::{LayerEntry, LayerStream};
use crate::pipeline::{PackedFile, Pipeline};
use crate::tree::PendingRef;

/// Longest hole a single reference describes.
const MAX_HOLE: u64 = 1 << 30;

#[derive(Debug, Default, Clone, Copy, serde::Serialize)]
pub struct ChunkerStats {
    pub files: u64,
    pub file_bytes: u64,
    pub hole_bytes: u64,
    pub packed_files: u64,
    pub packs: u64,
    pub duplicate_small_files: u64,
}

pub struct Chunker {
    chunking: Chunking,
    dict: Arc<ChunkDict>,
    alg: DigestAlgorithm,
    /// Unit → sequence number in the pipeline, once submitted.
    units: Vec<Option<u64>>,
    small_files: HashMap<Digest, (u32, u32)>,
    pack: Vec<u8>,
    pack_files: Vec<PackedFile>,
    pack_unit: Option<u32>,
    pub stats: ChunkerStats,
}

fn push_hole(refs: &mut Vec<PendingRef>, mut offset: u64, mut len: u64) {
    if let Some(last) = refs.last_mut() {
        if last.unit.is_none() && last.file_offset + last.length as u64 == offset {
            let room = MAX_HOLE - last.length as u64;
            let add = room.min(len);
            last.length += add as u32;
            offset += add;
            len -= add;
        }
    }
    while len > 0 {
        let n = len.min(MAX_HOLE);
        refs.push(PendingRef {
            file_offset: offset,
            unit: None,
            unit_offset: 0,
            length: n as u32,
        });
        offset += n;
        len -= n;
    }
}

impl Chunker {
    pub fn new(chunking: Chunking, alg: DigestAlgorithm, dict: Arc<ChunkDict>) -> Self {
        Self {
            chunking,
            dict,
            alg,
            units: Vec::new(),
            small_files: HashMap::new(),
            pack: Vec::new(),
            pack_files: Vec::new(),
            pack_unit: None,
            stats: ChunkerStats::default(),
        }
    }

    fn new_unit(&mut self) -> u32 {
        self.units.push(None);
        self.units.len() as u32 - 1
    }

    /// The sequence number of each unit; every unit is submitted by now.
    pub fn into_units(self) -> Result<Vec<u64>> {
        self.units
            .into_iter()
            .map(|u| {
                u.ok_or_else(|| BuildError::Invalid("internal: a pack was never sealed".into()))
            })
            .collect()
    }

    /// Submits the open pack, if any. Called at the end of every layer so
    /// each layer's chunks go to that layer's blob.
    pub fn seal_pack(&mut self, slot: u32, pipeline: &mut Pipeline) -> Result<()> {
        if let Some(unit) = self.pack_unit.take() {
            let files = std::mem::take(&mut self.pack_files);
            let seq = pipeline.submit_pack(slot, std::mem::take(&mut self.pack), files)?;
            self.units[unit as usize] = Some(seq);
            self.stats.packs += 1;
        }
        Ok(())
    }

    fn add_small(
        &mut self,
        data: Vec<u8>,
        slot: u32,
        pipeline: &mut Pipeline,
    ) -> Result<PendingRef> {
        let digest = self.alg.digest(&data);
        let len = data.len() as u32;
        if let Some(&(unit, unit_offset)) = self.small_files.get(&digest) {
            self.stats.duplicate_small_files += 1;
            return Ok(PendingRef {
                file_offset: 0,
                unit: Some(unit),
                unit_offset,
                length: len,
            });
        }
        if let Some((chunk, unit_offset, length)) = self.dict.file(&digest) {
            if length == len {
                let unit = self.new_unit();
                self.units[unit as usize] = Some(pipeline.submit_known(slot, chunk)?);
                self.small_files.insert(digest, (unit, unit_offset));
                return Ok(PendingRef {
                    file_offset: 0,
                    unit: Some(unit),
                    unit_offset,
                    length,
                });
            }
        }
        if !self.pack.is_empty() && self.pack.len() + data.len() > self.chunking.max as usize {
            self.seal_pack(slot, pipeline)?;
        }
        let unit = match self.pack_unit {
            Some(u) => u,
            None => {
                let u = self.new_unit();
                self.pack_unit = Some(u);
                u
            }
        };
        let unit_offset = self.pack.len() as u32;
        self.pack.extend_from_slice(&data);
        self.pack_files.push(PackedFile {
            digest,
            offset: unit_offset,
            length: len,
        });
        self.small_files.insert(digest, (unit, unit_offset));
        self.stats.packed_files += 1;
        // Close the pack with probability len/avg, decided by content.
        let h = u32::from_le_bytes([digest.0[0], digest.0[1], digest.0[2], digest.0[3]]) as u64;
        let threshold = (len as u64) << 32;
        if self.pack.len() >= self.chunking.min as usize
            && h * (self.chunking.avg as u64) < threshold
        {
            self.seal_pack(slot, pipeline)?;
        }
        Ok(PendingRef {
            file_offset: 0,
            unit: Some(unit),
            unit_offset,
            length: len,
        })
    }

    /// Reads the current member's data from `stream` and returns its references.
    pub fn capture(
        &mut self,
        stream: &mut LayerStream,
        e: &LayerEntry,
        slot: u32,
        pipeline: &mut Pipeline,
    ) -> Result<Vec<PendingRef>> {
        self.stats.files += 1;
        self.stats.file_bytes += e.size;
        if e.size == 0 {
            return Ok(Vec::new());
        }
        let name = stream.name.clone();
        if e.sparse.is_none() && e.size < self.chunking.pack_threshold as u64 {
            let mut data = Vec::with_capacity(e.size as usize);
            stream
                .data()
                .read_to_end(&mut data)
                .map_err(|err| BuildError::layer_io(&name, err))?;
            return Ok(vec![self.add_small(data, slot, pipeline)?]);
        }
        let extents = e.sparse.clone().unwrap_or_else(|| vec![(0, e.size)]);
        let mut refs = Vec::new();
        let mut pos = 0u64;
        for (offset, len) in extents {
            if offset > pos {
                self.stats.hole_bytes += offset - pos;
                push_hole(&mut refs, pos, offset - pos);
            }
            let reader = stream.data().take(len);
            let c = self.chunking;
            for chunk in fastcdc::v2020::StreamCDC::new(reader, c.min, c.avg, c.max) {
                let chunk = chunk.map_err(|err| match err {
                    fastcdc::v2020::Error::IoError(io) => BuildError::layer_io(&name, io),
                    other => BuildError::layer_io(&name, std::io::Error::other(other.to_string())),
                })?;
                let at = offset + chunk.offset;
                if chunk.data.iter().all(|&b| b == 0) {
                    self.stats.hole_bytes += chunk.length as u64;
                    push_hole(&mut refs, at, chunk.length as u64);
                    continue;
                }
                let unit = self.new_unit();
                let length = chunk.length as u32;
                let seq = pipeline.submit(slot, chunk.data)?;
                self.units[unit as usize] = Some(seq);
                refs.push(PendingRef {
                    file_offset: at,
                    unit: Some(unit),
                    unit_offset: 0,
                    length,
                });
            }
            pos = offset + len;
        }
        if pos < e.size {
            self.stats.hole_bytes += e.size - pos;
            push_hole(&mut refs, pos, e.size - pos);
        }
        Ok(refs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holes_merge_and_split() {
        let mut refs = Vec::new();
        push_hole(&mut refs, 0, 100);
        push_hole(&mut refs, 100, 50);
        assert_eq!(refs.len(), 1);
        assert_eq!(refs[0].length, 150);
        push_hole(&mut refs, 150, 3 * MAX_HOLE);
        let total: u64 = refs.iter().map(|r| r.length as u64).sum();
        assert_eq!(total, 150 + 3 * MAX_HOLE);
        assert!(refs.iter().all(|r| r.length as u64 <= MAX_HOLE));
        let mut pos = 0;
        for r in &refs {
            assert_eq!(r.file_offset, pos);
            pos += r.length as u64;
        }
    }
}
