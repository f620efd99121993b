//! `skiff run IMAGE [CMD [ARG...]]`: a container from a lazily mounted image.
//!
//! The image's tree is served by one shared `skiff mount` daemon per image
//! (see [`crate::image_mounts`]); each container gets an overlayfs with a
//! private upper layer on top, and runs in a sandbox built by
//! `skiff-sandbox`. This process, or a detached supervisor for `-d`, is the
//! container init's parent: it waits for it, records its exit and cleans up.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use skiff_fs::IdShift;
use skiff_oci::{Platform, RuntimeConfig};
use skiff_sandbox::rootfs::{self, OverlayDirs};
use skiff_sandbox::{ContainerSpec, IdMap, Network, Resources};

use super::mount::parse_size;
use super::parse_platform;
use crate::containers::{self, Record, Status};
use crate::{exit, image_mounts, tty, Global};

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

/// Docker's floor for --memory.
const MIN_MEMORY: u64 = 6 << 20;

const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

pub fn run(global: &Global, a: Args) -> Result<i32> {
    match prepare_and_run(global, a) {
        Ok(code) => Ok(code),
        Err(e) => {
            exit::say(format_args!("skiff: error: {}", exit::render(&e)));
            Ok(match e.downcast_ref::<skiff_sandbox::SandboxError>() {
                Some(skiff_sandbox::SandboxError::NotFound(_)) => NOT_FOUND,
                Some(skiff_sandbox::SandboxError::NotExecutable(_)) => NOT_EXECUTABLE,
                _ => RUN_FAILED,
            })
        }
    }
}

fn prepare_and_run(global: &Global, a: Args) -> Result<i32> {
    if a.tty && a.interactive && !std::io::stdin().is_terminal() && !a.detach {
        bail!("-it needs a terminal on stdin; drop -t to pipe input");
    }
    if a.detach && a.interactive {
        bail!("-d and -i cannot be combined: a detached container has no stdin");
    }
    if a.detach && a.record_trace.is_some() {
        bail!("--record-trace needs a foreground run (drop -d): the trace ends when the container does");
    }
    let trace = match &a.record_trace {
        Some(p) => Some(crate::mounts::absolute(p)?),
        None => None,
    };
    let id = containers::new_id()?;
    let name = match &a.name {
        Some(n) => {
            if !containers::valid_name(n) {
                bail!("--name {n:?}: use letters, digits, '_', '.' and '-', starting with a letter or digit");
            }
            if containers::all(&global.root)?.iter().any(|r| &r.name == n) {
                bail!("a container named {n:?} exists; remove it with `skiff rm {n}` or pick another name");
            }
            n.clone()
        }
        None => id[..12].to_string(),
    };

    let shift = a.userns.0;
    // Checked before anything is mounted; a bad profile fails here.
    let seccomp = seccomp_policy(&a)?;
    let precompile = precompile_seccomp(global, seccomp.clone());
    let ensured = image_mounts::ensure(
        global,
        &a.image,
        a.platform.as_ref(),
        shift,
        trace.as_deref(),
    );
    // Joined before the sandbox is created: its clone needs this
    // process single-threaded.
    if let Some(t) = precompile {
        let _ = t.join();
    }
    let (image_mount, config) = ensured?;

    tracing::debug!("image mounted");
    let cdir = containers::dir(&global.root, &id);
    let layer_size = layer_limit(&a)?;
    let scratch = containers::prepare_run_dir(&global.root)?.join(&id);
    let dirs = OverlayDirs::new(&cdir, &scratch, layer_size);
    // The image's own tree serves to resolve the user: the container has
    // written nothing yet.
    let spec = build_spec(
        &a,
        &config,
        &id,
        &format!("/skiff/{id}"),
        &dirs.merged,
        &image_mount,
        seccomp.clone(),
    )?;
    let record = Record {
        id: id.clone(),
        name,
        image: a.image.clone(),
        command: spec.args.clone(),
        created: containers::now(),
        status: Status::Created,
        pid: None,
        pid_start: None,
        exit_code: None,
        oom_killed: false,
        finished: None,
        detached: a.detach,
        remove_on_exit: a.rm,
        cgroups_path: spec.cgroups_path.clone(),
        stop_signal: parse_signal(&config.stop_signal).unwrap_or(libc::SIGTERM),
        private_network: a.network != "host",
        image_mount: image_mount.clone(),
        layer_size,
    };
    record.save(&global.root)?;
    tracing::debug!("record written");
    let result = (|| -> Result<Record> {
        crate::root_dir::make_private(&scratch)
            .with_context(|| format!("creating {}", scratch.display()))?;
        rootfs::mount_overlay(&image_mount, &dirs, shift.map(|s| s.base))?;
        tracing::debug!("overlay mounted");
        let json = skiff_sandbox::spec::to_json(&spec.to_oci()?)?;
        std::fs::write(cdir.join("config.json"), json)
            .with_context(|| format!("writing {}", cdir.join("config.json").display()))?;
        Ok(record.clone())
    })();
    let record = match result {
        Ok(r) => r,
        Err(e) => {
            cleanup(global, &record, true);
            return Err(e);
        }
    };

    if a.detach {
        return start_detached(global, &record, a.tty);
    }
    let stdio = if a.tty {
        Launch::Terminal {
            interactive: a.interactive,
            output: rustix::io::dup(rustix::stdio::stdout())?.into(),
        }
    } else {
        Launch::Streams {
            stdin: a
                .interactive
                .then(|| rustix::io::dup(rustix::stdio::stdin()))
                .transpose()?,
            stdout: rustix::io::dup(rustix::stdio::stdout())?,
            stderr: rustix::io::dup(rustix::stdio::stderr())?,
        }
    };
    let code = supervise(global, record, stdio, None);
    if trace.is_some() {
        image_mounts::release(global, &image_mount);
    }
    code
}

