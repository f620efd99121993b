//! One module per command.

pub mod cache;
pub mod check;
pub mod convert;
pub mod exec;
pub mod images;
pub mod inspect;
pub mod kill;
pub mod logs;
pub mod mount;
pub mod ps;
pub mod pull;
pub mod rm;
pub mod rmi;
pub mod run;
pub mod stats;
pub mod stop;
pub mod supervise;
pub mod umount;
pub mod unpack;
pub mod version;
pub mod wait;

use crate::out::outln;
use anyhow::Result;
use skiff_oci::Platform;
use skiff_store::SkiffImage;

use crate::Global;

pub fn parse_platform(s: &str) -> Result<Platform, String> {
    Platform::parse(s).ok_or_else(|| format!("{s:?} is not OS/ARCH[/VARIANT], e.g. linux/amd64"))
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
    Ok(global.engine.open_image(reference, platform)?)
}

/// Prints a value as pretty JSON on stdout.
pub fn print_json<T: serde::Serialize>(v: &T) -> Result<()> {
    outln!("{}", serde_json::to_string_pretty(v)?)?;
    Ok(())
}

pub fn human(bytes: u64) -> String {
    indicatif::HumanBytes(bytes).to_string()
}
