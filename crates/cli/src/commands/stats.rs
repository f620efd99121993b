//! `skiff stats [CONTAINER...]`, and `skiff stats MOUNTPOINT`

use crate::out::{out, outln};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde::Serialize;

use skiff_engine::mount_records as mounts;
use skiff_engine::Record;

use super::human;
use crate::{exit, Global};

/// Show what containers use: CPU, memory and processes, from their
/// cgroups; by default every running container, refreshed each second.
///
/// Given a path (a skiff mount point), show that mount's counters instead:
/// bytes and chunks fetched, cache hits and misses, verification failures,
/// requests in flight, read latency (JSON, or Prometheus text).
#[derive(clap::Args)]
pub struct Args {
    /// Containers (names, IDs or prefixes), or one mount point (a path).
    targets: Vec<String>,
    /// Print one sample and exit.
    #[arg(long)]
    no_stream: bool,
    /// Print JSON: an array per sample, one per line when streaming.
    #[arg(long)]
    json: bool,
    /// For a mount point: print Prometheus text instead of JSON.
    #[arg(long)]
    prometheus: bool,
}

pub fn run(global: &Global, a: Args) -> Result<i32> {
    if let [one] = a.targets.as_slice() {
        if one.contains('/') {
            return mount_stats(global, Path::new(one), a.prometheus);
        }
    }
    if a.prometheus {
        anyhow::bail!("--prometheus is for a mount point: give its path, as in `skiff stats --prometheus /mnt/image`");
    }
    container_stats(global, &a)
}

fn mount_stats(global: &Global, mountpoint: &Path, prometheus: bool) -> Result<i32> {
    let mountpoint = mounts::absolute(mountpoint)?;
    let rec = mounts::read(&global.root, &mountpoint).with_context(|| {
        format!(
            "no skiff mount is recorded at {} under {}",
            mountpoint.display(),
            global.root.display()
        )
    })?;
    let path = if prometheus { "/metrics" } else { "/stats" };
    let body = skiff_fs::control::query(&rec.socket, path).with_context(|| {
        format!(
            "asking the mount daemon (pid {}) at {}",
            rec.pid,
            rec.socket.display()
        )
    })?;
    out!("{body}")?;
    Ok(exit::OK)
}

/// One container's figures in one sample; `null` where it is not running
/// or the host does not keep the figure.
#[derive(Serialize)]
struct Sample {
    id: String,
    name: String,
    running: bool,
    /// CPU time over the sample's interval, in percent of one CPU (as
    /// Docker counts: 200 is two CPUs busy).
    cpu_percent: Option<f64>,
    memory_bytes: Option<u64>,
    /// The container's limit, or the host's memory when it has none.
    memory_limit_bytes: Option<u64>,
    memory_percent: Option<f64>,
    pids: Option<u64>,
}

fn container_stats(global: &Global, a: &Args) -> Result<i32> {
    let engine = &global.engine;
    let records: Vec<Record> = if a.targets.is_empty() {
        engine
            .containers()?
            .into_iter()
            .filter(Record::running)
            .collect()
    } else {
        a.targets
            .iter()
            .map(|t| engine.find(t))
            .collect::<skiff_engine::Result<_>>()?
    };
    let host_memory = host_memory_bytes();
    let interval = if a.no_stream {
        Duration::from_millis(500)
    } else {
        Duration::from_secs(1)
    };
    let read_all = || -> Vec<Option<skiff_sandbox::Stats>> {
        records
            .iter()
            .map(|r| r.running().then(|| engine.stats(r).ok()).flatten())
            .collect()
    };
    let mut before = read_all();
    let mut at = Instant::now();
    loop {
        std::thread::sleep(interval);
        let now = read_all();
        let elapsed = at.elapsed();
        at = Instant::now();
        let samples: Vec<Sample> = records
            .iter()
            .zip(before.iter().zip(&now))
            .map(|(r, (b, n))| sample(r, b.as_ref(), n.as_ref(), elapsed, host_memory))
            .collect();
        show(&samples, a.json, !a.no_stream)?;
        if a.no_stream || samples.iter().all(|s| !s.running) {
            return Ok(exit::OK);
        }
        before = now;
    }
}

fn sample(
    r: &Record,
    before: Option<&skiff_sandbox::Stats>,
    now: Option<&skiff_sandbox::Stats>,
    elapsed: Duration,
    host_memory: Option<u64>,
) -> Sample {
    let cpu_percent = match (
        before.and_then(|b| b.cpu_nanos),
        now.and_then(|n| n.cpu_nanos),
    ) {
        (Some(b), Some(n)) if elapsed.as_nanos() > 0 => {
            Some(n.saturating_sub(b) as f64 * 100.0 / elapsed.as_nanos() as f64)
        }
        _ => None,
    };
    let memory_bytes = now.and_then(|n| n.memory_bytes);
    let memory_limit_bytes = now.and_then(|n| n.memory_limit_bytes.or(host_memory));
    let memory_percent = match (memory_bytes, memory_limit_bytes) {
        (Some(m), Some(l)) if l > 0 => Some(m as f64 * 100.0 / l as f64),
        _ => None,
    };
    Sample {
        id: r.id.clone(),
        name: r.name.clone(),
        running: now.is_some(),
        cpu_percent,
        memory_bytes,
        memory_limit_bytes,
        memory_percent,
        pids: now.and_then(|n| n.pids),
    }
}

fn show(samples: &[Sample], json: bool, streaming: bool) -> Result<()> {
    if json {
        let text = if streaming {
            serde_json::to_string(samples)?
        } else {
            serde_json::to_string_pretty(samples)?
        };
        outln!("{text}")?;
        return Ok(());
    }
    if streaming && std::io::IsTerminal::is_terminal(&std::io::stdout()) {
        // Clear the screen and go home, as `docker stats` redraws.
        out!("\x1b[2J\x1b[H")?;
    }
    outln!(
        "{:<12}  {:<20}  {:>7}  {:>21}  {:>7}  {:>5}",
        "CONTAINER ID",
        "NAME",
        "CPU %",
        "MEM USAGE / LIMIT",
        "MEM %",
        "PIDS"
    )?;
    let dash = || "-".to_string();
    for s in samples {
        let mem = match (s.memory_bytes, s.memory_limit_bytes) {
            (Some(m), Some(l)) => format!("{} / {}", human(m), human(l)),
            (Some(m), None) => human(m),
            _ => dash(),
        };
        outln!(
            "{:<12}  {:<20}  {:>7}  {:>21}  {:>7}  {:>5}",
            &s.id[..12.min(s.id.len())],
            s.name,
            s.cpu_percent.map_or_else(dash, |c| format!("{c:.2}%")),
            mem,
            s.memory_percent.map_or_else(dash, |m| format!("{m:.2}%")),
            s.pids.map_or_else(dash, |p| p.to_string())
        )?;
    }
    Ok(())
}

/// MemTotal from /proc/meminfo, in bytes.
fn host_memory_bytes() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kib: u64 = info
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib * 1024)
}
