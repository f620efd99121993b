//! Volumes as Docker reads `-v SRC:DST`: an absolute SRC is a host
//! directory, made if it is missing; a name (`data`) is a volume skiff
//! keeps under `ROOT/volumes/NAME/_data`, made on first use and kept until
//! `skiff volume rm`.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::error::{EngineError, IoContext, Result};
use crate::{record, Engine};

pub fn dir(root: &Path) -> PathBuf {
    root.join("volumes")
}

/// Where volume `name`'s files are.
pub fn data_dir(root: &Path, name: &str) -> PathBuf {
    dir(root).join(name).join("_data")
}

/// Docker's rule for volume names.
pub fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
        && name.len() >= 2
}

/// `-v SRC:DST[:MODE]` with SRC as a host path: a named volume's data
/// directory, or a missing absolute directory, made here.
pub(crate) fn resolve_source(root: &Path, spec: &str) -> Result<String> {
    let Some((src, rest)) = spec.split_once(':') else {
        return Ok(spec.to_string());
    };
    if src.starts_with('/') {
        if std::fs::symlink_metadata(src).is_err() {
            std::fs::create_dir_all(src)
                .ctx(|| format!("-v {spec:?}: creating the host directory {src}"))?;
            tracing::info!(dir = src, "created the missing host directory of a volume");
        }
        return Ok(spec.to_string());
    }
    if !valid_name(src) {
        // A relative path: read as written (from this directory).
        return Ok(spec.to_string());
    }
    let data = data_dir(root, src);
    if !data.exists() {
        crate::root_dir::make_private(&dir(root))
            .ctx(|| format!("creating {}", dir(root).display()))?;
        std::fs::create_dir_all(&data)
            .ctx(|| format!("creating volume {src} at {}", data.display()))?;
        tracing::info!(volume = src, "created a volume");
    }
    Ok(format!("{}:{rest}", data.display()))
}

/// A volume on the node.
#[derive(Serialize, Debug, Clone)]
pub struct VolumeEntry {
    pub name: String,
    /// Its files on the host.
    pub path: PathBuf,
    /// The containers (IDs) whose spec mounts it, running or not.
    pub containers: Vec<String>,
}

impl Engine {
    /// Every named volume, by name.
    pub fn volumes(&self) -> Result<Vec<VolumeEntry>> {
        let root = &self.config.root;
        let d = dir(root);
        let mut names: Vec<String> = match std::fs::read_dir(&d) {
            Ok(rd) => rd
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| valid_name(n))
                .collect(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(EngineError::io(format!("listing {}", d.display()), e)),
        };
        names.sort();
        let users = self.volume_users()?;
        Ok(names
            .into_iter()
            .map(|name| {
                let path = data_dir(root, &name);
                let containers = users
                    .iter()
                    .filter(|(_, sources)| sources.contains(&path))
                    .map(|(id, _)| id.clone())
                    .collect();
                VolumeEntry {
                    name,
                    path,
                    containers,
                }
            })
            .collect())
    }

    /// Removes a named volume and its files; refused while a container
    /// (running or not) mounts it.
    pub fn remove_volume(&self, name: &str) -> Result<()> {
        let Some(v) = self.volumes()?.into_iter().find(|v| v.name == name) else {
            return Err(EngineError::NotFound(format!(
                "no volume named {name:?}; `skiff volume ls` lists them"
            )));
        };
        if let Some(id) = v.containers.first() {
            return Err(EngineError::Conflict(format!(
                "volume {name} is used by container {}; remove it first (`skiff rm {}`)",
                &id[..12.min(id.len())],
                &id[..12.min(id.len())]
            )));
        }
        let d = dir(&self.config.root).join(name);
        std::fs::remove_dir_all(&d).ctx(|| format!("removing {}", d.display()))
    }

    /// Each container's bind-mount sources, from its spec.
    fn volume_users(&self) -> Result<Vec<(String, Vec<PathBuf>)>> {
        let root = &self.config.root;
        Ok(record::all(root)?
            .into_iter()
            .filter_map(|r| {
                let spec = record::load_spec(root, &r.id).ok()?;
                let sources = spec
                    .mounts()
                    .iter()
                    .flatten()
                    .filter_map(|m| m.source().clone())
                    .collect();
                Some((r.id, sources))
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_volumes_and_absolute_paths_are_made() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        let got = resolve_source(r, "data:/var/lib/data:ro").unwrap();
        assert_eq!(
            got,
            format!("{}:/var/lib/data:ro", data_dir(r, "data").display())
        );
        assert!(data_dir(r, "data").is_dir());
        let missing = r.join("host/made/here");
        let spec = format!("{}:/c", missing.display());
        assert_eq!(resolve_source(r, &spec).unwrap(), spec);
        assert!(missing.is_dir());
        assert_eq!(resolve_source(r, "./rel:/c").unwrap(), "./rel:/c");
        assert!(valid_name("db-1.x") && !valid_name("x") && !valid_name("-x"));
    }
}
