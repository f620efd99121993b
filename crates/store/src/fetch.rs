//! Lazy, verified chunk fetching for mounts.
//!
//! A read asks for chunks; each comes from memory, else from the node cache
//! (verified), else from the registry. Missing chunks are grouped by blob,
//! and chunks that sit next to each other (within `merge_gap`) become one
//! range request of at most `max_request` bytes. Range requests run on a
//! worker pool. A chunk already being fetched is waited for, not fetched
//! twice. Every fetched chunk is verified before any reader sees it; a
//! mismatch fails the reads that need it and is counted.
//!
//! Bytes fetched between wanted chunks are not dropped: the chunks they hold
//! are verified and cached too. After a read misses, read-ahead fetches the
//! next `readahead` bytes of the same blob in the background: the builder
//! writes a directory's files next to each other, and a process that reads
//! one file usually reads its neighbours.
//!
//! A miss in a file whose stored chunks add up to at most `whole_file`
//! bytes also fetches the rest of that file, in `max_request` windows that
//! run in parallel: a program maps its binary and libraries and faults in
//! pages all over them, one serial miss each, where the whole file costs
//! a few parallel requests and about the same bytes (issue 20). A larger
//! file is fetched whole too once the link, measured on this mount's bulk
//! requests, carries it in `whole_file_time`: on a fast link libnode's
//! hundreds of serial misses cost more than its bytes; on a slow one they
//! do not. A file found too large is weighed again at its next miss, when
//! the rate may be known.
//!
//! Prefetch, read-ahead and whole-file jobs queue behind foreground work and
//! use at most half the workers, and they claim chunks only when they start,
//! so a queued background job never holds up a read.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

use skiff_format::ChunkInfo;

use crate::cache::ChunkCache;
use crate::chunks::verify_chunk;
use crate::image::SkiffImage;
use crate::link_rate::{LinkRate, BULK_REQUEST};
use crate::metrics::Metrics;

#[derive(Debug, Clone, Copy)]
pub struct FetchConfig {
    /// Range requests in flight at once.
    pub parallel: usize,
    /// Wanted chunks this close together share one request.
    pub merge_gap: u64,
    /// Largest single range request.
    pub max_request: u64,
    /// How long a read waits for its chunks before failing with EIO.
    pub read_timeout: Duration,
    /// Decompressed, verified chunks kept in memory.
    pub memory_bytes: usize,
    /// Compressed bytes of the same blob fetched in the background after a
    /// read misses; 0 turns read-ahead off.
    pub readahead: u64,
    /// After a read misses in a file whose chunks hold at most this many
    /// compressed bytes, the rest of the file is fetched in the background;
    /// 0 turns it off.
    pub whole_file: u64,
    /// Also fetch the rest of a larger file when the measured link carries
    /// the whole file in this long; zero turns that part off.
    pub whole_file_time: Duration,
}

impl Default for FetchConfig {
    fn default() -> Self {
        Self {
            parallel: 8,
            merge_gap: 32 * 1024,
            max_request: 1 << 20,
            read_timeout: Duration::from_secs(60),
            memory_bytes: 8 << 20,
            readahead: 0,
            whole_file: 0,
            whole_file_time: Duration::ZERO,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FetchError {
    /// The chunks did not arrive within the read timeout.
    Timeout,
    /// Fetching or verifying failed; the message says why.
    Failed(String),
    /// A local-only read needed a chunk that is not local.
    NotLocal,
}

impl std::fmt::Display for FetchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FetchError::Timeout => f.write_str("timed out waiting for the registry"),
            FetchError::Failed(m) => f.write_str(m),
            FetchError::NotLocal => f.write_str("not in the local cache"),
        }
    }
}

type ChunkData = Arc<Vec<u8>>;
type Outcome = Result<ChunkData, String>;

#[derive(Default)]
struct Flight {
    outcome: Mutex<Option<Outcome>>,
    done: Condvar,
}

