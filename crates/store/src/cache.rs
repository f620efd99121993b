//! The node's chunk cache: one directory of uncompressed chunks, named by
//! digest, shared by every mount and every image.
//!
//! Crash safety comes from verification, not from fsync: a chunk is written
//! to a temporary file and renamed into place, and every read hashes the
//! chunk and compares it with the digest it is named by. A torn write, a
//! flipped bit or a tampered file is therefore detected on first use,
//! deleted, and fetched again; it is never served.
//!
//! Eviction is least-recently-used by file mtime, which readers bump (at
//! most once a minute per chunk), so several daemons sharing the directory
//! agree on the order without talking to each other. Chunks that a pin
//! names (the images on the node: `cache/pins/NAME`, one digest per line)
//! go last: every unpinned chunk is evicted before any pinned one.

use std::fs;
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use serde::Serialize;
use skiff_format::{Digest, DigestAlgorithm};

/// Fraction of the limit eviction brings usage down to.
const EVICT_TO: f64 = 0.9;
/// How stale an entry's mtime may get before a hit refreshes it.
const TOUCH_AFTER: Duration = Duration::from_secs(60);

#[derive(Debug, Default, Serialize, Clone, Copy)]
pub struct CacheStats {
    pub entries: u64,
    pub bytes: u64,
    /// The size limit in bytes; `None` (JSON null) when unlimited.
    pub limit: Option<u64>,
}

#[derive(Debug, Default, Serialize, Clone, Copy)]
pub struct PruneReport {
    pub removed: u64,
    pub freed: u64,
    pub remaining: u64,
}

pub struct ChunkCache {
    dir: PathBuf,
    tmp: PathBuf,
    pins: PathBuf,
    limit: u64,
    /// Bytes in the cache as this process believes them to be; corrected by
    /// every full scan (prune).
    used: AtomicU64,
    evicting: Mutex<()>,
    /// Entries found corrupt and removed since this process started.
    pub corrupt: AtomicU64,
}

fn alg_dir(alg: DigestAlgorithm) -> &'static str {
    alg.name()
}

/// Every entry with its size and mtime.
fn scan(dir: &Path) -> Vec<(PathBuf, u64, SystemTime)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            let Ok(m) = e.metadata() else { continue };
            if m.is_dir() {
                stack.push(e.path());
            } else {
                out.push((
                    e.path(),
                    m.len(),
                    m.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                ));
            }
        }
    }
    out
}

