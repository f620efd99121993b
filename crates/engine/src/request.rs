//! What a front end asks for when it runs a container, and its checks:
//! everything that can be refused is refused here, before anything is
//! mounted or written.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use skiff_fs::IdShift;
use skiff_oci::{Platform, RuntimeConfig};
use skiff_sandbox::rootfs;
use skiff_sandbox::seccomp::Policy;
use skiff_sandbox::{ContainerSpec, IdMap, Network, Resources};

use crate::error::{EngineError, IoContext, Result};

/// A container to run, as `skiff run` takes it (Docker's options).
#[derive(Debug, Clone, Default)]
pub struct RunRequest {
    /// The image reference.
    pub image: String,
    /// For a multi-platform image (default: this host's).
    pub platform: Option<Platform>,
    /// The command and its arguments (default: the image's).
    pub command: Vec<String>,
    /// Overrides the image's entrypoint (empty: none).
    pub entrypoint: Option<String>,
    /// `NAME=VALUE`, or `NAME` to copy it from the caller's environment.
    pub env: Vec<String>,
    /// Files of `NAME=VALUE` lines.
    pub env_files: Vec<PathBuf>,
    pub workdir: Option<String>,
    /// `USER[:GROUP]`, names from the image or numeric IDs.
    pub user: Option<String>,
    /// `SRC:DST[:ro|rw]`.
    pub volumes: Vec<String>,
    pub remove_on_exit: bool,
    pub name: Option<String>,
    /// Supervised by a helper process, with its output in a log.
    pub detach: bool,
    /// stdin connected to the container.
    pub interactive: bool,
    pub tty: bool,
    /// Record the image reads of this run to this file (absolute).
    pub record_trace: Option<PathBuf>,
    pub hostname: Option<String>,
    pub read_only: bool,
    pub network: Network,
    pub memory: Option<u64>,
    pub cpus: Option<f64>,
    /// `None`: the default (2048 where the host has a pids controller);
    /// zero or less: none.
    pub pids_limit: Option<i64>,
    /// `NAME=SOFT[:HARD]`.
    pub ulimits: Vec<String>,
    /// `size=SIZE`.
    pub storage_opts: Vec<String>,
    /// `max-size=SIZE`.
    pub log_opts: Vec<String>,
    pub cap_add: Vec<String>,
    pub cap_drop: Vec<String>,
    /// `seccomp=FILE` or `seccomp=unconfined`.
    pub security_opts: Vec<String>,
    /// A user-namespace remap; `None` shares the host's.
    pub userns: Option<IdShift>,
    /// The sandbox kind by name (`namespace`, `vm`); `None`: the first
    /// kind that runs the image's platform.
    pub sandbox: Option<String>,
}

/// Docker's floor for --memory.
const MIN_MEMORY: u64 = 6 << 20;

const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Where a container's spec puts things, decided by the engine.
pub(crate) struct Placement<'a> {
    pub id: &'a str,
    pub cgroups_path: &'a str,
    pub rootfs: &'a Path,
    /// The image's own tree, to resolve the user in (the container has
    /// written nothing yet).
    pub image_tree: &'a Path,
    /// The node's root, where named volumes live.
    pub root: &'a Path,
    /// A `-v` without a mode is read-only (the sandbox kind says).
    pub volumes_read_only_by_default: bool,
}

impl RunRequest {
    /// The checks that need nothing but the request.
    pub(crate) fn check(&self) -> Result<()> {
        if self.detach && self.record_trace.is_some() {
            return Err(EngineError::Invalid("--record-trace needs a foreground run (drop -d): the trace ends when the container does".into()));
        }
        if let Some(n) = &self.name {
            if !crate::record::valid_name(n) {
                return Err(EngineError::Invalid(format!("--name {n:?}: use letters, digits, '_', '.' and '-', starting with a letter or digit")));
            }
        }
        Ok(())
    }

