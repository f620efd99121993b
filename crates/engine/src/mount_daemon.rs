//! Serving one image mount: the process behind `skiff mount` and behind
//! every shared image mount. It opens the image (verifying its metadata),
//! mounts it over FUSE, serves reads through the node's chunk cache,
//! answers on a control socket, and records itself under ROOT/mounts.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use skiff_fs::control::MountInfo;
use skiff_fs::{IdShift, MountOptions, SkiffFs, TraceRecorder};
use skiff_oci::Platform;
use skiff_store::{ChunkCache, FetchConfig, Fetcher};

use crate::error::{EngineError, IoContext, Result};
use crate::mount_records::{self, MountRecord};
use crate::Engine;

/// What to mount, where and how.
#[derive(Debug, Clone)]
pub struct MountRequest {
    pub image: String,
    pub platform: Option<Platform>,
    /// Absolute (see [`mount_records::absolute`]).
    pub mountpoint: PathBuf,
    /// Record first opens and first chunk reads to this file.
    pub record_trace: Option<PathBuf>,
    /// Fetch the whole image in the background.
    pub prefetch_all: bool,
    /// Ignore the image's prefetch list.
    pub no_prefetch: bool,
    /// The node chunk cache's size limit (see [`crate::CacheSize`]).
    pub cache_size: u64,
    /// How long a read may wait for the registry before EIO.
    pub read_timeout: Duration,
    /// Range requests in flight at once.
    pub parallel: usize,
    /// Compressed bytes fetched after a miss, in blob order (0: off).
    pub readahead: u64,
    /// A miss in a file of at most this many compressed bytes fetches the
    /// whole file (0: off, the rate-based part too).
    pub whole_file: u64,
    /// A larger file is fetched whole too when the measured link carries
    /// it in this long (zero: off).
    pub whole_file_time: Duration,
    /// Never open files in kernel passthrough.
    pub no_passthrough: bool,
    /// File owners shifted for a user namespace.
    pub shift_ids: Option<IdShift>,
    /// Keep the image's chunks in the node's cache under this name until
    /// it is unpinned (an image on the node: its mount directory's key).
    pub pin: Option<String>,
    /// Unmount after this long with no reads and no running container
    /// rooted on it.
    pub idle_timeout: Option<Duration>,
    /// Mount over a directory that holds files, hiding them while mounted.
    pub nonempty: bool,
    /// Serve the image as an EROFS block device over NBD, on a unix socket
    /// at `mountpoint`, instead of mounting it.
    pub nbd: bool,
}

/// What a mount daemon serves from.
pub(crate) struct Served {
    pub image: Arc<skiff_store::SkiffImage>,
    pub cache: Arc<ChunkCache>,
    pub fetcher: Arc<Fetcher>,
    /// Chunks to fetch in the background once serving.
    pub prefetch: Vec<u32>,
}

/// The defaults `skiff mount` documents.
pub const DEFAULT_READ_TIMEOUT: Duration = Duration::from_secs(60);
pub const DEFAULT_PARALLEL: usize = 8;
pub const DEFAULT_READAHEAD: u64 = 64 << 10;
/// Binaries and libraries up to this size are fetched whole on their first
/// miss: libc, libpython's and node's libraries are under it; ICU's 30 MB
/// data file and libnode, of which a start reads a small part, are not.
pub const DEFAULT_WHOLE_FILE: u64 = 4 << 20;
/// On a 1 Gbit/s link, measured at 50-65 MB/s on bulk requests to a
/// registry with a cold page cache, this takes in libnode (about 19 MB
/// stored), whose start otherwise waits on some 200 serial misses; at
/// 100 Mbit/s (measured 11-13 MB/s) the limit stays at
/// [`DEFAULT_WHOLE_FILE`].
pub const DEFAULT_WHOLE_FILE_TIME: Duration = Duration::from_millis(500);

