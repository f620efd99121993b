//! `skiff mount IMAGE MOUNTPOINT`

use crate::out::outln;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;
use skiff_engine::{mount_records, MountRequest};

use super::ImageArgs;
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
    /// Where to mount it (created if missing); with --nbd, the socket.
    mountpoint: PathBuf,
    /// Serve the image as a read-only EROFS block device over NBD on a unix
    /// socket at MOUNTPOINT (root's alone), for a VM's guest: every block
    /// read is fetched and verified like a read of the mount. QEMU attaches
    /// it with `-drive file=nbd+unix:///?socket=MOUNTPOINT,format=raw,readonly=on`.
    #[arg(long)]
    nbd: bool,
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
    /// After a read misses in a file whose stored (compressed) size is at
    /// most BYTES, fetch the rest of that file in the background, in
    /// parallel requests (0 turns it off). Off while the image's prefetch
    /// list is used.
    #[arg(long, default_value = "4M", value_parser = parse_size, value_name = "BYTES", env = "SKIFF_WHOLE_FILE")]
    whole_file: u64,
    /// Also fetch a larger file whole when the registry link, as measured
    /// on this mount's large range requests, carries the whole file in MS
    /// milliseconds (0 turns this part off): on a fast link a big library's
    /// serial misses cost more than its bytes.
    #[arg(
        long,
        default_value_t = 500,
        value_name = "MS",
        env = "SKIFF_WHOLE_FILE_TIME"
    )]
    whole_file_time: u64,
    /// Never open files in kernel passthrough (by default, files whose data
    /// is all local are read by the kernel from a verified local copy).
    #[arg(long)]
    no_passthrough: bool,
    /// Show file owners shifted for a user namespace: ID N below SIZE
    /// appears as BASE+N, any other as 65534 (`skiff run --userns` uses it).
    #[arg(long, value_name = "BASE:SIZE")]
    shift_ids: Option<skiff_fs::IdShift>,
    /// Unmount after SECS with no reads and no running container rooted on
    /// this mount; with --nbd, stop after SECS with no client connected
    /// (skiff run's image mounts and block devices use
    /// --image-idle-timeout).
    #[arg(long, value_name = "SECS")]
    idle_timeout: Option<u64>,
    /// Mount even over a directory that holds files (hidden while mounted).
    #[arg(long)]
    nonempty: bool,
    /// Internal: keep the image's chunks in the node's cache under NAME
    /// (an image mount of skiff run's).
    #[arg(long, hide = true, value_name = "NAME")]
    pin: Option<String>,
    /// Internal: report readiness on stdout (used by --daemon).
    #[arg(long, hide = true)]
    notify_ready: bool,
}

pub use skiff_engine::request::parse_size;

pub fn run(global: &Global, a: Args) -> Result<i32> {
    let mountpoint = mount_records::absolute(&a.mountpoint)?;
    let req = MountRequest {
        image: a.image.image.clone(),
        platform: a.image.platform.clone(),
        mountpoint: mountpoint.clone(),
        record_trace: a.record_trace.clone(),
        prefetch_all: a.prefetch_all,
        no_prefetch: a.no_prefetch,
        // The global --cache-size (SIZE or a share of the filesystem).
        cache_size: global.engine.config().cache_size.bytes(&global.root),
        read_timeout: Duration::from_secs(a.read_timeout),
        parallel: a.parallel,
        readahead: a.readahead,
        whole_file: a.whole_file,
        whole_file_time: Duration::from_millis(a.whole_file_time),
        no_passthrough: a.no_passthrough,
        shift_ids: a.shift_ids,
        pin: a.pin.clone(),
        idle_timeout: a.idle_timeout.map(Duration::from_secs),
        nonempty: a.nonempty,
        nbd: a.nbd,
    };
    let engine = &global.engine;
    if a.daemon {
        let (pid, log) = engine.mount_detached(&req)?;
        let what = if a.nbd { "serving over NBD" } else { "mounted" };
        outln!(
            "{what} at {} (daemon pid {pid}, log {})",
            mountpoint.display(),
            log.display()
        )?;
        return Ok(exit::OK);
    }
    let mut notify_failed = None;
    engine.serve_mount(&req, || {
        if a.notify_ready {
            if let Err(e) = skiff_engine::mount_daemon::notify_ready() {
                notify_failed = Some(e);
            }
        } else {
            let what = if a.nbd {
                "serving an EROFS block device of"
            } else {
                "mounted"
            };
            exit::say(format_args!(
                "{what} {} at {}; Ctrl-C or `skiff umount` to stop",
                a.image.image,
                mountpoint.display()
            ));
        }
    })?;
    if let Some(e) = notify_failed {
        tracing::warn!("reporting readiness: {e}");
    }
    Ok(exit::OK)
}