/// How the supervisor wires the container's streams.
pub enum Launch {
    /// Copied through pipes to and from these (stdin: `None` reads
    /// /dev/null); the container never gets them.
    Streams {
        stdin: Option<OwnedFd>,
        stdout: OwnedFd,
        stderr: OwnedFd,
    },
    /// A pty, relayed to `output` (and from our stdin if interactive).
    Terminal {
        interactive: bool,
        output: std::fs::File,
    },
}

/// Creates and starts the container, waits for it and cleans up. `ready`
/// (a detached supervisor's pipe to its starter) gets "ready" once it runs.
pub fn supervise(
    global: &Global,
    mut record: Record,
    launch: Launch,
    ready: Option<std::fs::File>,
) -> Result<i32> {
    let cdir = containers::dir(&global.root, &record.id);
    let (stdio, terminal) = match launch {
        Launch::Streams {
            stdin,
            stdout,
            stderr,
        } => (
            skiff_sandbox::Stdio::Relay {
                stdin,
                stdout,
                stderr,
            },
            None,
        ),
        Launch::Terminal {
            interactive,
            output,
        } => (skiff_sandbox::Stdio::Terminal, Some((interactive, output))),
    };
    // Still single-threaded here, as the sandbox's clone needs.
    tracing::debug!("creating the container");
    let created = skiff_sandbox::Sandbox::create(
        &cdir.join("config.json"),
        &containers::seccomp_cache(&global.root),
        stdio,
    );
    let mut sandbox = match created {
        Ok(s) => s,
        Err(e) => {
            cleanup(global, &record, true);
            return Err(e.into());
        }
    };
    let pid = sandbox.pid();
    record.pid = Some(pid);
    record.pid_start = containers::process_start_time(pid);
    // Signals are forwarded from before the start: a Ctrl-C that came
    // between start and forwarding would kill skiff and orphan the
    // container. (The init ignores them until its command installs
    // handlers: a pid namespace's init gets no default actions.)
    let started = (|| -> Result<tty::Forwarder> {
        let forwarder = tty::forward_signals(pid, terminal.is_some())?;
        if record.private_network {
            skiff_sandbox::container::loopback_up(pid)?;
        }
        sandbox.start()?;
        Ok(forwarder)
    })();
    let forwarder = match started {
        Ok(f) => f,
        Err(e) => {
            let _ = skiff_sandbox::container::signal(pid, libc::SIGKILL);
            let _ = skiff_sandbox::container::wait(pid);
            cleanup(global, &record, true);
            return Err(e);
        }
    };
    record.status = Status::Running;
    // The container runs; a record that cannot be written (a full disk)
    // must not make skiff leave it unsupervised.
    if let Err(e) = record.save(&global.root) {
        tracing::warn!(id = %record.id, "recording the running container: {e:#}");
    }
    tracing::info!(id = %record.id, pid, "container started");
    if let Some(mut r) = ready {
        let _ = writeln!(r, "ready");
    }

    let console = match (terminal, sandbox.take_console()) {
        (Some((interactive, output)), Some(master)) => {
            Some(tty::attach(master, interactive, output)?)
        }
        _ => None,
    };
    let exit = skiff_sandbox::container::wait(pid)?;
    tracing::debug!(?exit, "container exited");
    sandbox.finish_output();
    if let Some(c) = console {
        c.finish();
    }
    drop(forwarder);

    record.oom_killed = skiff_sandbox::container::oom_killed(&record.cgroups_path);
    record.status = Status::Exited;
    record.exit_code = Some(exit.code());
    record.finished = Some(containers::now());
    record.pid = None;
    if !record.remove_on_exit {
        let _ = record.save(&global.root);
    }
    if record.oom_killed {
        exit::say(format_args!(
            "skiff: container {} was killed by the kernel's OOM killer: it exceeded its memory limit (raise --memory)",
            record.name
        ));
    }
    cleanup(global, &record, record.remove_on_exit);
    Ok(exit.code())
}