impl MountRequest {
    /// A request with the documented defaults, the cache's limit as
    /// `cache_size` resolves.
    pub fn new(image: &str, mountpoint: &Path, cache_size: u64) -> Self {
        MountRequest {
            image: image.to_string(),
            platform: None,
            mountpoint: mountpoint.to_path_buf(),
            record_trace: None,
            prefetch_all: false,
            no_prefetch: false,
            cache_size,
            read_timeout: DEFAULT_READ_TIMEOUT,
            parallel: DEFAULT_PARALLEL,
            readahead: DEFAULT_READAHEAD,
            whole_file: DEFAULT_WHOLE_FILE,
            whole_file_time: DEFAULT_WHOLE_FILE_TIME,
            no_passthrough: false,
            shift_ids: None,
            pin: None,
            idle_timeout: None,
            nonempty: false,
            nbd: false,
        }
    }

    /// The helper command line that serves this request (`mount
    /// --notify-ready ...`), after the program's global options.
    fn helper_args(&self, cmd: &mut Command) {
        cmd.arg("mount").arg("--notify-ready");
        if let Some(p) = &self.platform {
            cmd.arg("--platform").arg(p.to_string());
        }
        if let Some(t) = &self.record_trace {
            cmd.arg("--record-trace").arg(t);
        }
        if self.prefetch_all {
            cmd.arg("--prefetch-all");
        }
        if self.no_prefetch {
            cmd.arg("--no-prefetch");
        }
        if self.no_passthrough {
            cmd.arg("--no-passthrough");
        }
        if let Some(s) = self.shift_ids {
            cmd.arg("--shift-ids").arg(s.to_string());
        }
        if let Some(p) = &self.pin {
            cmd.arg("--pin").arg(p);
        }
        if self.nonempty {
            cmd.arg("--nonempty");
        }
        if self.nbd {
            cmd.arg("--nbd");
        }
        if let Some(t) = self.idle_timeout {
            cmd.arg("--idle-timeout")
                .arg(t.as_secs().max(1).to_string());
        }
        cmd.arg("--cache-size")
            .arg(self.cache_size.to_string())
            .arg("--read-timeout")
            .arg(self.read_timeout.as_secs().to_string())
            .arg("--parallel")
            .arg(self.parallel.to_string())
            .arg("--readahead")
            .arg(self.readahead.to_string());
        // Left to the daemon's default, so SKIFF_WHOLE_FILE and
        // SKIFF_WHOLE_FILE_TIME in the environment of whoever starts the
        // mount (skiff run, the snapshotter) tune it.
        if self.whole_file != DEFAULT_WHOLE_FILE {
            cmd.arg("--whole-file").arg(self.whole_file.to_string());
        }
        if self.whole_file_time != DEFAULT_WHOLE_FILE_TIME {
            cmd.arg("--whole-file-time")
                .arg(self.whole_file_time.as_millis().to_string());
        }
        cmd.arg(&self.image).arg(&self.mountpoint);
    }
}

impl Engine {
    /// Starts a mount daemon for `req` (a helper process); `wait_ready` on
    /// the result waits until it serves.
    pub(crate) fn spawn_mount_daemon(&self, req: &MountRequest) -> Result<crate::helper::Starting> {
        let paths = mount_records::paths(&self.config.root, &req.mountpoint);
        let mut cmd = self.helper_command();
        req.helper_args(&mut cmd);
        crate::helper::spawn(cmd, &paths.log, "the image mount daemon")
    }

    /// Starts a detached mount daemon and waits until it serves; returns
    /// its pid and log.
    pub fn mount_detached(&self, req: &MountRequest) -> Result<(u32, PathBuf)> {
        self.refuse_double_mount(&req.mountpoint)?;
        let log = mount_records::paths(&self.config.root, &req.mountpoint).log;
        let pid = self.spawn_mount_daemon(req)?.wait_ready()?;
        Ok((pid, log))
    }

