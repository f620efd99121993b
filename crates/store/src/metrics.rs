//! Counters a mount exposes: lock-free, cheap enough for every read.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::Serialize;

/// Upper bounds of the read latency histogram buckets, in microseconds.
pub const LATENCY_BUCKETS_US: [u64; 16] = [
    50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000, 5_000_000, 30_000_000,
];

#[derive(Default)]
pub struct Metrics {
    pub reads: AtomicU64,
    pub read_bytes: AtomicU64,
    pub read_errors: AtomicU64,
    pub read_timeouts: AtomicU64,
    /// Compressed bytes received from the registry.
    pub fetched_bytes: AtomicU64,
    pub fetched_chunks: AtomicU64,
    pub fetch_requests: AtomicU64,
    pub fetch_errors: AtomicU64,
    pub inflight_requests: AtomicU64,
    pub memory_hits: AtomicU64,
    pub disk_hits: AtomicU64,
    pub misses: AtomicU64,
    pub verify_failures: AtomicU64,
    pub prefetched_chunks: AtomicU64,
    /// Chunks fetched by read-ahead after a read missed.
    pub readahead_chunks: AtomicU64,
    /// Chunks fetched because a read missed elsewhere in their file.
    pub whole_file_chunks: AtomicU64,
    /// Chunks nobody asked for that lay between wanted ones in a range
    /// request; verified and cached instead of dropped.
    pub gap_chunks: AtomicU64,
    /// Opens served by kernel passthrough to a verified local copy.
    pub passthrough_opens: AtomicU64,
    /// The registry link's rate as bulk range requests measured it
    /// (bytes/s; 0 until measured).
    pub link_bytes_per_sec: AtomicU64,
    latency: [AtomicU64; LATENCY_BUCKETS_US.len() + 1],
    latency_sum_us: AtomicU64,
}

#[derive(Serialize, Debug, Clone, Default)]
pub struct Snapshot {
    pub reads: u64,
    pub read_bytes: u64,
    pub read_errors: u64,
    pub read_timeouts: u64,
    pub fetched_bytes: u64,
    pub fetched_chunks: u64,
    pub fetch_requests: u64,
    pub fetch_errors: u64,
    pub inflight_requests: u64,
    pub memory_hits: u64,
    pub disk_hits: u64,
    pub misses: u64,
    pub verify_failures: u64,
    pub prefetched_chunks: u64,
    pub readahead_chunks: u64,
    pub whole_file_chunks: u64,
    pub gap_chunks: u64,
    pub passthrough_opens: u64,
    pub link_bytes_per_sec: u64,
    /// (upper bound in µs, count) per bucket; the last bound is `u64::MAX`.
    pub read_latency_us: Vec<(u64, u64)>,
    pub read_latency_sum_us: u64,
}

