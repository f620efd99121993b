//! skiff's sandboxes: the one [`Sandbox`] trait every kind implements, and
//! what the kinds share (the OCI runtime spec skiff generates with Docker's
//! defaults, the overlay root, stdio relays, resource limits); and the
//! first kind, Linux namespaces (cgroups, the init process, seccomp).

pub mod capabilities;
pub mod cgroups;
pub mod device_filter;
pub mod elf;
pub mod hooks;
mod init;
pub mod kind;
pub mod layer_fs;
pub mod namespace;
pub mod process;
pub mod relay;
pub mod rlimits;
pub mod rootfs;
pub mod seccomp;
pub mod seccomp_filter;
pub mod spec;
pub mod user;

pub use kind::{
    ExecProcess, ExecStart, ImageFacts, Lifecycle, PodRole, Prepare, RootKind, Running, Sandbox,
    SandboxKind, SignalHandle, Stats, Stdio,
};
pub use namespace::{NamespaceKind, NamespaceSandbox};
pub use process::Exit;
pub use spec::{ContainerSpec, IdMap, Network, ProcessUser, Resources, Volume};

/// Errors from setting up or running a container, by kind, so that a
/// front end can map them (the CLI to exit codes, a shim to gRPC codes).
/// Each names what failed and, where it can, the fix.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// The spec or an option asks for something wrong: a bad value, a user
    /// the image lacks, a hostile path in the image. Fix the request or the
    /// image (gRPC InvalidArgument).
    #[error("{0}")]
    Invalid(String),
    /// This host cannot do what is asked: a cgroup controller, a loop
    /// device or a kernel feature it lacks (gRPC FailedPrecondition).
    #[error("{0}")]
    Unsupported(String),
    /// Setting up or running the container failed: a step the kernel
    /// refused, the init's report (gRPC Internal).
    #[error("{0}")]
    Setup(String),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    /// The command does not exist in the image (Docker's exit code 127).
    #[error("{0}")]
    NotFound(String),
    /// The command exists but cannot be run (Docker's exit code 126).
    #[error("{0}")]
    NotExecutable(String),
}

impl SandboxError {
    pub(crate) fn io(context: String, source: std::io::Error) -> Self {
        SandboxError::Io { context, source }
    }
}
