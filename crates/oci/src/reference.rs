//! Image references: `REGISTRY/REPO[:TAG][@DIGEST]`, `oci:DIR[:TAG]`,
//! `docker-archive:FILE[:REPO:TAG]`.

use std::fmt;
use std::path::PathBuf;

use crate::error::{OciError, Result};

pub const DOCKER_HUB: &str = "docker.io";
/// The host Docker Hub's API is served from.
pub const DOCKER_HUB_API: &str = "registry-1.docker.io";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageRef {
    Registry(RegistryRef),
    OciLayout { dir: PathBuf, tag: Option<String> },
    DockerArchive { path: PathBuf, tag: Option<String> },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryRef {
    /// `host[:port]` as written (Docker Hub normalised to `docker.io`).
    pub registry: String,
    pub repository: String,
    pub tag: Option<String>,
    pub digest: Option<String>,
}

impl RegistryRef {
    /// What to ask the registry for: the digest if pinned, else the tag.
    pub fn reference(&self) -> &str {
        self.digest
            .as_deref()
            .or(self.tag.as_deref())
            .unwrap_or("latest")
    }

    /// The host to send API requests to.
    pub fn api_host(&self) -> &str {
        if self.registry == DOCKER_HUB {
            DOCKER_HUB_API
        } else {
            &self.registry
        }
    }

    /// Loopback registries speak plain HTTP, as containerd assumes.
    pub fn is_loopback(&self) -> bool {
        let host = host_without_port(&self.registry);
        host == "localhost"
            || host == "::1"
            || host
                .parse::<std::net::Ipv4Addr>()
                .map(|ip| ip.is_loopback())
                .unwrap_or(false)
    }
}

fn host_without_port(registry: &str) -> &str {
    if let Some(rest) = registry.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    registry.rsplit_once(':').map_or(registry, |(h, _)| h)
}

impl fmt::Display for RegistryRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ImageRef::Registry(r) => r.fmt(f),
            ImageRef::OciLayout { dir, tag } => {
                write!(f, "oci:{}", dir.display())?;
                tag.as_ref().map_or(Ok(()), |t| write!(f, ":{t}"))
            }
            ImageRef::DockerArchive { path, tag } => {
                write!(f, "docker-archive:{}", path.display())?;
                tag.as_ref().map_or(Ok(()), |t| write!(f, ":{t}"))
            }
        }
    }
}

fn invalid(reference: &str, reason: impl Into<String>) -> OciError {
    OciError::InvalidReference {
        reference: reference.to_string(),
        reason: reason.into(),
    }
}

/// A tag per the distribution spec: `[A-Za-z0-9_][A-Za-z0-9._-]{0,127}`.
fn valid_tag(t: &str) -> bool {
    let b = t.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || b"._-".contains(c))
}

fn valid_repository(r: &str) -> bool {
    !r.is_empty()
        && r.split('/').all(|comp| {
            let b = comp.as_bytes();
            !b.is_empty()
                && b[0].is_ascii_alphanumeric()
                && b[b.len() - 1].is_ascii_alphanumeric()
                && b.iter()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || b"._-".contains(c))
        })
}

/// `sha256:<64 hex>`; other algorithms are refused because skiff verifies every blob.
pub fn valid_digest(d: &str) -> bool {
    d.strip_prefix("sha256:").is_some_and(|h| {
        h.len() == 64
            && h.bytes()
                .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c))
    })
}

/// Splits `PATH[:TAG]` for `oci:` and `docker-archive:` references. A colon
/// belongs to the tag only if what follows it is a valid tag (or `REPO:TAG`
/// for archives) and the path part is not empty.
fn split_path_tag(rest: &str, allow_repo_tag: bool) -> (PathBuf, Option<String>) {
    if let Some((path, tag)) = rest.split_once(':') {
        let ok = if allow_repo_tag {
            tag.rsplit_once(':')
                .is_some_and(|(r, t)| valid_repository(r) && valid_tag(t))
                || valid_tag(tag)
        } else {
            valid_tag(tag)
        };
        if ok && !path.is_empty() {
            return (PathBuf::from(path), Some(tag.to_string()));
        }
    }
    (PathBuf::from(rest), None)
}

impl ImageRef {
    /// Whether writing to `self` would replace the image `other` names:
    /// the same repository and tag (an absent tag is "latest", as a write
    /// uses), or the same layout directory and tag.
    pub fn names_same_image(&self, other: &ImageRef) -> bool {
        let tag = |t: &Option<String>| t.clone().unwrap_or_else(|| "latest".into());
        match (self, other) {
            (ImageRef::Registry(a), ImageRef::Registry(b)) => {
                a.registry == b.registry
                    && a.repository == b.repository
                    && a.reference() == b.reference()
            }
            (ImageRef::OciLayout { dir: a, tag: ta }, ImageRef::OciLayout { dir: b, tag: tb }) => {
                let real =
                    |d: &std::path::Path| d.canonicalize().unwrap_or_else(|_| d.to_path_buf());
                real(a) == real(b) && tag(ta) == tag(tb)
            }
            _ => false,
        }
    }

    pub fn parse(s: &str) -> Result<Self> {
        if let Some(rest) = s.strip_prefix("oci:") {
            if rest.is_empty() {
                return Err(invalid(s, "oci: needs a directory, as in oci:./image:tag"));
            }
            let (dir, tag) = split_path_tag(rest, false);
            return Ok(ImageRef::OciLayout { dir, tag });
        }
        if let Some(rest) = s.strip_prefix("docker-archive:") {
            if rest.is_empty() {
                return Err(invalid(
                    s,
                    "docker-archive: needs a file, as in docker-archive:image.tar",
                ));
            }
            let (path, tag) = split_path_tag(rest, true);
            return Ok(ImageRef::DockerArchive { path, tag });
        }
        let s_trim = s.strip_prefix("docker://").unwrap_or(s);
        Ok(ImageRef::Registry(
            parse_registry_ref(s_trim).map_err(|r| invalid(s, r))?,
        ))
    }
}

