//! Finding an image: a reference resolved to one manifest (an index to the
//! wanted platform), opened as a skiff image or read for its runtime config.

use std::sync::Arc;

use skiff_oci::{resolve, ImageRef, Platform, Repository, ResolvedImage, RuntimeConfig};
use skiff_store::SkiffImage;

use crate::error::{EngineError, Result};
use crate::Engine;

/// The platform this binary runs on, in OCI terms.
pub fn host_platform() -> Platform {
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        other => other,
    };
    Platform {
        os: "linux".into(),
        architecture: arch.into(),
        variant: None,
        os_version: None,
    }
}

/// A name for the skiff image converted from `reference`: its tag with
/// `-skiff` added (`skiff` for an untagged or pinned one), beside it.
pub fn converted_name(reference: &str) -> String {
    match skiff_oci::ImageRef::parse(reference) {
        Ok(ImageRef::Registry(r)) => {
            let tag = match (&r.tag, &r.digest) {
                (Some(t), None) => format!("{t}-skiff"),
                _ => "skiff".to_string(),
            };
            format!("{}/{}:{tag}", r.registry, r.repository)
        }
        Ok(ImageRef::OciLayout { dir, tag }) => {
            let tag = tag.map_or_else(|| "skiff".to_string(), |t| format!("{t}-skiff"));
            format!("oci:{}:{tag}", dir.display())
        }
        _ => "oci:./image-skiff:latest".to_string(),
    }
}

impl Engine {
    /// Opens a skiff image by reference, verifying its metadata. An index
    /// resolves to `platform`, or to the host's.
    pub fn open_image(&self, reference: &str, platform: Option<&Platform>) -> Result<SkiffImage> {
        let (repo, image) = self.resolve_image(reference, platform)?;
        SkiffImage::open(repo, &image).map_err(|e| match e {
            skiff_store::StoreError::NotSkiff(_) => EngineError::Invalid(format!(
                "{reference} is an OCI image, not a skiff image; convert it with `skiff convert {reference} {}` (`skiff run` converts it on the node by itself)",
                converted_name(reference)
            )),
            e => EngineError::store(format!("opening skiff image {reference}"))(e),
        })
    }

    /// The runtime part of an image's config (Entrypoint, Cmd, Env...),
    /// read without fetching the image's metadata.
    pub fn runtime_config(
        &self,
        reference: &str,
        platform: Option<&Platform>,
    ) -> Result<RuntimeConfig> {
        let (repo, image) = self.resolve_image(reference, platform)?;
        let context = || format!("reading the image config of {reference}");
        let blob = repo
            .read_blob(&image.manifest.config)
            .map_err(EngineError::oci(context()))?;
        RuntimeConfig::parse(&blob).map_err(EngineError::oci(context()))
    }

    /// Resolves a reference to one image manifest: an index resolves to
    /// `platform`, or to the host's.
    pub fn resolve_image(
        &self,
        reference: &str,
        platform: Option<&Platform>,
    ) -> Result<(Arc<dyn Repository>, ResolvedImage)> {
        let r = ImageRef::parse(reference).map_err(EngineError::oci(format!(
            "reading the reference {reference:?}"
        )))?;
        let opened = r
            .open(&self.config.registry)
            .map_err(EngineError::oci(format!("opening {reference}")))?;
        let host = host_platform();
        let want = platform.unwrap_or(&host);
        // Only the wanted platform's manifest is fetched: another one that
        // is missing or broken must not fail this image.
        let resolved = resolve(
            opened.repo.as_ref(),
            opened.reference.as_deref().unwrap_or(""),
            Some(want),
        )
        .map_err(EngineError::oci(format!("resolving {reference}")))?;
        let image = if resolved.images.len() == 1 {
            &resolved.images[0]
        } else {
            match resolved.images.iter().find(|i| {
                i.descriptor
                    .platform
                    .as_ref()
                    .is_some_and(|p| p.matches(want))
            }) {
                Some(i) => i,
                None => {
                    return Err(EngineError::NotFound(format!(
                        "{reference} has no image for platform {want}; pick one with --platform"
                    )))
                }
            }
        };
        Ok((opened.repo.clone(), image.clone()))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn converted_names_sit_beside_their_source() {
        use super::converted_name;
        assert_eq!(converted_name("oci:/img:full"), "oci:/img:full-skiff");
        assert_eq!(converted_name("oci:/img"), "oci:/img:skiff");
        assert_eq!(
            converted_name("debian:12"),
            "docker.io/library/debian:12-skiff"
        );
        assert_eq!(
            converted_name("reg.example:5000/app:v1"),
            "reg.example:5000/app:v1-skiff"
        );
    }
}
