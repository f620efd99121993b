//! Containers from OCI bundles, the way runc runs them: the engine half of
//! `skiff-oci`, the runc-compatible runtime command that Podman (through
//! conmon), containerd's runc shim and skiff's own shim call.
//!
//! runc's model, not skiff's supervised one: `create` makes the container
//! (its init waits, not started, on `ROOT/ID/exec.fifo`) and returns; the
//! caller's subreaper becomes the init's parent and reaps it; `start`
//! opens the FIFO. State lives in `ROOT/ID/state.json` (root-only), with
//! a copy of the bundle's `config.json` taken at create.
//!
//! It must be called from a single-threaded process: the namespace
//! sandbox clones its init from it.

mod exec;
mod features;
mod lifecycle;
mod pod;
mod supervised;

pub use exec::{ExecOptions, ExecOutcome};
pub use features::features;
pub use lifecycle::CreateOptions;
pub use skiff_sandbox::Stats;
pub use supervised::{supervisor_main, SUPERVISOR_ARG};

use std::path::{Path, PathBuf};

use oci_spec::runtime::Spec;
use serde::{Deserialize, Serialize};
use skiff_sandbox::hooks;

use crate::error::{EngineError, IoContext, Result};

/// runc's default is `/run/runc`; skiff's runtime keeps its own.
pub const DEFAULT_ROOT: &str = "/run/skiff-oci";

/// The sandbox kinds a container can be created in, by the names a
/// shim's handler config or annotation gives. The VM and Wasm kinds of
/// later issues join here.
pub const SANDBOX_KINDS: &[&str] = &["namespace", "vm", "wasm"];

/// The spec annotation that names a container's sandbox kind (one of
/// [`SANDBOX_KINDS`]), for callers that do not pin one (`skiff-oci` under
/// Podman, a shim whose handler names no kind).
pub const SANDBOX_ANNOTATION: &str = "io.skiff.sandbox";

/// Whether a spec's annotations carry crun's Wasm annotations
/// (`module.wasm.image/variant=compat`, `run.oci.handler=wasm`).
pub fn asks_for_wasm(annotations: Option<&serde_json::Value>) -> bool {
    skiff_sandbox::ImageFacts {
        annotations: annotations
            .and_then(|a| serde_json::from_value(a.clone()).ok())
            .unwrap_or_default(),
        ..Default::default()
    }
    .asks_for_wasm()
}

/// The kind a bundle's `config.json` asks for: [`SANDBOX_ANNOTATION`]'s;
/// else `wasm` for crun's Wasm annotations, or for a command that is a
/// WebAssembly module in the bundle's root; else none (the caller's
/// default).
pub fn bundle_sandbox(bundle: &Path) -> Option<String> {
    let bytes = std::fs::read(bundle.join("config.json")).ok()?;
    let spec: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    let annotations = spec.get("annotations");
    if let Some(kind) = annotations
        .and_then(|a| a.get(SANDBOX_ANNOTATION))
        .and_then(|v| v.as_str())
    {
        return Some(kind.to_string());
    }
    // crun's Wasm annotations, as Podman copies them from the image.
    if asks_for_wasm(annotations) {
        return Some("wasm".into());
    }
    // A module as the command, as runwasi decides.
    let args0 = spec.pointer("/process/args/0")?.as_str()?;
    let cwd = spec
        .pointer("/process/cwd")
        .and_then(|v| v.as_str())
        .unwrap_or("/");
    let root = Path::new(spec.pointer("/root/path")?.as_str()?);
    let root = bundle.join(root);
    let module = skiff_wasm::module_path(&[args0.to_string()], Path::new(cwd)).ok()?;
    skiff_wasm::is_module(&root, &module).then(|| "wasm".to_string())
}

/// Whether container cgroups are on the unified (v2) hierarchy here, which
/// decides the metrics' type (cgroups v1 or v2) a shim reports.
pub fn unified_cgroups() -> bool {
    skiff_sandbox::device_filter::unified_host()
}

/// A module in the node's Wasm pool, from [`OciRuntime::prepare_pooled_module`].
pub struct PooledModule {
    sandbox: Box<dyn skiff_sandbox::Sandbox>,
}

/// Sends a signal to a pooled module, from any thread.
pub type PooledSignal = std::sync::Arc<dyn Fn(i32) -> Result<()> + Send + Sync>;

