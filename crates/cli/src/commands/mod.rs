//! One module per command.

pub mod cache;
pub mod check;
pub mod convert;
pub mod inspect;
pub mod logs;
pub mod mount;
pub mod ps;
pub mod rm;
pub mod run;
pub mod stats;
pub mod stop;
pub mod supervise;
pub mod umount;
pub mod unpack;

use anyhow::{bail, Context, Result};
use skiff_oci::{resolve, ImageRef, Platform, ResolvedImage, RuntimeConfig};
use skiff_store::SkiffImage;

use crate::Global;

pub fn parse_platform(s: &str) -> Result<Platform, String> {
    Platform::parse(s).ok_or_else(|| format!("{s:?} is not OS/ARCH[/VARIANT], e.g. linux/amd64"))
}

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

/// The image a command reads, and which platform of it.
#[derive(clap::Args)]
pub struct ImageArgs {
    /// The skiff image (registry reference, oci:DIR[:TAG]).
    pub image: String,
    /// For a multi-platform image (default: this host's platform).
    #[arg(long, value_parser = parse_platform, value_name = "OS/ARCH[/VARIANT]")]
    pub platform: Option<Platform>,
}

impl ImageArgs {
    pub fn open(&self, global: &Global) -> Result<SkiffImage> {
        open_image(global, &self.image, self.platform.as_ref())
    }
}

/// Opens a skiff image by reference, verifying its metadata. An index
/// resolves to `platform`, or to the host's.
pub fn open_image(
    global: &Global,
    reference: &str,
    platform: Option<&Platform>,
) -> Result<SkiffImage> {
    let (repo, image) = resolve_image(global, reference, platform)?;
    SkiffImage::open(repo, &image).with_context(|| format!("opening skiff image {reference}"))
}

/// The runtime part of an image's config (Entrypoint, Cmd, Env...), read
/// without fetching the image's metadata.
pub fn image_runtime_config(
    global: &Global,
    reference: &str,
    platform: Option<&Platform>,
) -> Result<RuntimeConfig> {
    let (repo, image) = resolve_image(global, reference, platform)?;
    let blob = repo
        .read_blob(&image.manifest.config)
        .with_context(|| format!("reading the image config of {reference}"))?;
    RuntimeConfig::parse(&blob).with_context(|| format!("reading the image config of {reference}"))
}

/// Resolves a reference to one image manifest: an index resolves to
/// `platform`, or to the host's.
fn resolve_image(
    global: &Global,
    reference: &str,
    platform: Option<&Platform>,
) -> Result<(std::sync::Arc<dyn skiff_oci::Repository>, ResolvedImage)> {
    let r = ImageRef::parse(reference)?;
    let opened = r
        .open(&global.registry)
        .with_context(|| format!("opening {reference}"))?;
    let host = host_platform();
    let resolved = resolve(
        opened.repo.as_ref(),
        opened.reference.as_deref().unwrap_or(""),
        None,
    )
    .with_context(|| format!("resolving {reference}"))?;
    let image = if resolved.images.len() == 1 {
        &resolved.images[0]
    } else {
        let want = platform.unwrap_or(&host);
        match resolved.images.iter().find(|i| {
            i.descriptor
                .platform
                .as_ref()
                .is_some_and(|p| p.matches(want))
        }) {
            Some(i) => i,
            None => bail!("{reference} has no image for platform {want}; pick one with --platform"),
        }
    };
    Ok((opened.repo.clone(), image.clone()))
}

/// Prints a value as pretty JSON on stdout.
pub fn print_json<T: serde::Serialize>(v: &T) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

pub fn human(bytes: u64) -> String {
    indicatif::HumanBytes(bytes).to_string()
}