/// Tears down what a container holds on the host; with `remove`, deletes
/// its directory too. Errors are logged: cleanup must not mask the exit.
pub fn cleanup(global: &Global, record: &Record, remove: bool) {
    if let Err(e) = skiff_sandbox::container::delete(&record.cgroups_path) {
        tracing::warn!(id = %record.id, "removing the container's cgroup: {e}");
    }
    tracing::debug!("cgroup removed");
    let cdir = containers::dir(&global.root, &record.id);
    let scratch = containers::scratch_dir(&global.root, &record.id);
    let dirs = OverlayDirs::new(&cdir, &scratch, record.layer_size);
    match rootfs::unmount_overlay(&dirs) {
        // Only an empty mount point is removed, so a mount that is somehow
        // still there keeps its files.
        Ok(()) => match std::fs::remove_dir(&dirs.merged) {
            Ok(()) => {
                let _ = std::fs::remove_dir_all(&scratch);
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let _ = std::fs::remove_dir_all(&scratch);
            }
            Err(e) => tracing::warn!(id = %record.id, "removing {}: {e}", dirs.merged.display()),
        },
        Err(e) => tracing::warn!(id = %record.id, "{e}"),
    }
    if remove {
        if let Err(e) = std::fs::remove_dir_all(&cdir) {
            tracing::warn!(id = %record.id, "removing {}: {e}", cdir.display());
        }
    }
    tracing::debug!("cleaned up");
}

/// Re-runs this binary as a detached supervisor for the container and
/// waits until the container runs.
fn start_detached(global: &Global, record: &Record, tty: bool) -> Result<i32> {
    let log = global
        .root
        .join("logs")
        .join(format!("container-{}.log", record.short_id()));
    let mut cmd = Command::new(std::env::current_exe()?);
    cmd.arg("--root")
        .arg(&global.root)
        .arg("supervise")
        .args(tty.then_some("--tty"))
        .arg(&record.id);
    crate::detach::start(cmd, &log, "the container supervisor")?;
    println!("{}", record.id);
    Ok(exit::OK)
}

/// The seccomp policy from `--security-opt` and the capability set; `None`
/// for `seccomp=unconfined`. Needs nothing from the image.
fn seccomp_policy(a: &Args) -> Result<Option<skiff_sandbox::seccomp::Policy>> {
    let capabilities = skiff_sandbox::spec::effective_capabilities(&a.cap_add, &a.cap_drop)?;
    let oci_caps = skiff_sandbox::spec::to_oci_capabilities(&capabilities);
    let mut seccomp = Some(skiff_sandbox::seccomp::default_profile(&oci_caps));
    for opt in &a.security_opt {
        match opt.split_once(['=', ':']) {
            Some(("seccomp", "unconfined")) => seccomp = None,
            Some(("seccomp", file)) => {
                seccomp = Some(skiff_sandbox::seccomp::load_profile(
                    Path::new(file),
                    &oci_caps,
                )?)
            }
            _ => bail!(
                "--security-opt {opt:?} is not supported; use seccomp=FILE or seccomp=unconfined"
            ),
        }
    }
    Ok(seccomp)
}