impl PooledModule {
    /// What stands for its pid (it has no process of its own).
    pub fn pid(&self) -> i32 {
        self.sandbox.pid()
    }

    /// Starts the module.
    pub fn start(&mut self) -> Result<()> {
        Ok(self.sandbox.start()?)
    }

    /// Its signals, once started.
    pub fn signal_handle(&self) -> PooledSignal {
        let handle = self.sandbox.signal_handle();
        std::sync::Arc::new(move |signal| Ok(handle(signal)?))
    }

    /// Waits for its end: the exit status (128 + a signal's number).
    pub fn wait(&mut self) -> Result<i32> {
        Ok(self.sandbox.wait()?.code())
    }

    /// Lets it go (a module still running is stopped by the pool).
    pub fn delete(&mut self) {
        let _ = self.sandbox.delete();
    }
}

/// The runtime command over one state directory (`--root`).
pub struct OciRuntime {
    root: PathBuf,
}

/// What `ROOT/ID/state.json` keeps.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ContainerState {
    pub id: String,
    /// The bundle's absolute path.
    pub bundle: PathBuf,
    /// The root filesystem, absolute.
    pub rootfs: PathBuf,
    /// The init as the host sees it.
    pub pid: i32,
    /// Its start time (see [`crate::record::process_start_time`]), so a
    /// reused pid is never taken for the container.
    pub pid_start: Option<u64>,
    /// RFC 3339, UTC.
    pub created: String,
    pub cgroups_path: String,
    /// The sandbox kind that runs it.
    pub sandbox: String,
    /// Set once `start` has run (or the init is gone).
    #[serde(default)]
    pub started: bool,
    /// Whether it runs under a supervisor of its own, which `pid` then is
    /// (see `supervised`): its kind signals through its supervisor (a VM,
    /// a module in the Wasm pool).
    #[serde(default)]
    pub supervised: bool,
}

impl ContainerState {
    /// Whether it runs under a supervisor of its own; a VM's state from
    /// before the field was kept says so by its kind.
    fn supervised(&self) -> bool {
        self.supervised || self.sandbox == "vm"
    }
}

/// The runtime spec's status of a container.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Created,
    Running,
    Paused,
    Stopped,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Created => "created",
            Status::Running => "running",
            Status::Paused => "paused",
            Status::Stopped => "stopped",
        }
    }
}

/// `state`'s output: the runtime spec's state plus runc's extra fields,
/// which go-runc (containerd's client) and Podman read.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StateReport {
    #[serde(rename = "ociVersion")]
    pub oci_version: String,
    pub id: String,
    pub pid: i32,
    pub status: String,
    pub bundle: String,
    pub rootfs: String,
    pub created: String,
    #[serde(default)]
    pub owner: String,
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub annotations: std::collections::BTreeMap<String, String>,
}

impl OciRuntime {
    /// The runtime over `root`, made root-only (0700) if it is new.
    pub fn new(root: &Path) -> Result<Self> {
        std::fs::create_dir_all(root).ctx(|| format!("creating {}", root.display()))?;
        crate::root_dir::make_private(root)
            .ctx(|| format!("making {} root-only", root.display()))?;
        Ok(OciRuntime {
            root: root.to_path_buf(),
        })
    }

    /// A container whose module runs in the node's Wasm pool, held by the
    /// caller rather than a supervisor process: the shim keeps many in one
    /// process this way. `None` when its spec asks what the pool cannot
    /// give (a terminal, a user, a CPU quota): the caller creates it as
    /// usual then. `stdio` gives its stdin, stdout and stderr (pipes,
    /// FIFOs or files), asked only once it is pooled.
    pub fn prepare_pooled_module(
        &self,
        id: &str,
        bundle: &Path,
        stdio: impl FnOnce() -> Result<[std::os::fd::OwnedFd; 3]>,
    ) -> Result<Option<PooledModule>> {
        check_id(id)?;
        let config = bundle.join("config.json");
        let bytes = std::fs::read(&config).ctx(|| format!("reading {}", config.display()))?;
        let spec = parse_spec(&bytes, &config)?;
        let terminal = spec
            .process()
            .as_ref()
            .and_then(|p| p.terminal())
            .unwrap_or(false);
        let kind = skiff_wasm::WasmKind::new(
            &crate::config::asset_cache(),
            &self.root.join(".wasm"),
            &self.root.join(".seccomp"),
        );
        if terminal || !kind.pools(&spec) {
            return Ok(None);
        }
        let [stdin, stdout, stderr] = stdio()?;
        let sandbox = skiff_sandbox::SandboxKind::prepare(
            &kind,
            skiff_sandbox::Prepare {
                id,
                spec: &spec,
                bundle,
                stdio: skiff_sandbox::Stdio::Files {
                    stdin,
                    stdout,
                    stderr,
                },
                lifecycle: skiff_sandbox::Lifecycle::Supervised,
                block_device: None,
                pod: None,
            },
        )?;
        Ok(Some(PooledModule { sandbox }))
    }

