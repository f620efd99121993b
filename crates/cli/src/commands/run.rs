//! `skiff run IMAGE [CMD [ARG...]]`: a container from a lazily mounted
//! image. The options become a [`RunRequest`] for the engine, which does
//! the rest; a foreground run supervises the container in this process.

use crate::out::outln;
use std::io::IsTerminal;
use std::path::PathBuf;

use anyhow::{bail, Result};
use skiff_engine::mount_records;
use skiff_engine::request::parse_size;
use skiff_engine::{EngineError, Launch, RunRequest};
use skiff_fs::IdShift;
use skiff_oci::Platform;
use skiff_sandbox::{Network, SandboxError};

use super::parse_platform;
use crate::{exit, Global};

/// Run a command in a new container from a skiff image.
///
/// The image is mounted lazily (only the files the command reads are
/// fetched, and every byte is verified); the container writes to its own
/// overlay layer, never to the image. The sandbox has Docker's defaults:
/// new pid, mount, ipc, uts, cgroup and network namespaces, Docker's
/// capability set and seccomp policy, no_new_privs, masked /proc paths.
///
/// The exit code is the command's (128+N if signal N killed it); 125 means
/// skiff could not run it, 126 that the command is not executable, 127 that
/// it was not found.
#[derive(clap::Args)]
pub struct Args {
    /// Set an environment variable (NAME=VALUE, or NAME to copy it from here).
    #[arg(short = 'e', long = "env", value_name = "NAME[=VALUE]")]
    env: Vec<String>,
    /// Read environment variables from a file of NAME=VALUE lines.
    #[arg(long, value_name = "FILE")]
    env_file: Vec<PathBuf>,
    /// Working directory inside the container.
    #[arg(short = 'w', long, value_name = "DIR")]
    workdir: Option<String>,
    /// Run as USER[:GROUP] (names from the image, or numeric IDs).
    #[arg(
        short = 'u',
        long,
        value_name = "USER[:GROUP]",
        allow_hyphen_values = true
    )]
    user: Option<String>,
    /// Bind-mount a host path: SRC:DST[:ro|rw].
    #[arg(short = 'v', long = "volume", value_name = "SRC:DST[:ro]")]
    volumes: Vec<String>,
    /// Remove the container when it exits.
    #[arg(long)]
    rm: bool,
    /// A name for the container (default: its short ID).
    #[arg(long)]
    name: Option<String>,
    /// Run in the background and print the container ID.
    #[arg(short = 'd', long)]
    detach: bool,
    /// Keep stdin open and connect it to the container.
    #[arg(short = 'i', long)]
    interactive: bool,
    /// Record the image reads of this run to FILE, through a private image
    /// mount that is unmounted when the container exits; then
    /// `skiff convert --prefetch-trace FILE` makes images that prefetch them.
    #[arg(long, value_name = "FILE")]
    record_trace: Option<PathBuf>,
    /// Give the container a pseudo-terminal.
    #[arg(short = 't', long)]
    tty: bool,
    /// The container's hostname (default: its short ID).
    #[arg(long)]
    hostname: Option<String>,
    /// Mount the container's root read-only.
    #[arg(long)]
    read_only: bool,
    /// none: a private network namespace with only loopback; host: the host's.
    #[arg(long, default_value = "none", value_parser = ["none", "host"])]
    network: String,
    /// The sandbox: namespace (Linux namespaces, cgroups and seccomp on the
    /// host's kernel), vm (a QEMU guest with its own kernel, the image as a
    /// lazy, verified block device), or wasm (the command is a WASI module
    /// in the image, compiled once per node). By default, the image's
    /// platform decides: wasi/wasm images run in wasm.
    #[arg(long, value_parser = ["namespace", "vm", "wasm"], value_name = "KIND")]
    sandbox: Option<String>,
    /// Memory limit, e.g. 256M (no swap beyond it).
    #[arg(short = 'm', long, value_parser = parse_size, value_name = "SIZE")]
    memory: Option<u64>,
    /// CPU limit, in CPUs (e.g. 0.5).
    #[arg(long)]
    cpus: Option<f64>,
    /// Maximum number of processes (default 2048; -1 for no limit).
    #[arg(long, value_name = "N", allow_hyphen_values = true)]
    pids_limit: Option<i64>,
    /// A resource limit, NAME=SOFT[:HARD] as Docker's (nofile=4096:8192;
    /// unlimited or -1 for none). The defaults are in docs/run.md, not the
    /// caller's.
    #[arg(long, value_name = "NAME=SOFT[:HARD]")]
    ulimit: Vec<String>,
    /// size=SIZE bounds the container's writable layer (its own filesystem
    /// of that size); by default it is bounded only by --root's disk.
    #[arg(long, value_name = "size=SIZE")]
    storage_opt: Vec<String>,
    /// max-size=SIZE: the container's log (`skiff logs`) rotates at SIZE
    /// and keeps two files (default 32M).
    #[arg(long, value_name = "max-size=SIZE")]
    log_opt: Vec<String>,
    /// Add a capability to Docker's default set (or ALL).
    #[arg(long, value_name = "CAP")]
    cap_add: Vec<String>,
    /// Drop a capability from the set (or ALL).
    #[arg(long, value_name = "CAP")]
    cap_drop: Vec<String>,
    /// seccomp=FILE (a Docker or OCI profile) or seccomp=unconfined.
    #[arg(long, value_name = "OPT")]
    security_opt: Vec<String>,
    /// User namespace: host (none, the default); remap (container IDs
    /// 0-65535 are host IDs 100000-165535, so container root is not host
    /// root); or BASE:SIZE for another host range.
    #[arg(long, default_value = "host", value_parser = parse_userns, value_name = "host|remap|BASE:SIZE")]
    userns: UsernsMode,
    /// Override the image's entrypoint.
    #[arg(long, value_name = "CMD")]
    entrypoint: Option<String>,
    /// For a multi-platform image (default: this host's platform).
    #[arg(long, value_parser = parse_platform, value_name = "OS/ARCH[/VARIANT]")]
    platform: Option<Platform>,
    /// The skiff image (registry reference, oci:DIR[:TAG]).
    image: String,
    /// The command and its arguments (default: the image's).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    command: Vec<String>,
}

