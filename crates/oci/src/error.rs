use std::io;

use thiserror::Error;

/// Errors from talking to registries and reading image layouts. Each message
/// names the thing involved; where there is an obvious fix, it says it.
#[derive(Debug, Error)]
pub enum OciError {
    #[error("invalid image reference {reference:?}: {reason}")]
    InvalidReference { reference: String, reason: String },
    #[error("{what} not found{}", hint.as_deref().map(|h| format!(" ({h})")).unwrap_or_default())]
    NotFound { what: String, hint: Option<String> },
    #[error("{registry} refused access to {what}: check credentials in ~/.docker/config.json (or run `docker login {registry}`)")]
    Unauthorized { registry: String, what: String },
    #[error("{method} {url} failed with HTTP {status}: {body}")]
    Http {
        method: &'static str,
        url: String,
        status: u16,
        body: String,
    },
    /// The registry is not there at all (nothing listens, the name does
    /// not resolve): reported after a second or two, not retried for long.
    #[error("cannot reach the registry {registry}: {reason}; {hint}")]
    Unreachable {
        registry: String,
        reason: String,
        hint: String,
    },
    #[error("cannot reach {url}: {source}")]
    Network {
        url: String,
        #[source]
        source: Box<ureq::Error>,
    },
    #[error("{what} is corrupt: expected digest {expected}, got {actual}")]
    DigestMismatch {
        what: String,
        expected: String,
        actual: String,
    },
    #[error("{what} is {actual} bytes, its descriptor says {expected}")]
    SizeMismatch {
        what: String,
        expected: u64,
        actual: u64,
    },
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
    #[error("{context} is not valid JSON: {source}")]
    Json {
        context: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("{0}")]
    Unsupported(String),
}

pub type Result<T, E = OciError> = std::result::Result<T, E>;

impl OciError {
    /// Whether this means stored bytes do not match their digest or size.
    pub fn is_verification_failure(&self) -> bool {
        match self {
            OciError::DigestMismatch { .. } | OciError::SizeMismatch { .. } => true,
            OciError::Io { source, .. } => io_is_verification_failure(source),
            _ => false,
        }
    }
}

/// Whether an I/O error carries a verification failure (as the verifying
/// blob reader reports them).
pub fn io_is_verification_failure(e: &io::Error) -> bool {
    e.get_ref()
        .and_then(|inner| inner.downcast_ref::<OciError>())
        .is_some_and(OciError::is_verification_failure)
}

pub(crate) trait IoContext<T> {
    fn context(self, what: impl FnOnce() -> String) -> Result<T>;
}

impl<T> IoContext<T> for io::Result<T> {
    fn context(self, what: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|source| OciError::Io {
            context: what(),
            source,
        })
    }
}

impl From<OciError> for io::Error {
    fn from(e: OciError) -> Self {
        match e {
            OciError::Io { source, .. } => source,
            other => io::Error::other(other),
        }
    }
}
