//! The one interface every kind of sandbox implements: Linux namespaces
//! ([`crate::namespace`]) now; a lightweight VM and WebAssembly next. The
//! engine picks a [`SandboxKind`] per container and drives the
//! [`Sandbox`] it prepares, never knowing which kind it is.

use std::os::fd::OwnedFd;
use std::path::Path;

use oci_spec::runtime::Spec;

use crate::{Exit, SandboxError};

/// How the container's standard streams are wired.
pub enum Stdio {
    /// Give the container these three descriptors as they are: for callers
    /// that made pipes for it themselves. Anything else (a terminal, a
    /// file) would let the container at the host's open file.
    Files {
        stdin: OwnedFd,
        stdout: OwnedFd,
        stderr: OwnedFd,
    },
    /// Pipes that skiff copies from `stdin` (`None`: the container reads
    /// /dev/null) and to `stdout` and `stderr` (see [`crate::relay`]).
    Relay {
        stdin: Option<OwnedFd>,
        stdout: OwnedFd,
        stderr: OwnedFd,
        /// Also given what the container writes, as it passes (a log).
        tap: Option<std::sync::Arc<dyn crate::relay::OutputTap>>,
    },
    /// A new pseudo-terminal; its master side is [`Sandbox::take_console`].
    Terminal,
}

/// What a kind is told about an image to say whether it can run it.
#[derive(Debug, Clone, Default)]
pub struct ImageFacts {
    /// The image's `os` (`linux`, `wasi`...); empty if it names none.
    pub os: String,
    /// The image's `architecture` (`amd64`, `wasm`...).
    pub architecture: String,
    /// The image manifest's annotations.
    pub annotations: std::collections::BTreeMap<String, String>,
}

impl ImageFacts {
    /// Whether the image asks for a Wasm runtime by annotation, as crun
    /// reads it: `module.wasm.image/variant` `compat` (or `compat-smart`),
    /// or `run.oci.handler` `wasm`; its platform may still say `linux`.
    pub fn asks_for_wasm(&self) -> bool {
        let is = |k: &str, vs: &[&str]| {
            self.annotations
                .get(k)
                .is_some_and(|v| vs.contains(&v.as_str()))
        };
        is("module.wasm.image/variant", &["compat", "compat-smart"])
            || is("run.oci.handler", &["wasm"])
    }
}

/// Who the container's init belongs to.
pub enum Lifecycle {
    /// The caller is its parent for its whole life: it starts it through
    /// [`Sandbox::start`], and the container dies with it (`skiff run`'s
    /// supervisor).
    Supervised,
    /// runc's model, for the OCI runtime command: the caller may exit once
    /// the container is created, and the init, which outlives it (its
    /// caller's subreaper reaps it), waits until `start_fifo` (a FIFO,
    /// opened `O_PATH`) is opened for reading. [`Sandbox::start`] is not
    /// used.
    Detached {
        start_fifo: OwnedFd,
        /// Move the root over `/` and chroot instead of `pivot_root`.
        no_pivot: bool,
    },
}

/// A container to prepare.
pub struct Prepare<'a> {
    /// Its ID, as the runtime spec's state (and so its hooks) names it.
    pub id: &'a str,
    /// The OCI runtime spec, in memory.
    pub spec: &'a Spec,
    /// Where relative paths in the spec (the root) are taken from.
    pub bundle: &'a Path,
    pub stdio: Stdio,
    pub lifecycle: Lifecycle,
    /// The image as a block device (an NBD server's unix socket), for a
    /// kind whose [`SandboxKind::root`] is [`RootKind::BlockDevice`].
    pub block_device: Option<&'a Path>,
    /// Its part in a pod (a CRI sandbox and its containers), for a kind
    /// that holds a pod in one sandbox (a VM); the namespace kind joins
    /// the namespaces the spec names instead.
    pub pod: Option<PodRole<'a>>,
}