impl Flight {
    fn wait(&self, deadline: Instant) -> Result<ChunkData, FetchError> {
        let mut g = self.outcome.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if let Some(o) = g.as_ref() {
                return o.clone().map_err(FetchError::Failed);
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(FetchError::Timeout);
            }
            g = self
                .done
                .wait_timeout(g, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }
}

/// Decompressed chunks by index, evicting the least recently used.
struct MemoryCache {
    map: HashMap<u32, (ChunkData, u64)>,
    bytes: usize,
    limit: usize,
    tick: u64,
}

impl MemoryCache {
    fn get(&mut self, idx: u32) -> Option<ChunkData> {
        self.tick += 1;
        let tick = self.tick;
        self.map.get_mut(&idx).map(|e| {
            e.1 = tick;
            e.0.clone()
        })
    }

    fn insert(&mut self, idx: u32, data: ChunkData) {
        self.tick += 1;
        self.bytes += data.len();
        if let Some((old, _)) = self.map.insert(idx, (data, self.tick)) {
            self.bytes -= old.len();
        }
        if self.bytes > self.limit {
            let mut by_age: Vec<(u64, u32)> = self.map.iter().map(|(k, v)| (v.1, *k)).collect();
            by_age.sort_unstable();
            for (_, k) in by_age {
                if self.bytes <= self.limit * 3 / 4 {
                    break;
                }
                if let Some((d, _)) = self.map.remove(&k) {
                    self.bytes -= d.len();
                }
            }
        }
    }
}

type Job = Box<dyn FnOnce() + Send>;

#[derive(Clone, Copy)]
enum JobClass {
    /// A read waits for it.
    Foreground,
    /// Prefetch: in order, behind everything else.
    Background,
    /// Read-ahead: background, but ahead of queued prefetch, since it
    /// follows what the workload is reading now.
    BackgroundFirst,
}

#[derive(Default)]
struct QueueState {
    high: VecDeque<Job>,
    low: VecDeque<Job>,
    low_running: usize,
    shutdown: bool,
}

/// Workers that run foreground jobs first and cap background ones.
struct WorkQueue {
    state: Mutex<QueueState>,
    ready: Condvar,
    max_low: usize,
}

impl WorkQueue {
    fn push(&self, job: Job, class: JobClass) {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        match class {
            JobClass::Foreground => s.high.push_back(job),
            JobClass::Background => s.low.push_back(job),
            JobClass::BackgroundFirst => s.low.push_front(job),
        }
        drop(s);
        self.ready.notify_one();
    }

    fn low_backlog(&self) -> usize {
        self.state.lock().map(|s| s.low.len()).unwrap_or(0)
    }

    fn run_worker(&self) {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if let Some(job) = s.high.pop_front() {
                drop(s);
                job();
                s = self.state.lock().unwrap_or_else(|p| p.into_inner());
            } else if s.low_running < self.max_low && !s.low.is_empty() {
                let job = s.low.pop_front().expect("not empty");
                s.low_running += 1;
                drop(s);
                job();
                s = self.state.lock().unwrap_or_else(|p| p.into_inner());
                s.low_running -= 1;
                // A slot freed: another waiting worker may take a low job.
                self.ready.notify_one();
            } else if s.shutdown {
                return;
            } else {
                s = self.ready.wait(s).unwrap_or_else(|p| p.into_inner());
            }
        }
    }

    fn shutdown(&self) {
        self.state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .shutdown = true;
        self.ready.notify_all();
    }
}

struct Inner {
    image: Arc<SkiffImage>,
    cache: Option<Arc<ChunkCache>>,
    memory: Mutex<MemoryCache>,
    inflight: Mutex<HashMap<u32, Arc<Flight>>>,
    /// Per blob, (compressed offset, chunk index) sorted by offset; built
    /// on first use.
    blob_order: OnceLock<Vec<Vec<(u64, u32)>>>,
    queue: WorkQueue,
    metrics: Arc<Metrics>,
    config: FetchConfig,
    /// Files whose rest was queued after a miss, or found too large then.
    whole_files: Mutex<HashMap<u32, WholeFile>>,
    link_rate: LinkRate,
}

