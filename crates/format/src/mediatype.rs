//! OCI media types and annotation keys of a skiff image (see `docs/format.md`).

/// The metadata layer: one zstd frame holding the metadata file.
pub const METADATA_LAYER: &str = "application/vnd.skiff.metadata.v1+zstd";
/// A data blob layer: compressed chunks, chunk table, footer.
pub const BLOB_LAYER: &str = "application/vnd.skiff.blob.v1";

/// On the metadata layer: `ALG:HEX` digest of the uncompressed metadata.
pub const ANNOTATION_ROOT_DIGEST: &str = "dev.skiff.metadata.root-digest";
/// On the metadata layer: size of the uncompressed metadata in bytes.
pub const ANNOTATION_METADATA_SIZE: &str = "dev.skiff.metadata.size";
/// On the manifest: the format version, "1".
pub const ANNOTATION_FORMAT: &str = "dev.skiff.format";
/// On the manifest: digest of the OCI manifest this image was converted from.
pub const ANNOTATION_SOURCE: &str = "dev.skiff.source.digest";
/// On a blob layer: its chunk count.
pub const ANNOTATION_BLOB_CHUNKS: &str = "dev.skiff.blob.chunks";

pub const FORMAT_VERSION: &str = "1";
