//! Hashing, compression and blob writing, in parallel but deterministic.
//!
//! The builder submits chunks in a fixed order, each with a sequence number.
//! Worker threads hash and compress them in any order; one writer thread
//! takes results back in sequence order, deduplicates by digest (within the
//! image, then against the chunk dictionary), and appends new chunks to the
//! blob of the layer they came from. Output bytes therefore never depend on
//! thread timing. A fixed number of permits bounds the chunks in flight, and
//! so the memory, whatever the image size.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{channel, sync_channel, Receiver, Sender, SyncSender};
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;

use sha2::{Digest as _, Sha256};
use skiff_format::blob::{encode_tail, BlobFile};
use skiff_format::compression::ChunkCompressor;
use skiff_format::{BlobInfo, ChunkInfo, Codec, Compression, Digest, DigestAlgorithm};

use crate::dict::ChunkDict;
use crate::error::{BuildError, Result};

/// Chunks submitted but not yet written.
const IN_FLIGHT: usize = 256;

/// A small file inside a packed chunk.
#[derive(Debug, Clone, Copy)]
pub struct PackedFile {
    pub digest: Digest,
    pub offset: u32,
    pub length: u32,
}

enum Payload {
    /// Chunk bytes to hash and store; `files` lists a pack's members.
    Data {
        data: Vec<u8>,
        files: Vec<PackedFile>,
    },
    /// A chunk known by digest, already in this image or a dictionary.
    Known(Digest),
}

struct Job {
    seq: u64,
    slot: u32,
    payload: Payload,
}

struct Done {
    seq: u64,
    slot: u32,
    digest: Digest,
    len: u32,
    stored: Option<(Compression, Vec<u8>)>,
    files: Vec<PackedFile>,
    known: bool,
}

/// A blob in the output image's blob table.
#[derive(Debug, Clone)]
pub enum OutBlob {
    /// Written by this build into `path`.
    New {
        path: PathBuf,
        info: BlobInfo,
        slot: u32,
    },
    /// A blob of a chunk-dictionary image, referenced as is.
    Dict { dict_blob: usize, info: BlobInfo },
}

impl OutBlob {
    pub fn info(&self) -> &BlobInfo {
        match self {
            OutBlob::New { info, .. } | OutBlob::Dict { info, .. } => info,
        }
    }
}

#[derive(Debug, Default, Clone, Copy, serde::Serialize)]
pub struct WriteStats {
    pub new_chunks: u64,
    pub new_bytes: u64,
    pub new_compressed_bytes: u64,
    pub dup_chunks_in_image: u64,
    pub dup_bytes_in_image: u64,
    pub dict_chunks: u64,
    pub dict_bytes: u64,
    /// Small files referenced inside a dictionary's packed chunks.
    pub dict_files: u64,
}

pub struct WriterOutput {
    /// Sequence number → chunk index.
    pub seq_chunk: Vec<u32>,
    pub chunks: Vec<ChunkInfo>,
    pub blobs: Vec<OutBlob>,
    pub stats: WriteStats,
}

pub struct Pipeline {
    jobs: Option<SyncSender<Job>>,
    permits: Receiver<()>,
    workers: Vec<JoinHandle<()>>,
    writer: Option<JoinHandle<Result<WriterOutput>>>,
    next_seq: u64,
}

struct OpenBlob {
    index: u32,
    slot: u32,
    file: tempfile::NamedTempFile,
    hasher: Sha256,
    len: u64,
    chunks: Vec<ChunkInfo>,
    files: Vec<BlobFile>,
}

struct Writer {
    alg: DigestAlgorithm,
    staging: PathBuf,
    dict: Arc<ChunkDict>,
    known: Arc<RwLock<HashSet<Digest>>>,
    index: HashMap<Digest, u32>,
    dict_blob_index: HashMap<usize, u32>,
    out: WriterOutput,
    open: Option<OpenBlob>,
}

impl Writer {
    fn seal(&mut self) -> Result<()> {
        let Some(mut b) = self.open.take() else {
            return Ok(());
        };
        let tail = encode_tail(self.alg, b.len, &b.chunks, &b.files);
        b.file
            .write_all(&tail)
            .map_err(BuildError::io("writing a blob"))?;
        b.hasher.update(&tail);
        b.file
            .as_file()
            .sync_all()
            .map_err(BuildError::io("syncing a blob"))?;
        let digest = Digest(b.hasher.finalize().into());
        let path = self.staging.join(digest.to_hex());
        b.file
            .persist(&path)
            .map_err(|e| BuildError::io(format!("saving blob {}", path.display()))(e.error))?;
        let info = BlobInfo {
            digest,
            size: b.len + tail.len() as u64,
            chunk_count: b.chunks.len() as u32,
        };
        self.out.blobs[b.index as usize] = OutBlob::New {
            path,
            info,
            slot: b.slot,
        };
        Ok(())
    }