#[derive(Clone, Copy)]
enum WholeFile {
    Queued,
    /// Too large when last weighed; its stored bytes.
    Larger(u64),
}

/// Fetches and verifies the chunks of one mounted image.
pub struct Fetcher {
    inner: Arc<Inner>,
}

/// A contiguous byte range of one blob covering some wanted chunks.
struct Range {
    blob: u32,
    start: u64,
    end: u64,
    chunks: Vec<(u32, ChunkInfo)>,
}

fn plan_ranges(mut wanted: Vec<(u32, ChunkInfo)>, gap: u64, max: u64) -> Vec<Range> {
    wanted.sort_by_key(|(_, c)| (c.blob, c.compressed_offset));
    let mut out: Vec<Range> = Vec::new();
    for (idx, c) in wanted {
        let start = c.compressed_offset;
        let end = start + c.compressed_size as u64;
        if let Some(r) = out.last_mut() {
            if r.blob == c.blob && start >= r.end && start - r.end <= gap && end - r.start <= max {
                r.end = end;
                r.chunks.push((idx, c));
                continue;
            }
        }
        out.push(Range {
            blob: c.blob,
            start,
            end,
            chunks: vec![(idx, c)],
        });
    }
    out
}

impl Inner {
    /// Hands the outcome to everyone waiting on the chunk. A success stays
    /// findable in the in-flight map until [`Self::retire`], so that nobody
    /// fetches it again between leaving memory and reaching the disk cache.
    fn complete(&self, idx: u32, outcome: Outcome) {
        let failed = outcome.is_err();
        let flight = self
            .inflight
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&idx)
            .cloned();
        if let Some(f) = flight {
            *f.outcome.lock().unwrap_or_else(|p| p.into_inner()) = Some(outcome);
            f.done.notify_all();
        }
        if failed {
            self.retire(idx);
        }
    }

    fn retire(&self, idx: u32) {
        self.inflight
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&idx);
    }

    fn lookup_local(&self, idx: u32, info: &ChunkInfo) -> Option<ChunkData> {
        if let Some(d) = self.memory.lock().ok().and_then(|mut m| m.get(idx)) {
            self.metrics.memory_hits.fetch_add(1, Ordering::Relaxed);
            return Some(d);
        }
        let alg = self.image.metadata.header().digest_algorithm;
        let data = self
            .cache
            .as_ref()?
            .get(alg, &info.digest, info.uncompressed_size)?;
        let data = Arc::new(data);
        self.metrics.disk_hits.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut m) = self.memory.lock() {
            m.insert(idx, data.clone());
        }
        Some(data)
    }

    /// Chunks of each blob in blob order.
    fn blob_order(&self) -> &Vec<Vec<(u64, u32)>> {
        self.blob_order.get_or_init(|| {
            let md = &self.image.metadata;
            let mut by_blob = vec![Vec::new(); self.image.blob_layers.len()];
            for idx in 0..md.chunk_count() {
                if let Ok(c) = md.chunk(idx) {
                    if let Some(v) = by_blob.get_mut(c.blob as usize) {
                        v.push((c.compressed_offset, idx));
                    }
                }
            }
            for v in &mut by_blob {
                v.sort_unstable();
            }
            by_blob
        })
    }

    /// Chunks of `blob` starting at or after `from`, in blob order.
    fn chunks_from_offset(&self, blob: u32, from: u64) -> &[(u64, u32)] {
        let Some(v) = self.blob_order().get(blob as usize) else {
            return &[];
        };
        &v[v.partition_point(|&(o, _)| o < from)..]
    }

    /// In memory or in the node cache (unverified: a cheap test before
    /// background work; reads verify).
    fn is_local(&self, idx: u32, info: &ChunkInfo) -> bool {
        if self.memory.lock().is_ok_and(|m| m.map.contains_key(&idx)) {
            return true;
        }
        let alg = self.image.metadata.header().digest_algorithm;
        self.cache
            .as_ref()
            .is_some_and(|c| c.contains(alg, &info.digest))
    }

    /// Claims the chunks nobody has or is fetching, for a background job.
    fn claim(&self, candidates: Vec<(u32, ChunkInfo)>) -> Vec<(u32, ChunkInfo)> {
        let mut claimed = Vec::new();
        for (idx, info) in candidates {
            if self.is_local(idx, &info) {
                continue;
            }
            let mut inflight = self.inflight.lock().unwrap_or_else(|p| p.into_inner());
            // Memory is filled before a flight is retired: look again under
            // the lock, or a chunk completed meanwhile is fetched twice.
            if self.memory.lock().is_ok_and(|m| m.map.contains_key(&idx)) {
                continue;
            }
            if let std::collections::hash_map::Entry::Vacant(e) = inflight.entry(idx) {
                e.insert(Arc::new(Flight::default()));
                claimed.push((idx, info));
            }
        }
        claimed
    }

    /// Fetches up to `bytes` of `blob` from offset `from`: the chunks there
    /// that nobody has.
    fn read_ahead(&self, blob: u32, from: u64, bytes: u64) {
        let md = &self.image.metadata;
        let mut window = Vec::new();
        let mut total = 0;
        for &(_, idx) in self.chunks_from_offset(blob, from) {
            let Ok(info) = md.chunk(idx) else { break };
            total += info.compressed_size as u64;
            window.push((idx, info));
            if total >= bytes {
                break;
            }
        }
        self.fetch_unclaimed(window, &self.metrics.readahead_chunks);
    }

    /// After a miss in file `ino`: queues the rest of the file, once per
    /// file, in windows of `max_request` compressed bytes, each its own job
    /// so they run in parallel, first window first. Files larger than
    /// [`Self::whole_file_limit`] are left to read-ahead.
    fn queue_whole_file(self: &Arc<Self>, ino: u32) {
        if self.config.whole_file == 0 {
            return;
        }
        let known = self
            .whole_files
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&ino)
            .copied();
        let limit = self.whole_file_limit();
        match known {
            Some(WholeFile::Queued) => return,
            Some(WholeFile::Larger(total)) if total > limit => return,
            _ => {}
        }
        let Some((chunks, total)) = self.file_chunks(ino) else {
            return;
        };
        {
            let mut files = self.whole_files.lock().unwrap_or_else(|p| p.into_inner());
            if matches!(files.get(&ino), Some(WholeFile::Queued)) {
                return;
            }
            if total > limit {
                files.insert(ino, WholeFile::Larger(total));
                return;
            }
            files.insert(ino, WholeFile::Queued);
        }
        let mut windows: Vec<Vec<(u32, ChunkInfo)>> = vec![Vec::new()];
        let mut bytes = 0u64;
        for c in chunks {
            let size = c.1.compressed_size as u64;
            let window = windows.last_mut().expect("never empty");
            if !window.is_empty() && bytes + size > self.config.max_request {
                windows.push(vec![c]);
                bytes = size;
            } else {
                window.push(c);
                bytes += size;
            }
        }
        // Each job goes to the front of the background queue: push the last
        // window first.
        for window in windows.into_iter().rev() {
            let w = self.clone();
            self.queue.push(
                Box::new(move || w.fetch_unclaimed(window, &w.metrics.whole_file_chunks)),
                JobClass::BackgroundFirst,
            );
        }
    }

    /// The largest file fetched whole: `whole_file`, or what the link
    /// carries in `whole_file_time` at the rate measured so far.
    fn whole_file_limit(&self) -> u64 {
        let by_rate = self.link_rate.bytes_per_sec(Instant::now()).map_or(0, |r| {
            (r as f64 * self.config.whole_file_time.as_secs_f64()) as u64
        });
        self.config.whole_file.max(by_rate)
    }

    /// The distinct chunks of file `ino` and their stored bytes.
    fn file_chunks(&self, ino: u32) -> Option<(Vec<(u32, ChunkInfo)>, u64)> {
        let md = &self.image.metadata;
        let refs = md.chunk_refs(ino).ok()?;
        let mut seen = std::collections::HashSet::new();
        let mut chunks = Vec::new();
        let mut total = 0u64;
        for idx in refs.iter().filter_map(|r| r.chunk) {
            if seen.insert(idx) {
                let info = md.chunk(idx).ok()?;
                total += info.compressed_size as u64;
                chunks.push((idx, info));
            }
        }
        Some((chunks, total))
    }

    /// Fetches the chunks of `window` that nobody has or is fetching,
    /// counting them in `counter`.
    fn fetch_unclaimed(&self, window: Vec<(u32, ChunkInfo)>, counter: &AtomicU64) {
        let claimed = self.claim(window);
        counter.fetch_add(claimed.len() as u64, Ordering::Relaxed);
        for r in plan_ranges(claimed, self.config.merge_gap, self.config.max_request) {
            self.fetch_range(r);
        }
    }

    /// Fetches one range and completes the flights of its chunks.
    fn fetch_range(&self, r: Range) {
        let layer = &self.image.blob_layers[r.blob as usize];
        let m = &self.metrics;
        m.fetch_requests.fetch_add(1, Ordering::Relaxed);
        m.inflight_requests.fetch_add(1, Ordering::Relaxed);
        let bulk = r.end - r.start >= BULK_REQUEST;
        if bulk {
            self.link_rate.begin(Instant::now());
        }
        let result = self
            .image
            .repo
            .read_range(&layer.digest, r.start, r.end - r.start);
        m.inflight_requests.fetch_sub(1, Ordering::Relaxed);
        if bulk {
            let now = Instant::now();
            let got = result.as_ref().map_or(0, |b| b.len() as u64);
            self.link_rate.end(now, got);
            if let Some(rate) = self.link_rate.bytes_per_sec(now) {
                m.link_bytes_per_sec.store(rate, Ordering::Relaxed);
            }
        }
        let bytes = match result {
            Ok(b) => b,
            Err(e) => {
                m.fetch_errors.fetch_add(1, Ordering::Relaxed);
                tracing::error!(blob = %layer.digest, start = r.start, len = r.end - r.start, error = %e, "range request failed");
                for (idx, _) in r.chunks {
                    self.complete(idx, Err(format!("fetching blob {}: {e}", layer.digest)));
                }
                return;
            }
        };
        m.fetched_bytes
            .fetch_add(bytes.len() as u64, Ordering::Relaxed);
        // Every backend promises exactly the range; one that breaks the
        // promise fails the reads, never the daemon.
        if bytes.len() as u64 != r.end - r.start {
            m.fetch_errors.fetch_add(1, Ordering::Relaxed);
            let e = format!(
                "fetching blob {}: asked for {} bytes at {}, got {}",
                layer.digest,
                r.end - r.start,
                r.start,
                bytes.len()
            );
            tracing::error!("{e}");
            for (idx, _) in r.chunks {
                self.complete(idx, Err(e.clone()));
            }
            return;
        }
        let md = &self.image.metadata;
        let alg = md.header().digest_algorithm;
        let wanted: std::collections::HashSet<u32> = r.chunks.iter().map(|c| c.0).collect();
        for (idx, info) in r.chunks {
            let at = (info.compressed_offset - r.start) as usize;
            let stored = &bytes[at..at + info.compressed_size as usize];
            match verify_chunk(md, idx, stored) {
                Ok(data) => {
                    m.fetched_chunks.fetch_add(1, Ordering::Relaxed);
                    let data = Arc::new(data);
                    if let Ok(mut mem) = self.memory.lock() {
                        mem.insert(idx, data.clone());
                    }
                    // Cached before readers wake: a chunk a reader got is
                    // on the node even if the daemon is stopped right after.
                    if let Some(c) = &self.cache {
                        c.put(alg, &info.digest, &data);
                    }
                    self.complete(idx, Ok(data.clone()));
                    self.retire(idx);
                }
                Err(e) => {
                    m.verify_failures.fetch_add(1, Ordering::Relaxed);
                    tracing::error!(chunk = idx, error = %e, "chunk failed verification; not serving it");
                    self.complete(idx, Err(e.to_string()));
                }
            }
        }
        // The chunks between the wanted ones came too: keep them.
        let Some(cache) = &self.cache else { return };
        for &(offset, idx) in self.chunks_from_offset(r.blob, r.start) {
            if offset >= r.end {
                break;
            }
            if wanted.contains(&idx) {
                continue;
            }
            let Ok(info) = md.chunk(idx) else { continue };
            let end = offset + info.compressed_size as u64;
            if end > r.end || self.is_local(idx, &info) {
                continue;
            }
            if self.inflight.lock().is_ok_and(|f| f.contains_key(&idx)) {
                continue;
            }
            let stored = &bytes[(offset - r.start) as usize..(end - r.start) as usize];
            match verify_chunk(md, idx, stored) {
                Ok(data) => {
                    m.gap_chunks.fetch_add(1, Ordering::Relaxed);
                    cache.put(alg, &info.digest, &data);
                }
                Err(e) => {
                    m.verify_failures.fetch_add(1, Ordering::Relaxed);
                    tracing::error!(chunk = idx, error = %e, "chunk failed verification; not caching it");
                }
            }
        }
    }
}

