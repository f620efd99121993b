//! skiff's sandboxes: the one [`Sandbox`] trait every kind implements, and
//! what the kinds share (the OCI runtime spec skiff generates with Docker's
//! defaults, the overlay root, stdio relays, resource limits); and the
//! first kind, Linux namespaces (cgroups, the init process, seccomp).

pub mod capabilities;
pub mod cgroups;
pub mod device_filter;
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

pub use kind::{ImageFacts, Prepare, Sandbox, SandboxKind, Stats, Stdio};
pub use namespace::{NamespaceKind, NamespaceSandbox};
pub use process::Exit;
pub use spec::{ContainerSpec, IdMap, Network, ProcessUser, Resources, Volume};

/// Errors from setting up or running a container. Each names what failed.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("{0}")]
    Config(String),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Runtime(String),
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
