//! runc's command line, as Podman (conmon) and containerd's runc shim
//! give it.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use oci_spec::runtime::LinuxResources;
use skiff_engine::EngineError;

/// skiff-oci: skiff's namespace sandbox as a runc-compatible OCI runtime.
///
/// Called the way runc is: `skiff-oci [GLOBAL] create --bundle B ID`, then
/// `start`, `state`, `kill`, `delete`. It is the skiff binary under the
/// name skiff-oci (a link). Exit codes: 0 success, 1 failure, 2 usage;
/// `exec` and `run` return the process's own code.
#[derive(Parser)]
#[command(name = "skiff-oci", disable_version_flag = true)]
pub struct Cli {
    /// State directory (runc's is /run/runc).
    #[arg(long, global = true, value_name = "DIR")]
    pub root: Option<PathBuf>,

    /// Also write log lines (warnings, the error) to this file.
    #[arg(long, global = true, value_name = "FILE")]
    pub log: Option<PathBuf>,

    /// The log file's format: `text`, or `json` (one object per line with
    /// level, msg and time, as containerd reads runc's).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Debug-level logging.
    #[arg(long, global = true)]
    pub debug: bool,

    /// Use systemd for cgroups: not supported (an error says so).
    #[arg(long, global = true)]
    pub systemd_cgroup: bool,

    /// runc's rootless mode (true, false, auto); skiff's runtime runs as root.
    #[arg(long, global = true, value_name = "MODE")]
    pub rootless: Option<String>,

    /// Print the version and the runtime spec version.
    #[arg(short = 'v', long)]
    pub version: bool,

    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
pub enum Command {
    /// Create a container from a bundle; its process waits for `start`.
    Create(CreateArgs),
    /// Run the created container's process.
    Start { id: String },
    /// Print the container's state (runtime spec JSON).
    State { id: String },
    /// Send a signal (default SIGTERM) to the init, or to every process.
    Kill {
        /// Every process of the container, not just its init.
        #[arg(short, long)]
        all: bool,
        id: String,
        /// A name (TERM, SIGKILL) or a number.
        signal: Option<String>,
    },
    /// Free what a stopped container holds; --force kills it first.
    Delete {
        #[arg(short, long)]
        force: bool,
        id: String,
    },
    /// Create and start a container; without -d, wait for it and delete it.
    Run(RunArgs),
    /// Run another process in a running container.
    Exec(ExecArgs),
    /// The container's processes.
    Ps {
        /// table or json (the pids).
        #[arg(short, long, default_value = "table")]
        format: String,
        id: String,
        /// Options for ps(1) in table format (default -ef).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        ps_args: Vec<String>,
    },
    /// The containers in the state directory.
    List {
        /// table or json.
        #[arg(short, long, default_value = "table")]
        format: String,
        /// IDs only.
        #[arg(short, long)]
        quiet: bool,
    },
    /// Freeze every process of the container (the cgroup freezer).
    Pause { id: String },
    /// Thaw a paused container.
    Resume { id: String },
    /// Change a running container's cgroup limits.
    Update(UpdateArgs),
    /// What this runtime supports (the runtime spec's features.json).
    Features,
}

#[derive(Args)]
pub struct CreateArgs {
    /// The bundle: a directory with config.json (default: the current one).
    #[arg(short, long, default_value = ".", value_name = "DIR")]
    pub bundle: PathBuf,
    /// Write the init's pid here.
    #[arg(long, value_name = "FILE")]
    pub pid_file: Option<PathBuf>,
    /// A unix socket that receives the pty master (process.terminal).
    #[arg(long, value_name = "SOCKET")]
    pub console_socket: Option<PathBuf>,
    /// Move the root over / and chroot instead of pivot_root (ramdisks).
    #[arg(long)]
    pub no_pivot: bool,
    /// runc's flag against a new session keyring; skiff's runtime never
    /// makes one, so this changes nothing.
    #[arg(long)]
    pub no_new_keyring: bool,
    /// Extra descriptors to pass: not supported (an error if above 0).
    #[arg(long, default_value_t = 0)]
    pub preserve_fds: u32,
    pub id: String,
}

#[derive(Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub create: CreateArgs,
    /// Return once started.
    #[arg(short, long)]
    pub detach: bool,
}

