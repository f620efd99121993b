//! `skiff`: lazy, verified container images.

mod commands;
mod exit;
mod oci;
mod out;
mod progress;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// skiff: container images that start lazily and verify every byte.
///
/// Convert an OCI image into a skiff image (a merged metadata tree plus
/// content-addressed, compressed chunks, stored as an ordinary OCI
/// artifact), then inspect, check, unpack or mount it, or run containers
/// from it: only what they read is fetched, and every byte is verified.
#[derive(Parser)]
#[command(name = "skiff", version, propagate_version = true, after_help = EXIT_CODES)]
struct Cli {
    /// Where skiff keeps node state: chunk cache, staging, logs.
    #[arg(
        long,
        global = true,
        help_heading = "Global options",
        env = "SKIFF_ROOT",
        default_value = "/var/lib/skiff",
        value_name = "DIR"
    )]
    root: PathBuf,

    /// Talk plain HTTP to non-loopback registries (loopback ones always use HTTP).
    #[arg(long, global = true, help_heading = "Global options")]
    plain_http: bool,

    /// An HTTP(S) proxy for registry requests (default: HTTPS_PROXY etc.).
    #[arg(
        long,
        global = true,
        help_heading = "Global options",
        env = "SKIFF_PROXY",
        value_name = "URL"
    )]
    proxy: Option<String>,

    /// A pull-through registry mirror, or a P2P daemon in mirror mode (such as
    /// Dragonfly's), tried first for every pull; the registry is the fallback.
    #[arg(
        long,
        global = true,
        help_heading = "Global options",
        env = "SKIFF_MIRROR",
        value_name = "URL"
    )]
    mirror: Option<String>,

    /// More log output (-v info, -vv debug, -vvv trace), given before the
    /// command (`skiff -v run ...`; after it, `-v` is run's volume flag).
    /// SKIFF_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count)]
    verbose: u8,

    /// The node chunk cache's size limit: SIZE (10G) or a share of its
    /// filesystem (20%, the default). Over it, the least recently used
    /// chunks are evicted, those of images on the node last. `none`: no
    /// limit.
    #[arg(long, global = true, help_heading = "Global options", env = "SKIFF_CACHE_SIZE", default_value = "20%", value_parser = skiff_engine::CacheSize::parse, value_name = "SIZE|N%|none")]
    cache_size: skiff_engine::CacheSize,

    /// Seconds an image mount of `skiff run`/`pull` stays with no container
    /// running from it and no reads before it is unmounted (0: never).
    /// The next run mounts it again, warm from the node's cache.
    #[arg(
        long,
        global = true,
        help_heading = "Global options",
        env = "SKIFF_IMAGE_IDLE_TIMEOUT",
        default_value_t = 600,
        value_name = "SECS"
    )]
    image_idle_timeout: u64,

    /// No progress bars (for `ps`: print only IDs).
    #[arg(short, long, global = true, help_heading = "Global options")]
    quiet: bool,

    #[command(subcommand)]
    command: Command,
}

const EXIT_CODES: &str = "Exit codes: 0 success, 1 failure, 2 usage error, 3 verification failed \
(`skiff run`: the container's code, or 125 (skiff's error, a usage error included), 126, 127 as Docker).\n\
Image references: REGISTRY/REPO[:TAG][@sha256:DIGEST], oci:DIR[:TAG], docker-archive:FILE[:REPO:TAG].";

#[derive(Subcommand)]
enum Command {
    Convert(commands::convert::Args),
    Inspect(commands::inspect::Args),
    Check(commands::check::Args),
    Unpack(commands::unpack::Args),
    Mount(commands::mount::Args),
    Umount(commands::umount::Args),
    Stats(commands::stats::Args),
    Cache(commands::cache::Args),
    Pull(commands::pull::Args),
    Images(commands::images::Args),
    Rmi(commands::rmi::Args),
    Run(Box<commands::run::Args>),
    Exec(commands::exec::Args),
    Ps(commands::ps::Args),
    Stop(commands::stop::Args),
    Rm(commands::rm::Args),
    Logs(commands::logs::Args),
    Kill(commands::kill::Args),
    Wait(commands::wait::Args),
    Volume(commands::volume::Args),
    Snapshotter(commands::snapshotter::Args),
    Version(commands::version::Args),
    #[command(hide = true)]
    Supervise(commands::supervise::Args),
}

/// Options every command shares, and the node engine.
pub struct Global {
    pub root: PathBuf,
    pub registry: skiff_oci::RegistryOptions,
    pub engine: skiff_engine::Engine,
    pub quiet: bool,
    /// Whether -q was given (quiet is also set when stderr is no terminal).
    pub quiet_flag: bool,
}

fn init_logging(verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("SKIFF_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colour codes only for a terminal: a log file or pipe gets plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        // Its report of a failed write is an eprintln!, which panics when
        // stderr is a closed pipe: a log line must not end a container run
        // before its cleanup.
        .log_internal_errors(false)
        .init();
}

/// Verbs that only read: the only ones a typo may be pointed to, so that
/// `skiff top` never suggests `stop`, nor `skiff rmi` `rm`.
const READ_VERBS: &[&str] = &[
    "inspect", "check", "stats", "images", "ps", "logs", "wait", "version",
];

/// The command word of this process's arguments, past the global options
/// (and the values of those that take one).
fn typed_command() -> Option<String> {
    const WITH_VALUE: &[&str] = &[
        "--root",
        "--proxy",
        "--mirror",
        "--cache-size",
        "--image-idle-timeout",
    ];
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        if WITH_VALUE.contains(&a.as_str()) {
            args.next();
        } else if !a.starts_with('-') {
            return Some(a);
        }
    }
    None
}

