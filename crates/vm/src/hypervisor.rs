//! What boots a guest: a small trait, and QEMU's microvm behind it.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// How the guest's CPU runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accel {
    Kvm,
    /// QEMU's emulator: works everywhere, seconds per boot.
    Tcg,
}

/// KVM when `/dev/kvm` can boot an ordinary guest kernel, else TCG with
/// the one-line reason to show. Decided from the host's kernel modules,
/// never by trying a boot: the PVM flavour of KVM accepts a VM and then
/// never boots Debian's kernel, so a trial could only time out.
pub fn pick_accel(sys_module: &Path, dev_kvm: &Path) -> (Accel, Option<String>) {
    let tcg = |why: String| {
        (
            Accel::Tcg,
            Some(format!(
                "{why}: running the guest under TCG, which is much slower"
            )),
        )
    };
    if !dev_kvm.exists() {
        return tcg(format!("no {}", dev_kvm.display()));
    }
    let loaded = |m: &str| sys_module.join(m).exists();
    if loaded("kvm_intel") || loaded("kvm_amd") {
        return match std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(dev_kvm)
        {
            Ok(_) => (Accel::Kvm, None),
            Err(e) => tcg(format!("{} cannot be opened ({e})", dev_kvm.display())),
        };
    }
    if loaded("kvm_pvm") {
        return tcg(format!(
            "{} is the PVM flavour (kvm_pvm), which boots only PVM-built guest kernels",
            dev_kvm.display()
        ));
    }
    tcg("neither kvm_intel nor kvm_amd is loaded".into())
}

/// Boot work the guest has no use for, skipped: the crypto self-tests,
/// the audit subsystem (no auditd), probing for a PS/2 controller that
/// microvm has not got; and RCU grace periods expedited. About a tenth of
/// a TCG boot here (bench/vm/bare-boot.sh uses the same for its floor).
/// CPU mitigations stay on: the guest kernel is the sandbox's first wall.
pub const BOOT_TRIMS: &str =
    "cryptomgr.notests audit=0 i8042.noaux i8042.nokbd i8042.nopnp rcupdate.rcu_expedited=1";

/// How long a guest's block reads wait for the block daemon to come back.
pub const BLOCK_RECONNECT_SECONDS: u32 = 20;

/// One guest to boot.
#[derive(Debug, Clone)]
pub struct VmSpec {
    pub kernel: PathBuf,
    pub initramfs: PathBuf,
    /// What the guest's agent mounts as the container's root.
    pub root: GuestRoot,
    /// The agent's channel: a unix socket skiff listens on, which QEMU
    /// connects to a virtio-serial port named
    /// [`skiff_agent_protocol::PORT_NAME`].
    pub agent_socket: PathBuf,
    pub memory_mib: u32,
    pub cpus: u32,
    /// Host directories shared with the guest (`-v`).
    pub shares: Vec<Share>,
    /// A pod sandbox's share ([`skiff_agent_protocol::POD_SHARE_TAG`]):
    /// the host binds the pod's later containers' roots into it.
    pub pod_share: Option<PathBuf>,
}

/// The container's root as the guest gets it.
#[derive(Debug, Clone)]
pub enum GuestRoot {
    /// The image as a read-only block device: an NBD server's unix
    /// socket. The agent puts a writable overlay in guest memory on it.
    Block(PathBuf),
    /// A host directory (an OCI bundle's root, as a snapshotter made it)
    /// over 9p, written through (a read-only one is sealed by the agent
    /// once its mount points are made, as runc's is a read-only mount
    /// over a root it prepared), with the host's owners
    /// and modes (`security_model=passthrough`). The mapped models cannot
    /// serve a tree of real symlinks, which every image has; what the
    /// guest's root may make there (a device node, a setuid file) is what
    /// a runc container's root may make in its rootfs, in a directory
    /// that only the host's root reaches.
    Directory { source: PathBuf, read_only: bool },
}

/// The 9p tag of a [`GuestRoot::Directory`].
pub const ROOT_TAG: &str = "rootfs";

/// One host directory shared with the guest over 9p.
#[derive(Debug, Clone)]
pub struct Share {
    /// The device's mount tag, as the guest mounts it.
    pub tag: String,
    pub source: PathBuf,
    /// Where the container sees it.
    pub destination: String,
    /// Enforced by the hypervisor: the guest cannot write through it.
    pub read_only: bool,
    /// A single file's name in `source` (its directory), bound alone.
    pub file: Option<String>,
}