/// A container's part in a pod, as the engine found it.
#[derive(Debug, Clone, Copy)]
pub enum PodRole<'a> {
    /// The pod's sandbox (its pause container): its sandbox holds the
    /// pod. `share` is a directory, root's alone, that the kind may share
    /// with it whole (its later containers' roots are bound in there).
    Sandbox { share: &'a Path },
    /// An app container of the pod whose sandbox container's state is in
    /// `sandbox` (where its supervisor's sockets are), with `share` its
    /// share directory. The container runs inside that sandbox, known
    /// there as `name` (its ID).
    Member {
        sandbox: &'a Path,
        share: &'a Path,
        name: &'a str,
    },
}

/// What a kind runs the container's root from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RootKind {
    /// The spec's `root.path`, a directory on the host (the image mount
    /// under an overlay).
    Directory,
    /// The image as a read-only block device ([`Prepare::block_device`]);
    /// the kind makes its own writable layer (a VM's guest).
    BlockDevice,
}

/// A running container to enter.
pub struct Running<'a> {
    /// Its first process, as the host sees it.
    pub pid: i32,
    /// The spec it was created from.
    pub spec: &'a Spec,
    pub bundle: &'a Path,
    /// Its part in a pod, as at its [`Prepare`].
    pub pod: Option<PodRole<'a>>,
}

/// A process to start in a running container.
pub struct ExecStart<'a> {
    /// Its command, environment, working directory, user, capabilities,
    /// terminal, as the spec's `process` says them.
    pub process: &'a oci_spec::runtime::Process,
    pub stdio: Stdio,
    /// The process outlives its caller (`exec --detach` of the OCI
    /// runtime command); otherwise it dies with it.
    pub detached: bool,
}

/// A process started in a running container.
pub trait ExecProcess: Send {
    /// As the host sees it.
    fn pid(&self) -> i32;
    fn take_console(&mut self) -> Option<OwnedFd>;
    fn signal_handle(&self) -> SignalHandle;
    /// Waits until it has exited.
    fn wait(&mut self) -> Result<Exit, SandboxError>;
    /// Under [`Stdio::Relay`], copies the rest of its output.
    fn finish_output(&mut self);
}

/// A container's resource use, read from its sandbox.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Stats {
    /// Memory in use, in bytes (page cache included, as the kernel counts).
    pub memory_bytes: Option<u64>,
    /// The memory limit, if there is one.
    pub memory_limit_bytes: Option<u64>,
    /// CPU time used, in nanoseconds.
    pub cpu_nanos: Option<u64>,
    /// Processes (tasks) in it now.
    pub pids: Option<u64>,
}

/// One kind of sandbox.
pub trait SandboxKind: Send + Sync {
    /// Its name, as `--sandbox` and a RuntimeClass handler give it.
    fn name(&self) -> &'static str;

    /// Whether it can run an image with these facts.
    fn can_handle(&self, image: &ImageFacts) -> bool;

    /// Whether it runs an image with these facts when the user names this
    /// kind (`--sandbox`); by default, the same as [`SandboxKind::can_handle`].
    /// The Wasm kind runs any image whose command is a module.
    fn can_run_when_named(&self, image: &ImageFacts) -> bool {
        self.can_handle(image)
    }

    /// What it runs the container's root from.
    fn root(&self) -> RootKind {
        RootKind::Directory
    }

    /// Whether a signal for the container must go through its supervisor
    /// (the sandbox's [`SignalHandle`]) rather than to its pid: a VM's pid
    /// is its hypervisor, which a signal would end.
    fn signals_through_supervisor(&self) -> bool {
        false
    }

    /// Whether the runtime command runs a container of this spec under a
    /// supervisor of its own (its pid is then the supervisor's): by
    /// default, where signals go through one. The Wasm kind runs a pod's
    /// pause container as a plain process.
    fn runs_under_supervisor(&self, spec: &Spec) -> bool {
        let _ = spec;
        self.signals_through_supervisor()
    }