    /// The sandbox kind `name` (one of [`SANDBOX_KINDS`]).
    pub fn sandbox_kind(&self, name: &str) -> Result<Box<dyn skiff_sandbox::SandboxKind>> {
        match name {
            "namespace" => Ok(Box::new(skiff_sandbox::NamespaceKind::new(
                &self.root.join(".seccomp"),
            ))),
            "vm" => Ok(Box::new(skiff_vm::VmKind::new(
                &crate::config::asset_cache(),
                &self.root.join(".vm"),
                &self.root.join(".seccomp"),
            ))),
            "wasm" => Ok(Box::new(skiff_wasm::WasmKind::new(
                &crate::config::asset_cache(),
                &self.root.join(".wasm"),
                &self.root.join(".seccomp"),
            ))),
            other => Err(EngineError::Invalid(format!(
                "unknown sandbox kind {other:?}; skiff's runtime has: {}",
                SANDBOX_KINDS.join(", ")
            ))),
        }
    }

    fn dir(&self, id: &str) -> PathBuf {
        self.root.join(id)
    }

    fn fifo(&self, id: &str) -> PathBuf {
        self.dir(id).join("exec.fifo")
    }

    /// The container `id`'s state, or NotFound in runc's words (containerd
    /// and Podman match "does not exist").
    pub fn load(&self, id: &str) -> Result<ContainerState> {
        check_id(id)?;
        let path = self.dir(id).join("state.json");
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(EngineError::NotFound(format!(
                    "container {id} does not exist"
                )))
            }
            Err(e) => return Err(EngineError::io(format!("reading {}", path.display()), e)),
        };
        serde_json::from_slice(&bytes).map_err(|e| {
            EngineError::Invalid(format!(
                "{} is damaged ({e}); remove it with `delete --force {id}`",
                path.display()
            ))
        })
    }

    fn save(&self, state: &ContainerState) -> Result<()> {
        let path = self.dir(&state.id).join("state.json");
        let bytes = serde_json::to_vec(state).map_err(|e| EngineError::Invalid(e.to_string()))?;
        crate::record::write_atomically(&path, &bytes)
    }

    /// The spec the container was created from (copied at create).
    pub fn spec(&self, id: &str) -> Result<Spec> {
        let path = self.dir(id).join("config.json");
        let bytes = std::fs::read(&path).ctx(|| format!("reading {}", path.display()))?;
        parse_spec(&bytes, &path)
    }

    /// Whether the init of `state` is alive (not a zombie, not a reused pid).
    fn alive(state: &ContainerState) -> bool {
        state.pid > 0
            && crate::record::process_start_time(state.pid)
                .is_some_and(|t| Some(t) == state.pid_start)
    }

    pub fn status(&self, state: &ContainerState) -> Status {
        if !Self::alive(state) {
            return Status::Stopped;
        }
        if skiff_sandbox::cgroups::is_frozen(&state.cgroups_path) {
            return Status::Paused;
        }
        if !state.started && self.fifo(&state.id).exists() {
            return Status::Created;
        }
        Status::Running
    }

    /// `state ID`.
    pub fn state(&self, id: &str) -> Result<StateReport> {
        let state = self.load(id)?;
        let status = self.status(&state);
        let annotations = self
            .spec(id)
            .ok()
            .and_then(|s| s.annotations().clone())
            .map(|a| a.into_iter().collect())
            .unwrap_or_default();
        Ok(StateReport {
            oci_version: hooks::OCI_VERSION.into(),
            id: state.id.clone(),
            pid: if status == Status::Stopped {
                0
            } else {
                state.pid
            },
            status: status.as_str().into(),
            bundle: state.bundle.to_string_lossy().into_owned(),
            rootfs: state.rootfs.to_string_lossy().into_owned(),
            created: state.created.clone(),
            owner: String::new(),
            annotations,
        })
    }

    /// `list`: every container, by ID.
    pub fn list(&self) -> Result<Vec<StateReport>> {
        let mut out = Vec::new();
        let entries =
            std::fs::read_dir(&self.root).ctx(|| format!("listing {}", self.root.display()))?;
        for e in entries.flatten() {
            let id = e.file_name().to_string_lossy().into_owned();
            if e.path().join("state.json").exists() {
                match self.state(&id) {
                    Ok(s) => out.push(s),
                    Err(err) => tracing::warn!(%id, "skipping: {err}"),
                }
            }
        }
        out.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(out)
    }

    /// `ps`: the pids of the container's processes.
    pub fn pids(&self, id: &str) -> Result<Vec<i32>> {
        let state = self.load(id)?;
        if self.status(&state) == Status::Stopped {
            return Ok(Vec::new());
        }
        Ok(skiff_sandbox::cgroups::procs(&state.cgroups_path)?)
    }

    /// `pause` / `resume`: the cgroup freezer.
    pub fn set_paused(&self, id: &str, paused: bool) -> Result<()> {
        let state = self.load(id)?;
        match (self.status(&state), paused) {
            (Status::Running, true) | (Status::Paused, false) => {}
            (Status::Created, true) | (Status::Stopped, _) => {
                return Err(EngineError::Conflict(format!(
                    "container {id} is not running"
                )))
            }
            (Status::Paused, true) => {
                return Err(EngineError::Conflict(format!(
                    "container {id} is already paused"
                )))
            }
            (_, false) => {
                return Err(EngineError::Conflict(format!(
                    "container {id} is not paused"
                )))
            }
        }
        Ok(skiff_sandbox::cgroups::freeze(&state.cgroups_path, paused)?)
    }

    /// `update`: new cgroup limits for a container that has not stopped.
    pub fn update(&self, id: &str, resources: &oci_spec::runtime::LinuxResources) -> Result<()> {
        let state = self.load(id)?;
        if self.status(&state) == Status::Stopped {
            return Err(EngineError::Conflict(format!("container {id} is stopped")));
        }
        Ok(skiff_sandbox::cgroups::update(
            &state.cgroups_path,
            resources,
        )?)
    }

    /// What the container uses now (for a shim's Stats): its kind reads
    /// it, from the host's cgroup, or from the guest where a pod's VM
    /// holds the container.
    pub fn stats(&self, id: &str) -> Result<skiff_sandbox::Stats> {
        let state = self.load(id)?;
        let kind = self.sandbox_kind(&state.sandbox)?;
        let spec = self.spec(id)?;
        let place = self.pod_place(id, &spec)?;
        let dir = self.dir(id);
        let running = skiff_sandbox::Running {
            pid: state.pid,
            spec: &spec,
            bundle: &dir,
            pod: place.as_ref().map(|p| p.role()),
        };
        Ok(kind.running_stats(running, &state.cgroups_path)?)
    }
}

