//! The node's record of containers: `ROOT/containers/ID/`, holding
//! `state.json` (this record), `config.json` (the OCI runtime spec),
//! `container.log` (a detached container's output) and the overlay's
//! `upper/` and `work/`. It survives restarts of skiff.
//!
//! The overlay's mount point lives only as long as the container's
//! processes, under [`run_dir`] on a tmpfs (see there).

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Created,
    Running,
    Exited,
}

#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct Record {
    pub id: String,
    pub name: String,
    pub image: String,
    pub command: Vec<String>,
    /// Seconds since the Unix epoch.
    pub created: u64,
    pub status: Status,
    /// The init process on the host, while it runs.
    pub pid: Option<i32>,
    /// Its start time in clock ticks after boot, so a reused pid is not
    /// mistaken for it.
    pub pid_start: Option<u64>,
    pub exit_code: Option<i32>,
    pub oom_killed: bool,
    pub finished: Option<u64>,
    pub detached: bool,
    pub remove_on_exit: bool,
    pub cgroups_path: String,
    pub stop_signal: i32,
    /// A network namespace of its own (`--network none`), whose loopback
    /// skiff brings up.
    #[serde(default)]
    pub private_network: bool,
    /// Where the image's tree is mounted (shared with other containers).
    pub image_mount: PathBuf,
    /// `--storage-opt size`: the writable layer is a filesystem of this size.
    #[serde(default)]
    pub layer_size: Option<u64>,
}

pub fn dir(root: &Path, id: &str) -> PathBuf {
    root.join("containers").join(id)
}

/// Volatile state on a tmpfs: `/run/skiff/TAG`, where TAG names the root
/// (so separate roots never share it). Mount points do not survive a
/// reboot, so they belong there; and on this project's build machines,
/// whose ext4 has no journal, every inode created costs a scan past
/// recently deleted ones (`recently_deleted`).
pub fn run_dir(root: &Path) -> PathBuf {
    let root = std::fs::canonicalize(root)
        .or_else(|_| std::path::absolute(root))
        .unwrap_or_else(|_| root.to_path_buf());
    let tag = blake3::hash(root.as_os_str().as_encoded_bytes()).to_hex();
    Path::new(RUN_BASE).join(&tag[..12])
}

/// The tmpfs [`run_dir`]s live on.
const RUN_BASE: &str = "/run/skiff";

/// One container's volatile directory, holding the overlay's mount point
/// (`rootfs`).
pub fn scratch_dir(root: &Path, id: &str) -> PathBuf {
    run_dir(root).join(id)
}

