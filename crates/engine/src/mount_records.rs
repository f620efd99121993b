//! The node's record of running mounts: `ROOT/mounts/ID.json`, with the
//! daemon's control socket at `ROOT/run/ID-PID.sock`. ID derives from the
//! mountpoint's absolute path, so a broken mount can still be found.
//!
//! A record names the daemon that owns it. A daemon whose mount was taken
//! off its path (while a container's namespace kept it alive) may outlive
//! a newer mount at the same path: it removes only its own record and
//! socket, never the newer daemon's.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{EngineError, IoContext, Result};

#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct MountRecord {
    pub mountpoint: PathBuf,
    pub image: String,
    pub pid: u32,
    pub socket: PathBuf,
    pub log: PathBuf,
}

/// The absolute path, without resolving symlinks (a dead FUSE mountpoint
/// cannot be resolved).
pub fn absolute(p: &Path) -> Result<PathBuf> {
    std::path::absolute(p).ctx(|| format!("resolving {}", p.display()))
}

pub fn id(mountpoint: &Path) -> String {
    let hash = blake3::hash(mountpoint.as_os_str().as_encoded_bytes());
    hash.to_hex()[..16].to_string()
}

pub struct Paths {
    pub record: PathBuf,
    pub log: PathBuf,
}

pub fn paths(root: &Path, mountpoint: &Path) -> Paths {
    let id = id(mountpoint);
    Paths {
        record: root.join("mounts").join(format!("{id}.json")),
        log: root.join("logs").join(format!("mount-{id}.log")),
    }
}

/// The control socket of the daemon `pid` serving `mountpoint`: one per
/// daemon, so that two daemons of one path never share a socket file.
pub fn socket(root: &Path, mountpoint: &Path, pid: u32) -> PathBuf {
    root.join("run")
        .join(format!("{}-{pid}.sock", id(mountpoint)))
}

pub fn write(root: &Path, rec: &MountRecord) -> Result<()> {
    let p = paths(root, &rec.mountpoint);
    let dir = p.record.parent().unwrap_or(root);
    std::fs::create_dir_all(dir).ctx(|| format!("creating {}", dir.display()))?;
    let tmp = p.record.with_extension("tmp");
    let bytes = serde_json::to_vec_pretty(rec)
        .map_err(|e| EngineError::io("encoding a mount record", e.into()))?;
    std::fs::write(&tmp, bytes).ctx(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, &p.record).ctx(|| format!("writing {}", p.record.display()))?;
    Ok(())
}

pub fn read(root: &Path, mountpoint: &Path) -> Option<MountRecord> {
    let p = paths(root, mountpoint);
    serde_json::from_slice(&std::fs::read(p.record).ok()?).ok()
}

/// Forgets the mount at `mountpoint`, whichever daemon owns it: for a mount
/// that is known to be gone from its path.
pub fn remove(root: &Path, mountpoint: &Path) {
    let p = paths(root, mountpoint);
    if let Some(rec) = read(root, mountpoint) {
        let _ = std::fs::remove_file(&rec.socket);
    }
    let _ = std::fs::remove_file(p.record);
}

/// What a daemon removes as it ends: its socket, and the record if it is
/// still its own.
pub fn remove_own(root: &Path, mountpoint: &Path, pid: u32) {
    let _ = std::fs::remove_file(socket(root, mountpoint, pid));
    if read(root, mountpoint).is_some_and(|r| r.pid == pid) {
        let _ = std::fs::remove_file(paths(root, mountpoint).record);
    }
}

pub fn alive(pid: u32) -> bool {
    let exists = rustix::process::Pid::from_raw(pid as i32)
        .is_some_and(|p| rustix::process::test_kill_process(p).is_ok());
    // A zombie (exited, not yet reaped by its parent) serves nothing.
    exists && !is_zombie(pid)
}

fn is_zombie(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // The state follows the command name, which is in parentheses and
    // may itself hold spaces or parentheses.
    stat.rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().next())
        == Some("Z")
}
