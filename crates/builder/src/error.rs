use std::io;

use skiff_format::FormatError;
use skiff_oci::OciError;
use skiff_store::StoreError;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum BuildError {
    #[error(transparent)]
    Oci(#[from] OciError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("building metadata: {0}")]
    Format(#[from] FormatError),
    #[error("{layer}: entry {path:?} {reason}; the layer is malformed or hostile")]
    HostileLayer {
        layer: String,
        path: String,
        reason: String,
    },
    #[error("{layer} is truncated or corrupt: {source}")]
    LayerIo {
        layer: String,
        #[source]
        source: io::Error,
    },
    #[error("layer {digest} has media type {media_type}, which is not a filesystem layer")]
    NotALayer { digest: String, media_type: String },
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
    #[error("{0}")]
    Invalid(String),
}

pub type Result<T, E = BuildError> = std::result::Result<T, E>;

impl BuildError {
    /// Whether this means stored bytes do not match their digests.
    pub fn is_verification_failure(&self) -> bool {
        match self {
            BuildError::Oci(o) => o.is_verification_failure(),
            BuildError::Store(s) => s.is_verification_failure(),
            BuildError::LayerIo { source, .. } | BuildError::Io { source, .. } => {
                skiff_oci::error::io_is_verification_failure(source)
            }
            _ => false,
        }
    }

    pub(crate) fn layer_io(layer: &str, source: io::Error) -> Self {
        BuildError::LayerIo {
            layer: layer.to_string(),
            source,
        }
    }

    pub(crate) fn io(context: impl Into<String>) -> impl FnOnce(io::Error) -> Self {
        let context = context.into();
        move |source| BuildError::Io { context, source }
    }
}