impl ChunkCache {
    /// Opens (creating) the cache under `root/cache`, limited to `limit` bytes.
    pub fn open(root: &Path, limit: u64) -> std::io::Result<Self> {
        let dir = root.join("cache/chunks");
        let tmp = root.join("cache/tmp");
        let pins = root.join("cache/pins");
        fs::create_dir_all(&dir)?;
        fs::create_dir_all(&tmp)?;
        fs::create_dir_all(&pins)?;
        // Leftovers of writers that died mid-write.
        if let Ok(rd) = fs::read_dir(&tmp) {
            for e in rd.flatten() {
                let old = e
                    .metadata()
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| t.elapsed().ok())
                    .is_some_and(|a| a > Duration::from_secs(3600));
                if old {
                    let _ = fs::remove_file(e.path());
                }
            }
        }
        let used = scan(&dir).iter().map(|e| e.1).sum();
        Ok(Self {
            dir,
            tmp,
            pins,
            limit,
            used: AtomicU64::new(used),
            evicting: Mutex::new(()),
            corrupt: AtomicU64::new(0),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path(&self, alg: DigestAlgorithm, digest: &Digest) -> PathBuf {
        let hex = digest.to_hex();
        self.dir.join(alg_dir(alg)).join(&hex[..2]).join(hex)
    }

    /// The chunk with this digest, verified; `None` if absent or corrupt.
    pub fn get(&self, alg: DigestAlgorithm, digest: &Digest, len: u32) -> Option<Vec<u8>> {
        let path = self.path(alg, digest);
        let read = fs::File::open(&path).and_then(|mut f| {
            let mut d = Vec::with_capacity(len as usize);
            std::io::Read::read_to_end(&mut f, &mut d)?;
            Ok((d, f.metadata()?))
        });
        let (data, meta) = match read {
            Ok(x) => x,
            Err(e) if e.kind() == ErrorKind::NotFound => return None,
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "cache entry unreadable");
                return None;
            }
        };
        if data.len() != len as usize || alg.digest(&data) != *digest {
            tracing::warn!(path = %path.display(), "cache entry corrupt; removing it and fetching again");
            self.corrupt.fetch_add(1, Ordering::Relaxed);
            // Remove it only if nobody has replaced it with a good copy meanwhile.
            use std::os::unix::fs::MetadataExt;
            let same =
                fs::metadata(&path).is_ok_and(|m| m.ino() == meta.ino() && m.dev() == meta.dev());
            if same && fs::remove_file(&path).is_ok() {
                self.used.fetch_sub(
                    (data.len() as u64).min(self.used.load(Ordering::Relaxed)),
                    Ordering::Relaxed,
                );
            }
            return None;
        }
        let stale = fs::metadata(&path)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age > TOUCH_AFTER);
        if stale {
            let _ = fs::File::options()
                .write(true)
                .open(&path)
                .and_then(|f| f.set_modified(SystemTime::now()));
        }
        Some(data)
    }

    /// Stores a verified chunk. Failures (a full disk) are logged and
    /// ignored: the cache is an optimisation, never a requirement.
    /// Whether an entry exists, unverified: a cheap check before fetching.
    pub fn contains(&self, alg: DigestAlgorithm, digest: &Digest) -> bool {
        self.path(alg, digest).exists()
    }

    pub fn put(&self, alg: DigestAlgorithm, digest: &Digest, data: &[u8]) {
        let path = self.path(alg, digest);
        if path.exists() {
            return;
        }
        let result = (|| -> std::io::Result<()> {
            fs::create_dir_all(path.parent().expect("has a parent"))?;
            let mut tmp = tempfile::NamedTempFile::new_in(&self.tmp)?;
            tmp.write_all(data)?;
            tmp.persist(&path).map_err(|e| e.error)?;
            Ok(())
        })();
        match result {
            Ok(()) => {
                let used =
                    self.used.fetch_add(data.len() as u64, Ordering::Relaxed) + data.len() as u64;
                if used > self.limit {
                    self.evict();
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not cache a chunk");
                if e.kind() == ErrorKind::StorageFull {
                    self.evict();
                }
            }
        }
    }

    fn evict(&self) {
        // One evictor at a time; others just carry on.
        let Ok(_guard) = self.evicting.try_lock() else {
            return;
        };
        let target = (self.limit as f64 * EVICT_TO) as u64;
        self.prune_to(target);
    }

    /// Keeps `digests` (an image's chunks) under `name` until
    /// [`ChunkCache::unpin`]: evicted only after every unpinned chunk.
    pub fn pin(&self, name: &str, alg: DigestAlgorithm, digests: &[Digest]) -> std::io::Result<()> {
        let mut text = String::with_capacity(digests.len() * 66);
        for d in digests {
            text.push_str(alg_dir(alg));
            text.push('/');
            text.push_str(&d.to_hex());
            text.push('\n');
        }
        let mut tmp = tempfile::NamedTempFile::new_in(&self.tmp)?;
        tmp.write_all(text.as_bytes())?;
        tmp.persist(self.pins.join(pin_name(name)))
            .map_err(|e| e.error)?;
        Ok(())
    }

    /// Drops the pin `name` under `root` (its image left the node); its
    /// chunks become ordinary cache entries.
    pub fn unpin(root: &Path, name: &str) {
        let _ = fs::remove_file(root.join("cache/pins").join(pin_name(name)));
    }

    /// Every pinned chunk, as `ALG/HEX`.
    fn pinned(&self) -> std::collections::HashSet<String> {
        let mut out = std::collections::HashSet::new();
        if let Ok(rd) = fs::read_dir(&self.pins) {
            for e in rd.flatten() {
                if let Ok(text) = fs::read_to_string(e.path()) {
                    out.extend(text.lines().map(str::to_string));
                }
            }
        }
        out
    }

    /// Removes least recently used entries until at most `target` bytes
    /// remain: unpinned ones first, pinned ones only if that is not enough.
    pub fn prune_to(&self, target: u64) -> PruneReport {
        let mut entries = scan(&self.dir);
        let pinned = self.pinned();
        let key = |p: &Path| -> Option<String> {
            let hex = p.file_name()?.to_str()?;
            let alg = p.parent()?.parent()?.file_name()?.to_str()?;
            Some(format!("{alg}/{hex}"))
        };
        entries.sort_by_key(|e| (key(&e.0).is_some_and(|k| pinned.contains(&k)), e.2));
        let mut total: u64 = entries.iter().map(|e| e.1).sum();
        let mut report = PruneReport::default();
        for (path, size, _) in entries {
            if total <= target {
                break;
            }
            if fs::remove_file(&path).is_ok() {
                total -= size;
                report.removed += 1;
                report.freed += size;
            }
        }
        report.remaining = total;
        self.used.store(total, Ordering::Relaxed);
        report
    }

    pub fn stats(&self) -> CacheStats {
        let entries = scan(&self.dir);
        CacheStats {
            entries: entries.len() as u64,
            bytes: entries.iter().map(|e| e.1).sum(),
            limit: (self.limit != u64::MAX).then_some(self.limit),
        }
    }
}