    /// The seccomp policy from `--security-opt` and the capability set;
    /// `None` for `seccomp=unconfined`. Needs nothing from the image.
    pub(crate) fn seccomp_policy(&self) -> Result<Option<Policy>> {
        let capabilities =
            skiff_sandbox::capabilities::effective_capabilities(&self.cap_add, &self.cap_drop)?;
        let oci_caps = skiff_sandbox::capabilities::to_oci_capabilities(&capabilities);
        let mut seccomp = Some(skiff_sandbox::seccomp::default_profile(&oci_caps));
        for opt in &self.security_opts {
            match opt.split_once(['=', ':']) {
                Some(("seccomp", "unconfined")) => seccomp = None,
                Some(("seccomp", file)) => {
                    let profile = skiff_sandbox::seccomp::load_profile(Path::new(file), &oci_caps)
                        .map_err(|e| EngineError::Invalid(e.to_string()))?;
                    seccomp = Some(profile)
                }
                _ => {
                    return Err(EngineError::Invalid(format!(
                        "--security-opt {opt:?} is not supported; use seccomp=FILE or seccomp=unconfined"
                    )))
                }
            }
        }
        Ok(seccomp)
    }

    /// `--log-opt max-size=`: where the container's log rotates.
    pub(crate) fn log_max_file_bytes(&self) -> Result<Option<u64>> {
        match size_option("log-opt", "max-size", "10M", &self.log_opts)? {
            Some((opt, n)) if n < 1 << 20 => Err(EngineError::Invalid(format!(
                "--log-opt {opt:?}: give at least 1M"
            ))),
            found => Ok(found.map(|(_, n)| n)),
        }
    }

    /// `--storage-opt size=`: the bound on the writable layer, if any.
    pub(crate) fn layer_size(&self) -> Result<Option<u64>> {
        match size_option("storage-opt", "size", "10G", &self.storage_opts)? {
            Some((opt, n)) if n != 0 && n < skiff_sandbox::layer_fs::MIN_SIZE => {
                Err(EngineError::Invalid(format!(
                    "--storage-opt {opt:?}: give at least 16M (or size=0 for no bound)"
                )))
            }
            found => Ok(found.map(|(_, n)| n).filter(|&n| n != 0)),
        }
    }

    /// The container's spec, from this request and the image's config.
    pub(crate) fn spec(
        &self,
        config: &RuntimeConfig,
        at: &Placement,
        seccomp: Option<Policy>,
    ) -> Result<ContainerSpec> {
        let user_spec = self.user.clone().unwrap_or_else(|| config.user.clone());
        let user = skiff_sandbox::user::resolve(at.image_tree, &user_spec)?;
        let hostname = self
            .hostname
            .clone()
            .unwrap_or_else(|| at.id[..12].to_string());
        let args = self.args(config)?;
        let env = self.environment(config, &hostname, &user.home)?;

        let cwd = self
            .workdir
            .clone()
            .or_else(|| (!config.working_dir.is_empty()).then(|| config.working_dir.clone()))
            .unwrap_or_else(|| "/".into());
        if !cwd.starts_with('/') {
            return Err(EngineError::Invalid(format!(
                "-w {cwd:?}: the working directory must be an absolute path"
            )));
        }

        let volumes = self
            .volumes
            .iter()
            .map(|v| {
                Ok(rootfs::parse_volume_with(
                    &crate::volumes::resolve_source(
                        at.root,
                        at.image_tree,
                        v,
                        self.userns.is_some(),
                    )?,
                    at.volumes_read_only_by_default,
                )?)
            })
            .collect::<Result<Vec<_>>>()?;
        let capabilities =
            skiff_sandbox::capabilities::effective_capabilities(&self.cap_add, &self.cap_drop)?;
        let ulimits = self
            .ulimits
            .iter()
            .map(|u| skiff_sandbox::rlimits::parse_ulimit(u))
            .collect::<Result<Vec<_>, _>>()?;
        let rlimits = skiff_sandbox::rlimits::container_limits(&ulimits)?;
        if self.memory.is_some_and(|m| m < MIN_MEMORY) {
            return Err(EngineError::Invalid("--memory must be at least 6M: a smaller limit kills the container before it starts".into()));
        }
        if let Some(c) = self.cpus {
            if !(c > 0.0 && c.is_finite()) {
                return Err(EngineError::Invalid(format!(
                    "--cpus {c}: give a positive number of CPUs, e.g. 0.5"
                )));
            }
            // As Docker: a quota above the CPUs there are limits nothing.
            let host = std::thread::available_parallelism().map_or(1, |n| n.get());
            if c > host as f64 {
                return Err(EngineError::Invalid(format!(
                    "--cpus {c}: this host has {host} CPU{}; give at most {host}",
                    if host == 1 { "" } else { "s" }
                )));
            }
        }
        Ok(ContainerSpec {
            rootfs: at.rootfs.to_path_buf(),
            args,
            env,
            cwd,
            user: user.user,
            etc_files: etc_files(&hostname, self.network),
            hostname,
            terminal: self.tty,
            network: self.network,
            read_only: self.read_only,
            volumes,
            resources: Resources {
                memory_bytes: self.memory.map(|m| m as i64),
                cpus: self.cpus,
                pids: match self.pids_limit {
                    // The default applies wherever the host has the controller.
                    None => skiff_sandbox::cgroups::has_controller("pids")
                        .then_some(skiff_sandbox::spec::DEFAULT_PIDS_LIMIT),
                    // As Docker: zero or less means unlimited.
                    Some(p) => Some(p).filter(|&p| p > 0),
                },
            },
            capabilities,
            seccomp,
            userns: self.userns.map(|s| IdMap {
                host_id: s.base,
                size: s.size,
            }),
            cgroups_path: at.cgroups_path.to_string(),
            memory_swap_supported: Path::new("/sys/fs/cgroup/memory/memory.memsw.limit_in_bytes")
                .exists()
                || Path::new("/sys/fs/cgroup/cgroup.controllers").exists(),
            rlimits,
        })
    }