    /// Whether a container of this spec needs a root of its own over the
    /// image (the writable layer, the files skiff writes into `/etc`); a
    /// kind that only reads the image's tree (a module in the Wasm pool)
    /// is given the tree itself, and saves the overlay's mount.
    fn writes_its_root(&self, spec: &Spec) -> bool {
        let _ = spec;
        true
    }

    /// Whether a `-v` without `:ro` or `:rw` is read-only (a VM shares a
    /// host directory with another kernel; Docker's default is `rw`).
    fn volumes_read_only_by_default(&self) -> bool {
        false
    }

    /// Creates the container's sandbox from `container`: after this the
    /// container exists but its command has not started. The calling
    /// process must be single-threaded where a kind says so (the
    /// namespace kind clones its init from it).
    fn prepare(&self, container: Prepare<'_>) -> Result<Box<dyn Sandbox>, SandboxError>;

    /// Starts another process in a running container (`skiff exec`): in
    /// all its namespaces and its cgroup, with the capabilities, seccomp
    /// policy and user `start.process` gives. The calling process must be
    /// single-threaded where a kind says so (the namespace kind forks from
    /// it).
    fn exec(
        &self,
        container: Running<'_>,
        start: ExecStart<'_>,
    ) -> Result<Box<dyn ExecProcess>, SandboxError>;

    /// Removes what a sandbox of this kind may have left on the host when
    /// its supervisor died: processes and cgroups (namespaces), a VM.
    /// `cgroups_path` is the spec's `linux.cgroupsPath`.
    fn remove_leftovers(&self, cgroups_path: &str) -> Result<(), SandboxError>;

    /// What a running container of this kind uses now, read from the host
    /// (any process may ask, not only its supervisor). `cgroups_path` is
    /// the spec's `linux.cgroupsPath`.
    fn stats(&self, cgroups_path: &str) -> Result<Stats, SandboxError>;

    /// The same, knowing where the container runs: a kind that holds a
    /// pod's containers in one sandbox asks that sandbox for a member's.
    /// By default, [`SandboxKind::stats`].
    fn running_stats(
        &self,
        running: Running<'_>,
        cgroups_path: &str,
    ) -> Result<Stats, SandboxError> {
        let _ = running;
        self.stats(cgroups_path)
    }
}

/// Sends a signal to a container's first process, from any thread (a
/// supervisor's control socket, its signal forwarder).
pub type SignalHandle = std::sync::Arc<dyn Fn(i32) -> Result<(), SandboxError> + Send + Sync>;

/// A prepared or running container, in a sandbox of some kind.
pub trait Sandbox: Send {
    /// The container's first process as the host sees it.
    fn pid(&self) -> i32;

    /// The pty master under [`Stdio::Terminal`], once.
    fn take_console(&mut self) -> Option<OwnedFd>;

    /// Runs the container's command; returns once it runs, or why not.
    fn start(&mut self) -> Result<(), SandboxError>;

    /// Sends a signal to the container's first process.
    fn signal(&self, signal: i32) -> Result<(), SandboxError>;

    /// The same, as a handle other threads can keep.
    fn signal_handle(&self) -> SignalHandle;

    /// Waits until the container's first process has exited.
    fn wait(&mut self) -> Result<Exit, SandboxError>;

    /// Under [`Stdio::Relay`], copies the rest of the output; call it
    /// after [`Sandbox::wait`].
    fn finish_output(&mut self);

    /// Whether the kernel's OOM killer struck; read before
    /// [`Sandbox::delete`].
    fn oom_killed(&self) -> bool;

    /// What the container uses now.
    fn stats(&self) -> Result<Stats, SandboxError>;

    /// Frees what the sandbox holds (kills what is left of it).
    fn delete(&mut self) -> Result<(), SandboxError>;
}