    fn write_new(
        &mut self,
        slot: u32,
        digest: Digest,
        len: u32,
        stored: Option<(Compression, Vec<u8>)>,
        files: &[PackedFile],
    ) -> Result<u32> {
        if self.open.as_ref().is_some_and(|b| b.slot != slot) {
            self.seal()?;
        }
        if self.open.is_none() {
            let file = tempfile::NamedTempFile::new_in(&self.staging).map_err(BuildError::io(
                format!("creating a blob in {}", self.staging.display()),
            ))?;
            let index = self.out.blobs.len() as u32;
            // A placeholder until sealed, when its digest is known.
            self.out.blobs.push(OutBlob::Dict {
                dict_blob: usize::MAX,
                info: BlobInfo {
                    digest: Digest::default(),
                    size: 0,
                    chunk_count: 0,
                },
            });
            self.open = Some(OpenBlob {
                index,
                slot,
                file,
                hasher: Sha256::new(),
                len: 0,
                chunks: Vec::new(),
                files: Vec::new(),
            });
        }
        let (compression, bytes) = stored
            .ok_or_else(|| BuildError::Invalid("internal: chunk data went missing".into()))?;
        let b = self.open.as_mut().expect("opened above");
        b.file
            .write_all(&bytes)
            .map_err(BuildError::io("writing a blob"))?;
        b.hasher.update(&bytes);
        let info = ChunkInfo {
            digest,
            blob: b.index,
            compression,
            compressed_offset: b.len,
            compressed_size: bytes.len() as u32,
            uncompressed_size: len,
        };
        b.len += bytes.len() as u64;
        let local = b.chunks.len() as u32;
        b.chunks.push(info);
        b.files.extend(files.iter().map(|f| BlobFile {
            digest: f.digest,
            chunk: local,
            offset: f.offset,
            length: f.length,
        }));
        self.out.stats.new_chunks += 1;
        self.out.stats.new_bytes += len as u64;
        self.out.stats.new_compressed_bytes += bytes.len() as u64;
        self.out.chunks.push(info);
        Ok(self.out.chunks.len() as u32 - 1)
    }

    fn accept(&mut self, d: Done) -> Result<()> {
        if d.known {
            self.out.stats.dict_files += 1;
        }
        let idx = if let Some(&i) = self.index.get(&d.digest) {
            if !d.known {
                self.out.stats.dup_chunks_in_image += 1;
                self.out.stats.dup_bytes_in_image += d.len as u64;
            }
            i
        } else if let Some((dict_blob, info)) = self.dict.get(&d.digest) {
            let next = self.out.blobs.len() as u32;
            let blob = *self.dict_blob_index.entry(dict_blob).or_insert(next);
            if blob == next {
                self.out.blobs.push(OutBlob::Dict {
                    dict_blob,
                    info: self.dict.blob(dict_blob).info,
                });
            }
            self.out.chunks.push(ChunkInfo { blob, ..info });
            self.out.stats.dict_chunks += 1;
            self.out.stats.dict_bytes += info.uncompressed_size as u64;
            self.out.chunks.len() as u32 - 1
        } else {
            // Workers skip compression only for digests already indexed here
            // or in the dictionary, so new chunks always carry their data.
            if d.known {
                return Err(BuildError::Invalid(
                    "internal: a dictionary chunk went missing".into(),
                ));
            }
            self.write_new(d.slot, d.digest, d.len, d.stored, &d.files)?
        };
        self.index.entry(d.digest).or_insert(idx);
        if let Ok(mut k) = self.known.write() {
            k.insert(d.digest);
        }
        debug_assert_eq!(self.out.seq_chunk.len() as u64, d.seq);
        self.out.seq_chunk.push(idx);
        Ok(())
    }
}

fn worker(
    jobs: Arc<Mutex<Receiver<Job>>>,
    done: Sender<Done>,
    alg: DigestAlgorithm,
    codec: Codec,
    known: Arc<RwLock<HashSet<Digest>>>,
    dict: Arc<ChunkDict>,
) {
    let mut compressor = ChunkCompressor::new(codec);
    loop {
        let job = {
            let Ok(rx) = jobs.lock() else { return };
            match rx.recv() {
                Ok(j) => j,
                Err(_) => return,
            }
        };
        let d = match job.payload {
            Payload::Known(digest) => Done {
                seq: job.seq,
                slot: job.slot,
                digest,
                len: 0,
                stored: None,
                files: Vec::new(),
                known: true,
            },
            Payload::Data { data, files } => {
                let digest = alg.digest(&data);
                let already = dict.get(&digest).is_some()
                    || known.read().map(|k| k.contains(&digest)).unwrap_or(false);
                let stored = if already {
                    None
                } else {
                    Some(compressor.compress(&data))
                };
                Done {
                    seq: job.seq,
                    slot: job.slot,
                    digest,
                    len: data.len() as u32,
                    stored,
                    files,
                    known: false,
                }
            }
        };
        if done.send(d).is_err() {
            return;
        }
    }
}

