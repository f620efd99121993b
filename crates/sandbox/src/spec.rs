//! The OCI runtime spec (`config.json`) skiff generates for a container,
//! with Docker's defaults: its capability set, masked and read-only paths,
//! mounts, namespaces and seccomp policy.

use std::collections::BTreeSet;
use std::path::PathBuf;

use oci_spec::runtime::{LinuxSeccomp, Spec};
use serde_json::json;

use crate::SandboxError;

/// Paths runc and Docker hide behind an empty file or directory: they leak
/// host details or let a process poke the host kernel.
pub const MASKED_PATHS: &[&str] = &[
    "/proc/asound",
    "/proc/acpi",
    "/proc/interrupts",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

/// Paths runc and Docker remount read-only.
pub const READONLY_PATHS: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// Docker's device cgroup: deny everything, then allow creating any node
/// and using the devices of the minimal `/dev` (null, zero, full, random,
/// urandom, tty, console, ptmx, pts) and tun. Explicit in `config.json`, so
/// runc, crun and skiff's cgroup v2 program all enforce the same list.
fn device_rules() -> serde_json::Value {
    let allow = |typ: &str, major: Option<i64>, minor: Option<i64>, access: &str| {
        let mut r = json!({"allow": true, "type": typ, "access": access});
        if let Some(m) = major {
            r["major"] = json!(m);
        }
        if let Some(m) = minor {
            r["minor"] = json!(m);
        }
        r
    };
    let mut rules = vec![
        json!({"allow": false, "access": "rwm"}),
        allow("c", None, None, "m"),
        allow("b", None, None, "m"),
    ];
    for (major, minor) in [
        (1, 3),
        (1, 5),
        (1, 7),
        (1, 8),
        (1, 9),
        (5, 0),
        (5, 1),
        (5, 2),
        (10, 200),
    ] {
        rules.push(allow("c", Some(major), Some(minor), "rwm"));
    }
    rules.push(allow("c", Some(136), None, "rwm"));
    serde_json::Value::Array(rules)
}

/// What runc does to every spec it is handed: after the spec's own device
/// rules, allow creating any node and using the minimal `/dev` (the rules
/// above, less the deny-all) and each of `linux.devices`. A spec that
/// denies all devices still gets a working `/dev`, as under runc.
pub fn add_runtime_device_rules(spec: &mut oci_spec::runtime::Spec) -> Result<(), SandboxError> {
    let mut extra: Vec<serde_json::Value> = match device_rules() {
        serde_json::Value::Array(rules) => rules.into_iter().skip(1).collect(),
        _ => Vec::new(),
    };
    let Some(linux) = spec.linux().clone() else {
        return Ok(());
    };
    for d in linux.devices().iter().flatten() {
        let typ = match d.typ() {
            oci_spec::runtime::LinuxDeviceType::B => "b",
            oci_spec::runtime::LinuxDeviceType::P => continue,
            _ => "c",
        };
        extra.push(json!({"allow": true, "type": typ, "major": d.major(), "minor": d.minor(), "access": "rwm"}));
    }
    let extra: Vec<oci_spec::runtime::LinuxDeviceCgroup> =
        serde_json::from_value(serde_json::Value::Array(extra))
            .map_err(|e| SandboxError::Invalid(format!("device rules: {e}")))?;
    let mut resources = linux.resources().clone().unwrap_or_default();
    let mut rules = resources.devices().clone().unwrap_or_default();
    rules.extend(extra);
    resources.set_devices(Some(rules));
    let mut linux = linux;
    linux.set_resources(Some(resources));
    spec.set_linux(Some(linux));
    Ok(())
}

/// The files under `/etc` a spec may carry for the container, each in the
/// annotation [`ETC_FILE_ANNOTATION`]`NAME`.
pub const ETC_FILES: &[&str] = &["hostname", "hosts", "resolv.conf"];
pub const ETC_FILE_ANNOTATION: &str = "org.skiff.etc.";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Network {
    /// A new network namespace with only a loopback interface.
    #[default]
    None,
    /// The host's network namespace.
    Host,
}

/// A bind mount from the host (`-v SRC:DST[:ro]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Volume {
    pub source: PathBuf,
    pub destination: String,
    pub read_only: bool,
}

/// The pids limit a container gets unless told otherwise (Podman's):
/// enough for any service, and a fork bomb stops there.
pub const DEFAULT_PIDS_LIMIT: i64 = 2048;

/// cgroup limits; `None` means unlimited.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Resources {
    pub memory_bytes: Option<i64>,
    pub cpus: Option<f64>,
    pub pids: Option<i64>,
}