/// Compiles the policy into the node's filter cache on a thread, while the
/// image is mounted (a first start on a node compiles for ~30 ms). The
/// container's start finds it there; an error here is reported there.
fn precompile_seccomp(
    global: &Global,
    policy: Option<skiff_sandbox::seccomp::Policy>,
) -> Option<std::thread::JoinHandle<()>> {
    let policy = policy?;
    let cache = containers::seccomp_cache(&global.root);
    Some(std::thread::spawn(move || {
        let _ = skiff_sandbox::seccomp_filter::CompiledFilter::cached(&policy, &cache);
    }))
}

/// `--storage-opt size=`: the bound on the writable layer, if any.
fn layer_limit(a: &Args) -> Result<Option<u64>> {
    let mut size = None;
    for opt in &a.storage_opt {
        match opt.split_once('=') {
            Some(("size", v)) => {
                let n = parse_size(v).map_err(|e| anyhow::anyhow!("--storage-opt {opt:?}: {e}"))?;
                if n != 0 && n < skiff_sandbox::layer_fs::MIN_SIZE {
                    bail!("--storage-opt {opt:?}: give at least 16M (or size=0 for no bound)");
                }
                size = (n != 0).then_some(n);
            }
            _ => bail!("--storage-opt {opt:?} is not supported; the one option is size=SIZE (e.g. size=10G)"),
        }
    }
    Ok(size)
}