impl Pipeline {
    pub fn start(
        alg: DigestAlgorithm,
        codec: Codec,
        staging: &Path,
        dict: Arc<ChunkDict>,
        threads: usize,
    ) -> Self {
        let (job_tx, job_rx) = sync_channel::<Job>(IN_FLIGHT);
        let (done_tx, done_rx) = channel::<Done>();
        let (permit_tx, permit_rx) = sync_channel::<()>(IN_FLIGHT);
        for _ in 0..IN_FLIGHT {
            permit_tx.send(()).expect("capacity matches");
        }
        let known = Arc::new(RwLock::new(HashSet::new()));
        let job_rx = Arc::new(Mutex::new(job_rx));
        let workers = (0..threads.max(1))
            .map(|i| {
                let (jobs, done, known, dict) =
                    (job_rx.clone(), done_tx.clone(), known.clone(), dict.clone());
                std::thread::Builder::new()
                    .name(format!("skiff-chunk-{i}"))
                    .spawn(move || worker(jobs, done, alg, codec, known, dict))
                    .expect("spawning a thread")
            })
            .collect();
        drop(done_tx);
        let mut w = Writer {
            alg,
            staging: staging.to_path_buf(),
            dict,
            known,
            index: HashMap::new(),
            dict_blob_index: HashMap::new(),
            out: WriterOutput {
                seq_chunk: Vec::new(),
                chunks: Vec::new(),
                blobs: Vec::new(),
                stats: WriteStats::default(),
            },
            open: None,
        };
        let writer = std::thread::Builder::new()
            .name("skiff-blob-writer".into())
            .spawn(move || -> Result<WriterOutput> {
                let mut pending: BTreeMap<u64, Done> = BTreeMap::new();
                let mut next = 0u64;
                for d in done_rx {
                    pending.insert(d.seq, d);
                    while let Some(d) = pending.remove(&next) {
                        w.accept(d)?;
                        next += 1;
                        // The builder may have stopped waiting; that is fine.
                        let _ = permit_tx.send(());
                    }
                }
                if !pending.is_empty() {
                    return Err(BuildError::Invalid(
                        "internal: chunk results arrived out of range".into(),
                    ));
                }
                w.seal()?;
                Ok(w.out)
            })
            .expect("spawning a thread");
        Self {
            jobs: Some(job_tx),
            permits: permit_rx,
            workers,
            writer: Some(writer),
            next_seq: 0,
        }
    }

    /// Queues a chunk for layer blob `slot`; returns its sequence number.
    pub fn submit(&mut self, slot: u32, data: Vec<u8>) -> Result<u64> {
        self.send(
            slot,
            Payload::Data {
                data,
                files: Vec::new(),
            },
        )
    }

    /// Queues a pack of small files.
    pub fn submit_pack(&mut self, slot: u32, data: Vec<u8>, files: Vec<PackedFile>) -> Result<u64> {
        self.send(slot, Payload::Data { data, files })
    }

    /// Queues a reference to a chunk the dictionary holds.
    pub fn submit_known(&mut self, slot: u32, digest: Digest) -> Result<u64> {
        self.send(slot, Payload::Known(digest))
    }

    fn send(&mut self, slot: u32, payload: Payload) -> Result<u64> {
        if self.permits.recv().is_err() {
            return Err(self.fail());
        }
        let seq = self.next_seq;
        let sent = self
            .jobs
            .as_ref()
            .map(|j| j.send(Job { seq, slot, payload }).is_ok())
            .unwrap_or(false);
        if !sent {
            return Err(self.fail());
        }
        self.next_seq += 1;
        Ok(seq)
    }

    /// The writer stopped early: collect its error.
    fn fail(&mut self) -> BuildError {
        self.jobs = None;
        match self.writer.take().map(|w| w.join()) {
            Some(Ok(Err(e))) => e,
            _ => BuildError::Invalid("the blob writer stopped unexpectedly".into()),
        }
    }

    pub fn finish(mut self) -> Result<WriterOutput> {
        self.jobs = None;
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
        match self.writer.take().map(|w| w.join()) {
            Some(Ok(r)) => r,
            _ => Err(BuildError::Invalid("the blob writer panicked".into())),
        }
    }
}