impl Fetcher {
    pub fn new(
        image: Arc<SkiffImage>,
        cache: Option<Arc<ChunkCache>>,
        config: FetchConfig,
    ) -> Self {
        let parallel = config.parallel.max(1);
        let inner = Arc::new(Inner {
            image,
            cache,
            memory: Mutex::new(MemoryCache {
                map: HashMap::new(),
                bytes: 0,
                limit: config.memory_bytes,
                tick: 0,
            }),
            inflight: Mutex::new(HashMap::new()),
            blob_order: OnceLock::new(),
            queue: WorkQueue {
                state: Mutex::new(QueueState::default()),
                ready: Condvar::new(),
                max_low: (parallel / 2).max(1),
            },
            metrics: Arc::new(Metrics::default()),
            whole_files: Mutex::new(Default::default()),
            link_rate: LinkRate::default(),
            config,
        });
        for i in 0..parallel {
            let w = inner.clone();
            std::thread::Builder::new()
                .name(format!("skiff-fetch-{i}"))
                .spawn(move || w.queue.run_worker())
                .expect("spawning a fetch worker");
        }
        Self { inner }
    }

    pub fn image(&self) -> &Arc<SkiffImage> {
        &self.inner.image
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.inner.metrics
    }

    /// Verified chunks by index, in the order asked.
    pub fn chunks(&self, idxs: &[u32]) -> Result<Vec<ChunkData>, FetchError> {
        self.chunks_from(idxs, true, None)
    }

