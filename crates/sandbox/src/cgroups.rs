//! The container's cgroup: made and limited before its first process
//! exists, entered without the kernel's global migration lock, removed
//! after.
//!
//! Moving a process into a cgroup by pid (`cgroup.procs`) takes the global
//! `cgroup_threadgroup_rwsem`, whose first writer after idle waits an RCU
//! grace period (8-16 ms here). A process born in the cgroup never
//! migrates: on v2 the init is cloned straight into it
//! (`CLONE_INTO_CGROUP`); on v1 the creating thread moves itself alone by
//! writing `0` to each hierarchy's `tasks` (a single thread moving itself
//! skips that lock), clones, and moves back.

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use oci_spec::runtime::{LinuxDeviceCgroup, LinuxDeviceType, LinuxResources};

use crate::SandboxError;

const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// A container's cgroup in every hierarchy it has.
pub enum Cgroup {
    /// One directory per v1 hierarchy, with the creating process's own
    /// cgroup there (to return to after cloning).
    V1(Vec<V1Dir>),
    /// The unified hierarchy.
    V2(PathBuf),
}

pub struct V1Dir {
    /// The hierarchy's mount, e.g. `/sys/fs/cgroup/cpu,cpuacct`.
    mount: PathBuf,
    /// The container's directory in it.
    dir: PathBuf,
    /// This process's cgroup in it.
    own: PathBuf,
}

impl Cgroup {
    /// Makes the cgroup `path` (e.g. `/skiff/ID`) and applies `resources`.
    /// Device rules are written on v1; on v2 they are a BPF program (see
    /// [`crate::device_filter`]).
    pub fn create(path: &str, resources: Option<&LinuxResources>) -> Result<Self, SandboxError> {
        let rel = relative(path)?;
        let cgroup = if crate::device_filter::unified_host() {
            let dir = Path::new(CGROUP_ROOT).join(rel);
            enable_v2_controllers(&dir, resources)?;
            mkdir(&dir)?;
            Cgroup::V2(dir)
        } else {
            let mut dirs = Vec::new();
            for (mount, own) in v1_hierarchies()? {
                let dir = mount.join(rel);
                let names = mount.file_name().and_then(|n| n.to_str()).unwrap_or("");
                if names.split(',').any(|c| c == "cpuset") {
                    mkdir_cpuset(&mount, &dir)?;
                } else {
                    mkdir(&dir)?;
                }
                dirs.push(V1Dir { mount, dir, own });
            }
            Cgroup::V1(dirs)
        };
        if let Some(r) = resources {
            if let Err(e) = cgroup.apply(r) {
                cgroup.remove();
                return Err(e);
            }
        }
        Ok(cgroup)
    }

