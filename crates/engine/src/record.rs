//! The node's record of containers: `ROOT/containers/ID/`, holding
//! `state.json` (this record), `config.json` (the OCI runtime spec),
//! `container.log` (its output, see [`crate::container_log`]) and the overlay's
//! `upper/` and `work/`. It survives restarts of skiff.
//!
//! The overlay's mount point lives only as long as the container's
//! processes, under [`crate::root_dir::run_dir`] on a tmpfs.

use std::io::Read;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{EngineError, IoContext, Result};

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
    /// `--log-opt max-size`: where its log rotates (default
    /// [`crate::container_log::DEFAULT_MAX_FILE_BYTES`]).
    #[serde(default)]
    pub log_max_file_bytes: Option<u64>,
    /// Whether its output is kept in its log: all but a foreground `--rm`
    /// container whose output goes to a pipe or a file (see
    /// [`crate::container_log::location`]).
    #[serde(default = "yes")]
    pub keeps_log: bool,
    /// The sandbox kind it runs in (`skiff_sandbox::SandboxKind::name`).
    #[serde(default = "namespace_kind")]
    pub sandbox: String,
    /// The image as a block device (its NBD socket), for a kind that
    /// boots its own kernel.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub block_device: Option<PathBuf>,
}

fn yes() -> bool {
    true
}

fn namespace_kind() -> String {
    "namespace".into()
}

pub fn dir(root: &Path, id: &str) -> PathBuf {
    root.join("containers").join(id)
}

/// A container's OCI runtime spec, `ROOT/containers/ID/config.json`.
pub fn load_spec(root: &Path, id: &str) -> Result<oci_spec::runtime::Spec> {
    let path = dir(root, id).join("config.json");
    oci_spec::runtime::Spec::load(&path).map_err(|e| {
        EngineError::Invalid(format!(
            "reading the container's spec {}: {e}",
            path.display()
        ))
    })
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
        .ctx(|| "reading /dev/urandom for a container ID".into())?;
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
            .ctx(|| format!("creating {}", d.display()))?;
        let bytes = serde_json::to_vec_pretty(self)
            .map_err(|e| EngineError::io("encoding a container record", e.into()))?;
        write_atomically(&d.join("state.json"), &bytes)
    }

    pub fn load(root: &Path, id: &str) -> Result<Record> {
        let p = dir(root, id).join("state.json");
        let bytes = std::fs::read(&p).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => EngineError::NotFound(format!("no container {id}")),
            _ => EngineError::io(format!("reading {}", p.display()), e),
        })?;
        serde_json::from_slice(&bytes)
            .map_err(|e| EngineError::io(format!("parsing {}", p.display()), e.into()))
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

/// Writes `path` whole or not at all: a sibling `.tmp` file, renamed over.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = std::path::PathBuf::from(tmp);
    std::fs::write(&tmp, bytes).ctx(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).ctx(|| format!("writing {}", path.display()))
}