    /// Entrypoint and command, as Docker combines them.
    fn args(&self, config: &RuntimeConfig) -> Result<Vec<String>> {
        let entrypoint: Vec<String> = match &self.entrypoint {
            Some(e) if e.is_empty() => Vec::new(),
            Some(e) => vec![e.clone()],
            None => config.entrypoint.clone(),
        };
        let cmd = if !self.command.is_empty() {
            self.command.clone()
        } else if self.entrypoint.is_some() {
            Vec::new()
        } else {
            config.cmd.clone()
        };
        let args: Vec<String> = entrypoint.into_iter().chain(cmd).collect();
        if args.is_empty() {
            return Err(EngineError::Invalid(format!(
                "{} has no command (no Entrypoint or Cmd); give one after the image",
                self.image
            )));
        }
        Ok(args)
    }

    /// PATH, HOSTNAME, the image's Env, TERM under -t, --env-file, -e and
    /// HOME, in Docker's order of precedence.
    fn environment(
        &self,
        config: &RuntimeConfig,
        hostname: &str,
        home: &str,
    ) -> Result<Vec<String>> {
        let mut env: BTreeMap<String, String> = BTreeMap::new();
        let mut order: Vec<String> = Vec::new();
        let mut set = |k: String, v: String| {
            if !env.contains_key(&k) {
                order.push(k.clone());
            }
            env.insert(k, v);
        };
        set("PATH".into(), DEFAULT_PATH.into());
        set("HOSTNAME".into(), hostname.to_string());
        let home_given = config
            .env
            .iter()
            .chain(&self.env)
            .any(|e| e.starts_with("HOME="));
        for kv in &config.env {
            if let Some((k, v)) = kv.split_once('=') {
                set(k.into(), v.into());
            }
        }
        if self.tty {
            set("TERM".into(), "xterm".into());
        }
        for f in &self.env_files {
            let text =
                std::fs::read_to_string(f).ctx(|| format!("reading --env-file {}", f.display()))?;
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
        for e in &self.env {
            if e.starts_with('=') || e.is_empty() {
                return Err(EngineError::Invalid(format!(
                    "-e {e:?}: give NAME=VALUE, or the NAME of a variable set here"
                )));
            }
            // `-e NAME` with NAME unset here is left out, as Docker does.
            if let Some((k, v)) = env_assignment(e) {
                set(k, v);
            }
        }
        if !home_given {
            set("HOME".into(), home.to_string());
        }
        Ok(order.iter().map(|k| format!("{k}={}", env[k])).collect())
    }
}

/// `NAME=VALUE`, or `NAME` taken from this process's environment.
fn env_assignment(s: &str) -> Option<(String, String)> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Some((k.to_string(), v.to_string())),
        Some(_) => None,
        None => std::env::var(s).ok().map(|v| (s.to_string(), v)),
    }
}

