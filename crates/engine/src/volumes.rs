//! Volumes as Docker reads `-v SRC:DST`: an absolute SRC is a host
//! directory, made if it is missing; a name (`data`) is a volume skiff
//! keeps under `ROOT/volumes/NAME/_data`, made on first use and kept until
//! `skiff volume rm`. As with Docker, a new named volume starts with what
//! the image holds at DST (its files, owners and modes).

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
/// directory, or a missing absolute directory, made here. A new named
/// volume gets a copy of `image_tree`'s DST, if that is a directory.
pub(crate) fn resolve_source(
    root: &Path,
    image_tree: &Path,
    spec: &str,
    userns: bool,
) -> Result<String> {
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
    if userns {
        // The init binds it as the namespace's root, which cannot walk the
        // root-only ROOT to reach it.
        return Err(EngineError::Invalid(format!(
            "-v {spec:?}: named volumes do not work with --userns yet; give a host directory instead (-v /srv/{src}:DST)"
        )));
    }
    let data = data_dir(root, src);
    if !data.exists() {
        let volumes = dir(root);
        crate::root_dir::make_private(&volumes)
            .ctx(|| format!("creating {}", volumes.display()))?;
        // Filled beside its place and renamed in, so that a failed copy
        // never leaves a volume that looks made.
        let staging = volumes.join(format!(".{src}.new-{}", std::process::id()));
        let staged = staging.join("_data");
        let made = (|| -> std::io::Result<()> {
            std::fs::create_dir_all(&staged)?;
            let destination = rest.split(':').next().unwrap_or("");
            if let Some(from) = image_dir(image_tree, destination) {
                copy_tree(&from, &staged)?;
                copy_attributes(&from, &staged)?;
            }
            std::fs::rename(&staging, volumes.join(src))
        })();
        if let Err(e) = made {
            let _ = std::fs::remove_dir_all(&staging);
            return Err(EngineError::io(format!("creating volume {src}"), e));
        }
        tracing::info!(volume = src, "created a volume");
    }
    Ok(format!("{}:{rest}", data.display()))
}

/// `destination` in the image's tree, if every part of it is a real
/// directory there (a symlink would be the container's to resolve, not the
/// host's: such a volume starts empty).
fn image_dir(image_tree: &Path, destination: &str) -> Option<PathBuf> {
    let mut at = image_tree.to_path_buf();
    for part in Path::new(destination).components() {
        match part {
            std::path::Component::Normal(name) => at.push(name),
            std::path::Component::RootDir | std::path::Component::CurDir => continue,
            _ => return None,
        }
        if !std::fs::symlink_metadata(&at).ok()?.is_dir() {
            return None;
        }
    }
    Some(at)
}

/// Copies a directory's entries: directories, regular files and symlinks,
/// with their owners and modes (device nodes, FIFOs and sockets are not
/// carried into a volume). By hand: a few lines over `std::fs`, where a
/// crate would bring options this does not want (following symlinks).
fn copy_tree(from: &Path, to: &Path) -> std::io::Result<()> {
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let (source, target) = (entry.path(), to.join(entry.file_name()));
        let kind = std::fs::symlink_metadata(&source)?.file_type();
        if kind.is_dir() {
            std::fs::create_dir(&target)?;
            copy_tree(&source, &target)?;
        } else if kind.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(&source)?, &target)?;
        } else if kind.is_file() {
            std::fs::copy(&source, &target)?;
        } else {
            continue;
        }
        copy_attributes(&source, &target)?;
    }
    Ok(())
}

/// The owner (and, but for a symlink, the mode) of `from`, onto `to`.
fn copy_attributes(from: &Path, to: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::symlink_metadata(from)?;
    std::os::unix::fs::lchown(to, Some(meta.uid()), Some(meta.gid()))?;
    if !meta.file_type().is_symlink() {
        std::fs::set_permissions(to, meta.permissions())?;
    }
    Ok(())
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
        let image = tempfile::tempdir().unwrap();
        let img = image.path();
        std::fs::create_dir_all(img.join("var/lib/data/sub")).unwrap();
        std::fs::write(img.join("var/lib/data/sub/seed"), b"from the image").unwrap();
        std::os::unix::fs::symlink("sub/seed", img.join("var/lib/data/link")).unwrap();
        let got = resolve_source(r, img, "data:/var/lib/data:ro", false).unwrap();
        assert_eq!(
            got,
            format!("{}:/var/lib/data:ro", data_dir(r, "data").display())
        );
        let data = data_dir(r, "data");
        assert_eq!(
            std::fs::read(data.join("sub/seed")).unwrap(),
            b"from the image"
        );
        assert_eq!(
            std::fs::read_link(data.join("link")).unwrap(),
            Path::new("sub/seed")
        );
        // An existing volume keeps its own files.
        std::fs::write(data.join("sub/seed"), b"changed").unwrap();
        resolve_source(r, img, "data:/var/lib/data", false).unwrap();
        assert_eq!(std::fs::read(data.join("sub/seed")).unwrap(), b"changed");
        // A destination the image lacks, or reaches through a symlink: empty.
        std::os::unix::fs::symlink("var/lib", img.join("lnk")).unwrap();
        resolve_source(r, img, "empty:/lnk/data", false).unwrap();
        assert_eq!(std::fs::read_dir(data_dir(r, "empty")).unwrap().count(), 0);
        let missing = r.join("host/made/here");
        let spec = format!("{}:/c", missing.display());
        assert_eq!(resolve_source(r, img, &spec, false).unwrap(), spec);
        assert!(missing.is_dir());
        assert_eq!(
            resolve_source(r, img, "./rel:/c", false).unwrap(),
            "./rel:/c"
        );
        assert!(valid_name("db-1.x") && !valid_name("x") && !valid_name("-x"));
        assert!(matches!(
            resolve_source(r, img, "data:/c", true),
            Err(EngineError::Invalid(_))
        ));
    }
}