    /// Like [`Self::chunks`]; with `network` false, chunks not in memory or
    /// the node cache fail with [`FetchError::NotLocal`] instead of being
    /// fetched. `file` is the inode read, whose rest a miss may fetch.
    fn chunks_from(
        &self,
        idxs: &[u32],
        network: bool,
        file: Option<u32>,
    ) -> Result<Vec<ChunkData>, FetchError> {
        let inner = &self.inner;
        let md = &inner.image.metadata;
        let deadline = Instant::now() + inner.config.read_timeout;
        let mut out: Vec<Option<ChunkData>> = vec![None; idxs.len()];
        let mut waits = Vec::new();
        let mut wanted = Vec::new();
        for (pos, &idx) in idxs.iter().enumerate() {
            let info = md
                .chunk(idx)
                .map_err(|e| FetchError::Failed(e.to_string()))?;
            if let Some(d) = inner.lookup_local(idx, &info) {
                out[pos] = Some(d);
                continue;
            }
            if !network {
                return Err(FetchError::NotLocal);
            }
            inner.metrics.misses.fetch_add(1, Ordering::Relaxed);
            let mut inflight = inner.inflight.lock().unwrap_or_else(|p| p.into_inner());
            // Memory is filled before a flight is retired: look again under
            // the lock, or a chunk completed meanwhile is fetched twice.
            if let Some(d) = inner.memory.lock().ok().and_then(|mut m| m.get(idx)) {
                out[pos] = Some(d);
                continue;
            }
            let flight = match inflight.get(&idx) {
                Some(f) => f.clone(),
                None => {
                    let f = Arc::new(Flight::default());
                    inflight.insert(idx, f.clone());
                    wanted.push((idx, info));
                    f
                }
            };
            waits.push((pos, flight));
        }
        let readahead = inner.config.readahead;
        let none_wanted = wanted.is_empty();
        for r in plan_ranges(wanted, inner.config.merge_gap, inner.config.max_request) {
            if readahead > 0 {
                let (w, blob, from) = (inner.clone(), r.blob, r.end);
                inner.queue.push(
                    Box::new(move || w.read_ahead(blob, from, readahead)),
                    JobClass::BackgroundFirst,
                );
            }
            let w = inner.clone();
            inner
                .queue
                .push(Box::new(move || w.fetch_range(r)), JobClass::Foreground);
        }
        // Queued after this read's own requests, which go first.
        if let (Some(ino), false) = (file, none_wanted) {
            inner.queue_whole_file(ino);
        }
        for (pos, flight) in waits {
            out[pos] = Some(flight.wait(deadline)?);
        }
        Ok(out.into_iter().map(|d| d.expect("filled above")).collect())
    }