    fn refuse_double_mount(&self, mountpoint: &Path) -> Result<()> {
        if let Some(rec) = mount_records::read(&self.config.root, mountpoint) {
            if mount_records::alive(rec.pid) {
                return Err(EngineError::Conflict(format!(
                    "{} is already mounted by skiff (pid {}); run `skiff umount {}` first",
                    mountpoint.display(),
                    rec.pid,
                    mountpoint.display()
                )));
            }
        }
        Ok(())
    }

    /// Serves `req` in this process until unmounted or signalled. `ready`
    /// runs once the mount serves (a daemon reports to its starter).
    pub fn serve_mount(&self, req: &MountRequest, ready: impl FnOnce()) -> Result<()> {
        if req.nbd {
            return self.serve_block(req, &req.mountpoint, ready);
        }
        let mountpoint = &req.mountpoint;
        self.refuse_double_mount(mountpoint)?;
        let holds_files = std::fs::read_dir(mountpoint).is_ok_and(|mut d| d.next().is_some());
        if holds_files && !req.nonempty {
            return Err(EngineError::Invalid(format!(
                "{} is not empty: a mount there would hide its files; mount on an empty \
                 directory, or pass --nonempty",
                mountpoint.display()
            )));
        }
        let created = !mountpoint.exists();
        std::fs::create_dir_all(mountpoint).ctx(|| format!("creating {}", mountpoint.display()))?;
        let result = self.serve_mount_on(req, ready);
        // A mount that never served leaves no directory behind it made.
        if result.is_err() && created {
            let _ = std::fs::remove_dir(mountpoint);
        }
        result
    }

    /// Opens the image, the node's chunk cache (pinning the image's chunks
    /// when asked) and a fetcher configured as `req` says.
    pub(crate) fn open_fetcher(&self, req: &MountRequest) -> Result<Served> {
        let root = &self.config.root;
        let image = Arc::new(self.open_image(&req.image, req.platform.as_ref())?);
        let cache = Arc::new(
            ChunkCache::open(root, req.cache_size)
                .ctx(|| format!("opening the chunk cache under {}", root.display()))?,
        );
        let md = &image.metadata;
        if let Some(name) = &req.pin {
            let alg = md.header().digest_algorithm;
            let digests: Vec<_> = (0..md.chunk_count())
                .filter_map(|c| md.chunk(c).ok().map(|i| i.digest))
                .collect();
            if let Err(e) = cache.pin(name, alg, &digests) {
                tracing::warn!("pinning the image's chunks in the cache: {e}");
            }
        }
        let prefetch: Vec<u32> = if req.prefetch_all {
            (0..md.chunk_count()).collect()
        } else if req.no_prefetch {
            Vec::new()
        } else {
            md.prefetch().unwrap_or_default()
        };
        // A prefetch list knows better what comes next than the blob order
        // or the file a miss fell in.
        let guess = prefetch.is_empty();
        let config = FetchConfig {
            parallel: req.parallel.max(1),
            read_timeout: req.read_timeout.max(Duration::from_secs(1)),
            readahead: if guess { req.readahead } else { 0 },
            whole_file: if guess { req.whole_file } else { 0 },
            whole_file_time: req.whole_file_time,
            ..Default::default()
        };
        let fetcher = Arc::new(Fetcher::new(image.clone(), Some(cache.clone()), config));
        Ok(Served {
            image,
            cache,
            fetcher,
            prefetch,
        })
    }