fn parse_registry_ref(s: &str) -> Result<RegistryRef, String> {
    if s.is_empty() {
        return Err("empty reference".into());
    }
    let (name, digest) = match s.split_once('@') {
        Some((n, d)) => {
            if !valid_digest(d) {
                return Err(format!("digest {d:?} is not sha256:<64 hex digits>"));
            }
            (n, Some(d.to_string()))
        }
        None => (s, None),
    };
    // A tag is after the last ':' that follows the last '/'.
    let last_slash = name.rfind('/').map_or(0, |i| i + 1);
    let (name, tag) = match name[last_slash..].rfind(':') {
        Some(i) => {
            let tag = &name[last_slash + i + 1..];
            if !valid_tag(tag) {
                return Err(format!("tag {tag:?} is not valid"));
            }
            (&name[..last_slash + i], Some(tag.to_string()))
        }
        None => (name, None),
    };
    let (registry, repository) = match name.split_once('/') {
        Some((first, rest))
            if first.contains('.')
                || first.contains(':')
                || first == "localhost"
                || first.starts_with('[') =>
        {
            (first.to_string(), rest.to_string())
        }
        _ => (DOCKER_HUB.to_string(), name.to_string()),
    };
    let registry = if registry == "index.docker.io" || registry == DOCKER_HUB_API {
        DOCKER_HUB.to_string()
    } else {
        registry
    };
    let repository = if registry == DOCKER_HUB && !repository.contains('/') {
        format!("library/{repository}")
    } else {
        repository
    };
    if !valid_repository(&repository) {
        return Err(format!(
            "repository {repository:?} must be lowercase letters, digits and separators"
        ));
    }
    let tag = if tag.is_none() && digest.is_none() {
        Some("latest".to_string())
    } else {
        tag
    };
    Ok(RegistryRef {
        registry,
        repository,
        tag,
        digest,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_target_naming_its_source_is_recognised() {
        let same = |a: &str, b: &str| {
            ImageRef::parse(a)
                .unwrap()
                .names_same_image(&ImageRef::parse(b).unwrap())
        };
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().display();
        assert!(same(&format!("oci:{d}:v1"), &format!("oci:{d}/./:v1")));
        assert!(same(&format!("oci:{d}"), &format!("oci:{d}:latest")));
        assert!(!same(&format!("oci:{d}:v1"), &format!("oci:{d}:v1-skiff")));
        assert!(same("127.0.0.1:5000/app:v1", "127.0.0.1:5000/app:v1"));
        assert!(same("python", "docker.io/library/python:latest"));
        assert!(!same("127.0.0.1:5000/app:v1", "127.0.0.1:5001/app:v1"));
        assert!(!same("127.0.0.1:5000/app:v1", &format!("oci:{d}:v1")));
    }

    fn reg(s: &str) -> RegistryRef {
        match ImageRef::parse(s).unwrap() {
            ImageRef::Registry(r) => r,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn registry_refs() {
        let r = reg("127.0.0.1:5000/team/app:v1");
        assert_eq!(
            (r.registry.as_str(), r.repository.as_str(), r.tag.as_deref()),
            ("127.0.0.1:5000", "team/app", Some("v1"))
        );
        assert!(r.is_loopback());
        let r = reg("debian");
        assert_eq!(
            (r.registry.as_str(), r.repository.as_str(), r.reference()),
            ("docker.io", "library/debian", "latest")
        );
        assert_eq!(r.api_host(), "registry-1.docker.io");
        let d = format!("sha256:{}", "a".repeat(64));
        let r = reg(&format!("ghcr.io/o/p@{d}"));
        assert_eq!((r.tag.as_deref(), r.reference()), (None, d.as_str()));
        let r = reg(&format!("localhost:5000/p:t@{d}"));
        assert_eq!(
            (r.tag.as_deref(), r.digest.as_deref()),
            (Some("t"), Some(d.as_str()))
        );
        assert!(r.is_loopback());
        assert!(!reg("example.com/x").is_loopback());
        assert_eq!(reg("docker://quay.io/a/b:c").registry, "quay.io");
        assert_eq!(reg("[::1]:5000/a").registry, "[::1]:5000");
        assert!(reg("[::1]:5000/a").is_loopback());
    }

    #[test]
    fn bad_refs() {
        for s in [
            "",
            "UPPER/case",
            "a/b:bad tag",
            "a@sha256:123",
            "a@md5:00",
            "oci:",
            "a//b",
            "host/-x",
        ] {
            assert!(ImageRef::parse(s).is_err(), "{s:?} accepted");
        }
    }

    #[test]
    fn layout_refs() {
        assert_eq!(
            ImageRef::parse("oci:/tmp/img:v2").unwrap(),
            ImageRef::OciLayout {
                dir: "/tmp/img".into(),
                tag: Some("v2".into())
            }
        );
        assert_eq!(
            ImageRef::parse("oci:./img").unwrap(),
            ImageRef::OciLayout {
                dir: "./img".into(),
                tag: None
            }
        );
        assert_eq!(
            ImageRef::parse("docker-archive:/x/a.tar:repo/app:1").unwrap(),
            ImageRef::DockerArchive {
                path: "/x/a.tar".into(),
                tag: Some("repo/app:1".into())
            }
        );
        assert_eq!(
            ImageRef::parse("docker-archive:a.tar").unwrap(),
            ImageRef::DockerArchive {
                path: "a.tar".into(),
                tag: None
            }
        );
    }
}
