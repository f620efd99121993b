use skiff_format::FormatError;
use skiff_oci::OciError;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum StoreError {
    #[error(transparent)]
    Oci(#[from] OciError),
    #[error("{context}: {source}")]
    Format {
        context: String,
        #[source]
        source: FormatError,
    },
    #[error("{0} is not a skiff image (it has no {layer} layer); convert it first with `skiff convert`", layer = skiff_format::mediatype::METADATA_LAYER)]
    NotSkiff(String),
    #[error(
        "metadata of {image} does not match its root digest: expected {expected}, got {actual}"
    )]
    RootDigestMismatch {
        image: String,
        expected: String,
        actual: String,
    },
    #[error("chunk {index} ({digest}) in blob {blob} is corrupt: {reason}")]
    ChunkCorrupt {
        index: u32,
        digest: String,
        blob: String,
        reason: String,
    },
    #[error("{0}")]
    Invalid(String),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

impl StoreError {
    /// Whether this means stored bytes do not match their digests.
    pub fn is_verification_failure(&self) -> bool {
        match self {
            StoreError::ChunkCorrupt { .. } | StoreError::RootDigestMismatch { .. } => true,
            StoreError::Oci(o) => o.is_verification_failure(),
            StoreError::Io { source, .. } => skiff_oci::error::io_is_verification_failure(source),
            _ => false,
        }
    }
}

pub(crate) fn format_err(context: impl Into<String>) -> impl FnOnce(FormatError) -> StoreError {
    let context = context.into();
    move |source| StoreError::Format { context, source }
}
