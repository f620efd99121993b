//! `skiff snapshotter`: binds containerd's proxy-plugin socket (root
//! only), recovers the snapshots a previous run left, and serves until
//! SIGTERM or SIGINT. The image mount daemons are separate processes:
//! they outlive the snapshotter, so running containers keep reading
//! through a restart or a `kill -9`.

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use skiff_engine::Engine;
use tokio::net::UnixListener;
use tokio_stream::wrappers::UnixListenerStream;

use crate::service::Service;
use crate::snapshots::Snapshots;

pub struct ServeOptions {
    /// The socket containerd's `[proxy_plugins.NAME] address` names.
    pub address: PathBuf,
    pub metrics_address: Option<SocketAddr>,
}

pub fn serve(engine: Engine, opts: ServeOptions) -> anyhow::Result<()> {
    let root = engine.config().root.clone();
    let snapshots = Arc::new(Snapshots::open(engine, &root)?);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(16)
        .enable_all()
        .build()
        .context("starting the snapshotter's runtime")?;
    rt.block_on(run(snapshots, opts))
}

async fn run(snapshots: Arc<Snapshots>, opts: ServeOptions) -> anyhow::Result<()> {
    let listener = bind(&opts.address)?;
    if let Some(addr) = opts.metrics_address {
        let l = tokio::net::TcpListener::bind(addr).await.with_context(|| {
            format!("binding the metrics address {addr}: give a free --metrics-address")
        })?;
        tokio::spawn(crate::metrics::serve(l, snapshots.clone()));
    }
    // Mount daemons are this process's children: reap those that exit.
    tokio::spawn(async {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(10));
        loop {
            tick.tick().await;
            skiff_engine::helper::reap_exited_helpers();
        }
    });
    let recovering = snapshots.clone();
    tokio::task::spawn_blocking(move || recovering.recover());
    tracing::info!(address = %opts.address.display(), "serving containerd's snapshots API");
    let service = containerd_snapshots::server(Arc::new(Service { snapshots }));
    let shutdown = async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("installing a SIGTERM handler");
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        tracing::info!("stopping; image mounts stay for running containers");
    };
    let served = containerd_snapshots::tonic::transport::Server::builder()
        .add_service(service)
        .serve_with_incoming_shutdown(UnixListenerStream::new(listener), shutdown)
        .await;
    let _ = std::fs::remove_file(&opts.address);
    served.context("serving the snapshots API")
}

/// Binds the socket, owner-only. A stale socket file is replaced; one
/// another process still serves is an error.
fn bind(address: &Path) -> anyhow::Result<UnixListener> {
    if let Some(dir) = address.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    if std::os::unix::net::UnixStream::connect(address).is_ok() {
        anyhow::bail!(
            "{} is served by another process (a snapshotter already running?); stop it or give another --address",
            address.display()
        );
    }
    match std::fs::remove_file(address) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(e)
                .with_context(|| format!("removing the stale socket {}", address.display()))
        }
        _ => {}
    }
    // Made owner-only from the start: no window in which others connect.
    let old = rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
    let bound = std::os::unix::net::UnixListener::bind(address);
    rustix::process::umask(old);
    let l = bound.with_context(|| format!("binding {}", address.display()))?;
    std::fs::set_permissions(address, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("making {} owner-only", address.display()))?;
    l.set_nonblocking(true)?;
    Ok(UnixListener::from_std(l)?)
}