    /// Serves this daemon's control socket (`skiff stats`) and records the
    /// daemon under ROOT/mounts, keyed by `at`: its mount point, or the
    /// socket of a block device.
    pub(crate) fn serve_control(
        &self,
        req: &MountRequest,
        image: &skiff_store::SkiffImage,
        fetcher: &Arc<Fetcher>,
        cache: Arc<ChunkCache>,
        at: &Path,
    ) -> Result<()> {
        let root = &self.config.root;
        let pid = std::process::id();
        let socket = mount_records::socket(root, at, pid);
        if let Some(dir) = socket.parent() {
            crate::root_dir::make_private(dir).ctx(|| format!("creating {}", dir.display()))?;
        }
        let info = MountInfo {
            image: image.name(),
            mountpoint: at.display().to_string(),
            root_digest: image.root_digest.clone(),
            pid,
        };
        skiff_fs::control::serve(&socket, info, fetcher.clone(), Some(cache))
            .ctx(|| format!("serving {}", socket.display()))?;
        mount_records::write(
            root,
            &MountRecord {
                mountpoint: at.to_path_buf(),
                image: req.image.clone(),
                pid,
                socket,
                log: mount_records::paths(root, at).log,
            },
        )
    }

    fn serve_mount_on(&self, req: &MountRequest, ready: impl FnOnce()) -> Result<()> {
        let root = &self.config.root;
        let mountpoint = &req.mountpoint;
        let Served {
            image,
            cache,
            fetcher,
            prefetch,
        } = self.open_fetcher(req)?;
        let trace = match &req.record_trace {
            Some(p) => Some(TraceRecorder::create(p).ctx(|| format!("creating {}", p.display()))?),
            None => None,
        };
        let source = format!("skiff:{}", req.image);
        // Passthrough reads bypass the daemon, so a trace would miss them.
        let passthrough_dir =
            (!req.no_passthrough && req.record_trace.is_none()).then(|| root.join("cache/tmp"));
        let (session, unmounter) = skiff_fs::mount(
            SkiffFs::new(fetcher.clone(), trace, passthrough_dir).with_id_shift(req.shift_ids),
            mountpoint,
            MountOptions::default(),
            &source,
        )
        .ctx(|| {
            format!(
                "mounting at {} (is /dev/fuse available, and are you root?)",
                mountpoint.display()
            )
        })?;

        let pid = std::process::id();
        self.serve_control(req, &image, &fetcher, cache, mountpoint)?;

        if !prefetch.is_empty() {
            tracing::info!(chunks = prefetch.len(), "prefetching in the background");
            fetcher.prefetch(prefetch);
        }

        // Unmount on SIGINT/SIGTERM; the session then ends on its own.
        let mut signals = signal_hook::iterator::Signals::new([
            signal_hook::consts::SIGINT,
            signal_hook::consts::SIGTERM,
        ])
        .ctx(|| "handling signals".into())?;
        let on_signal = unmounter.clone();
        std::thread::spawn(move || {
            if signals.forever().next().is_some() {
                tracing::info!("signal received; unmounting");
                let _ = on_signal.unmount();
            }
        });

        if let Some(idle) = req.idle_timeout {
            self.unmount_when_idle(mountpoint.clone(), fetcher.clone(), idle, unmounter);
        }
        // Serving: a registry restart must not fail the reads of running
        // containers (before this, a wrong address fails the mount at once).
        skiff_oci::registry::wait_out_unreachable_registries();
        ready();
        let result = session.run();
        mount_records::remove_own(root, mountpoint, pid);
        result.ctx(|| "serving the FUSE session".into())
    }
}

