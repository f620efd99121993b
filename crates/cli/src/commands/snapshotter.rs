//! `skiff snapshotter`: containerd's proxy snapshotter, and
//! `skiff snapshotter pull`, its lazy pull for `ctr`.

use std::path::PathBuf;

use anyhow::Result;

use super::print_json;
use crate::out::outln;
use crate::{exit, Global};

/// Serve skiff images to containerd: a proxy snapshotter (containerd's
/// `[proxy_plugins.NAME] type = "snapshot"`). skiff images are mounted
/// lazily and verified, and their data layers are never downloaded;
/// ordinary OCI layers are unpacked by containerd, as with its overlayfs
/// snapshotter. Its state lives under --root (see docs/containerd.md for
/// the root that keeps the kubelet's image GC working); image mounts
/// outlive it, so running containers keep reading through a restart.
#[derive(clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct Args {
    #[command(subcommand)]
    command: Option<Sub>,
    /// The unix socket to serve on, as containerd's config names it.
    #[arg(
        long,
        value_name = "SOCKET",
        default_value = "/run/skiff/snapshotter.sock"
    )]
    address: PathBuf,
    /// Serve Prometheus metrics for the snapshotter and every image mount
    /// at http://ADDR/metrics (for example 127.0.0.1:9101).
    #[arg(long, value_name = "ADDR")]
    metrics_address: Option<std::net::SocketAddr>,
}

#[derive(clap::Subcommand)]
enum Sub {
    Pull(PullArgs),
}

/// Pull a skiff image into containerd lazily, for `ctr run --snapshotter
/// skiff`: containerd gets its manifest, config and image record, and
/// skiff serves every layer, so no data blob is downloaded. (`ctr image
/// pull` downloads every blob before it unpacks; the CRI plugin and
/// nerdctl need no helper.)
#[derive(clap::Args)]
struct PullArgs {
    /// The image, as a registry reference.
    image: String,
    /// containerd's socket.
    #[arg(
        long,
        value_name = "SOCKET",
        default_value = "/run/containerd/containerd.sock"
    )]
    containerd_address: PathBuf,
    /// The containerd namespace (as `ctr -n`).
    #[arg(short, long, env = "CONTAINERD_NAMESPACE", default_value = "default")]
    namespace: String,
    /// The snapshotter's name in containerd's config.
    #[arg(long, default_value = "skiff")]
    snapshotter: String,
    /// Print what was pulled as JSON.
    #[arg(long)]
    json: bool,
}

pub fn run(global: &Global, a: Args) -> Result<i32> {
    // Image mounts stay while a snapshot needs them, whatever the
    // command line's idle timeout for `skiff run`.
    let mut config = global.engine.config().clone();
    config.image_idle_timeout = None;
    let engine = skiff_engine::Engine::new(config)?;
    match a.command {
        Some(Sub::Pull(p)) => pull(&engine, p),
        None => {
            skiff_snapshotter::serve(
                engine,
                skiff_snapshotter::ServeOptions {
                    address: a.address,
                    metrics_address: a.metrics_address,
                },
            )?;
            Ok(exit::OK)
        }
    }
}

fn pull(engine: &skiff_engine::Engine, p: PullArgs) -> Result<i32> {
    let pulled = skiff_snapshotter::pull::pull(
        engine,
        &p.image,
        &skiff_snapshotter::pull::PullOptions {
            containerd: p.containerd_address,
            namespace: p.namespace,
            snapshotter: p.snapshotter,
        },
    )?;
    if p.json {
        print_json(&pulled)?;
    } else {
        outln!(
            "{}: {} ({} layers: {} served lazily, {} already here)",
            pulled.reference,
            pulled.manifest,
            pulled.layers,
            pulled.lazy_layers,
            pulled.present_layers
        )?;
    }
    Ok(exit::OK)
}