/// A value inside one of QEMU's `key=value,...` options: commas doubled.
fn qemu_value(path: &Path) -> String {
    path.display().to_string().replace(',', ",,")
}

/// Builds the command that boots a guest; its stdout is the guest's
/// console.
pub trait Hypervisor {
    fn name(&self) -> &'static str;
    fn command(&self, spec: &VmSpec) -> Command;
}

/// QEMU's microvm. Under TCG the TSC rate is given on the command line:
/// calibrating it hangs.
pub struct Qemu {
    pub binary: PathBuf,
    pub accel: Accel,
}

impl Qemu {
    /// QEMU from PATH, with the acceleration this host allows, and why
    /// not KVM when it is TCG.
    pub fn detect() -> (Self, Option<String>) {
        let (accel, why) = pick_accel(Path::new("/sys/module"), Path::new("/dev/kvm"));
        (
            Qemu {
                binary: "qemu-system-x86_64".into(),
                accel,
            },
            why,
        )
    }
}

/// The host's TSC rate in kHz, as `/proc/cpuinfo` gives it.
fn tsc_khz() -> u64 {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find_map(|l| l.strip_prefix("cpu MHz"))
                .and_then(|v| {
                    v.trim_start_matches([' ', '\t', ':'])
                        .trim()
                        .parse::<f64>()
                        .ok()
                })
        })
        .map_or(2_000_000, |mhz| (mhz * 1000.0) as u64)
}

/// TCG with a 24 MiB translation cache instead of QEMU's default of up
/// to 1 GiB, which a guest fills as it runs: after a python start the
/// default held 66 MiB of QEMU's RSS; 24 MiB took the whole process from
/// 172 to 133 MiB with no slower start measured (16 MiB was about 8%
/// slower, 8 MiB 50%). `bench/vm/bare-boot.sh` boots its floor the same way.
const TCG: &str = "tcg,tb-size=24";

