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
pub mod snapshotter;
pub mod stats;
pub mod stop;
pub mod supervise;
pub mod umount;
pub mod unpack;
pub mod version;
pub mod volume;
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

/// Acts on each container at once, so `skiff stop a b c` waits out one
/// grace period rather than three; then reports in the order given: what
/// `show` prints for each, or its error on stderr. 1 if any failed.
pub fn for_each_container<T: Send>(
    keys: &[String],
    act: impl Fn(&str) -> skiff_engine::Result<T> + Sync,
    show: impl Fn(&str, T) -> Result<()>,
) -> Result<i32> {
    let results: Vec<_> = std::thread::scope(|s| {
        let act = &act;
        let running: Vec<_> = keys.iter().map(|k| s.spawn(move || act(k))).collect();
        running
            .into_iter()
            .map(|t| {
                t.join().unwrap_or_else(|_| {
                    Err(skiff_engine::EngineError::Invalid(
                        "skiff failed on this container (a bug; please report it)".into(),
                    ))
                })
            })
            .collect()
    });
    let mut code = crate::exit::OK;
    for (key, result) in keys.iter().zip(results) {
        match result {
            Ok(v) => show(key, v)?,
            Err(e) => {
                crate::exit::say(format_args!("skiff: error: {e}"));
                code = crate::exit::FAILURE;
            }
        }
    }
    Ok(code)
}

/// Prints a value as pretty JSON on stdout.
pub fn print_json<T: serde::Serialize>(v: &T) -> Result<()> {
    outln!("{}", serde_json::to_string_pretty(v)?)?;
    Ok(())
}

pub fn human(bytes: u64) -> String {
    indicatif::HumanBytes(bytes).to_string()
}
