//! Everything the init does, worked out from the spec before the clone,
//! so a bad spec fails in the parent.

use crate::seccomp_filter::CompiledFilter;
use crate::SandboxError;
use oci_spec::runtime::{LinuxNamespaceType, Spec};
use std::ffi::CString;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// One entry of `mounts`, with its options split into flags and data.
pub(crate) struct MountPlan {
    pub(crate) destination: String,
    pub(crate) typ: String,
    pub(crate) source: String,
    pub(crate) flags: libc::c_ulong,
    /// MS_PRIVATE, MS_SLAVE... applied after the mount.
    pub(crate) propagation: libc::c_ulong,
    pub(crate) data: String,
}

impl MountPlan {
    pub(crate) fn is_bind(&self) -> bool {
        self.flags & libc::MS_BIND != 0
    }
}

/// Capability sets as bit masks (bit N = capability N).
#[derive(Default, Clone, Copy)]
pub(crate) struct CapSets {
    pub(crate) bounding: u64,
    pub(crate) effective: u64,
    pub(crate) permitted: u64,
    pub(crate) inheritable: u64,
    pub(crate) ambient: u64,
}

/// Everything the init does, decided before the clone.
pub(crate) struct Plan {
    /// The parent enters it before the clone, so the init starts there
    /// (see [`prepare_rootfs`]).
    pub(crate) rootfs: PathBuf,
    pub(crate) readonly_root: bool,
    pub(crate) hostname: Option<String>,
    pub(crate) mounts: Vec<MountPlan>,
    /// `/etc/NAME` files to bind in from the container's `/dev` tmpfs:
    /// (NAME, contents), from the spec's annotations.
    pub(crate) etc_files: Vec<(String, Vec<u8>)>,
    pub(crate) masked: Vec<String>,
    pub(crate) readonly: Vec<String>,
    pub(crate) user_namespace: bool,
    pub(crate) cgroup_namespace: bool,
    /// `controllers` of each v1 hierarchy, for a v1 `/sys/fs/cgroup`.
    pub(crate) v1_hierarchies: Vec<String>,
    pub(crate) terminal: bool,
    pub(crate) args: Vec<CString>,
    pub(crate) env: Vec<CString>,
    pub(crate) path: String,
    pub(crate) cwd: CString,
    pub(crate) uid: u32,
    pub(crate) gid: u32,
    pub(crate) additional_gids: Vec<libc::gid_t>,
    pub(crate) caps: CapSets,
    pub(crate) last_cap: u32,
    pub(crate) no_new_privs: bool,
    pub(crate) seccomp: Option<Arc<CompiledFilter>>,
    pub(crate) rlimits: Vec<Rlimit>,
    /// `CLONE_NEW*` flags of the namespaces made at the clone (those the
    /// spec lists without a `path`; the cgroup one is unshared later).
    pub(crate) clone_flags: u64,
    /// Namespaces to join by `path`: the init joins these (the user one
    /// first) right after the clone, except the pid one, which the parent
    /// joins for its child before the clone.
    pub(crate) joins: Vec<(std::os::fd::OwnedFd, libc::c_int)>,
    pub(crate) pid_join: Option<std::os::fd::OwnedFd>,
    /// `linux.sysctl`, each checked to be namespaced.
    pub(crate) sysctls: Vec<(String, String)>,
    /// `linux.devices`, made in the container's `/dev`.
    pub(crate) devices: Vec<DevicePlan>,
    /// `linux.rootfsPropagation` as mount flags (rslave by default).
    pub(crate) rootfs_propagation: libc::c_ulong,
    /// `linux.personality`'s domain, for personality(2).
    pub(crate) personality: Option<libc::c_ulong>,
    /// `process.consoleSize`: (rows, columns) of the pty.
    pub(crate) console_size: Option<(u16, u16)>,
    /// Hooks the init runs itself, and whether it stops before
    /// `pivot_root` for the parent's `prestart`/`createRuntime` hooks.
    pub(crate) create_container_hooks: Vec<oci_spec::runtime::Hook>,
    pub(crate) start_container_hooks: Vec<oci_spec::runtime::Hook>,
    pub(crate) hook_sync: bool,
    /// runc's model (see [`crate::Lifecycle::Detached`]): the init waits
    /// on this FIFO (an `O_PATH` descriptor) to start.
    pub(crate) start_fifo: Option<std::os::fd::RawFd>,
    /// The process outlives the one that made it (no parent-death signal).
    pub(crate) detached: bool,
    /// `--no-pivot`: move the root over `/` and chroot, for roots that
    /// cannot be pivoted (a ramdisk).
    pub(crate) no_pivot: bool,
}

