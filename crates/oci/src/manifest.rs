//! The few OCI document types skiff reads and writes: descriptors, image
//! manifests and indexes, in both OCI and Docker schema-2 spellings.
//!
//! Hand-written rather than `oci-spec`: skiff needs only these three types,
//! must accept Docker's media types beside OCI's, and must carry unknown
//! fields through a conversion untouched (config JSON stays a `Value`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::error::{OciError, Result};

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";

pub const OCI_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const OCI_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
pub const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
pub const DOCKER_LAYER_TAR: &str = "application/vnd.docker.image.rootfs.diff.tar";
pub const OCI_LAYER_NONDIST_GZIP: &str =
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip";
pub const DOCKER_FOREIGN_LAYER: &str = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip";

/// The `Accept` header for manifest requests.
pub const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
application/vnd.oci.image.manifest.v1+json, \
application/vnd.docker.distribution.manifest.list.v2+json, \
application/vnd.docker.distribution.manifest.v2+json";

pub const ANNOTATION_REF_NAME: &str = "org.opencontainers.image.ref.name";

/// How a filesystem layer's tar stream is compressed, judged by media type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayerCompression {
    None,
    Gzip,
    Zstd,
    /// Not a tar at all: one WebAssembly module, as the CNCF Wasm OCI
    /// artifact carries it (`application/wasm`); read as a layer holding
    /// that one file at [`WASM_ARTIFACT_MODULE`].
    WasmModule,
}

/// A layer of the CNCF Wasm OCI artifact: the module's bytes.
pub const WASM_LAYER: &str = "application/wasm";
/// The config media type of the CNCF Wasm OCI artifact.
pub const WASM_ARTIFACT_CONFIG: &str = "application/vnd.wasm.config.v0+json";
/// Where an artifact's module appears in the image's tree, and so its
/// entrypoint.
pub const WASM_ARTIFACT_MODULE: &str = "/module.wasm";