#[derive(Args)]
pub struct ExecArgs {
    /// A runtime-spec process JSON file, whole (instead of the arguments).
    #[arg(short, long, value_name = "FILE")]
    pub process: Option<PathBuf>,
    /// Return once started.
    #[arg(short, long)]
    pub detach: bool,
    /// A pty (needs --console-socket).
    #[arg(short, long)]
    pub tty: bool,
    #[arg(long, value_name = "SOCKET")]
    pub console_socket: Option<PathBuf>,
    #[arg(long, value_name = "FILE")]
    pub pid_file: Option<PathBuf>,
    #[arg(long, value_name = "DIR")]
    pub cwd: Option<String>,
    /// KEY=VALUE, repeatable.
    #[arg(short, long)]
    pub env: Vec<String>,
    /// UID[:GID], numeric.
    #[arg(short, long)]
    pub user: Option<String>,
    #[arg(short = 'g', long, value_delimiter = ',')]
    pub additional_gids: Vec<u32>,
    /// Add a capability (CAP_X), repeatable.
    #[arg(short, long)]
    pub cap: Vec<String>,
    #[arg(long)]
    pub no_new_privs: bool,
    /// AppArmor profile: not supported (an error if given).
    #[arg(long)]
    pub apparmor: Option<String>,
    /// SELinux label: not supported (an error if given).
    #[arg(long)]
    pub process_label: Option<String>,
    #[arg(long, default_value_t = 0)]
    pub preserve_fds: u32,
    pub id: String,
    /// The command and its arguments (without --process).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<String>,
}

#[derive(Args)]
pub struct UpdateArgs {
    /// A runtime-spec linux.resources JSON file, or - for stdin.
    #[arg(short, long, value_name = "FILE")]
    pub resources: Option<PathBuf>,
    /// Memory limit in bytes.
    #[arg(long)]
    pub memory: Option<i64>,
    /// Memory plus swap in bytes.
    #[arg(long)]
    pub memory_swap: Option<i64>,
    /// CFS quota in microseconds (-1: none).
    #[arg(long)]
    pub cpu_quota: Option<i64>,
    /// CFS period in microseconds.
    #[arg(long)]
    pub cpu_period: Option<u64>,
    /// Maximum number of processes.
    #[arg(long)]
    pub pids_limit: Option<i64>,
    pub id: String,
}

/// The resources `update` applies: the JSON, then the flags over it.
pub fn update_resources(a: &UpdateArgs) -> Result<LinuxResources, EngineError> {
    let mut r: LinuxResources = match &a.resources {
        None => LinuxResources::default(),
        Some(path) => {
            let bytes = if path.as_os_str() == "-" {
                let mut b = Vec::new();
                std::io::Read::read_to_end(&mut std::io::stdin(), &mut b)
                    .map_err(|e| EngineError::io("reading resources from stdin", e))?;
                b
            } else {
                std::fs::read(path)
                    .map_err(|e| EngineError::io(format!("reading {}", path.display()), e))?
            };
            let de = &mut serde_json::Deserializer::from_slice(&bytes);
            serde_path_to_error::deserialize(de).map_err(|e| {
                EngineError::Invalid(format!("--resources: field {}: {}", e.path(), e.inner()))
            })?
        }
    };
    if a.memory.is_some() || a.memory_swap.is_some() {
        let mut m = (*r.memory()).unwrap_or_default();
        if let Some(v) = a.memory {
            m.set_limit(Some(v));
        }
        if let Some(v) = a.memory_swap {
            m.set_swap(Some(v));
        }
        r.set_memory(Some(m));
    }
    if a.cpu_quota.is_some() || a.cpu_period.is_some() {
        let mut c = r.cpu().clone().unwrap_or_default();
        if let Some(v) = a.cpu_quota {
            c.set_quota(Some(v));
        }
        if let Some(v) = a.cpu_period {
            c.set_period(Some(v));
        }
        if c.period().is_none() {
            c.set_period(Some(100_000));
        }
        r.set_cpu(Some(c));
    }
    if let Some(v) = a.pids_limit {
        let mut p = (*r.pids()).unwrap_or_default();
        p.set_limit(v);
        r.set_pids(Some(p));
    }
    Ok(r)
}