    /// The directory of the hierarchy that has `controller`.
    fn controller_dir(&self, controller: &str) -> Option<&Path> {
        match self {
            Cgroup::V2(dir) => Some(dir),
            Cgroup::V1(dirs) => dirs
                .iter()
                .find(|d| {
                    d.mount
                        .file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.split(',').any(|c| c == controller))
                })
                .map(|d| d.dir.as_path()),
        }
    }

    fn apply(&self, r: &LinuxResources) -> Result<(), SandboxError> {
        let v2 = matches!(self, Cgroup::V2(_));
        let need = |controller: &str| {
            self.controller_dir(controller).ok_or_else(|| {
                SandboxError::Unsupported(format!(
                    "this host's cgroups have no {controller} controller, so the limit cannot be applied; drop the option that sets it"
                ))
            })
        };
        // The spec's -1 is "unlimited": v2 writes `max`, v1 takes -1.
        let value = |n: i64| -> String {
            match (n < 0, v2) {
                (true, true) => "max".into(),
                (true, false) => "-1".into(),
                (false, _) => n.to_string(),
            }
        };
        if let Some(mem) = r.memory() {
            if let Some(limit) = mem.limit() {
                let dir = need("memory")?;
                if v2 {
                    write(dir, "memory.max", &value(limit))?;
                    if let Some(swap) = mem.swap() {
                        // The spec's swap is memory+swap; v2's is swap alone.
                        let alone = if swap < 0 || limit < 0 {
                            -1
                        } else {
                            (swap - limit).max(0)
                        };
                        write(dir, "memory.swap.max", &value(alone))?;
                    }
                } else {
                    write(dir, "memory.limit_in_bytes", &value(limit))?;
                    if let Some(swap) = mem.swap() {
                        write(dir, "memory.memsw.limit_in_bytes", &value(swap))?;
                    }
                }
            }
        }
        if let Some(cpu) = r.cpu() {
            if let (Some(quota), Some(period)) = (cpu.quota(), cpu.period()) {
                let dir = need("cpu")?;
                if v2 {
                    write(dir, "cpu.max", &format!("{} {period}", value(quota)))?;
                } else {
                    write(dir, "cpu.cfs_period_us", &period.to_string())?;
                    write(dir, "cpu.cfs_quota_us", &value(quota))?;
                }
            }
        }
        if r.pids().is_some() {
            // Checked now, written by limit_pids once the init exists.
            need("pids")?;
        }
        if !v2 {
            if let Some(rules) = r.devices() {
                let dir = need("devices")?;
                for rule in rules {
                    let file = if rule.allow() {
                        "devices.allow"
                    } else {
                        "devices.deny"
                    };
                    write(dir, file, &v1_device_rule(rule))?;
                }
            }
        }
        Ok(())
    }

    /// For `CLONE_INTO_CGROUP`: the v2 directory, opened.
    pub fn v2_fd(&self) -> Result<Option<OwnedFd>, SandboxError> {
        match self {
            Cgroup::V2(dir) => rustix::fs::open(
                dir,
                rustix::fs::OFlags::DIRECTORY | rustix::fs::OFlags::CLOEXEC,
                rustix::fs::Mode::empty(),
            )
            .map(Some)
            .map_err(|e| SandboxError::io(format!("opening {}", dir.display()), e.into())),
            Cgroup::V1(_) => Ok(None),
        }
    }

    /// Runs `clone` (which makes the init and returns its pid) with this
    /// thread in the cgroup on v1, so the child is born there, and moves
    /// the thread back after; on v2 just runs it. The caller must be
    /// single-threaded. If the thread cannot be moved back, the child is
    /// killed: skiff must not stay inside the container's limits.
    pub fn born_inside(
        &self,
        clone: impl FnOnce() -> Result<i32, SandboxError>,
    ) -> Result<i32, SandboxError> {
        let Cgroup::V1(dirs) = self else {
            return clone();
        };
        let mut entered = 0;
        let mut moved = Ok(());
        for d in dirs {
            if let Err(e) = write(&d.dir, "tasks", "0") {
                moved = Err(e);
                break;
            }
            entered += 1;
        }
        let pid = moved.and_then(|()| clone());
        let mut back = Ok(());
        for d in &dirs[..entered] {
            if let Err(e) = write(&d.own, "tasks", "0") {
                back = back.and(Err(e));
            }
        }
        match (pid, back) {
            (Ok(pid), Ok(())) => Ok(pid),
            (Ok(pid), Err(e)) => {
                let _ = crate::process::signal(pid, libc::SIGKILL);
                let _ = crate::process::wait(pid);
                Err(e)
            }
            (Err(e), _) => Err(e),
        }
    }

    /// The pids limit, applied once the init exists: on v1 the creating
    /// thread counts while it clones, so `--pids-limit 1` would refuse the
    /// clone itself.
    pub fn limit_pids(&self, resources: Option<&LinuxResources>) -> Result<(), SandboxError> {
        let Some(pids) = resources.and_then(|r| r.pids().as_ref()) else {
            return Ok(());
        };
        let dir = self.controller_dir("pids").ok_or_else(|| {
            SandboxError::Unsupported(
                "this host's cgroups have no pids controller, so --pids-limit cannot be applied"
                    .into(),
            )
        })?;
        let limit = pids.limit();
        let value = if limit > 0 {
            limit.to_string()
        } else {
            "max".into()
        };
        write(dir, "pids.max", &value)
    }

    /// Removes the directories (best effort; see [`remove`]).
    pub fn remove(&self) {
        match self {
            Cgroup::V2(dir) => remove_dir(dir),
            Cgroup::V1(dirs) => dirs.iter().for_each(|d| remove_dir(&d.dir)),
        }
    }
}