impl Hypervisor for Qemu {
    fn name(&self) -> &'static str {
        "qemu"
    }

    fn command(&self, spec: &VmSpec) -> Command {
        let mut c = Command::new(&self.binary);
        match self.accel {
            Accel::Kvm => c.args(["-M", "microvm", "-accel", "kvm", "-cpu", "host"]),
            Accel::Tcg => c.args(["-M", "microvm", "-accel", TCG, "-cpu", "max"]),
        };
        let tsc = match self.accel {
            Accel::Kvm => String::new(),
            Accel::Tcg => format!(" tsc_early_khz={}", tsc_khz()),
        };
        c.arg("-m")
            .arg(spec.memory_mib.to_string())
            .arg("-smp")
            .arg(spec.cpus.to_string())
            .args(["-nodefaults", "-no-user-config", "-nographic", "-no-reboot"])
            .args(["-serial", "stdio", "-kernel"])
            .arg(&spec.kernel)
            .arg("-initrd")
            .arg(&spec.initramfs)
            .arg("-chardev")
            .arg(format!(
                "socket,id=agent,path={}",
                qemu_value(&spec.agent_socket)
            ))
            .args(["-device", "virtio-serial-device", "-device"])
            .arg(format!(
                "virtserialport,chardev=agent,name={}",
                skiff_agent_protocol::PORT_NAME
            ));
        let root_arg = match &spec.root {
            GuestRoot::Block(socket) => {
                // reconnect-delay: if the block daemon dies, the guest's
                // reads wait for the one skiff starts again in its place
                // (see the engine's block-device keeper) instead of
                // failing at once.
                c.arg("-blockdev")
                    .arg(format!(
                        "driver=nbd,node-name=rootfs,server.type=unix,server.path={},read-only=on,reconnect-delay={}",
                        qemu_value(socket),
                        BLOCK_RECONNECT_SECONDS
                    ))
                    .args(["-device", "virtio-blk-device,drive=rootfs"]);
                String::new()
            }
            GuestRoot::Directory { source, read_only } => {
                // Writable even when the root is not: the agent makes the
                // mount points first, then seals the root, as runc does.
                c.arg("-fsdev")
                    .arg(format!(
                        "local,id={ROOT_TAG},path={},security_model=passthrough",
                        qemu_value(source),
                    ))
                    .arg("-device")
                    .arg(format!(
                        "virtio-9p-device,fsdev={ROOT_TAG},mount_tag={ROOT_TAG}"
                    ));
                // No dot: a name with one is a module parameter, which
                // never reaches init.
                format!(" skiff_root=9p{}", if *read_only { ":ro" } else { "" })
            }
        };
        let mut devices = std::collections::BTreeSet::new();
        // Files of one directory share one device.
        for share in spec.shares.iter().filter(|s| devices.insert(s.tag.clone())) {
            // security_model=passthrough: the guest sees the host's owners
            // and modes, as a bind mount shows them.
            c.arg("-fsdev")
                .arg(format!(
                    "local,id={},path={},security_model=passthrough{}",
                    share.tag,
                    qemu_value(&share.source),
                    if share.read_only { ",readonly=on" } else { "" }
                ))
                .arg("-device")
                .arg(format!(
                    "virtio-9p-device,fsdev={0},mount_tag={0}",
                    share.tag
                ));
        }
        if let Some(share) = &spec.pod_share {
            // Its roots are other filesystems bound in: their inode
            // numbers are remapped so that none collide in the guest.
            c.arg("-fsdev")
                .arg(format!(
                    "local,id={0},path={1},security_model=passthrough,multidevs=remap",
                    skiff_agent_protocol::POD_SHARE_TAG,
                    qemu_value(share)
                ))
                .arg("-device")
                .arg(format!(
                    "virtio-9p-device,fsdev={0},mount_tag={0}",
                    skiff_agent_protocol::POD_SHARE_TAG
                ));
        }
        c.arg("-append")
            // A panic powers the guest off at once (-no-reboot turns the
            // reboot into QEMU's exit), so the host sees it.
            .arg(format!(
                "console=ttyS0{tsc} quiet panic=-1 reboot=t {BOOT_TRIMS}{root_arg}"
            ))
            .stdin(Stdio::null());
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kvm_only_where_it_boots_an_ordinary_kernel() {
        let d = tempfile::tempdir().unwrap();
        let (modules, kvm) = (d.path().join("module"), d.path().join("kvm"));
        std::fs::create_dir(&modules).unwrap();
        let (a, why) = pick_accel(&modules, &kvm);
        assert_eq!(a, Accel::Tcg);
        assert!(why.unwrap().contains("no "));
        std::fs::write(&kvm, b"").unwrap();
        std::fs::create_dir(modules.join("kvm_pvm")).unwrap();
        let (a, why) = pick_accel(&modules, &kvm);
        assert_eq!(a, Accel::Tcg);
        assert!(why.unwrap().contains("PVM"));
        std::fs::create_dir(modules.join("kvm_intel")).unwrap();
        assert_eq!(pick_accel(&modules, &kvm), (Accel::Kvm, None));
    }

    #[test]
    fn tcg_gives_the_tsc_rate_and_kvm_the_host_cpu() {
        let spec = VmSpec {
            kernel: "k".into(),
            initramfs: "i".into(),
            root: GuestRoot::Block("s".into()),
            agent_socket: "a,b".into(),
            memory_mib: 128,
            cpus: 1,
            shares: vec![Share {
                tag: "vol0".into(),
                source: "/srv/data".into(),
                destination: "/data".into(),
                read_only: true,
                file: None,
            }],
            pod_share: Some("/run/pod".into()),
        };
        let args = |accel| {
            let q = Qemu {
                binary: "qemu".into(),
                accel,
            };
            q.command(&spec)
                .get_args()
                .map(|a| a.to_string_lossy().into_owned())
                .collect::<Vec<_>>()
                .join(" ")
        };
        assert!(
            args(Accel::Tcg).contains("-accel tcg,tb-size=24")
                && args(Accel::Tcg).contains("tsc_early_khz=")
        );
        assert!(
            args(Accel::Kvm).contains("-cpu host") && !args(Accel::Kvm).contains("tsc_early_khz")
        );
        // A comma in a path cannot end QEMU's option.
        assert!(args(Accel::Tcg).contains("path=a,,b"));
        assert!(args(Accel::Tcg).contains(
            "-fsdev local,id=vol0,path=/srv/data,security_model=passthrough,readonly=on"
        ));
        assert!(args(Accel::Tcg).contains(
            "-fsdev local,id=pod,path=/run/pod,security_model=passthrough,multidevs=remap -device virtio-9p-device,fsdev=pod,mount_tag=pod"
        ));
    }
}
