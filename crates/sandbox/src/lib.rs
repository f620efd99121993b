//! skiff's Linux sandbox: the OCI runtime spec it generates (Docker's
//! defaults), the overlay root filesystem, and the container lifecycle on
//! youki's `libcontainer`.

pub mod cgroup_warmup;
pub mod container;
pub mod device_filter;
pub mod rootfs;
pub mod seccomp;
pub mod seccomp_filter;
pub mod spec;
pub mod user;
pub mod userns;

pub use container::{Exit, Sandbox, Stdio};
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
}

impl SandboxError {
    pub(crate) fn io(context: String, source: std::io::Error) -> Self {
        SandboxError::Io { context, source }
    }

    /// Maps a libcontainer error, keeping its whole chain in the message.
    pub(crate) fn runtime<E: std::error::Error>(what: &'static str) -> impl Fn(E) -> Self {
        move |e| {
            let mut msg = format!("{what}: {e}");
            let mut src = e.source();
            while let Some(s) = src {
                msg.push_str(&format!(": {s}"));
                src = s.source();
            }
            SandboxError::Runtime(msg)
        }
    }
}
