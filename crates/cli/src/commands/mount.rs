//! `skiff mount IMAGE MOUNTPOINT`

use std::io::Write;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use skiff_fs::control::MountInfo;
use skiff_fs::{MountOptions, SkiffFs, TraceRecorder};
use skiff_store::{ChunkCache, FetchConfig, Fetcher};

use super::ImageArgs;
use crate::mounts::{self, MountRecord};
use crate::{exit, Global};

/// Mount a skiff image read-only, fetching file data only when it is read.
///
/// Only the metadata is fetched (and checked against the image's root
/// digest) before the mount is ready. Each read fetches just the chunks it
/// needs, with range requests, verifies them, and keeps them in the node's
/// chunk cache under --root, shared by all mounts. Runs in the foreground
/// until unmounted or interrupted, unless --daemon.
#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    image: ImageArgs,
    /// Where to mount it (created if missing).
    mountpoint: PathBuf,
    /// Detach once the mount is ready; logs go to ROOT/logs.
    #[arg(long)]
    daemon: bool,
    /// Record the order files are first opened and their chunks first read
    /// to FILE, for `skiff convert --prefetch-trace`.
    #[arg(long, value_name = "FILE")]
    record_trace: Option<PathBuf>,
    /// Fetch the whole image in the background.
    #[arg(long)]
    prefetch_all: bool,
    /// Do not prefetch the chunks the image's prefetch list names.
    #[arg(long)]
    no_prefetch: bool,
    /// Node chunk cache size limit, e.g. 10G (env SKIFF_CACHE_SIZE).
    #[arg(long, env = "SKIFF_CACHE_SIZE", default_value = "10G", value_parser = parse_size)]
    cache_size: u64,
    /// Seconds a read may wait for the registry before failing with EIO.
    #[arg(long, default_value_t = 60)]
    read_timeout: u64,
    /// Range requests in flight at once.
    #[arg(long, default_value_t = 8)]
    parallel: usize,
    /// After a read misses, fetch this much more of the same blob in the
    /// background (compressed bytes; 0 turns it off). Off while the image's
    /// prefetch list is used.
    #[arg(long, default_value = "64K", value_parser = parse_size, value_name = "BYTES", env = "SKIFF_READAHEAD")]
    readahead: u64,
    /// Never open files in kernel passthrough (by default, files whose data
    /// is all local are read by the kernel from a verified local copy).
    #[arg(long)]
    no_passthrough: bool,
    /// Show file owners shifted for a user namespace: ID N below SIZE
    /// appears as BASE+N, any other as 65534 (`skiff run --userns` uses it).
    #[arg(long, value_name = "BASE:SIZE")]
    shift_ids: Option<skiff_fs::IdShift>,
    /// Internal: report readiness on stdout (used by --daemon).
    #[arg(long, hide = true)]
    notify_ready: bool,
}

pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let (num, mult) = match t.chars().last().map(|c| c.to_ascii_uppercase()) {
        Some('K') => (&t[..t.len() - 1], 1u64 << 10),
        Some('M') => (&t[..t.len() - 1], 1 << 20),
        Some('G') => (&t[..t.len() - 1], 1 << 30),
        Some('T') => (&t[..t.len() - 1], 1 << 40),
        _ => (t, 1),
    };
    num.trim()
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(mult))
        .ok_or_else(|| format!("{s:?} is not a size like 512M or 10G"))
}

/// Starts this same command detached, and waits until it has mounted.
fn daemonize(global: &Global, mountpoint: &std::path::Path) -> Result<i32> {
    let paths = mounts::paths(&global.root, mountpoint);
    let args: Vec<std::ffi::OsString> = std::env::args_os()
        .skip(1)
        .filter(|a| a != "--daemon")
        .collect();
    let mut cmd = Command::new(std::env::current_exe()?);
    cmd.args(args)
        .arg("--notify-ready")
        .env("SKIFF_ROOT", &global.root);
    let pid = crate::detach::start(cmd, &paths.log, "the mount daemon")?;
    println!(
        "mounted at {} (daemon pid {pid}, log {})",
        mountpoint.display(),
        paths.log.display()
    );
    Ok(exit::OK)
}