/// One `linux.devices` entry.
pub(crate) struct DevicePlan {
    pub(crate) path: String,
    pub(crate) file_type: rustix::fs::FileType,
    pub(crate) major: u32,
    pub(crate) minor: u32,
    pub(crate) mode: u32,
    pub(crate) uid: u32,
    pub(crate) gid: u32,
}

/// One `process.rlimits` entry, for setrlimit(2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Rlimit {
    pub(crate) resource: libc::__rlimit_resource_t,
    pub(crate) soft: u64,
    pub(crate) hard: u64,
}

pub(crate) const DEFAULT_PATH: &str =
    "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

impl Plan {
    /// Reads what the init needs from `spec`; relative paths are taken
    /// from `bundle`.
    pub(crate) fn new(
        spec: &Spec,
        bundle: &Path,
        seccomp: Option<Arc<CompiledFilter>>,
    ) -> Result<Self, SandboxError> {
        let bad = |what: &str| SandboxError::Invalid(format!("the runtime spec {what}"));
        let root = spec.root().as_ref().ok_or_else(|| bad("has no root"))?;
        let rootfs = if root.path().is_relative() {
            bundle.join(root.path())
        } else {
            root.path().clone()
        };
        let process = spec
            .process()
            .as_ref()
            .ok_or_else(|| bad("has no process"))?;
        let args = process.args().clone().unwrap_or_default();
        if args.is_empty() {
            return Err(bad("has no command (process.args)"));
        }
        let cstr = |s: &str| CString::new(s).map_err(|_| bad("contains a NUL byte"));
        let env: Vec<String> = process.env().clone().unwrap_or_default();
        let path = env
            .iter()
            .find_map(|e| e.strip_prefix("PATH="))
            .unwrap_or(DEFAULT_PATH)
            .to_string();
        let linux = spec
            .linux()
            .as_ref()
            .ok_or_else(|| bad("has no linux section"))?;
        let namespaces = namespace_plan(linux.namespaces().iter().flatten())?;
        let user_namespace = namespaces.user;
        let cgroup_namespace = namespaces.cgroup;
        if spec.hostname().as_ref().is_some_and(|h| !h.is_empty()) && !namespaces.uts {
            return Err(bad(
                "sets hostname without a UTS namespace of the container's own (linux.namespaces)",
            ));
        }
        refuse_unsupported(spec)?;
        let sysctls = sysctl_plan(linux, &namespaces)?;
        let devices = device_plan(linux)?;
        let rootfs_propagation = match linux.rootfs_propagation().as_deref() {
            None | Some("") => libc::MS_SLAVE | libc::MS_REC,
            Some(p) => match propagation_flags(p) {
                Some(f) => f,
                None => {
                    return Err(bad(&format!(
                        "has an unknown linux.rootfsPropagation {p:?} (shared, slave, private, unbindable, or r-prefixed)"
                    )))
                }
            },
        };
        let personality = match linux.personality() {
            None => None,
            Some(p) => Some(personality_domain(p)?),
        };
        let console_size = process.console_size().as_ref().map(|b| {
            (
                b.height().min(u16::MAX as u64) as u16,
                b.width().min(u16::MAX as u64) as u16,
            )
        });
        let hooks = |k: crate::hooks::HookKind| k.of(spec);
        use crate::hooks::HookKind as H;
        let hook_sync = [H::Prestart, H::CreateRuntime, H::CreateContainer]
            .into_iter()
            .any(|k| !hooks(k).is_empty());
        let mut mounts = Vec::new();
        for m in spec.mounts().iter().flatten() {
            mounts.push(mount_plan(
                m.destination().to_string_lossy().into_owned(),
                m.typ().clone().unwrap_or_default(),
                m.source()
                    .as_ref()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_default(),
                m.options().iter().flatten().map(String::as_str),
            ));
        }
        let caps = process
            .capabilities()
            .as_ref()
            .map(|c| CapSets {
                bounding: cap_mask(c.bounding()),
                effective: cap_mask(c.effective()),
                permitted: cap_mask(c.permitted()),
                inheritable: cap_mask(c.inheritable()),
                ambient: cap_mask(c.ambient()),
            })
            .unwrap_or_default();
        let last_cap = std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(40);
        let user = process.user();
        let check_id =
            |id: u32, what: &str| crate::user::check_id(id, &format!("the runtime spec's {what}"));
        check_id(user.uid(), "process.user.uid")?;
        check_id(user.gid(), "process.user.gid")?;
        for g in user.additional_gids().iter().flatten() {
            check_id(*g, "process.user.additionalGids entry")?;
        }
        let rlimits = process
            .rlimits()
            .iter()
            .flatten()
            .map(|r| {
                let typ = serde_json::to_value(r.typ())
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_default();
                let resource = crate::rlimits::resource_number(&typ)
                    .ok_or_else(|| bad(&format!("has an unknown rlimit {typ:?}")))?;
                if r.soft() > r.hard() {
                    return Err(bad(&format!(
                        "sets {typ} with a soft limit above its hard limit"
                    )));
                }
                Ok(Rlimit {
                    resource,
                    soft: r.soft(),
                    hard: r.hard(),
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let uses_v1_cgroupfs =
            mounts.iter().any(|m| m.typ == "cgroup") && !crate::device_filter::unified_host();
        Ok(Plan {
            rootfs,
            readonly_root: root.readonly().unwrap_or(false),
            hostname: spec.hostname().clone(),
            etc_files: crate::spec::ETC_FILES
                .iter()
                .filter_map(|name| {
                    let key = format!("{}{name}", crate::spec::ETC_FILE_ANNOTATION);
                    let text = spec.annotations().as_ref()?.get(&key)?;
                    Some((name.to_string(), text.clone().into_bytes()))
                })
                .collect(),
            mounts,
            masked: linux.masked_paths().clone().unwrap_or_default(),
            readonly: linux.readonly_paths().clone().unwrap_or_default(),
            user_namespace,
            cgroup_namespace,
            v1_hierarchies: if uses_v1_cgroupfs {
                crate::cgroups::v1_controller_sets()?
            } else {
                Vec::new()
            },
            terminal: process.terminal().unwrap_or(false),
            args: args.iter().map(|a| cstr(a)).collect::<Result<_, _>>()?,
            env: env.iter().map(|e| cstr(e)).collect::<Result<_, _>>()?,
            path,
            cwd: cstr(&process.cwd().to_string_lossy())?,
            uid: user.uid(),
            gid: user.gid(),
            additional_gids: user.additional_gids().clone().unwrap_or_default(),
            caps,
            last_cap,
            no_new_privs: process.no_new_privileges().unwrap_or(false),
            seccomp,
            rlimits,
            clone_flags: namespaces.clone_flags,
            joins: namespaces.joins,
            pid_join: namespaces.pid_join,
            sysctls,
            devices,
            rootfs_propagation,
            personality,
            console_size,
            create_container_hooks: hooks(H::CreateContainer),
            start_container_hooks: hooks(H::StartContainer),
            hook_sync,
            start_fifo: None,
            detached: false,
            no_pivot: false,
        })
    }
}

/// What `linux.namespaces` asks for.
struct Namespaces {
    clone_flags: u64,
    joins: Vec<(std::os::fd::OwnedFd, libc::c_int)>,
    pid_join: Option<std::os::fd::OwnedFd>,
    user: bool,
    cgroup: bool,
    uts: bool,
    network: bool,
    ipc: bool,
}

fn namespace_plan<'a>(
    list: impl Iterator<Item = &'a oci_spec::runtime::LinuxNamespace>,
) -> Result<Namespaces, SandboxError> {
    let mut n = Namespaces {
        clone_flags: 0,
        joins: Vec::new(),
        pid_join: None,
        user: false,
        cgroup: false,
        uts: false,
        network: false,
        ipc: false,
    };
    let mut mount = false;
    let mut seen = Vec::new();
    for ns in list {
        let (flag, name) = match ns.typ() {
            LinuxNamespaceType::Mount => (libc::CLONE_NEWNS, "mount"),
            LinuxNamespaceType::Pid => (libc::CLONE_NEWPID, "pid"),
            LinuxNamespaceType::Network => (libc::CLONE_NEWNET, "network"),
            LinuxNamespaceType::Ipc => (libc::CLONE_NEWIPC, "ipc"),
            LinuxNamespaceType::Uts => (libc::CLONE_NEWUTS, "uts"),
            LinuxNamespaceType::User => (libc::CLONE_NEWUSER, "user"),
            LinuxNamespaceType::Cgroup => (libc::CLONE_NEWCGROUP, "cgroup"),
            other => {
                return Err(SandboxError::Invalid(format!(
                    "the runtime spec's linux.namespaces asks for a {other:?} namespace, which skiff's runtime does not support; remove it"
                )))
            }
        };
        if seen.contains(&flag) {
            return Err(SandboxError::Invalid(format!(
                "the runtime spec's linux.namespaces lists the {name} namespace twice"
            )));
        }
        seen.push(flag);
        match flag {
            libc::CLONE_NEWNS => mount = true,
            libc::CLONE_NEWUSER => n.user = true,
            libc::CLONE_NEWCGROUP => n.cgroup = true,
            libc::CLONE_NEWUTS => n.uts = true,
            libc::CLONE_NEWNET => n.network = true,
            libc::CLONE_NEWIPC => n.ipc = true,
            _ => {}
        }
        match ns.path() {
            None => {
                if flag != libc::CLONE_NEWCGROUP {
                    n.clone_flags |= flag as u64;
                }
            }
            Some(path) => {
                if flag == libc::CLONE_NEWCGROUP {
                    // Joined, not unshared, by the init.
                    n.cgroup = false;
                }
                if flag == libc::CLONE_NEWUSER {
                    // Joined: its ID maps are the namespace's already.
                    n.user = false;
                }
                let fd = rustix::fs::open(
                    path,
                    rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::CLOEXEC,
                    rustix::fs::Mode::empty(),
                )
                .map_err(|e| {
                    SandboxError::Invalid(format!(
                        "the runtime spec's {name} namespace path {}: {e}; fix linux.namespaces",
                        path.display()
                    ))
                })?;
                if flag == libc::CLONE_NEWNS {
                    return Err(SandboxError::Unsupported(format!(
                        "the runtime spec joins the mount namespace {}, which skiff's runtime does not do; give the mount namespace no path",
                        path.display()
                    )));
                }
                if flag == libc::CLONE_NEWPID {
                    n.pid_join = Some(fd);
                } else if flag == libc::CLONE_NEWUSER {
                    n.joins.insert(0, (fd, flag));
                } else {
                    n.joins.push((fd, flag));
                }
            }
        }
    }
    if !mount {
        return Err(SandboxError::Invalid(
            "the runtime spec's linux.namespaces has no mount namespace; skiff's runtime needs one (add {\"type\": \"mount\"})".into(),
        ));
    }
    Ok(n)
}

/// Fields of the spec this runtime cannot honour here: an error naming
/// each, never a silent skip.
fn refuse_unsupported(spec: &Spec) -> Result<(), SandboxError> {
    let refuse = |field: &str, why: &str| {
        Err(SandboxError::Unsupported(format!(
            "the runtime spec sets {field}, which skiff's runtime cannot honour: {why}; remove it from config.json"
        )))
    };
    if let Some(p) = spec.process() {
        if p.apparmor_profile().as_ref().is_some_and(|s| !s.is_empty()) {
            return refuse("process.apparmorProfile", "AppArmor is not supported");
        }
        if p.selinux_label().as_ref().is_some_and(|s| !s.is_empty()) {
            return refuse("process.selinuxLabel", "SELinux is not supported");
        }
        if p.io_priority().is_some() {
            return refuse("process.ioPriority", "I/O priorities are not supported");
        }
        if p.scheduler().is_some() {
            return refuse("process.scheduler", "scheduler policies are not supported");
        }
        if p.exec_cpu_affinity().is_some() {
            return refuse("process.execCPUAffinity", "CPU affinity is not supported");
        }
    }
    if let Some(l) = spec.linux() {
        if l.mount_label().as_ref().is_some_and(|s| !s.is_empty()) {
            return refuse("linux.mountLabel", "SELinux is not supported");
        }
        if l.intel_rdt().is_some() {
            return refuse("linux.intelRdt", "Intel RDT is not supported");
        }
        if l.memory_policy().is_some() {
            return refuse(
                "linux.memoryPolicy",
                "NUMA memory policies are not supported",
            );
        }
        if l.time_offsets().as_ref().is_some_and(|t| !t.is_empty()) {
            return refuse("linux.timeOffsets", "time namespaces are not supported");
        }
        if l.net_devices().as_ref().is_some_and(|t| !t.is_empty()) {
            return refuse(
                "linux.netDevices",
                "moving network devices is not supported",
            );
        }
        if let Some(s) = l.seccomp() {
            if s.listener_path().is_some() {
                return refuse(
                    "linux.seccomp.listenerPath",
                    "seccomp user notification is not supported",
                );
            }
        }
    }
    Ok(())
}

/// `linux.sysctl`, refusing those that are not namespaced (they would set
/// the host's), as runc does.
fn sysctl_plan(
    linux: &oci_spec::runtime::Linux,
    ns: &Namespaces,
) -> Result<Vec<(String, String)>, SandboxError> {
    let mut out: Vec<(String, String)> = Vec::new();
    for (key, value) in linux.sysctl().iter().flatten() {
        let ipc = [
            "kernel.msgmax",
            "kernel.msgmnb",
            "kernel.msgmni",
            "kernel.sem",
            "kernel.shmall",
            "kernel.shmmax",
            "kernel.shmmni",
            "kernel.shm_rmid_forced",
        ]
        .contains(&key.as_str())
            || key.starts_with("fs.mqueue.");
        let allowed = if ipc {
            ns.ipc
        } else if key.starts_with("net.") {
            ns.network
        } else if key == "kernel.hostname" || key == "kernel.domainname" {
            ns.uts
        } else {
            false
        };
        if !allowed {
            return Err(SandboxError::Invalid(format!(
                "the runtime spec's linux.sysctl sets {key:?}, which is not namespaced here (it would change the host); remove it"
            )));
        }
        if key.contains("..") || key.contains('/') {
            return Err(SandboxError::Invalid(format!(
                "the runtime spec's linux.sysctl has a bad key {key:?}"
            )));
        }
        out.push((key.clone(), value.clone()));
    }
    out.sort();
    Ok(out)
}

fn device_plan(linux: &oci_spec::runtime::Linux) -> Result<Vec<DevicePlan>, SandboxError> {
    use oci_spec::runtime::LinuxDeviceType as T;
    let mut out = Vec::new();
    for d in linux.devices().iter().flatten() {
        let path = d.path().to_string_lossy().into_owned();
        if !path.starts_with("/dev/") || path.split('/').any(|c| c == "..") {
            return Err(SandboxError::Invalid(format!(
                "the runtime spec's linux.devices entry {path:?} is not under /dev"
            )));
        }
        let file_type = match d.typ() {
            T::C | T::U => rustix::fs::FileType::CharacterDevice,
            T::B => rustix::fs::FileType::BlockDevice,
            T::P => rustix::fs::FileType::Fifo,
            T::A => {
                return Err(SandboxError::Invalid(format!(
                    "the runtime spec's linux.devices entry {path:?} has type \"a\", which only cgroup rules take"
                )))
            }
        };
        out.push(DevicePlan {
            path,
            file_type,
            major: d.major() as u32,
            minor: d.minor() as u32,
            mode: d.file_mode().unwrap_or(0o666) & 0o7777,
            uid: d.uid().unwrap_or(0),
            gid: d.gid().unwrap_or(0),
        });
    }
    Ok(out)
}

fn propagation_flags(name: &str) -> Option<libc::c_ulong> {
    Some(match name {
        "shared" => libc::MS_SHARED,
        "rshared" => libc::MS_SHARED | libc::MS_REC,
        "slave" => libc::MS_SLAVE,
        "rslave" => libc::MS_SLAVE | libc::MS_REC,
        "private" => libc::MS_PRIVATE,
        "rprivate" => libc::MS_PRIVATE | libc::MS_REC,
        "unbindable" => libc::MS_UNBINDABLE,
        "runbindable" => libc::MS_UNBINDABLE | libc::MS_REC,
        _ => return None,
    })
}

fn personality_domain(
    p: &oci_spec::runtime::LinuxPersonality,
) -> Result<libc::c_ulong, SandboxError> {
    use oci_spec::runtime::LinuxPersonalityDomain as D;
    if p.flags().as_ref().is_some_and(|f| !f.is_empty()) {
        return Err(SandboxError::Unsupported(
            "the runtime spec sets linux.personality.flags, which skiff's runtime cannot honour; remove them".into(),
        ));
    }
    Ok(match p.domain() {
        D::PerLinux => 0,
        D::PerLinux32 => 8,
    })
}

pub(crate) fn cap_mask(set: &Option<oci_spec::runtime::Capabilities>) -> u64 {
    crate::capabilities::mask(set)
}

/// Splits mount options the way runc reads them: flags, propagation, and
/// the rest as filesystem data.
pub(crate) fn mount_plan<'a>(
    destination: String,
    typ: String,
    source: String,
    options: impl Iterator<Item = &'a str>,
) -> MountPlan {
    let mut flags: libc::c_ulong = 0;
    let mut propagation: libc::c_ulong = 0;
    let mut data = Vec::new();
    for o in options {
        match o {
            "ro" => flags |= libc::MS_RDONLY,
            "rw" => flags &= !libc::MS_RDONLY,
            "nosuid" => flags |= libc::MS_NOSUID,
            "nodev" => flags |= libc::MS_NODEV,
            "noexec" => flags |= libc::MS_NOEXEC,
            "relatime" => flags |= libc::MS_RELATIME,
            "strictatime" => flags |= libc::MS_STRICTATIME,
            "noatime" => flags |= libc::MS_NOATIME,
            "nodiratime" => flags |= libc::MS_NODIRATIME,
            "sync" => flags |= libc::MS_SYNCHRONOUS,
            "bind" => flags |= libc::MS_BIND,
            "rbind" => flags |= libc::MS_BIND | libc::MS_REC,
            "private" => propagation = libc::MS_PRIVATE,
            "rprivate" => propagation = libc::MS_PRIVATE | libc::MS_REC,
            "slave" => propagation = libc::MS_SLAVE,
            "rslave" => propagation = libc::MS_SLAVE | libc::MS_REC,
            "shared" => propagation = libc::MS_SHARED,
            "rshared" => propagation = libc::MS_SHARED | libc::MS_REC,
            other => data.push(other),
        }
    }
    if typ == "bind" {
        flags |= libc::MS_BIND;
    }
    MountPlan {
        destination,
        typ,
        source,
        flags,
        propagation,
        data: data.join(","),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::Spec;

    #[test]
    fn mount_options_split_into_flags_propagation_and_data() {
        let m = mount_plan(
            "/dev".into(),
            "tmpfs".into(),
            "tmpfs".into(),
            ["nosuid", "strictatime", "mode=755", "size=65536k"].into_iter(),
        );
        assert_eq!(m.flags, libc::MS_NOSUID | libc::MS_STRICTATIME);
        assert_eq!(m.data, "mode=755,size=65536k");
        let v = mount_plan(
            "/data".into(),
            "bind".into(),
            "/srv".into(),
            ["rbind", "rprivate", "ro"].into_iter(),
        );
        assert!(v.is_bind());
        assert_eq!(v.flags, libc::MS_BIND | libc::MS_REC | libc::MS_RDONLY);
        assert_eq!(v.propagation, libc::MS_PRIVATE | libc::MS_REC);
        assert!(v.data.is_empty());
    }

    fn spec_with(process: serde_json::Value) -> Spec {
        serde_json::from_value(serde_json::json!({
            "ociVersion": "1.0.2",
            "root": {"path": "/r"},
            "process": process,
            "linux": {"namespaces": [{"type": "pid"}, {"type": "mount"}]},
        }))
        .unwrap()
    }

    /// A config.json is checked as `-u` is: -1 would keep the init root.
    #[test]
    fn ids_above_2_31_in_a_spec_are_refused() {
        for user in [
            serde_json::json!({"uid": 4294967295u32, "gid": 0}),
            serde_json::json!({"uid": 0, "gid": 4294967295u32}),
            serde_json::json!({"uid": 0, "gid": 0, "additionalGids": [2147483648u32]}),
        ] {
            let spec = spec_with(serde_json::json!({"user": user, "args": ["sh"], "cwd": "/"}));
            let e = Plan::new(&spec, Path::new("/"), None)
                .err()
                .expect("accepted");
            assert!(e.to_string().contains("out of range"), "{e}");
        }
        let ok = spec_with(
            serde_json::json!({"user": {"uid": 2147483647u32, "gid": 5}, "args": ["sh"], "cwd": "/"}),
        );
        assert!(Plan::new(&ok, Path::new("/"), None).is_ok());
    }

    #[test]
    fn rlimits_are_read_from_the_spec() {
        let spec = spec_with(serde_json::json!({
            "user": {"uid": 0, "gid": 0}, "args": ["sh"], "cwd": "/",
            "rlimits": [{"type": "RLIMIT_NOFILE", "soft": 10, "hard": 20}],
        }));
        let plan = Plan::new(&spec, Path::new("/"), None).unwrap();
        assert_eq!(
            plan.rlimits,
            [Rlimit {
                resource: libc::RLIMIT_NOFILE,
                soft: 10,
                hard: 20
            }]
        );
        let bad = spec_with(serde_json::json!({
            "user": {"uid": 0, "gid": 0}, "args": ["sh"], "cwd": "/",
            "rlimits": [{"type": "RLIMIT_NOFILE", "soft": 30, "hard": 20}],
        }));
        assert!(Plan::new(&bad, Path::new("/"), None).is_err());
    }
}
