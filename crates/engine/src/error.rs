//! The engine's errors, by kind, so that each front end can map them: the
//! CLI to exit codes, a shim to gRPC codes. Each carries a message that
//! names the thing and the fix.

use skiff_oci::OciError;
use skiff_sandbox::SandboxError;
use skiff_store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The request is wrong (an option, a name, a value); nothing changed.
    #[error("{0}")]
    Invalid(String),
    /// No such container, image or mount.
    #[error("{0}")]
    NotFound(String),
    /// The thing exists, or is in a state that forbids this (a container
    /// that is running, a name that is taken).
    #[error("{0}")]
    Conflict(String),
    /// A registry, layout or archive failed or refused.
    #[error("{context}: {source}")]
    Oci {
        context: String,
        #[source]
        source: OciError,
    },
    /// Opening, verifying or reading an image failed.
    #[error("{context}: {source}")]
    Store {
        context: String,
        #[source]
        source: StoreError,
    },
    /// Converting an image on the node failed.
    #[error("{context}: {source}")]
    Convert {
        context: String,
        #[source]
        source: skiff_builder::BuildError,
    },
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    /// The sandbox could not create, start or run the container.
    #[error(transparent)]
    Sandbox(#[from] SandboxError),
    /// A helper process (a mount daemon, a container supervisor) failed
    /// before it was ready; the message quotes its log.
    #[error("{0}")]
    Helper(String),
    /// An error, and another while cleaning up after it: both are kept.
    #[error("{error}; cleaning up after it also failed: {cleanup}")]
    WithCleanup {
        error: Box<EngineError>,
        cleanup: Box<EngineError>,
    },
}

pub type Result<T, E = EngineError> = std::result::Result<T, E>;

impl EngineError {
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        EngineError::Io {
            context: context.into(),
            source,
        }
    }

    pub(crate) fn oci(context: impl Into<String>) -> impl FnOnce(OciError) -> Self {
        let context = context.into();
        move |source| EngineError::Oci { context, source }
    }

    pub(crate) fn store(context: impl Into<String>) -> impl FnOnce(StoreError) -> Self {
        let context = context.into();
        move |source| EngineError::Store { context, source }
    }

    /// Whether stored or fetched bytes did not match their digests.
    pub fn is_verification_failure(&self) -> bool {
        match self {
            EngineError::Oci { source, .. } => source.is_verification_failure(),
            EngineError::Store { source, .. } => source.is_verification_failure(),
            EngineError::Convert { source, .. } => source.is_verification_failure(),
            EngineError::Io { source, .. } => skiff_oci::error::io_is_verification_failure(source),
            EngineError::WithCleanup { error, .. } => error.is_verification_failure(),
            _ => false,
        }
    }

    /// The sandbox's error, if that is what this is (the first error, when
    /// a cleanup failed too).
    pub fn as_sandbox(&self) -> Option<&SandboxError> {
        match self {
            EngineError::Sandbox(s) => Some(s),
            EngineError::WithCleanup { error, .. } => error.as_sandbox(),
            _ => None,
        }
    }

    /// Adds a cleanup failure to this error.
    pub fn with_cleanup(self, cleanup: Option<EngineError>) -> Self {
        match cleanup {
            None => self,
            Some(c) => EngineError::WithCleanup {
                error: Box::new(self),
                cleanup: Box::new(c),
            },
        }
    }
}

/// `io::Result` into the engine's, with a context.
pub(crate) trait IoContext<T> {
    fn ctx(self, context: impl FnOnce() -> String) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn ctx(self, context: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|e| EngineError::io(context(), e))
    }
}