pub fn run(global: &Global, a: Args) -> Result<i32> {
    let mountpoint = mounts::absolute(&a.mountpoint)?;
    if a.daemon {
        return daemonize(global, &mountpoint);
    }
    if let Some(rec) = mounts::read(&global.root, &mountpoint) {
        if mounts::alive(rec.pid) {
            bail!(
                "{} is already mounted by skiff (pid {}); run `skiff umount {}` first",
                mountpoint.display(),
                rec.pid,
                mountpoint.display()
            );
        }
    }
    std::fs::create_dir_all(&mountpoint)
        .with_context(|| format!("creating {}", mountpoint.display()))?;
    let image = Arc::new(a.image.open(global)?);
    let cache = Arc::new(
        ChunkCache::open(&global.root, a.cache_size)
            .with_context(|| format!("opening the chunk cache under {}", global.root.display()))?,
    );
    let md = &image.metadata;
    let prefetch: Vec<u32> = if a.prefetch_all {
        (0..md.chunk_count()).collect()
    } else if a.no_prefetch {
        Vec::new()
    } else {
        md.prefetch().unwrap_or_default()
    };
    let config = FetchConfig {
        parallel: a.parallel.max(1),
        read_timeout: Duration::from_secs(a.read_timeout.max(1)),
        // A prefetch list knows better what comes next than the blob order.
        readahead: if prefetch.is_empty() { a.readahead } else { 0 },
        ..Default::default()
    };
    let fetcher = Arc::new(Fetcher::new(image.clone(), Some(cache.clone()), config));
    let trace = match &a.record_trace {
        Some(p) => {
            Some(TraceRecorder::create(p).with_context(|| format!("creating {}", p.display()))?)
        }
        None => None,
    };
    let source = format!("skiff:{}", a.image.image);
    // Passthrough reads bypass the daemon, so a trace would miss them.
    let passthrough_dir =
        (!a.no_passthrough && a.record_trace.is_none()).then(|| global.root.join("cache/tmp"));
    let session = skiff_fs::mount(
        SkiffFs::new(fetcher.clone(), trace, passthrough_dir).with_id_shift(a.shift_ids),
        &mountpoint,
        MountOptions::default(),
        &source,
    )
    .with_context(|| {
        format!(
            "mounting at {} (is /dev/fuse available, and are you root?)",
            mountpoint.display()
        )
    })?;

    let paths = mounts::paths(&global.root, &mountpoint);
    std::fs::create_dir_all(paths.socket.parent().expect("has a parent"))?;
    let info = MountInfo {
        image: image.name(),
        mountpoint: mountpoint.display().to_string(),
        root_digest: image.root_digest.clone(),
        pid: std::process::id(),
    };
    skiff_fs::control::serve(&paths.socket, info, fetcher.clone(), Some(cache))
        .with_context(|| format!("serving {}", paths.socket.display()))?;
    mounts::write(
        &global.root,
        &MountRecord {
            mountpoint: mountpoint.clone(),
            image: a.image.image.clone(),
            pid: std::process::id(),
            socket: paths.socket.clone(),
            log: paths.log.clone(),
        },
    )?;

    if !prefetch.is_empty() {
        tracing::info!(chunks = prefetch.len(), "prefetching in the background");
        fetcher.prefetch(prefetch);
    }

    // Unmount on SIGINT/SIGTERM; the session then ends on its own.
    let mut signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGTERM,
    ])?;
    let mp = mountpoint.clone();
    std::thread::spawn(move || {
        if signals.forever().next().is_some() {
            tracing::info!("signal received; unmounting");
            let _ = rustix::mount::unmount(&mp, rustix::mount::UnmountFlags::DETACH);
        }
    });

    if a.notify_ready {
        let mut out = std::io::stdout();
        writeln!(out, "ready")?;
        out.flush()?;
        // Let the starter go: nothing more is written to its pipe.
        let devnull = std::fs::File::options().write(true).open("/dev/null")?;
        rustix::stdio::dup2_stdout(&devnull)?;
    } else {
        crate::exit::say(format_args!(
            "mounted {} at {}; Ctrl-C or `skiff umount` to stop",
            a.image.image,
            mountpoint.display()
        ));
    }
    let result = session.run();
    mounts::remove(&global.root, &mountpoint);
    result.context("serving the FUSE session")?;
    Ok(exit::OK)
}