/// runc's rule for IDs: letters, digits, `_+-.`, and not `.` or `..`.
pub fn check_id(id: &str) -> Result<()> {
    let ok = !id.is_empty()
        && id.len() <= 1024
        && id != "."
        && id != ".."
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_+-.".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(EngineError::Invalid(format!(
            "invalid container ID {id:?}: use letters, digits and _+-."
        )))
    }
}

/// A `config.json`, with an error that names the field at fault.
pub fn parse_spec(bytes: &[u8], path: &Path) -> Result<Spec> {
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize::<_, Spec>(de).map_err(|e| {
        let field = e.path().to_string();
        EngineError::Invalid(format!(
            "{}: {} {}; fix config.json",
            path.display(),
            if field == "." {
                "is not a runtime spec:".to_string()
            } else {
                format!("field {field}:")
            },
            e.inner()
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_config_names_its_field() {
        let e = parse_spec(
            br#"{"ociVersion":"1.0.2","process":{"user":{"uid":"zero","gid":0},"cwd":"/"},"root":{"path":"rootfs"}}"#,
            Path::new("/b/config.json"),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("process.user.uid"), "{e}");
        let e = parse_spec(b"{not json", Path::new("/b/config.json"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("/b/config.json"), "{e}");
    }

    #[test]
    fn ids_follow_runcs_rule() {
        assert!(check_id("abc-1.2_3+x").is_ok());
        for bad in ["", ".", "..", "a/b", "a b", "../x"] {
            assert!(check_id(bad).is_err(), "{bad:?}");
        }
    }
}
