//! Serving one image as a block device: the EROFS view of its tree over
//! NBD on a unix socket, for a VM's guest (issue 18). It shares the mount
//! daemon's fetcher, cache, verification and control socket; only the
//! front differs. `skiff mount --nbd SOCKET IMAGE` runs it.

use std::path::Path;
use std::sync::Arc;

use skiff_fs::nbd::BlockDevice;

use crate::error::{EngineError, IoContext, Result};
use crate::mount_daemon::{MountRequest, Served};
use crate::mount_records;
use crate::Engine;

impl Engine {
    /// Serves `req.image` over NBD at `socket` until SIGINT or SIGTERM.
    /// The socket is root's alone (0600, in a directory of root's).
    /// `ready` runs once clients can connect.
    pub fn serve_block(
        &self,
        req: &MountRequest,
        socket: &Path,
        ready: impl FnOnce(),
    ) -> Result<()> {
        bound_heap();
        let root = &self.config.root;
        let Served {
            image,
            cache,
            fetcher,
            prefetch,
        } = self.open_fetcher(req)?;
        let erofs = skiff_fs::erofs::build(&image.metadata).map_err(|e| {
            EngineError::Invalid(format!("laying out {} as an EROFS image: {e}", req.image))
        })?;
        if skiff_fs::socket::connect(socket).is_ok() {
            return Err(EngineError::Invalid(format!(
                "{} is served already: stop that daemon first (skiff umount {0})",
                socket.display()
            )));
        }
        let _ = std::fs::remove_file(socket);
        let listener =
            skiff_fs::socket::bind(socket).ctx(|| format!("binding {}", socket.display()))?;
        set_mode(socket, 0o600).ctx(|| format!("restricting {}", socket.display()))?;

        let pid = std::process::id();
        self.serve_control(req, &image, &fetcher, cache, socket)?;
        if !prefetch.is_empty() {
            fetcher.prefetch(prefetch);
        }
        let mut signals = signal_hook::iterator::Signals::new([
            signal_hook::consts::SIGINT,
            signal_hook::consts::SIGTERM,
        ])
        .ctx(|| "handling signals".into())?;
        let (root_c, socket_c) = (root.to_path_buf(), socket.to_path_buf());
        std::thread::spawn(move || {
            if signals.forever().next().is_some() {
                tracing::info!("signal received; stopping the block device");
                let _ = std::fs::remove_file(&socket_c);
                mount_records::remove_own(&root_c, &socket_c, pid);
                std::process::exit(0);
            }
        });
        tracing::info!(
            socket = %socket.display(),
            bytes = erofs.size(),
            metadata = erofs.meta.len(),
            "serving the image as an EROFS block device over NBD"
        );
        skiff_oci::registry::wait_out_unreachable_registries();
        ready();
        let device = Arc::new(BlockDevice {
            image: Arc::new(erofs),
            fetcher,
            clients: Default::default(),
        });
        if let Some(idle) = req.idle_timeout {
            self.stop_when_idle(socket, device.clone(), idle);
        }
        let result = skiff_fs::nbd::serve(listener, device);
        let _ = std::fs::remove_file(socket);
        mount_records::remove_own(root, socket, pid);
        result.ctx(|| format!("serving {}", socket.display()))
    }
}

impl Engine {
    /// Stops this daemon once no VM has had the device open for `idle`.
    /// The image directory's lock orders this against a VM's start
    /// ([`Engine::ensure_block_device`]), whose probe of the socket counts
    /// as a client: it sees either this daemon serving for a while yet, or
    /// none (and starts one).
    fn stop_when_idle(&self, socket: &Path, device: Arc<BlockDevice>, idle: std::time::Duration) {
        let (root, socket) = (self.config.root.clone(), socket.to_path_buf());
        let every = (idle / 4).clamp(
            std::time::Duration::from_millis(200),
            std::time::Duration::from_secs(30),
        );
        std::thread::spawn(move || loop {
            std::thread::sleep(every);
            if device.clients.idle_for().is_none_or(|t| t < idle) {
                continue;
            }
            let dir = socket.parent().unwrap_or(&socket);
            let Ok(_lock) = crate::image_mounts::lock_image_dir(dir) else {
                continue;
            };
            if device.clients.idle_for().is_none_or(|t| t < idle) {
                continue;
            }
            tracing::info!(socket = %socket.display(), "no VM for {idle:?}; stopping the block device");
            let _ = std::fs::remove_file(&socket);
            mount_records::remove_own(&root, &socket, std::process::id());
            // The lock goes with the process.
            std::process::exit(0);
        });
    }
}

/// Keeps a long-lived daemon's heap near what it holds. Its reads run on
/// many threads with buffers of up to a few MiB: glibc gives each thread
/// an arena of its own and raises its mmap threshold as such buffers are
/// freed, so they stay resident in arenas afterwards (a daemon that had
/// served several python starts in guests held 47 MiB of RSS; bounded,
/// 22–24 MiB after one). With two arenas and a fixed threshold, large
/// buffers go back to the kernel when freed.
pub fn bound_heap() {
    // SAFETY: mallopt only sets allocator parameters; called before the
    // daemon's threads start.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
        libc::mallopt(libc::M_MMAP_THRESHOLD, 256 << 10);
    }
}

fn set_mode(path: &Path, mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
}

/// How often a VM's supervisor looks at its image's block daemon.
const KEEPER_PERIOD: std::time::Duration = std::time::Duration::from_millis(300);

impl Engine {
    /// Runs `body` while keeping the block device at `socket` served: a
    /// daemon that died without removing its record (killed with -9, or
    /// crashed) is started again at the same socket, and the guest's NBD
    /// client, waiting in its reconnect delay, carries on reading. A
    /// daemon stopped on purpose (`skiff umount`, `rmi`) removes its
    /// record first and is left stopped. Several supervisors of one image
    /// race to restart it; the image directory's lock lets one win.
    pub(crate) fn keeping_block_device<T>(
        &self,
        socket: Option<&Path>,
        tree: &Path,
        body: impl FnOnce() -> T,
    ) -> T {
        let Some(socket) = socket else {
            return body();
        };
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        std::thread::scope(|scope| {
            scope.spawn(move || {
                while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
                    stopped.recv_timeout(KEEPER_PERIOD)
                {
                    let root = &self.config.root;
                    let Some(rec) = mount_records::read(root, socket) else {
                        continue;
                    };
                    if mount_records::alive(rec.pid) {
                        continue;
                    }
                    tracing::warn!(
                        socket = %socket.display(),
                        pid = rec.pid,
                        "the image's block daemon died; starting it again"
                    );
                    if let Err(e) = self.restart_block_device(tree) {
                        tracing::error!("restarting the block device: {e}");
                    }
                }
            });
            let result = body();
            drop(stop);
            result
        })
    }

    fn restart_block_device(&self, tree: &Path) -> Result<()> {
        let dir = tree.parent().unwrap_or(tree);
        let image = crate::image_store::read_record(dir).ok_or_else(|| {
            EngineError::Invalid(format!("{} has no image record", dir.display()))
        })?;
        let platform = skiff_oci::Platform::parse(&image.platform);
        self.ensure_block_device(tree, &image.reference, platform.as_ref())
            .map(|_| ())
    }
}