    /// Reads `size` bytes at `offset` of regular file `ino`, verified.
    pub fn read(&self, ino: u32, offset: u64, size: u32) -> Result<Vec<u8>, FetchError> {
        let started = Instant::now();
        let m = &self.inner.metrics;
        m.reads.fetch_add(1, Ordering::Relaxed);
        let result = self.read_inner(ino, offset, size, true);
        match &result {
            Ok(d) => {
                m.read_bytes.fetch_add(d.len() as u64, Ordering::Relaxed);
            }
            Err(FetchError::Timeout) => {
                m.read_errors.fetch_add(1, Ordering::Relaxed);
                m.read_timeouts.fetch_add(1, Ordering::Relaxed);
                tracing::error!(ino, offset, size, "read timed out waiting for the registry");
            }
            Err(FetchError::Failed(e)) => {
                m.read_errors.fetch_add(1, Ordering::Relaxed);
                tracing::error!(ino, offset, size, error = %e, "read failed");
            }
            Err(FetchError::NotLocal) => {}
        }
        m.observe_read(started.elapsed());
        result
    }

    /// Reads from memory and the node cache only, never the network.
    pub fn read_local(&self, ino: u32, offset: u64, size: u32) -> Result<Vec<u8>, FetchError> {
        self.read_inner(ino, offset, size, false)
    }