/// `--userns`: `None` shares the host's user namespace.
#[derive(Clone, Copy, Debug)]
pub struct UsernsMode(Option<IdShift>);

/// The range `--userns remap` uses, as Docker's userns-remap typically does.
const REMAP_DEFAULT: IdShift = IdShift {
    base: 100_000,
    size: 65_536,
};

fn parse_userns(s: &str) -> Result<UsernsMode, String> {
    match s {
        "host" => Ok(UsernsMode(None)),
        "remap" => Ok(UsernsMode(Some(REMAP_DEFAULT))),
        _ => {
            let shift: IdShift = s
                .parse()
                .map_err(|e| format!("{e}; or use host or remap"))?;
            if shift.base == 0 {
                return Err("BASE 0 would map container root to host root; pick a range above the host's own users, e.g. 100000:65536".into());
            }
            Ok(UsernsMode(Some(shift)))
        }
    }
}

/// Exit codes of `skiff run` itself, as Docker's.
pub const RUN_FAILED: i32 = 125;
pub const NOT_EXECUTABLE: i32 = 126;
pub const NOT_FOUND: i32 = 127;

pub fn run(global: &Global, a: Args) -> Result<i32> {
    match create_and_run(global, a) {
        Ok(code) => Ok(code),
        Err(e) => {
            exit::say(format_args!("skiff: error: {}", exit::render(&e)));
            Ok(exit_code_for(&e).unwrap_or(RUN_FAILED))
        }
    }
}

/// 127 for a command not found, 126 for one that cannot run, as Docker.
pub fn exit_code_for(e: &anyhow::Error) -> Option<i32> {
    let sandbox = e
        .downcast_ref::<EngineError>()
        .and_then(EngineError::as_sandbox);
    match sandbox {
        Some(SandboxError::NotFound(_)) => Some(NOT_FOUND),
        Some(SandboxError::NotExecutable(_)) => Some(NOT_EXECUTABLE),
        _ => None,
    }
}

fn create_and_run(global: &Global, a: Args) -> Result<i32> {
    if a.tty && a.interactive && !std::io::stdin().is_terminal() && !a.detach {
        bail!("-it needs a terminal on stdin; drop -t to pipe input");
    }
    let req = request(&a)?;
    let engine = &global.engine;
    let created = engine.create(&req)?;
    if let Some(c) = &created.conversion {
        say_converted(c);
    }
    if a.detach {
        engine.start_detached(&created.record, a.tty, a.interactive)?;
        outln!("{}", created.record.id)?;
        return Ok(exit::OK);
    }
    let launch = Launch::from_this_process(a.tty, a.interactive)?;
    let code = engine.supervise(
        created.record,
        &created.spec,
        launch,
        skiff_engine::SuperviseOptions {
            // `skiff logs` works for foreground containers too.
            log: true,
            ..Default::default()
        },
    );
    engine.finish_trace(created.trace_mount.as_deref());
    Ok(code?)
}

/// The one line that says an image was not lazy: it was converted here.
pub fn say_converted(c: &skiff_engine::image_store::Conversion) {
    exit::say(format_args!(
        "skiff: {} is not a skiff image: converted it on this node in {:.1} s ({} read, {} stored); later runs use the conversion",
        c.reference,
        c.seconds,
        super::human(c.source_bytes),
        super::human(c.stored_bytes)
    ));
}

/// The options as the engine takes them.
fn request(a: &Args) -> Result<RunRequest> {
    Ok(RunRequest {
        image: a.image.clone(),
        platform: a.platform.clone(),
        command: a.command.clone(),
        entrypoint: a.entrypoint.clone(),
        env: a.env.clone(),
        env_files: a.env_file.clone(),
        workdir: a.workdir.clone(),
        user: a.user.clone(),
        volumes: a.volumes.clone(),
        remove_on_exit: a.rm,
        name: a.name.clone(),
        detach: a.detach,
        interactive: a.interactive,
        tty: a.tty,
        record_trace: a
            .record_trace
            .as_deref()
            .map(mount_records::absolute)
            .transpose()?,
        hostname: a.hostname.clone(),
        read_only: a.read_only,
        network: if a.network == "host" {
            Network::Host
        } else {
            Network::None
        },
        memory: a.memory,
        cpus: a.cpus,
        pids_limit: a.pids_limit,
        ulimits: a.ulimit.clone(),
        storage_opts: a.storage_opt.clone(),
        log_opts: a.log_opt.clone(),
        cap_add: a.cap_add.clone(),
        cap_drop: a.cap_drop.clone(),
        security_opts: a.security_opt.clone(),
        userns: a.userns.0,
        sandbox: a.sandbox.clone(),
    })
}