/// A user-namespace remap: container IDs 0..size map to host IDs
/// host_id..host_id+size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdMap {
    pub host_id: u32,
    pub size: u32,
}

/// Who the process runs as, already resolved to numbers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProcessUser {
    pub uid: u32,
    pub gid: u32,
    pub additional_gids: Vec<u32>,
}

/// Everything that decides a container's spec.
#[derive(Debug, Clone)]
pub struct ContainerSpec {
    pub rootfs: PathBuf,
    pub args: Vec<String>,
    pub env: Vec<String>,
    pub cwd: String,
    pub user: ProcessUser,
    pub hostname: String,
    /// Files the container sees at `/etc/NAME` ([`ETC_FILES`]), written
    /// for it and never into its image or layer: as Docker writes
    /// `/etc/hostname`, `/etc/hosts` and `/etc/resolv.conf`.
    pub etc_files: Vec<(String, String)>,
    pub terminal: bool,
    pub network: Network,
    pub read_only: bool,
    pub volumes: Vec<Volume>,
    pub resources: Resources,
    pub capabilities: BTreeSet<String>,
    /// `None` runs unconfined.
    pub seccomp: Option<LinuxSeccomp>,
    pub userns: Option<IdMap>,
    pub cgroups_path: String,
    pub memory_swap_supported: bool,
    /// `process.rlimits`, every one set (see [`crate::rlimits`]).
    pub rlimits: Vec<crate::rlimits::Limit>,
}

/// The period CFS quotas are expressed in, as Docker uses for `--cpus`.
const CPU_PERIOD_US: u64 = 100_000;