/// A UTC time as RFC 3339 (`2026-12-02T20:25:28Z`), as containerd's
/// labels and the runtime spec's state want it.
pub fn rfc3339(t: std::time::SystemTime) -> String {
    let secs = t
        .duration_since(std::time::SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs()) as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil from days (proleptic Gregorian), after H. Hinnant's algorithm.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Field 22 of /proc/PID/stat: the process start time in clock ticks;
/// `None` for a process that is gone, or dead and not yet reaped (a
/// zombie has exited).
pub fn process_start_time(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces and parentheses: skip past the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    if matches!(fields.next(), Some("Z" | "X")) {
        return None;
    }
    fields.nth(18)?.parse().ok()
}

/// Every recorded container, oldest first.
pub fn all(root: &Path) -> Result<Vec<Record>> {
    let d = root.join("containers");
    let mut out = Vec::new();
    let entries = match std::fs::read_dir(&d) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(EngineError::io(format!("listing {}", d.display()), e)),
    };
    for e in entries {
        let e = e.ctx(|| format!("listing {}", d.display()))?;
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
    find_in(all(root)?, key)
}

/// [`find`] among records already read.
pub fn find_in(all: Vec<Record>, key: &str) -> Result<Record> {
    if let Some(r) = all.iter().find(|r| r.name == key || r.id == key) {
        return Ok(r.clone());
    }
    let matches: Vec<&Record> = all.iter().filter(|r| r.id.starts_with(key)).collect();
    match matches.as_slice() {
        [one] => Ok((*one).clone()),
        [] => Err(EngineError::NotFound(format!(
            "no container named {key:?}; `skiff ps -a` lists them"
        ))),
        _ => Err(EngineError::Invalid(format!(
            "{key:?} matches {} container IDs; give more of the ID",
            matches.len()
        ))),
    }
}

/// Docker's rule for names.
pub fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
        && name.len() <= 128
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str, name: &str, created: u64) -> Record {
        Record {
            id: id.to_string(),
            name: name.to_string(),
            image: "img".into(),
            command: vec!["true".into()],
            created,
            status: Status::Exited,
            pid: None,
            pid_start: None,
            exit_code: Some(0),
            oom_killed: false,
            finished: Some(created),
            detached: false,
            remove_on_exit: false,
            cgroups_path: format!("/skiff/{id}"),
            stop_signal: libc::SIGTERM,
            private_network: true,
            image_mount: "/nowhere".into(),
            layer_size: None,
            log_max_file_bytes: None,
            keeps_log: true,
            sandbox: "namespace".into(),
            block_device: None,
        }
    }

    #[test]
    fn records_save_load_and_are_found_by_name_id_or_prefix() {
        let root = tempfile::tempdir().unwrap();
        let a = record(&format!("ab{}", "1".repeat(62)), "alpha", 2);
        let b = record(&format!("ac{}", "2".repeat(62)), "beta", 1);
        a.save(root.path()).unwrap();
        b.save(root.path()).unwrap();
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(dir(root.path(), &a.id))
                .unwrap()
                .permissions(),
        );
        assert_eq!(mode & 0o777, 0o700);
        let names: Vec<String> = all(root.path())
            .unwrap()
            .into_iter()
            .map(|r| r.name)
            .collect();
        assert_eq!(names, ["beta", "alpha"], "oldest first");
        assert_eq!(find(root.path(), "alpha").unwrap().id, a.id);
        assert_eq!(find(root.path(), &b.id).unwrap().name, "beta");
        assert_eq!(find(root.path(), "ab1").unwrap().name, "alpha");
        assert!(
            matches!(find(root.path(), "a"), Err(EngineError::Invalid(_))),
            "ambiguous"
        );
        assert!(matches!(
            find(root.path(), "zz"),
            Err(EngineError::NotFound(_))
        ));
        assert!(matches!(
            Record::load(root.path(), "missing"),
            Err(EngineError::NotFound(_))
        ));
        // An unreadable record is an error of its own, never "not found".
        std::fs::write(dir(root.path(), &a.id).join("state.json"), b"{").unwrap();
        assert!(matches!(
            Record::load(root.path(), &a.id),
            Err(EngineError::Io { .. })
        ));
        assert_eq!(
            all(root.path()).unwrap().len(),
            1,
            "skipped, with a warning"
        );
    }

    #[test]
    fn a_record_whose_process_is_gone_shows_as_exited() {
        let mut r = record("x", "x", 0);
        r.status = Status::Running;
        r.pid = Some(std::process::id() as i32);
        r.pid_start = process_start_time(r.pid.unwrap());
        assert!(r.running());
        assert_eq!(r.effective_status(), Status::Running);
        r.pid_start = r.pid_start.map(|s| s + 1);
        assert!(!r.running(), "a reused pid is not the container");
        assert_eq!(r.effective_status(), Status::Exited);
        assert!(valid_name("web-1.a_b") && !valid_name("-x") && !valid_name(""));
    }
}