fn build_spec(
    a: &Args,
    config: &RuntimeConfig,
    id: &str,
    cgroups_path: &str,
    rootfs: &Path,
    image_tree: &Path,
    seccomp: Option<skiff_sandbox::seccomp::Policy>,
) -> Result<ContainerSpec> {
    let user_spec = a.user.clone().unwrap_or_else(|| config.user.clone());
    let user = skiff_sandbox::user::resolve(image_tree, &user_spec)?;
    let hostname = a.hostname.clone().unwrap_or_else(|| id[..12].to_string());

    let entrypoint: Vec<String> = match &a.entrypoint {
        Some(e) if e.is_empty() => Vec::new(),
        Some(e) => vec![e.clone()],
        None => config.entrypoint.clone(),
    };
    let cmd = if !a.command.is_empty() {
        a.command.clone()
    } else if a.entrypoint.is_some() {
        Vec::new()
    } else {
        config.cmd.clone()
    };
    let args: Vec<String> = entrypoint.into_iter().chain(cmd).collect();
    if args.is_empty() {
        bail!(
            "{} has no command (no Entrypoint or Cmd); give one after the image",
            a.image
        );
    }

    let mut env: BTreeMap<String, String> = BTreeMap::new();
    let mut order: Vec<String> = Vec::new();
    let mut set = |k: String, v: String| {
        if !env.contains_key(&k) {
            order.push(k.clone());
        }
        env.insert(k, v);
    };
    set("PATH".into(), DEFAULT_PATH.into());
    set("HOSTNAME".into(), hostname.clone());
    let home_given = config
        .env
        .iter()
        .chain(&a.env)
        .any(|e| e.starts_with("HOME="));
    for kv in &config.env {
        if let Some((k, v)) = kv.split_once('=') {
            set(k.into(), v.into());
        }
    }
    if a.tty {
        set("TERM".into(), "xterm".into());
    }
    for f in &a.env_file {
        let text = std::fs::read_to_string(f)
            .with_context(|| format!("reading --env-file {}", f.display()))?;
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            if let Some((k, v)) = env_assignment(line) {
                set(k, v);
            }
        }
    }
    for e in &a.env {
        if e.starts_with('=') || e.is_empty() {
            bail!("-e {e:?}: give NAME=VALUE, or the NAME of a variable set here");
        }
        // `-e NAME` with NAME unset here is left out, as Docker does.
        if let Some((k, v)) = env_assignment(e) {
            set(k, v);
        }
    }
    if !home_given {
        set("HOME".into(), user.home.clone());
    }
    let env: Vec<String> = order.iter().map(|k| format!("{k}={}", env[k])).collect();

    let cwd = a
        .workdir
        .clone()
        .or_else(|| (!config.working_dir.is_empty()).then(|| config.working_dir.clone()))
        .unwrap_or_else(|| "/".into());
    if !cwd.starts_with('/') {
        bail!("-w {cwd:?}: the working directory must be an absolute path");
    }

    let volumes = a
        .volumes
        .iter()
        .map(|v| rootfs::parse_volume(v))
        .collect::<Result<Vec<_>, _>>()?;
    let capabilities = skiff_sandbox::spec::effective_capabilities(&a.cap_add, &a.cap_drop)?;
    let ulimits = a
        .ulimit
        .iter()
        .map(|u| skiff_sandbox::rlimits::parse_ulimit(u))
        .collect::<Result<Vec<_>, _>>()?;
    let rlimits = skiff_sandbox::rlimits::container_limits(&ulimits)?;
    if a.memory.is_some_and(|m| m < MIN_MEMORY) {
        bail!("--memory must be at least 6M: a smaller limit kills the container before it starts");
    }
    if let Some(c) = a.cpus {
        if !(c > 0.0 && c.is_finite()) {
            bail!("--cpus {c}: give a positive number of CPUs, e.g. 0.5");
        }
    }
    Ok(ContainerSpec {
        rootfs: rootfs.to_path_buf(),
        args,
        env,
        cwd,
        user: user.user,
        hostname,
        terminal: a.tty,
        network: if a.network == "host" {
            Network::Host
        } else {
            Network::None
        },
        read_only: a.read_only,
        volumes,
        resources: Resources {
            memory_bytes: a.memory.map(|m| m as i64),
            cpus: a.cpus,
            // As Docker: zero or less means unlimited.
            pids: match a.pids_limit {
                // The default applies wherever the host has the controller.
                None => skiff_sandbox::cgroups::has_controller("pids")
                    .then_some(skiff_sandbox::spec::DEFAULT_PIDS_LIMIT),
                Some(p) => Some(p).filter(|&p| p > 0),
            },
        },
        capabilities,
        seccomp,
        userns: a.userns.0.map(|s| IdMap {
            host_id: s.base,
            size: s.size,
        }),
        cgroups_path: cgroups_path.to_string(),
        memory_swap_supported: Path::new("/sys/fs/cgroup/memory/memory.memsw.limit_in_bytes")
            .exists()
            || Path::new("/sys/fs/cgroup/cgroup.controllers").exists(),
        rlimits,
    })
}

/// `NAME=VALUE`, or `NAME` taken from this process's environment.
fn env_assignment(s: &str) -> Option<(String, String)> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Some((k.to_string(), v.to_string())),
        Some(_) => None,
        None => std::env::var(s).ok().map(|v| (s.to_string(), v)),
    }
}

/// A signal by name (`SIGTERM`, `TERM`) or number.
pub fn parse_signal(s: &str) -> Option<i32> {
    let s = s.trim();
    if s.is_empty() {
        return None;
    }
    if let Ok(n) = s.parse::<i32>() {
        return (1..65).contains(&n).then_some(n);
    }
    let upper = s.to_ascii_uppercase();
    let name = upper.strip_prefix("SIG").unwrap_or(&upper);
    let n = match name {
        "HUP" => libc::SIGHUP,
        "INT" => libc::SIGINT,
        "QUIT" => libc::SIGQUIT,
        "KILL" => libc::SIGKILL,
        "USR1" => libc::SIGUSR1,
        "USR2" => libc::SIGUSR2,
        "TERM" => libc::SIGTERM,
        "STOP" => libc::SIGSTOP,
        "CONT" => libc::SIGCONT,
        "WINCH" => libc::SIGWINCH,
        "PWR" => libc::SIGPWR,
        _ => return None,
    };
    Some(n)
}