/// What the cgroup at `path` uses now, on v1 or v2; a figure the host
/// does not keep is `None`.
pub fn stats(path: &str) -> crate::Stats {
    let Ok(rel) = relative(path) else {
        return crate::Stats::default();
    };
    let read = |file: PathBuf| -> Option<u64> {
        let text = std::fs::read_to_string(file).ok()?;
        let t = text.trim();
        (t != "max").then(|| t.parse().ok()).flatten()
    };
    let root = Path::new(CGROUP_ROOT);
    if crate::device_filter::unified_host() {
        let dir = root.join(rel);
        let cpu = std::fs::read_to_string(dir.join("cpu.stat"))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("usage_usec "))
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .map(|us| us * 1000)
            });
        return crate::Stats {
            memory_bytes: read(dir.join("memory.current")),
            memory_limit_bytes: read(dir.join("memory.max")),
            cpu_nanos: cpu,
            pids: read(dir.join("pids.current")),
        };
    }
    // A v1 limit of "no limit" is a huge number, not "max".
    let limit = read(root.join("memory").join(rel).join("memory.limit_in_bytes"))
        .filter(|&l| l < (1 << 62));
    crate::Stats {
        memory_bytes: read(root.join("memory").join(rel).join("memory.usage_in_bytes")),
        memory_limit_bytes: limit,
        cpu_nanos: read(root.join("cpuacct").join(rel).join("cpuacct.usage")),
        pids: read(root.join("pids").join(rel).join("pids.current")),
    }
}

/// The existing cgroup `path`, as [`Cgroup::create`] would have made it.
fn open_existing(path: &str) -> Result<Cgroup, SandboxError> {
    let rel = relative(path)?;
    let missing = |dir: &Path| {
        SandboxError::NotFound(format!(
            "the cgroup {} does not exist (has the container exited?)",
            dir.display()
        ))
    };
    if crate::device_filter::unified_host() {
        let dir = Path::new(CGROUP_ROOT).join(rel);
        if !dir.is_dir() {
            return Err(missing(&dir));
        }
        return Ok(Cgroup::V2(dir));
    }
    let mut dirs = Vec::new();
    for (mount, own) in v1_hierarchies()? {
        let dir = mount.join(rel);
        if !dir.is_dir() {
            return Err(missing(&dir));
        }
        dirs.push(V1Dir { mount, dir, own });
    }
    Ok(Cgroup::V1(dirs))
}

/// Applies `resources` to the running container's cgroup `path` (the OCI
/// runtime's `update`). Device rules are not changed.
pub fn update(path: &str, resources: &LinuxResources) -> Result<(), SandboxError> {
    let cgroup = open_existing(path)?;
    let mut r = resources.clone();
    r.set_devices(None);
    cgroup.apply(&r)?;
    cgroup.limit_pids(Some(&r))
}

/// The processes in the cgroup `path` now (one hierarchy is enough: a
/// container's processes are in the same cgroup in each).
pub fn procs(path: &str) -> Result<Vec<i32>, SandboxError> {
    let cgroup = open_existing(path)?;
    let dir = match &cgroup {
        Cgroup::V2(dir) => dir.clone(),
        Cgroup::V1(dirs) => cgroup
            .controller_dir("pids")
            .or_else(|| dirs.first().map(|d| d.dir.as_path()))
            .map(Path::to_path_buf)
            .ok_or_else(|| SandboxError::Unsupported("no cgroup hierarchy".into()))?,
    };
    let file = dir.join("cgroup.procs");
    let text = std::fs::read_to_string(&file)
        .map_err(|e| SandboxError::io(format!("reading {}", file.display()), e))?;
    Ok(text.lines().filter_map(|l| l.trim().parse().ok()).collect())
}