impl Engine {
    /// Unmounts a skiff mount and waits for its daemon to stop. Works on a
    /// mount whose daemon died ("Transport endpoint is not connected"):
    /// the stale mount is detached. `lazy` detaches even with files open
    /// (they keep working until closed).
    pub fn unmount(&self, mountpoint: &Path, lazy: bool) -> Result<()> {
        use rustix::mount::{unmount, UnmountFlags};
        let root = &self.config.root;
        let record = mount_records::read(root, mountpoint);
        let flags = if lazy {
            UnmountFlags::DETACH
        } else {
            UnmountFlags::empty()
        };
        let shown = mountpoint.display();
        if let Some(rec) = &record {
            use std::os::unix::fs::FileTypeExt;
            let is_socket =
                std::fs::symlink_metadata(mountpoint).is_ok_and(|m| m.file_type().is_socket());
            if is_socket {
                // A block device (`--nbd`): nothing to detach; the daemon
                // stops on SIGTERM. Signalled only while its socket
                // answers: a daemon killed with -9 may have left a pid
                // that is someone else's now, and a stale socket.
                if skiff_fs::socket::connect(mountpoint).is_ok() {
                    if let Some(pid) = rustix::process::Pid::from_raw(rec.pid as i32) {
                        let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
                    }
                    wait_for_exit(rec.pid);
                }
                let _ = std::fs::remove_file(mountpoint);
                mount_records::remove(root, mountpoint);
                return Ok(());
            }
        }
        match unmount(mountpoint, flags) {
            Ok(()) => {}
            Err(rustix::io::Errno::BUSY) => {
                return Err(EngineError::Conflict(format!(
                    "{shown} is busy: a process still uses files under it; stop it, or use --lazy"
                )))
            }
            // Not mounted (anymore): only stale state to clear.
            Err(rustix::io::Errno::INVAL) if record.is_some() => {}
            Err(rustix::io::Errno::INVAL) => {
                return Err(EngineError::NotFound(format!("{shown} is not mounted")))
            }
            Err(rustix::io::Errno::NOTCONN) | Err(rustix::io::Errno::IO) => {
                unmount(mountpoint, UnmountFlags::DETACH)
                    .map_err(|e| EngineError::io(format!("unmounting {shown}"), e.into()))?;
            }
            Err(e) => return Err(EngineError::io(format!("unmounting {shown}"), e.into())),
        }
        if let Some(rec) = &record {
            // The daemon exits once its session ends.
            wait_for_exit(rec.pid);
        }
        mount_records::remove(root, mountpoint);
        Ok(())
    }
}

/// Waits up to 10 s for a mount daemon to exit.
fn wait_for_exit(pid: u32) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while mount_records::alive(pid) && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    if mount_records::alive(pid) {
        tracing::warn!(pid, "daemon still running after unmount");
    }
}

impl Engine {
    /// Watches a mount this process serves, and unmounts it once it has
    /// been idle for `idle`: no reads, and no running container whose root
    /// it is. Its session then ends, and this daemon with it.
    fn unmount_when_idle(
        &self,
        mountpoint: PathBuf,
        fetcher: Arc<Fetcher>,
        idle: Duration,
        unmounter: skiff_fs::mount::Unmounter,
    ) {
        let root = self.config.root.clone();
        let every = (idle / 4).clamp(Duration::from_millis(200), Duration::from_secs(30));
        std::thread::spawn(move || {
            let mut last_reads = u64::MAX;
            let mut quiet_since = std::time::Instant::now();
            loop {
                std::thread::sleep(every);
                let s = fetcher.metrics().snapshot();
                let reads = s.reads + s.passthrough_opens;
                let in_use = crate::record::all(&root).is_ok_and(|all| {
                    all.iter()
                        .any(|c| c.image_mount == mountpoint && c.running())
                });
                if reads != last_reads || in_use {
                    last_reads = reads;
                    quiet_since = std::time::Instant::now();
                    continue;
                }
                if quiet_since.elapsed() >= idle {
                    tracing::info!(mountpoint = %mountpoint.display(), "idle for {idle:?}; unmounting");
                    let _ = unmounter.unmount();
                    return;
                }
            }
        });
    }
}

/// What a helper started with `--notify-ready` does once it serves: tell
/// its starter on stdout, then let the starter's pipe go.
pub fn notify_ready() -> std::io::Result<()> {
    let mut out = std::io::stdout();
    writeln!(out, "ready")?;
    out.flush()?;
    let devnull = std::fs::File::options().write(true).open("/dev/null")?;
    rustix::stdio::dup2_stdout(&devnull)?;
    Ok(())
}
