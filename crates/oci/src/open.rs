//! Opening a reference: the one place that knows every backend (a
//! registry repository, an OCI layout, a docker archive). The backends know
//! only the [`Repository`] trait.

use std::sync::Arc;

use crate::archive::DockerArchive;
use crate::error::{OciError, Result};
use crate::layout::OciLayout;
use crate::reference::ImageRef;
use crate::registry::{RegistryClient, RegistryOptions, RegistryRepository};
use crate::repository::Repository;

/// An image reference opened for reading or writing.
pub struct OpenedRef {
    pub repo: Arc<dyn Repository>,
    /// The tag or digest to resolve, if the reference named one.
    pub reference: Option<String>,
}

impl OpenedRef {
    /// The reference as a user writes it: the repository with its tag
    /// (`:TAG`) or digest (`@sha256:...`).
    pub fn describe(&self) -> String {
        let repo = self.repo.describe();
        match &self.reference {
            Some(r) if r.contains(':') => format!("{repo}@{r}"),
            Some(tag) => format!("{repo}:{tag}"),
            None => repo,
        }
    }
}

impl ImageRef {
    pub fn open(&self, options: &RegistryOptions) -> Result<OpenedRef> {
        Ok(match self {
            ImageRef::Registry(r) => {
                let client = RegistryClient::new(r, options.clone())?;
                OpenedRef {
                    repo: Arc::new(Arc::new(RegistryRepository::new(client, &r.repository))),
                    reference: Some(r.reference().to_string()),
                }
            }
            ImageRef::OciLayout { dir, tag } => OpenedRef {
                repo: Arc::new(OciLayout::open(dir)?),
                reference: tag.clone(),
            },
            ImageRef::DockerArchive { path, tag } => OpenedRef {
                repo: Arc::new(DockerArchive::open(path, tag.as_deref())?),
                reference: None,
            },
        })
    }

    /// Opens the reference as a place to write an image to, creating an OCI
    /// layout directory if needed.
    pub fn open_for_write(&self, options: &RegistryOptions) -> Result<OpenedRef> {
        match self {
            ImageRef::OciLayout { dir, tag } => Ok(OpenedRef {
                repo: Arc::new(OciLayout::create(dir)?),
                reference: Some(tag.clone().unwrap_or_else(|| "latest".to_string())),
            }),
            ImageRef::DockerArchive { .. } => Err(OciError::Unsupported(
                "docker-archive: is read-only for skiff; write to a registry or oci:DIR".into(),
            )),
            ImageRef::Registry(r) if r.digest.is_some() => Err(OciError::Unsupported(format!(
                "cannot write to {r}: a target needs a tag, not a digest"
            ))),
            ImageRef::Registry(_) => self.open(options),
        }
    }
}