/// Makes [`run_dir`], first mounting a tmpfs at `/run/skiff` if it is not
/// on one already (systemd hosts have /run on tmpfs; others may not). A
/// tmpfs that cannot be mounted leaves the state on disk, which works.
///
/// Root-only all the way down (0700): container roots are mounted here,
/// and honour setuid bits and device nodes. The container's init never
/// walks this path (it starts inside its root), so a user namespace's
/// root needs no way through.
pub fn prepare_run_dir(root: &Path) -> Result<PathBuf> {
    let base = Path::new(RUN_BASE);
    crate::root_dir::make_private(base).with_context(|| format!("creating {}", base.display()))?;
    if !on_tmpfs(base) {
        // Two skiffs racing here would stack two mounts; a lock keeps it one.
        let lock = std::fs::File::create("/run/skiff.lock").context("creating /run/skiff.lock")?;
        rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockExclusive)
            .context("locking /run/skiff.lock")?;
        if !on_tmpfs(base) {
            let flags = rustix::mount::MountFlags::NOSUID
                | rustix::mount::MountFlags::NODEV
                | rustix::mount::MountFlags::NOEXEC;
            if let Err(e) =
                rustix::mount::mount("skiff-run", base, "tmpfs", flags, c"mode=0700,size=64m")
            {
                tracing::warn!(
                    "mounting a tmpfs at {}: {e}; keeping container state on disk",
                    base.display()
                );
            }
        }
    }
    // An older skiff left it searchable by all (0711).
    crate::root_dir::make_private(base)
        .with_context(|| format!("setting the mode of {}", base.display()))?;
    let dir = run_dir(root);
    crate::root_dir::make_private(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

fn on_tmpfs(path: &Path) -> bool {
    const TMPFS_MAGIC: i64 = 0x0102_1994;
    const RAMFS_MAGIC: i64 = 0x8584_58f6;
    rustix::fs::statfs(path).is_ok_and(|s| matches!(s.f_type, TMPFS_MAGIC | RAMFS_MAGIC))
}

/// Compiled seccomp filters, shared by all containers (see
/// `skiff_sandbox::seccomp_filter`).
pub fn seccomp_cache(root: &Path) -> PathBuf {
    root.join("seccomp")
}

pub fn log_path(root: &Path, id: &str) -> PathBuf {
    dir(root, id).join("container.log")
}

pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A fresh 64-hex-digit container ID.
pub fn new_id() -> Result<String> {
    let mut seed = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut seed))
        .context("reading /dev/urandom for a container ID")?;
    Ok(hex(&seed))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Record {
    pub fn short_id(&self) -> &str {
        &self.id[..12.min(self.id.len())]
    }

    pub fn save(&self, root: &Path) -> Result<()> {
        let d = dir(root, &self.id);
        // Owner-only: config.json and the record hold the container's
        // environment and command, which may carry secrets.
        std::os::unix::fs::DirBuilderExt::mode(std::fs::DirBuilder::new().recursive(true), 0o700)
            .create(&d)
            .with_context(|| format!("creating {}", d.display()))?;
        let tmp = d.join("state.json.tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(self)?)
            .with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, d.join("state.json"))
            .with_context(|| format!("writing {}", d.join("state.json").display()))?;
        Ok(())
    }

    pub fn load(root: &Path, id: &str) -> Result<Record> {
        let p = dir(root, id).join("state.json");
        let bytes = std::fs::read(&p).with_context(|| format!("reading {}", p.display()))?;
        serde_json::from_slice(&bytes).with_context(|| format!("parsing {}", p.display()))
    }

    /// Whether the recorded init process still runs (and is the same one).
    pub fn running(&self) -> bool {
        match (self.status, self.pid, self.pid_start) {
            (Status::Running | Status::Created, Some(pid), Some(start)) => {
                process_start_time(pid) == Some(start)
            }
            _ => false,
        }
    }

    /// The status to show: a record that says running but whose process is
    /// gone (its supervisor was killed) shows as exited.
    pub fn effective_status(&self) -> Status {
        match self.status {
            Status::Running | Status::Created if !self.running() => Status::Exited,
            s => s,
        }
    }
}

/// Field 22 of /proc/PID/stat: the process start time in clock ticks.
pub fn process_start_time(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces and parentheses: skip past the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// Every recorded container, oldest first.
pub fn all(root: &Path) -> Result<Vec<Record>> {
    let d = root.join("containers");
    let mut out = Vec::new();
    let entries = match std::fs::read_dir(&d) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e).with_context(|| format!("listing {}", d.display())),
    };
    for e in entries {
        let e = e?;
        let id = e.file_name().to_string_lossy().into_owned();
        match Record::load(root, &id) {
            Ok(r) => out.push(r),
            Err(err) => tracing::warn!(%id, "skipping a container with unreadable state: {err:#}"),
        }
    }
    out.sort_by(|a, b| a.created.cmp(&b.created).then(a.id.cmp(&b.id)));
    Ok(out)
}

/// Finds a container by name, full ID or unique ID prefix.
pub fn find(root: &Path, key: &str) -> Result<Record> {
    let all = all(root)?;
    if let Some(r) = all.iter().find(|r| r.name == key || r.id == key) {
        return Ok(r.clone());
    }
    let matches: Vec<&Record> = all.iter().filter(|r| r.id.starts_with(key)).collect();
    match matches.as_slice() {
        [one] => Ok((*one).clone()),
        [] => bail!("no container named {key:?}; `skiff ps -a` lists them"),
        _ => bail!(
            "{key:?} matches {} container IDs; give more of the ID",
            matches.len()
        ),
    }
}

/// Docker's rule for names.
pub fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
        && name.len() <= 128
}