/// Classifies a layer media type; `None` if it is not a filesystem layer.
pub fn layer_compression(media_type: &str) -> Option<LayerCompression> {
    match media_type {
        OCI_LAYER_TAR
        | DOCKER_LAYER_TAR
        | "application/vnd.oci.image.layer.nondistributable.v1.tar" => Some(LayerCompression::None),
        OCI_LAYER_GZIP | DOCKER_LAYER_GZIP | OCI_LAYER_NONDIST_GZIP | DOCKER_FOREIGN_LAYER => {
            Some(LayerCompression::Gzip)
        }
        OCI_LAYER_ZSTD | "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd" => {
            Some(LayerCompression::Zstd)
        }
        WASM_LAYER => Some(LayerCompression::WasmModule),
        _ => None,
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Platform {
    pub architecture: String,
    pub os: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    #[serde(
        rename = "os.version",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub os_version: Option<String>,
}

impl Platform {
    /// Parses `os/arch[/variant]`.
    pub fn parse(s: &str) -> Option<Self> {
        let mut it = s.split('/');
        let os = it.next().filter(|x| !x.is_empty())?.to_string();
        let architecture = it.next().filter(|x| !x.is_empty())?.to_string();
        let variant = it.next().map(str::to_string);
        if it.next().is_some() {
            return None;
        }
        Some(Self {
            architecture,
            os,
            variant,
            os_version: None,
        })
    }

    pub fn matches(&self, want: &Platform) -> bool {
        self.os == want.os
            && self.architecture == want.architecture
            && (want.variant.is_none() || self.variant == want.variant)
    }
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Descriptor {
    #[serde(rename = "mediaType")]
    pub media_type: String,
    pub digest: String,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub urls: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
}

impl Descriptor {
    pub fn annotation(&self, key: &str) -> Option<&str> {
        self.annotations.as_ref()?.get(key).map(String::as_str)
    }

    /// A descriptor for `bytes` with the given media type.
    pub fn for_bytes(media_type: &str, bytes: &[u8]) -> Self {
        Self {
            media_type: media_type.to_string(),
            digest: sha256_digest(bytes),
            size: bytes.len() as u64,
            urls: None,
            annotations: None,
            platform: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    #[serde(rename = "schemaVersion")]
    pub schema_version: u32,
    #[serde(rename = "mediaType", default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Index {
    #[serde(rename = "schemaVersion")]
    pub schema_version: u32,
    #[serde(rename = "mediaType", default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    pub manifests: Vec<Descriptor>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
}

/// A fetched manifest document, told apart by media type or by shape.
#[derive(Debug, Clone)]
pub enum ManifestDoc {
    Image(Box<Manifest>),
    Index(Index),
}

impl ManifestDoc {
    /// Parses a manifest body. `media_type` is the Content-Type or the
    /// descriptor's media type, if known.
    pub fn parse(bytes: &[u8], media_type: Option<&str>, what: &str) -> Result<Self> {
        let json = |e| OciError::Json {
            context: what.to_string(),
            source: e,
        };
        let v: serde_json::Value = serde_json::from_slice(bytes).map_err(json)?;
        let mt = v
            .get("mediaType")
            .and_then(|m| m.as_str())
            .map(str::to_string)
            .or_else(|| media_type.map(|m| m.split(';').next().unwrap_or(m).trim().to_string()));
        let is_index = match mt.as_deref() {
            Some(OCI_INDEX | DOCKER_MANIFEST_LIST) => true,
            Some(OCI_MANIFEST | DOCKER_MANIFEST) => false,
            _ => v.get("manifests").is_some(),
        };
        let schema = v.get("schemaVersion").and_then(|s| s.as_u64());
        if schema != Some(2) {
            return Err(OciError::Unsupported(format!(
                "{what} has schemaVersion {schema:?}; only schema 2 (OCI, Docker v2) is supported"
            )));
        }
        if is_index {
            Ok(ManifestDoc::Index(serde_json::from_value(v).map_err(json)?))
        } else {
            Ok(ManifestDoc::Image(serde_json::from_value(v).map_err(json)?))
        }
    }
}

pub fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// Checks that `bytes` match a `sha256:` digest.
pub fn verify_bytes(bytes: &[u8], expected: &str, what: &str) -> Result<()> {
    let actual = sha256_digest(bytes);
    if actual != expected {
        return Err(OciError::DigestMismatch {
            what: what.to_string(),
            expected: expected.to_string(),
            actual,
        });
    }
    Ok(())
}

/// Refuses anything but a well-formed `sha256:` digest (it is used in paths and URLs).
pub fn valid_digest_or_err(d: &str) -> Result<()> {
    if crate::reference::valid_digest(d) {
        Ok(())
    } else {
        Err(OciError::Unsupported(format!(
            "digest {d:?} is not sha256:<64 lowercase hex digits>"
        )))
    }
}

/// Largest manifest or config skiff will read into memory.
pub const MAX_DOCUMENT: u64 = 8 << 20;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_docker_and_oci() {
        let docker = br#"{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.v2+json",
          "config":{"mediaType":"application/vnd.docker.container.image.v1+json","size":7,"digest":"sha256:aa"},
          "layers":[{"mediaType":"application/vnd.docker.image.rootfs.diff.tar.gzip","size":9,"digest":"sha256:bb"}]}"#;
        let ManifestDoc::Image(m) = ManifestDoc::parse(docker, None, "m").unwrap() else {
            panic!()
        };
        assert_eq!(
            layer_compression(&m.layers[0].media_type),
            Some(LayerCompression::Gzip)
        );
        let index = br#"{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json",
          "size":1,"digest":"sha256:cc","platform":{"architecture":"arm64","os":"linux","variant":"v8"}}]}"#;
        let ManifestDoc::Index(i) = ManifestDoc::parse(index, None, "i").unwrap() else {
            panic!()
        };
        let p = i.manifests[0].platform.as_ref().unwrap();
        assert!(p.matches(&Platform::parse("linux/arm64").unwrap()));
        assert!(!p.matches(&Platform::parse("linux/arm64/v7").unwrap()));
        assert!(ManifestDoc::parse(br#"{"schemaVersion":1}"#, None, "x").is_err());
        assert!(ManifestDoc::parse(b"nope", None, "x").is_err());
        assert_eq!(layer_compression("application/vnd.in-toto+json"), None);
    }
}