impl Metrics {
    pub fn observe_read(&self, took: Duration) {
        let us = took.as_micros().min(u64::MAX as u128) as u64;
        let i = LATENCY_BUCKETS_US
            .iter()
            .position(|&b| us <= b)
            .unwrap_or(LATENCY_BUCKETS_US.len());
        self.latency[i].fetch_add(1, Ordering::Relaxed);
        self.latency_sum_us.fetch_add(us, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> Snapshot {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        Snapshot {
            reads: g(&self.reads),
            read_bytes: g(&self.read_bytes),
            read_errors: g(&self.read_errors),
            read_timeouts: g(&self.read_timeouts),
            fetched_bytes: g(&self.fetched_bytes),
            fetched_chunks: g(&self.fetched_chunks),
            fetch_requests: g(&self.fetch_requests),
            fetch_errors: g(&self.fetch_errors),
            inflight_requests: g(&self.inflight_requests),
            memory_hits: g(&self.memory_hits),
            disk_hits: g(&self.disk_hits),
            misses: g(&self.misses),
            verify_failures: g(&self.verify_failures),
            prefetched_chunks: g(&self.prefetched_chunks),
            readahead_chunks: g(&self.readahead_chunks),
            whole_file_chunks: g(&self.whole_file_chunks),
            gap_chunks: g(&self.gap_chunks),
            passthrough_opens: g(&self.passthrough_opens),
            link_bytes_per_sec: g(&self.link_bytes_per_sec),
            read_latency_us: LATENCY_BUCKETS_US
                .iter()
                .copied()
                .chain([u64::MAX])
                .zip(self.latency.iter().map(g))
                .collect(),
            read_latency_sum_us: g(&self.latency_sum_us),
        }
    }
}

impl Snapshot {
    /// The Prometheus text exposition format.
    pub fn prometheus(&self) -> String {
        let mut s = String::new();
        let mut counter = |name: &str, help: &str, v: u64| {
            s.push_str(&format!(
                "# HELP skiff_{name} {help}\n# TYPE skiff_{name} counter\nskiff_{name} {v}\n"
            ));
        };
        counter("reads_total", "Read requests served.", self.reads);
        counter(
            "read_bytes_total",
            "Bytes returned to readers.",
            self.read_bytes,
        );
        counter(
            "read_errors_total",
            "Reads that failed with EIO.",
            self.read_errors,
        );
        counter(
            "read_timeouts_total",
            "Reads that timed out.",
            self.read_timeouts,
        );
        counter(
            "fetched_bytes_total",
            "Compressed bytes fetched from the registry.",
            self.fetched_bytes,
        );
        counter(
            "fetched_chunks_total",
            "Chunks fetched from the registry.",
            self.fetched_chunks,
        );
        counter(
            "fetch_requests_total",
            "Range requests sent.",
            self.fetch_requests,
        );
        counter(
            "fetch_errors_total",
            "Range requests that failed.",
            self.fetch_errors,
        );
        counter(
            "memory_hits_total",
            "Chunks served from memory.",
            self.memory_hits,
        );
        counter(
            "disk_hits_total",
            "Chunks served from the node cache.",
            self.disk_hits,
        );
        counter(
            "misses_total",
            "Chunks that had to be fetched.",
            self.misses,
        );
        counter(
            "verify_failures_total",
            "Chunks whose digest did not match.",
            self.verify_failures,
        );
        counter(
            "prefetched_chunks_total",
            "Chunks fetched by prefetch.",
            self.prefetched_chunks,
        );
        counter(
            "readahead_chunks_total",
            "Chunks fetched by read-ahead after a miss.",
            self.readahead_chunks,
        );
        counter(
            "whole_file_chunks_total",
            "Chunks fetched because a read missed elsewhere in their file.",
            self.whole_file_chunks,
        );
        counter(
            "gap_chunks_total",
            "Unrequested chunks between wanted ones in a range, cached.",
            self.gap_chunks,
        );
        s.push_str(&format!(
            "# HELP skiff_link_bytes_per_second The registry link's rate, measured on bulk range requests.\n# TYPE skiff_link_bytes_per_second gauge\nskiff_link_bytes_per_second {}\n",
            self.link_bytes_per_sec
        ));
        s.push_str(&format!(
            "# HELP skiff_inflight_requests Range requests in flight.\n# TYPE skiff_inflight_requests gauge\nskiff_inflight_requests {}\n",
            self.inflight_requests
        ));
        s.push_str("# HELP skiff_read_latency_seconds Read latency.\n# TYPE skiff_read_latency_seconds histogram\n");
        let mut cumulative = 0;
        for (bound, n) in &self.read_latency_us {
            cumulative += n;
            let le = if *bound == u64::MAX {
                "+Inf".to_string()
            } else {
                format!("{}", *bound as f64 / 1e6)
            };
            s.push_str(&format!(
                "skiff_read_latency_seconds_bucket{{le=\"{le}\"}} {cumulative}\n"
            ));
        }
        s.push_str(&format!(
            "skiff_read_latency_seconds_sum {}\nskiff_read_latency_seconds_count {cumulative}\n",
            self.read_latency_sum_us as f64 / 1e6
        ));
        s
    }
}