    fn read_inner(
        &self,
        ino: u32,
        offset: u64,
        size: u32,
        network: bool,
    ) -> Result<Vec<u8>, FetchError> {
        let md = &self.inner.image.metadata;
        let fail = |e: skiff_format::FormatError| FetchError::Failed(e.to_string());
        let file_size = md.attributes(ino).map_err(fail)?.size;
        let end = offset.saturating_add(size as u64).min(file_size);
        if offset >= end {
            return Ok(Vec::new());
        }
        let refs = md.chunk_refs_in(ino, offset, end - offset).map_err(fail)?;
        let mut idxs: Vec<u32> = refs.iter().filter_map(|r| r.chunk).collect();
        idxs.dedup();
        let data = self.chunks_from(&idxs, network, Some(ino))?;
        let by_idx: HashMap<u32, &ChunkData> = idxs.iter().copied().zip(data.iter()).collect();
        let mut out = Vec::with_capacity((end - offset) as usize);
        for r in refs {
            let seg_start = offset.max(r.file_offset);
            let seg_end = end.min(r.file_offset + r.length as u64);
            if seg_start >= seg_end {
                continue;
            }
            let n = (seg_end - seg_start) as usize;
            match r.chunk {
                None => out.resize(out.len() + n, 0),
                Some(c) => {
                    let from = r.chunk_offset as usize + (seg_start - r.file_offset) as usize;
                    let chunk = by_idx[&c];
                    let slice = chunk.get(from..from + n).ok_or_else(|| {
                        FetchError::Failed(format!("inode {ino} reads past chunk {c}"))
                    })?;
                    out.extend_from_slice(slice);
                }
            }
        }
        Ok(out)
    }

