//! What an engine is given: where node state lives, how to reach
//! registries, and which program runs its helper processes.

use std::path::{Path, PathBuf};

use skiff_oci::RegistryOptions;

#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Node state: containers, image mounts, the chunk cache, logs.
    pub root: PathBuf,
    pub registry: RegistryOptions,
    /// The skiff binary that runs the engine's helper processes (image
    /// mount daemons, container supervisors), with the hidden commands of
    /// the helper interface (see the crate README). Front ends that are
    /// not that binary (a shim) name it here; the engine never assumes it
    /// is running as it.
    pub helper: PathBuf,
    /// The node chunk cache's size limit, over which it evicts the least
    /// recently used chunks (those of images still on the node last).
    pub cache_size: CacheSize,
    /// How long an image mount stays with no container running from it
    /// and no reads before its daemon unmounts it (`None`: forever). A
    /// later run mounts it again, warm from the node's cache.
    pub image_idle_timeout: Option<std::time::Duration>,
}

/// The default idle timeout of image mounts.
pub const DEFAULT_IMAGE_IDLE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(600);

/// A size limit in bytes, or as a share of the filesystem it is on.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum CacheSize {
    Bytes(u64),
    /// Percent of the filesystem's size (`20%`).
    Percent(f64),
    /// No limit (`none`): the cache grows until its filesystem is full.
    Unlimited,
}

/// The default: a fifth of the filesystem under `ROOT/cache`.
pub const DEFAULT_CACHE_SIZE: CacheSize = CacheSize::Percent(20.0);

impl CacheSize {
    /// `512M`, `10G`, `20%`, or `none`.
    pub fn parse(s: &str) -> Result<Self, String> {
        if s.trim() == "none" {
            return Ok(CacheSize::Unlimited);
        }
        match s.trim().strip_suffix('%') {
            Some(p) => {
                let p: f64 = p
                    .trim()
                    .parse()
                    .map_err(|_| format!("{s:?} is not a percentage like 20%"))?;
                if !(p > 0.0 && p <= 100.0) {
                    return Err(format!("{s:?}: give a share from 0 to 100%"));
                }
                Ok(CacheSize::Percent(p))
            }
            None => crate::request::parse_size(s).map(CacheSize::Bytes),
        }
    }

    /// The limit in bytes for a cache under `root`.
    pub fn bytes(self, root: &Path) -> u64 {
        match self {
            CacheSize::Bytes(b) => b,
            CacheSize::Unlimited => u64::MAX,
            CacheSize::Percent(p) => {
                let dir = [root.join("cache"), root.to_path_buf()]
                    .into_iter()
                    .find(|d| d.exists())
                    .unwrap_or_else(|| PathBuf::from("/"));
                match rustix::fs::statvfs(&dir) {
                    Ok(st) => (st.f_blocks as f64 * st.f_frsize as f64 * p / 100.0) as u64,
                    // Unknown: as skiff's default before it was a share.
                    Err(_) => 10 << 30,
                }
            }
        }
    }
}

/// Where the VM sandbox's guest kernel and agent are found: `$SKIFF_CACHE`,
/// else `~/.cache/skiff` (`make agent` puts them there).
pub fn asset_cache() -> PathBuf {
    std::env::var_os("SKIFF_CACHE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cache/skiff")))
        .unwrap_or_else(|| PathBuf::from("/var/cache/skiff"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_sizes_parse_as_bytes_or_a_share() {
        assert_eq!(CacheSize::parse("10G"), Ok(CacheSize::Bytes(10 << 30)));
        assert_eq!(CacheSize::parse("20%"), Ok(CacheSize::Percent(20.0)));
        assert!(CacheSize::parse("0%").is_err());
        assert!(CacheSize::parse("120%").is_err());
        assert!(CacheSize::parse("lots").is_err());
        assert_eq!(CacheSize::parse("none"), Ok(CacheSize::Unlimited));
        let root = tempfile::tempdir().unwrap();
        let fifth = CacheSize::Percent(20.0).bytes(root.path());
        let whole = CacheSize::Percent(100.0).bytes(root.path());
        assert!(fifth > 0 && (fifth as f64 - whole as f64 * 0.2).abs() < 4096.0);
        assert_eq!(CacheSize::Bytes(7).bytes(root.path()), 7);
    }
}