/// A size such as `512M` or `10G` (K, M, G, T: powers of 1024).
/// `/etc/hostname`, `/etc/hosts` and `/etc/resolv.conf` as Docker writes
/// them for the network mode: the host's own under `--network host`; under
/// `--network none`, loopback names and the hostname, and no nameserver
/// (none could be reached).
fn etc_files(hostname: &str, network: skiff_sandbox::Network) -> Vec<(String, String)> {
    let host_file = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    let (hosts, resolv) = match network {
        skiff_sandbox::Network::Host => (host_file("/etc/hosts"), host_file("/etc/resolv.conf")),
        _ => (
            format!(
                "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n\
                 fe00::0\tip6-localnet\nff00::0\tip6-mcastprefix\n\
                 ff02::1\tip6-allnodes\nff02::2\tip6-allrouters\n127.0.1.1\t{hostname}\n"
            ),
            "# --network none: this container has no network, so no nameserver.\n".to_string(),
        ),
    };
    vec![
        ("hostname".into(), format!("{hostname}\n")),
        ("hosts".into(), hosts),
        ("resolv.conf".into(), resolv),
    ]
}

/// The last `KEY=SIZE` of a flag that takes that one key (`--FLAG KEY=SIZE`)
/// as given and parsed; any other key is refused.
fn size_option(
    flag: &str,
    key: &str,
    example: &str,
    opts: &[String],
) -> Result<Option<(String, u64)>> {
    let mut found = None;
    for opt in opts {
        match opt.split_once('=') {
            Some((k, v)) if k == key => {
                let n = parse_size(v)
                    .map_err(|e| EngineError::Invalid(format!("--{flag} {opt:?}: {e}")))?;
                found = Some((opt.clone(), n));
            }
            _ => {
                return Err(EngineError::Invalid(format!(
                    "--{flag} {opt:?} is not supported; the one option is {key}=SIZE (e.g. {key}={example})"
                )))
            }
        }
    }
    Ok(found)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> RuntimeConfig {
        RuntimeConfig {
            env: vec!["PATH=/img/bin".into(), "A=image".into()],
            cmd: vec!["sh".into()],
            entrypoint: vec!["/entry".into()],
            ..Default::default()
        }
    }

    #[test]
    fn checks_refuse_bad_combinations_before_anything_runs() {
        let mut r = RunRequest {
            detach: true,
            interactive: true,
            ..Default::default()
        };
        // -di keeps a detached container's stdin open, as Docker does.
        assert!(r.check().is_ok());
        r.interactive = false;
        r.record_trace = Some("/t".into());
        assert!(r.check().is_err());
        r.record_trace = None;
        r.name = Some("-bad".into());
        assert!(r.check().is_err());
        r.name = Some("good.name_1".into());
        assert!(r.check().is_ok());
        r.security_opts = vec!["apparmor=x".into()];
        assert!(r.seccomp_policy().is_err());
        r.storage_opts = vec!["size=1M".into()];
        assert!(r.layer_size().is_err());
        r.storage_opts = vec!["size=0".into()];
        assert_eq!(r.layer_size().unwrap(), None);
    }

    #[test]
    fn args_and_environment_follow_dockers_precedence() {
        let mut r = RunRequest {
            env: vec!["A=given".into(), "B=b".into()],
            ..Default::default()
        };
        assert_eq!(r.args(&config()).unwrap(), ["/entry", "sh"]);
        r.command = vec!["ls".into()];
        assert_eq!(r.args(&config()).unwrap(), ["/entry", "ls"]);
        r.entrypoint = Some(String::new());
        assert_eq!(r.args(&config()).unwrap(), ["ls"]);
        r.command.clear();
        assert!(
            r.args(&config()).is_err(),
            "an empty entrypoint drops Cmd too"
        );
        let env = r.environment(&config(), "h", "/root").unwrap();
        assert_eq!(
            env,
            [
                "PATH=/img/bin",
                "HOSTNAME=h",
                "A=given",
                "B=b",
                "HOME=/root"
            ]
        );
        r.env = vec!["=x".into()];
        assert!(r.environment(&config(), "h", "/").is_err());
    }

    #[test]
    fn sizes_and_signals_parse() {
        assert_eq!(parse_size("512M"), Ok(512 << 20));
        assert_eq!(parse_size("10g"), Ok(10 << 30));
        assert!(parse_size("lots").is_err());
        assert_eq!(parse_signal("SIGTERM"), Some(libc::SIGTERM));
        assert_eq!(parse_signal("kill"), Some(libc::SIGKILL));
        assert_eq!(parse_signal("9"), Some(9));
        assert_eq!(parse_signal("99"), None);
    }
}