impl ContainerSpec {
    /// Builds the OCI runtime spec.
    pub fn to_oci(&self) -> Result<Spec, SandboxError> {
        let caps: Vec<String> = self
            .capabilities
            .iter()
            .map(|c| format!("CAP_{c}"))
            .collect();
        let mut namespaces = vec![
            json!({"type": "pid"}),
            json!({"type": "ipc"}),
            json!({"type": "uts"}),
            json!({"type": "mount"}),
            json!({"type": "cgroup"}),
        ];
        if self.network == Network::None {
            namespaces.push(json!({"type": "network"}));
        }
        if self.userns.is_some() {
            namespaces.push(json!({"type": "user"}));
        }

        // In a user namespace cgroupfs cannot be mounted without cgroup
        // delegation, so /sys/fs/cgroup stays empty there.
        let mut mounts = vec![
            json!({"destination": "/proc", "type": "proc", "source": "proc",
                   "options": ["nosuid", "noexec", "nodev"]}),
            json!({"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
                   "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]}),
            json!({"destination": "/dev/pts", "type": "devpts", "source": "devpts",
                   "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]}),
            json!({"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
                   "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]}),
            json!({"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
                   "options": ["nosuid", "noexec", "nodev"]}),
        ];
        // sysfs can be mounted where the network namespace is the
        // container's own; with the host's network and a user namespace it
        // can only be bind-mounted.
        if self.userns.is_none() || self.network == Network::None {
            mounts.push(
                json!({"destination": "/sys", "type": "sysfs", "source": "sysfs",
                "options": ["nosuid", "noexec", "nodev", "ro"]}),
            );
        }
        if self.userns.is_none() {
            mounts.push(
                json!({"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
                "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]}),
            );
        } else if self.network == Network::Host {
            mounts.push(
                json!({"destination": "/sys", "type": "none", "source": "/sys",
                "options": ["rbind", "nosuid", "noexec", "nodev", "ro"]}),
            );
        }
        for v in &self.volumes {
            let mut options = vec!["rbind", "rprivate"];
            options.push(if v.read_only { "ro" } else { "rw" });
            mounts.push(json!({"destination": v.destination, "type": "bind",
                "source": v.source, "options": options}));
        }

        let mut resources = json!({ "devices": device_rules() });
        if let Some(m) = self.resources.memory_bytes {
            let mut mem = json!({"limit": m});
            if self.memory_swap_supported {
                // No swap on top of the limit, so the limit is the limit.
                mem["swap"] = json!(m);
            }
            resources["memory"] = mem;
        }
        if let Some(c) = self.resources.cpus {
            let quota = (c * CPU_PERIOD_US as f64).round() as i64;
            resources["cpu"] = json!({"quota": quota, "period": CPU_PERIOD_US});
        }
        if let Some(p) = self.resources.pids {
            resources["pids"] = json!({"limit": p});
        }

        let mut linux = json!({
            "namespaces": namespaces,
            "maskedPaths": MASKED_PATHS,
            "readonlyPaths": READONLY_PATHS,
            "cgroupsPath": self.cgroups_path,
            "resources": resources,
        });
        if let Some(map) = self.userns {
            let m = json!([{"containerID": 0, "hostID": map.host_id, "size": map.size}]);
            linux["uidMappings"] = m.clone();
            linux["gidMappings"] = m;
        }
        if let Some(seccomp) = &self.seccomp {
            linux["seccomp"] = serde_json::to_value(seccomp)
                .map_err(|e| SandboxError::Invalid(format!("seccomp policy: {e}")))?;
        }

        let mut user = json!({"uid": self.user.uid, "gid": self.user.gid});
        if !self.user.additional_gids.is_empty() {
            user["additionalGids"] = json!(self.user.additional_gids);
        }
        let rlimits: Vec<serde_json::Value> = self
            .rlimits
            .iter()
            .map(|l| json!({"type": l.name, "soft": l.soft, "hard": l.hard}))
            .collect();
        let annotations: serde_json::Map<String, serde_json::Value> = self
            .etc_files
            .iter()
            .map(|(name, text)| (format!("{ETC_FILE_ANNOTATION}{name}"), json!(text)))
            .collect();
        let spec = json!({
            "ociVersion": "1.0.2",
            "annotations": annotations,
            "root": {"path": self.rootfs, "readonly": self.read_only},
            "hostname": self.hostname,
            "mounts": mounts,
            "process": {
                "terminal": self.terminal,
                "user": user,
                "args": self.args,
                "env": self.env,
                "cwd": if self.cwd.is_empty() { "/" } else { &self.cwd },
                "capabilities": {
                    "bounding": caps, "effective": caps, "permitted": caps,
                },
                "noNewPrivileges": true,
                "rlimits": rlimits,
            },
            "linux": linux,
        });
        serde_json::from_value::<Spec>(spec)
            .map_err(|e| SandboxError::Invalid(format!("building the runtime spec: {e}")))
    }
}

/// The spec as pretty JSON, for `config.json`.
pub fn to_json(spec: &Spec) -> Result<Vec<u8>, SandboxError> {
    serde_json::to_vec_pretty(spec)
        .map_err(|e| SandboxError::Invalid(format!("serializing the runtime spec: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_has_dockers_defaults() {
        let s = ContainerSpec {
            rootfs: "/r".into(),
            args: vec!["sh".into()],
            env: vec!["PATH=/bin".into()],
            cwd: String::new(),
            user: ProcessUser::default(),
            hostname: "h".into(),
            etc_files: Vec::new(),
            terminal: false,
            network: Network::None,
            read_only: true,
            volumes: vec![Volume {
                source: "/src".into(),
                destination: "/dst".into(),
                read_only: true,
            }],
            resources: Resources {
                memory_bytes: Some(64 << 20),
                cpus: Some(1.5),
                pids: Some(10),
            },
            capabilities: crate::capabilities::DEFAULT_CAPABILITIES
                .iter()
                .map(|c| c.to_string())
                .collect(),
            seccomp: None,
            userns: None,
            cgroups_path: "/skiff/x".into(),
            memory_swap_supported: false,
            rlimits: crate::rlimits::container_limits(&[]).unwrap(),
        };
        let v: serde_json::Value =
            serde_json::from_slice(&to_json(&s.to_oci().unwrap()).unwrap()).unwrap();
        let ns: Vec<&str> = v["linux"]["namespaces"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["type"].as_str().unwrap())
            .collect();
        assert_eq!(ns, ["pid", "ipc", "uts", "mount", "cgroup", "network"]);
        assert_eq!(v["process"]["noNewPrivileges"], true);
        assert_eq!(v["process"]["cwd"], "/");
        assert_eq!(v["root"]["readonly"], true);
        assert_eq!(v["linux"]["resources"]["cpu"]["quota"], 150_000);
        assert_eq!(v["linux"]["resources"]["pids"]["limit"], 10);
        let rlimits = v["process"]["rlimits"].as_array().unwrap();
        assert!(rlimits
            .iter()
            .any(|r| r["type"] == "RLIMIT_NOFILE" && r["soft"] == 1024));
        assert!(v["linux"]["maskedPaths"]
            .as_array()
            .unwrap()
            .contains(&"/proc/kcore".into()));
        let bounding = v["process"]["capabilities"]["bounding"].as_array().unwrap();
        assert_eq!(bounding.len(), 14);
        assert!(bounding.contains(&"CAP_NET_BIND_SERVICE".into()));
        let vol = v["mounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["destination"] == "/dst")
            .unwrap();
        assert!(vol["options"].as_array().unwrap().contains(&"ro".into()));
    }
}