/// Freezes or thaws every process of the cgroup `path` (v1's freezer,
/// v2's `cgroup.freeze`), and waits until the kernel says it is done.
pub fn freeze(path: &str, frozen: bool) -> Result<(), SandboxError> {
    let cgroup = open_existing(path)?;
    let (dir, file, value) = match &cgroup {
        Cgroup::V2(dir) => (dir.clone(), "cgroup.freeze", if frozen { "1" } else { "0" }),
        Cgroup::V1(_) => (
            cgroup
                .controller_dir("freezer")
                .ok_or_else(|| {
                    SandboxError::Unsupported(
                        "this host's cgroups have no freezer controller, so containers cannot be paused".into(),
                    )
                })?
                .to_path_buf(),
            "freezer.state",
            if frozen { "FROZEN" } else { "THAWED" },
        ),
    };
    write(&dir, file, value)?;
    for _ in 0..1000 {
        if is_frozen(path) == frozen {
            return Ok(());
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    Err(SandboxError::Setup(format!(
        "the cgroup {} did not become {}",
        dir.display(),
        if frozen { "frozen" } else { "thawed" }
    )))
}

/// Whether the cgroup `path` is frozen (paused).
pub fn is_frozen(path: &str) -> bool {
    let Ok(cgroup) = open_existing(path) else {
        return false;
    };
    match &cgroup {
        Cgroup::V2(dir) => std::fs::read_to_string(dir.join("cgroup.events"))
            .is_ok_and(|s| s.lines().any(|l| l.trim() == "frozen 1")),
        Cgroup::V1(_) => cgroup.controller_dir("freezer").is_some_and(|d| {
            std::fs::read_to_string(d.join("freezer.state")).is_ok_and(|s| s.trim() == "FROZEN")
        }),
    }
}

/// Kills whatever still runs in the cgroup `path` and removes it from every
/// hierarchy. Missing directories are fine.
pub fn remove(path: &str) -> Result<(), SandboxError> {
    let rel = relative(path)?;
    let dirs: Vec<PathBuf> = if crate::device_filter::unified_host() {
        vec![Path::new(CGROUP_ROOT).join(rel)]
    } else {
        v1_hierarchies()?
            .into_iter()
            .map(|(mount, _)| mount.join(rel))
            .collect()
    };
    for dir in dirs.iter().filter(|d| d.is_dir()) {
        kill_all(dir);
        remove_dir(dir);
    }
    match dirs.iter().find(|d| d.is_dir()) {
        Some(d) => Err(SandboxError::Setup(format!(
            "cgroup {} is still busy after killing its processes",
            d.display()
        ))),
        None => Ok(()),
    }
}

fn kill_all(dir: &Path) {
    if std::fs::write(dir.join("cgroup.kill"), "1").is_ok() {
        return;
    }
    if let Ok(pids) = std::fs::read_to_string(dir.join("cgroup.procs")) {
        for pid in pids.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
            // SAFETY: kill(2) with a pid read from the cgroup; no memory involved.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
}

/// rmdir, retried while the last processes finish exiting.
fn remove_dir(dir: &Path) {
    for _ in 0..200 {
        match std::fs::remove_dir(dir) {
            Ok(()) => return,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            Err(e) => {
                tracing::warn!("removing cgroup {}: {e}", dir.display());
                return;
            }
        }
    }
    tracing::warn!("cgroup {} stayed busy", dir.display());
}

fn relative(path: &str) -> Result<&Path, SandboxError> {
    let rel = Path::new(path.trim_start_matches('/'));
    if rel.as_os_str().is_empty()
        || rel
            .components()
            .any(|c| !matches!(c, std::path::Component::Normal(_)))
    {
        return Err(SandboxError::Invalid(format!(
            "cgroups path {path:?} must name a cgroup below the root, without '..'"
        )));
    }
    Ok(rel)
}

/// The mounted v1 hierarchies that have controllers (named ones such as
/// `name=systemd` are left alone), with this process's cgroup in each.
fn v1_hierarchies() -> Result<Vec<(PathBuf, PathBuf)>, SandboxError> {
    let text = std::fs::read_to_string("/proc/self/cgroup")
        .map_err(|e| SandboxError::io("reading /proc/self/cgroup".into(), e))?;
    let mut out = Vec::new();
    for line in text.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(_), Some(controllers), Some(own)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        if controllers.is_empty() || controllers.starts_with("name=") {
            continue;
        }
        let mount = Path::new(CGROUP_ROOT).join(controllers);
        if mount.join("tasks").exists() {
            let own = mount.join(own.trim_start_matches('/'));
            out.push((mount, own));
        }
    }
    if out.is_empty() {
        return Err(SandboxError::Unsupported(
            "no cgroup hierarchy is mounted under /sys/fs/cgroup".into(),
        ));
    }
    Ok(out)
}

/// The files a process writes `0` to, to join the cgroup `path` in every
/// hierarchy it is in (an exec into a running container).
pub fn join_files(path: &str) -> Result<Vec<PathBuf>, SandboxError> {
    let rel = relative(path)?;
    if crate::device_filter::unified_host() {
        return Ok(vec![Path::new(CGROUP_ROOT).join(rel).join("cgroup.procs")]);
    }
    Ok(v1_hierarchies()?
        .into_iter()
        .map(|(mount, _)| mount.join(rel).join("cgroup.procs"))
        .filter(|f| f.exists())
        .collect())
}

/// Whether this host's cgroups have `controller`: a v1 hierarchy of it, or
/// on a unified host the v2 root's `cgroup.controllers`. For defaults that
/// apply only where they can (the pids limit).
pub fn has_controller(controller: &str) -> bool {
    if crate::device_filter::unified_host() {
        return std::fs::read_to_string(Path::new(CGROUP_ROOT).join("cgroup.controllers"))
            .is_ok_and(|s| s.split_whitespace().any(|c| c == controller));
    }
    v1_controller_sets().is_ok_and(|sets| {
        sets.iter()
            .any(|set| set.split(',').any(|c| c == controller))
    })
}

/// The controller sets of those hierarchies (`cpu,cpuacct`, `pids`...),
/// for the container's own view of /sys/fs/cgroup.
pub(crate) fn v1_controller_sets() -> Result<Vec<String>, SandboxError> {
    Ok(v1_hierarchies()?
        .into_iter()
        .filter_map(|(mount, _)| Some(mount.file_name()?.to_str()?.to_string()))
        .collect())
}

fn mkdir(dir: &Path) -> Result<(), SandboxError> {
    std::fs::create_dir_all(dir)
        .map_err(|e| SandboxError::io(format!("creating cgroup {}", dir.display()), e))
}

/// A v1 cpuset cgroup starts with no CPUs or memory nodes, and nothing can
/// join it until it has some: each new level copies its parent's.
fn mkdir_cpuset(mount: &Path, dir: &Path) -> Result<(), SandboxError> {
    let rel = dir.strip_prefix(mount).unwrap_or(dir);
    let mut parent = mount.to_path_buf();
    for c in rel.components() {
        let next = parent.join(c);
        if !next.is_dir() {
            mkdir(&next)?;
        }
        for file in ["cpuset.cpus", "cpuset.mems"] {
            let current = std::fs::read_to_string(next.join(file)).unwrap_or_default();
            if current.trim().is_empty() {
                let from = std::fs::read_to_string(parent.join(file))
                    .map_err(|e| SandboxError::io(format!("reading {file}"), e))?;
                write(&next, file, from.trim())?;
            }
        }
        parent = next;
    }
    Ok(())
}

/// Turns on the controllers the limits need in each ancestor's
/// `cgroup.subtree_control`.
fn enable_v2_controllers(
    dir: &Path,
    resources: Option<&LinuxResources>,
) -> Result<(), SandboxError> {
    let Some(r) = resources else { return Ok(()) };
    let mut wanted = Vec::new();
    if r.memory().as_ref().is_some_and(|m| m.limit().is_some()) {
        wanted.push("memory");
    }
    if r.cpu().as_ref().is_some_and(|c| c.quota().is_some()) {
        wanted.push("cpu");
    }
    if r.pids().is_some() {
        wanted.push("pids");
    }
    if wanted.is_empty() {
        return Ok(());
    }
    let root = Path::new(CGROUP_ROOT);
    let available = std::fs::read_to_string(root.join("cgroup.controllers")).unwrap_or_default();
    for c in &wanted {
        if !available.split_whitespace().any(|a| a == *c) {
            return Err(SandboxError::Unsupported(format!(
                "this host's cgroup v2 hierarchy has no {c} controller, so the limit cannot be applied; drop the option that sets it"
            )));
        }
    }
    let line = wanted
        .iter()
        .map(|c| format!("+{c}"))
        .collect::<Vec<_>>()
        .join(" ");
    let mut level = root.to_path_buf();
    let rel = dir.strip_prefix(root).unwrap_or(dir);
    let mut parts: Vec<_> = rel.components().collect();
    parts.pop();
    write(&level, "cgroup.subtree_control", &line)?;
    for c in parts {
        level = level.join(c);
        mkdir(&level)?;
        write(&level, "cgroup.subtree_control", &line)?;
    }
    Ok(())
}

fn write(dir: &Path, file: &str, value: &str) -> Result<(), SandboxError> {
    let path = dir.join(file);
    std::fs::write(&path, value)
        .map_err(|e| SandboxError::io(format!("writing {value:?} to {}", path.display()), e))
}

/// `TYPE MAJOR:MINOR ACCESS`, as `devices.allow`/`devices.deny` take it.
fn v1_device_rule(rule: &LinuxDeviceCgroup) -> String {
    let typ = match rule.typ() {
        Some(LinuxDeviceType::C) => "c",
        Some(LinuxDeviceType::B) => "b",
        _ => "a",
    };
    let num = |n: Option<i64>| n.map_or("*".to_string(), |n| n.to_string());
    let access = rule.access().clone().unwrap_or_else(|| "rwm".into());
    format!("{typ} {}:{} {access}", num(rule.major()), num(rule.minor()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_rules_render_as_v1_writes() {
        let spec: Vec<LinuxDeviceCgroup> = serde_json::from_value(serde_json::json!([
            {"allow": false, "access": "rwm"},
            {"allow": true, "type": "c", "major": 1, "minor": 3, "access": "rwm"},
            {"allow": true, "type": "c", "major": 136, "access": "rwm"},
            {"allow": true, "type": "b", "access": "m"},
        ]))
        .unwrap();
        let lines: Vec<String> = spec.iter().map(v1_device_rule).collect();
        assert_eq!(lines, ["a *:* rwm", "c 1:3 rwm", "c 136:* rwm", "b *:* m"]);
    }

    /// v2's files and units differ from v1's (swap alone, not memory+swap;
    /// one `cpu.max` line). This host's v2 hierarchy has no controllers,
    /// so the mapping is checked on plain files here; v1 is enforced and
    /// tested end to end in the CLI's tests.
    #[test]
    fn v2_limits_are_written_in_v2_terms() {
        let dir = tempfile::tempdir().unwrap();
        let resources: LinuxResources = serde_json::from_value(serde_json::json!({
            "memory": {"limit": 134217728, "swap": 134217728},
            "cpu": {"quota": 50000, "period": 100000},
            "pids": {"limit": 20},
        }))
        .unwrap();
        let cgroup = Cgroup::V2(dir.path().to_path_buf());
        cgroup.apply(&resources).unwrap();
        cgroup.limit_pids(Some(&resources)).unwrap();
        let read = |f: &str| std::fs::read_to_string(dir.path().join(f)).unwrap();
        assert_eq!(read("memory.max"), "134217728");
        assert_eq!(read("memory.swap.max"), "0");
        assert_eq!(read("cpu.max"), "50000 100000");
        assert_eq!(read("pids.max"), "20");
    }

    /// The spec's -1 means unlimited (a shim passes such specs); it must
    /// not become a limit of zero.
    #[test]
    fn minus_one_is_unlimited_on_v1_and_v2() {
        let resources: LinuxResources = serde_json::from_value(serde_json::json!({
            "memory": {"limit": 134217728, "swap": -1},
            "cpu": {"quota": -1, "period": 100000},
        }))
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        Cgroup::V2(dir.path().to_path_buf())
            .apply(&resources)
            .unwrap();
        let read = |d: &Path, f: &str| std::fs::read_to_string(d.join(f)).unwrap();
        assert_eq!(read(dir.path(), "memory.max"), "134217728");
        assert_eq!(read(dir.path(), "memory.swap.max"), "max");
        assert_eq!(read(dir.path(), "cpu.max"), "max 100000");

        let v1 = tempfile::tempdir().unwrap();
        let dirs: Vec<V1Dir> = ["memory", "cpu,cpuacct"]
            .iter()
            .map(|name| {
                let mount = v1.path().join(name);
                let dir = mount.join("skiff/c");
                std::fs::create_dir_all(&dir).unwrap();
                V1Dir {
                    mount,
                    own: dir.clone(),
                    dir,
                }
            })
            .collect();
        let memory = dirs[0].dir.clone();
        let cpu = dirs[1].dir.clone();
        Cgroup::V1(dirs).apply(&resources).unwrap();
        assert_eq!(read(&memory, "memory.limit_in_bytes"), "134217728");
        assert_eq!(read(&memory, "memory.memsw.limit_in_bytes"), "-1");
        assert_eq!(read(&cpu, "cpu.cfs_quota_us"), "-1");
    }

    #[test]
    fn cgroup_paths_stay_below_the_root() {
        assert!(relative("/skiff/abc").is_ok());
        for bad in ["/", "", "/skiff/../../x"] {
            assert!(relative(bad).is_err(), "{bad}");
        }
    }
}