    /// Fetches these chunks in the background, in order, behind foreground
    /// reads. Returns at once.
    pub fn prefetch(&self, chunks: Vec<u32>) {
        let inner = self.inner.clone();
        std::thread::Builder::new()
            .name("skiff-prefetch".into())
            .spawn(move || {
                let md = &inner.image.metadata;
                let mut seen = std::collections::HashSet::new();
                let mut batch: Vec<(u32, ChunkInfo)> = Vec::new();
                let mut batch_bytes = 0;
                let mut chunks = chunks.into_iter().peekable();
                while chunks.peek().is_some() {
                    for c in chunks.by_ref() {
                        let Ok(info) = md.chunk(c) else { continue };
                        if !seen.insert(c) {
                            continue;
                        }
                        batch_bytes += info.compressed_size as u64;
                        batch.push((c, info));
                        if batch_bytes >= inner.config.max_request {
                            break;
                        }
                    }
                    // Keep the background queue short so order is kept and
                    // memory bounded.
                    while inner.queue.low_backlog() > inner.queue.max_low * 2 {
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    let job = std::mem::take(&mut batch);
                    batch_bytes = 0;
                    let w = inner.clone();
                    inner.queue.push(
                        Box::new(move || {
                            let claimed = w.claim(job);
                            w.metrics
                                .prefetched_chunks
                                .fetch_add(claimed.len() as u64, Ordering::Relaxed);
                            // Exact ranges: a trace's chunks are scattered,
                            // and gap bytes would cost more link time than
                            // the extra requests running in parallel.
                            for r in plan_ranges(claimed, 0, w.config.max_request) {
                                w.fetch_range(r);
                            }
                        }),
                        JobClass::Background,
                    );
                }
            })
            .expect("spawning the prefetch thread");
    }
}

impl Drop for Fetcher {
    fn drop(&mut self) {
        self.inner.queue.shutdown();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use skiff_format::{Compression, Digest};

    fn c(blob: u32, off: u64, size: u32) -> ChunkInfo {
        ChunkInfo {
            digest: Digest::default(),
            blob,
            compression: Compression::Zstd,
            compressed_offset: off,
            compressed_size: size,
            uncompressed_size: size * 2,
        }
    }

    #[test]
    fn ranges_merge_adjacent_chunks_within_bounds() {
        let wanted = vec![
            (3, c(0, 300, 100)),
            (1, c(0, 0, 100)),
            (2, c(0, 100, 100)),
            (9, c(1, 0, 50)),
            (5, c(0, 10_000, 10)),
        ];
        let r = plan_ranges(wanted.clone(), 0, 1 << 20);
        let spans: Vec<(u32, u64, u64, usize)> = r
            .iter()
            .map(|r| (r.blob, r.start, r.end, r.chunks.len()))
            .collect();
        assert_eq!(
            spans,
            vec![
                (0, 0, 200, 2),
                (0, 300, 400, 1),
                (0, 10_000, 10_010, 1),
                (1, 0, 50, 1)
            ]
        );
        // A gap allowance joins the chunk at 300; a size cap splits again.
        let r = plan_ranges(wanted.clone(), 100, 1 << 20);
        assert_eq!(r[0].end, 400);
        let r = plan_ranges(wanted, 100, 250);
        assert_eq!((r[0].start, r[0].end, r[1].start), (0, 200, 300));
    }
}
