//! The snapshot labels skiff reads and writes. containerd 1.6 hands a
//! snapshotter only `containerd.io/snapshot.ref` and labels under
//! `containerd.io/snapshot/` (`snapshots.FilterInheritedLabels`); layer
//! annotations with that prefix arrive as labels through its unpacker.

pub use skiff_format::mediatype::{
    ANNOTATION_SNAPSHOT_LAYER as SKIFF_LAYER, ANNOTATION_SNAPSHOT_ROOT_DIGEST as SKIFF_ROOT_DIGEST,
};

/// The chain ID a Prepare of a layer unpacks to (containerd's unpacker).
pub const TARGET_REF: &str = "containerd.io/snapshot.ref";
/// Where the image was pulled from, set by `skiff snapshotter pull`.
pub const SKIFF_IMAGE_REF: &str = "containerd.io/snapshot/skiff.image-ref";
/// The manifest digest, set by `skiff snapshotter pull`.
pub const SKIFF_MANIFEST: &str = "containerd.io/snapshot/skiff.manifest-digest";
/// The CRI plugin's, with `disable_snapshot_annotations = false`.
pub const CRI_IMAGE_REF: &str = "containerd.io/snapshot/cri.image-ref";
pub const CRI_MANIFEST: &str = "containerd.io/snapshot/cri.manifest-digest";
pub const CRI_LAYER_DIGEST: &str = "containerd.io/snapshot/cri.layer-digest";
/// Set by skiff on a layer it serves itself: `blob` (never downloaded)
/// or `image` (the lazy, verified mount of the whole image).
pub const SKIFF_REMOTE: &str = "containerd.io/snapshot/skiff.remote";
/// Set by skiff on an ordinary layer, which containerd downloads and
/// unpacks: why it is not lazy.
pub const SKIFF_NOT_LAZY: &str = "containerd.io/snapshot/skiff.not-lazy";

/// What `skiff convert` says a layer is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SkiffLayer {
    Blob,
    Metadata,
}

impl SkiffLayer {
    pub fn of(labels: &std::collections::HashMap<String, String>) -> Option<Self> {
        match labels.get(SKIFF_LAYER).map(String::as_str) {
            Some("blob") => Some(SkiffLayer::Blob),
            Some("metadata") => Some(SkiffLayer::Metadata),
            _ => None,
        }
    }
}

/// The pinned reference a metadata layer's image is mounted from:
/// `REPO@MANIFEST`, from the pull helper's labels or else the CRI's.
/// `None` when the puller said nothing (plain `ctr image pull`).
pub fn image_reference(labels: &std::collections::HashMap<String, String>) -> Option<String> {
    let (reference, manifest) = match labels.get(SKIFF_IMAGE_REF) {
        Some(r) => (r, labels.get(SKIFF_MANIFEST)),
        None => (labels.get(CRI_IMAGE_REF)?, labels.get(CRI_MANIFEST)),
    };
    Some(pin(reference, manifest.map(String::as_str)))
}

/// `reference` pinned to `manifest`: a tag that moves later must not
/// change what a snapshot serves.
fn pin(reference: &str, manifest: Option<&str>) -> String {
    let Some(manifest) = manifest.filter(|m| skiff_oci::reference::valid_digest(m)) else {
        return reference.to_string();
    };
    let name = reference.split_once('@').map_or(reference, |(n, _)| n);
    format!("{name}@{manifest}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn the_reference_is_pinned_to_the_manifest() {
        let d = format!("sha256:{}", "a".repeat(64));
        let labels = HashMap::from([
            (
                CRI_IMAGE_REF.to_string(),
                "127.0.0.1:5000/py:3@sha256:old".to_string(),
            ),
            (CRI_MANIFEST.to_string(), d.clone()),
        ]);
        assert_eq!(
            image_reference(&labels).unwrap(),
            format!("127.0.0.1:5000/py:3@{d}")
        );
        let ours = HashMap::from([
            (SKIFF_IMAGE_REF.to_string(), "r/x:1".to_string()),
            (CRI_IMAGE_REF.to_string(), "other/y:2".to_string()),
        ]);
        assert_eq!(image_reference(&ours).unwrap(), "r/x:1");
        assert_eq!(image_reference(&HashMap::new()), None);
    }
}