/// A pin's file name: the name, kept to safe characters.
fn pin_name(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn put_get_and_detect_corruption() {
        let root = tempfile::tempdir().unwrap();
        let cache = ChunkCache::open(root.path(), 1 << 20).unwrap();
        let alg = DigestAlgorithm::Blake3;
        let data = b"chunk bytes".repeat(100);
        let d = alg.digest(&data);
        assert_eq!(cache.get(alg, &d, data.len() as u32), None);
        cache.put(alg, &d, &data);
        assert_eq!(cache.get(alg, &d, data.len() as u32), Some(data.clone()));
        // Tamper: the entry is refused and removed.
        let path = cache.path(alg, &d);
        let mut bad = data.clone();
        bad[3] ^= 1;
        fs::write(&path, &bad).unwrap();
        assert_eq!(cache.get(alg, &d, data.len() as u32), None);
        assert!(!path.exists());
        assert_eq!(cache.corrupt.load(Ordering::Relaxed), 1);
        // A torn (short) entry likewise.
        cache.put(alg, &d, &data);
        fs::write(&path, &data[..10]).unwrap();
        assert_eq!(cache.get(alg, &d, data.len() as u32), None);
    }

    #[test]
    fn evicts_least_recently_used() {
        let root = tempfile::tempdir().unwrap();
        let cache = ChunkCache::open(root.path(), 10_000).unwrap();
        let alg = DigestAlgorithm::Blake3;
        let mut digests = Vec::new();
        for i in 0..12u8 {
            let data = vec![i; 1000];
            let d = alg.digest(&data);
            cache.put(alg, &d, &data);
            // Distinct, increasing mtimes.
            let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000 + i as u64);
            fs::File::options()
                .write(true)
                .open(cache.path(alg, &d))
                .unwrap()
                .set_modified(t)
                .unwrap();
            digests.push(d);
        }
        cache.prune_to(5_000);
        let present: Vec<bool> = digests
            .iter()
            .map(|d| cache.path(alg, d).exists())
            .collect();
        assert_eq!(present.iter().filter(|p| **p).count(), 5);
        assert!(
            present[7..].iter().all(|p| *p),
            "the newest survive: {present:?}"
        );
        let s = cache.stats();
        assert_eq!((s.entries, s.bytes), (5, 5000));
    }

    /// The chunks of images still on the node are evicted last.
    #[test]
    fn pinned_chunks_go_last() {
        let root = tempfile::tempdir().unwrap();
        let cache = ChunkCache::open(root.path(), 100_000).unwrap();
        let alg = DigestAlgorithm::Blake3;
        let mut digests = Vec::new();
        for i in 0..10u8 {
            let data = vec![i; 1000];
            let d = alg.digest(&data);
            cache.put(alg, &d, &data);
            let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000 + i as u64);
            fs::File::options()
                .write(true)
                .open(cache.path(alg, &d))
                .unwrap()
                .set_modified(t)
                .unwrap();
            digests.push(d);
        }
        // The oldest four belong to an image on the node.
        cache.pin("image-a", alg, &digests[..4]).unwrap();
        cache.prune_to(5_000);
        let present: Vec<bool> = digests
            .iter()
            .map(|d| cache.path(alg, d).exists())
            .collect();
        assert_eq!(
            present,
            [true, true, true, true, false, false, false, false, false, true]
        );
        // Unpinned, they go by age like any other.
        ChunkCache::unpin(root.path(), "image-a");
        cache.prune_to(2_000);
        let present: Vec<bool> = digests
            .iter()
            .map(|d| cache.path(alg, d).exists())
            .collect();
        assert_eq!(present.iter().filter(|p| **p).count(), 2);
        assert!(present[9], "{present:?}");
    }
}
