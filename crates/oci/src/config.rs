//! The runtime part of an OCI image config (`config.config`): what a
//! container runs by default.

use serde::{Deserialize, Serialize};

use crate::error::{OciError, Result};

/// `Entrypoint`, `Cmd`, `Env`, `WorkingDir`, `User` and `StopSignal` of an
/// image config. Missing fields are empty.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RuntimeConfig {
    #[serde(default, deserialize_with = "null_as_default")]
    pub entrypoint: Vec<String>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub cmd: Vec<String>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub env: Vec<String>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub working_dir: String,
    #[serde(default, deserialize_with = "null_as_default")]
    pub user: String,
    #[serde(default, deserialize_with = "null_as_default")]
    pub stop_signal: String,
    /// The image's `os` and `architecture` (the config's top level, not
    /// `config.config`), which pick the sandbox kind; empty if absent.
    #[serde(default, deserialize_with = "null_as_default")]
    pub os: String,
    #[serde(default, deserialize_with = "null_as_default")]
    pub architecture: String,
    /// The image manifest's annotations (not the config's): set by whoever
    /// read the manifest, kept with the config.
    #[serde(default)]
    pub annotations: std::collections::BTreeMap<String, String>,
}

#[derive(Deserialize)]
struct ImageConfig {
    #[serde(default, deserialize_with = "null_as_default")]
    config: RuntimeConfig,
    #[serde(default, deserialize_with = "null_as_default")]
    os: String,
    #[serde(default, deserialize_with = "null_as_default")]
    architecture: String,
    /// Only in a CNCF Wasm artifact's config.
    #[serde(default, rename = "layerDigests")]
    layer_digests: Option<Vec<String>>,
}

// Registries and builders write `null` for empty fields as often as they omit them.
fn null_as_default<'de, D, T>(d: D) -> std::result::Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

impl RuntimeConfig {
    /// Parses the runtime part of an image config blob.
    pub fn parse(config_blob: &[u8]) -> Result<Self> {
        serde_json::from_slice::<ImageConfig>(config_blob)
            .map(|c| {
                let mut runtime = RuntimeConfig {
                    os: c.os,
                    architecture: c.architecture,
                    ..c.config
                };
                // A CNCF Wasm artifact's config names no command: its
                // module is the one to run.
                if c.layer_digests.is_some()
                    && runtime.architecture == "wasm"
                    && runtime.entrypoint.is_empty()
                    && runtime.cmd.is_empty()
                {
                    runtime.entrypoint = vec![crate::manifest::WASM_ARTIFACT_MODULE.to_string()];
                }
                runtime
            })
            .map_err(|source| OciError::Json {
                context: "the image config".into(),
                source,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_fields_and_tolerates_nulls() {
        let c = RuntimeConfig::parse(
            br#"{"architecture":"amd64","config":{"Entrypoint":null,"Cmd":["bash"],
            "Env":["PATH=/usr/bin"],"WorkingDir":"/srv","User":"1000:1000"}}"#,
        )
        .unwrap();
        assert!(c.entrypoint.is_empty());
        assert_eq!(c.cmd, ["bash"]);
        assert_eq!(c.env, ["PATH=/usr/bin"]);
        assert_eq!(c.working_dir, "/srv");
        assert_eq!(c.user, "1000:1000");
        assert_eq!((c.os.as_str(), c.architecture.as_str()), ("", "amd64"));
        assert_eq!(
            RuntimeConfig::parse(b"{}").unwrap(),
            RuntimeConfig::default()
        );
        assert!(RuntimeConfig::parse(b"[1]").is_err());
    }

    #[test]
    fn a_wasm_artifacts_module_is_its_entrypoint() {
        let c = RuntimeConfig::parse(
            br#"{"created":"2024-01-01T00:00:00Z","architecture":"wasm","os":"wasip1",
            "layerDigests":["sha256:aa"]}"#,
        )
        .unwrap();
        assert_eq!(c.entrypoint, ["/module.wasm"]);
        assert_eq!((c.os.as_str(), c.architecture.as_str()), ("wasip1", "wasm"));
        // An ordinary wasi/wasm image keeps its own entrypoint.
        let c = RuntimeConfig::parse(
            br#"{"architecture":"wasm","os":"wasi","config":{"Entrypoint":["/app.wasm"]}}"#,
        )
        .unwrap();
        assert_eq!(c.entrypoint, ["/app.wasm"]);
    }
}
