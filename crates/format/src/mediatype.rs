//! OCI media types and annotation keys of a skiff image (see `docs/format.md`).

/// The metadata layer: one zstd frame holding the metadata file. Under
/// `application/vnd.oci.image.layer.`, because containerd 1.6's unpacker
/// (the CRI's pull) treats only such media types as layers: it hands
/// their annotations to the snapshotter and lets it serve them, and
/// downloads anything else whole.
pub const METADATA_LAYER: &str = "application/vnd.oci.image.layer.skiff.metadata.v1.zstd";
/// A data blob layer: compressed chunks, chunk table, footer.
pub const BLOB_LAYER: &str = "application/vnd.oci.image.layer.skiff.blob.v1";
/// The media types skiff wrote before, still read.
pub const LEGACY_METADATA_LAYER: &str = "application/vnd.skiff.metadata.v1+zstd";
pub const LEGACY_BLOB_LAYER: &str = "application/vnd.skiff.blob.v1";

/// Whether a layer of this media type is a skiff metadata layer.
pub fn is_metadata_layer(media_type: &str) -> bool {
    media_type == METADATA_LAYER || media_type == LEGACY_METADATA_LAYER
}

/// Whether a layer of this media type is a skiff blob.
pub fn is_blob_layer(media_type: &str) -> bool {
    media_type == BLOB_LAYER || media_type == LEGACY_BLOB_LAYER
}

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

/// On every layer, for containerd: `blob` or `metadata`. containerd 1.6's
/// unpacker hands a layer's annotations under `containerd.io/snapshot/` to
/// the snapshotter's Prepare, whatever the client, and no others.
pub const ANNOTATION_SNAPSHOT_LAYER: &str = "containerd.io/snapshot/skiff.layer";
/// On the metadata layer, for containerd: the root digest again (the
/// snapshotter sees no `dev.skiff.` annotation).
pub const ANNOTATION_SNAPSHOT_ROOT_DIGEST: &str = "containerd.io/snapshot/skiff.root-digest";

pub const FORMAT_VERSION: &str = "1";