fn suggest_verb(typed: &str) -> Option<&'static str> {
    READ_VERBS
        .iter()
        .map(|v| (strsim::damerau_levenshtein(typed, v), *v))
        .filter(|(d, _)| *d <= 2 && *d < typed.len())
        .min()
        .map(|(_, v)| v)
}

fn main() {
    let called_as = std::env::args_os()
        .next()
        .map(PathBuf::from)
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()));
    if called_as.as_deref() == Some(oci::NAME) {
        oci::main();
    }
    // A VM container's supervisor, or a detached exec's relay, started by
    // the OCI runtime (see the engine's oci_runtime::supervised).
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if args.get(1).and_then(|a| a.to_str()) == Some(skiff_engine::oci_runtime::SUPERVISOR_ARG) {
        std::process::exit(skiff_engine::oci_runtime::supervisor_main(&args[2..]));
    }
    // The Wasm pool's keeper, started by the first pooled module.
    if args.get(1).and_then(|a| a.to_str()) == Some(skiff_engine::WASM_POOL_KEEPER_ARG) {
        std::process::exit(skiff_engine::wasm_pool_keeper_main(&args[2..]));
    }
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) if e.kind() == clap::error::ErrorKind::InvalidSubcommand => {
            let typed = e
                .get(clap::error::ContextKind::InvalidSubcommand)
                .map(|v| v.to_string())
                .unwrap_or_default();
            exit::say(format_args!(
                "skiff: '{typed}' is not a skiff command; see `skiff --help`"
            ));
            if let Some(verb) = suggest_verb(&typed) {
                exit::say(format_args!(
                    "  a command with a similar name: skiff {verb}"
                ));
            }
            std::process::exit(exit::USAGE);
        }
        Err(e) => {
            let code = if !e.use_stderr() {
                exit::OK
            } else if typed_command().as_deref() == Some("run") {
                // As Docker's, so scripts tell skiff's errors from the container's.
                exit::RUN_USAGE
            } else {
                exit::USAGE
            };
            let _ = e.print();
            std::process::exit(code);
        }
    };
    init_logging(cli.verbose);
    let registry = skiff_oci::RegistryOptions {
        plain_http: cli.plain_http,
        proxy: cli.proxy,
        mirror: cli.mirror,
        ..Default::default()
    };
    // The engine's helpers (mount daemons, supervisors) are this binary.
    let helper = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("skiff"));
    let mut engine = match skiff_engine::Engine::new(skiff_engine::EngineConfig {
        root: cli.root.clone(),
        registry: registry.clone(),
        helper,
        cache_size: cli.cache_size,
        image_idle_timeout: (cli.image_idle_timeout > 0)
            .then(|| std::time::Duration::from_secs(cli.image_idle_timeout)),
    }) {
        Ok(e) => e,
        Err(e) => {
            exit::say(format_args!("skiff: error: {e}"));
            std::process::exit(exit::FAILURE);
        }
    };
    let quiet = cli.quiet || !std::io::IsTerminal::is_terminal(&std::io::stderr());
    // A conversion on the node (an ordinary OCI image run or pulled) draws
    // the same bars as `skiff convert`.
    engine.set_convert_progress(std::sync::Arc::new(move || {
        std::sync::Arc::new(progress::ConvertBars::new(progress::multi(quiet)))
            as std::sync::Arc<dyn skiff_builder::Progress>
    }));
    let global = Global {
        root: cli.root,
        registry,
        engine,
        quiet,
        quiet_flag: cli.quiet,
    };
    let result = match cli.command {
        Command::Convert(a) => commands::convert::run(&global, a),
        Command::Inspect(a) => commands::inspect::run(&global, a),
        Command::Check(a) => commands::check::run(&global, a),
        Command::Unpack(a) => commands::unpack::run(&global, a),
        Command::Mount(a) => commands::mount::run(&global, a),
        Command::Umount(a) => commands::umount::run(&global, a),
        Command::Stats(a) => commands::stats::run(&global, a),
        Command::Cache(a) => commands::cache::run(&global, a),
        Command::Pull(a) => commands::pull::run(&global, a),
        Command::Images(a) => commands::images::run(&global, a),
        Command::Rmi(a) => commands::rmi::run(&global, a),
        Command::Run(a) => commands::run::run(&global, *a),
        Command::Exec(a) => commands::exec::run(&global, a),
        Command::Ps(a) => commands::ps::run(&global, a),
        Command::Stop(a) => commands::stop::run(&global, a),
        Command::Rm(a) => commands::rm::run(&global, a),
        Command::Logs(a) => commands::logs::run(&global, a),
        Command::Kill(a) => commands::kill::run(&global, a),
        Command::Wait(a) => commands::wait::run(&global, a),
        Command::Volume(a) => commands::volume::run(&global, a),
        Command::Snapshotter(a) => commands::snapshotter::run(&global, a),
        Command::Version(a) => commands::version::run(&global, a),
        Command::Supervise(a) => commands::supervise::run(&global, a),
    };
    match result {
        Ok(code) => std::process::exit(code),
        // Its reader had what it wanted (`skiff ps | head -1`); the work
        // itself is done and cleaned up by now.
        Err(e) if out::is_stdout_closed(&e) => std::process::exit(exit::OK),
        Err(e) => {
            exit::say(format_args!("skiff: error: {}", exit::render(&e)));
            std::process::exit(exit::for_error(&e));
        }
    }
}
