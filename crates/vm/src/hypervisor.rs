//! What boots a guest: a small trait, and QEMU's microvm behind it.

use std::path::PathBuf;
use std::process::{Command, Stdio};

/// One guest to boot.
#[derive(Debug, Clone)]
pub struct VmSpec {
    pub kernel: PathBuf,
    pub initramfs: PathBuf,
    /// The image's block device: an NBD server's unix socket.
    pub rootfs_socket: PathBuf,
    pub memory_mib: u32,
    pub cpus: u32,
    /// The command, as the agent takes it today (`skiff_argv`).
    pub argv: Vec<String>,
}

/// Builds the command that boots a guest; its stdout is the guest's
/// console.
pub trait Hypervisor {
    fn name(&self) -> &'static str;
    fn command(&self, spec: &VmSpec) -> Command;
}

/// QEMU's microvm. Under TCG, which is all this machine's `/dev/kvm` (the
/// PVM flavour) leaves for Debian's kernel, the TSC rate is given on the
/// command line: calibrating it hangs.
pub struct Qemu {
    pub binary: PathBuf,
}

impl Default for Qemu {
    fn default() -> Self {
        Qemu {
            binary: "qemu-system-x86_64".into(),
        }
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

/// The agent's command-line form of `argv`: NUL-separated, hex-encoded.
pub fn encode_argv(argv: &[String]) -> String {
    argv.join("\0")
        .bytes()
        .map(|b| format!("{b:02x}"))
        .collect()
}

impl Hypervisor for Qemu {
    fn name(&self) -> &'static str {
        "qemu"
    }

    fn command(&self, spec: &VmSpec) -> Command {
        let mut c = Command::new(&self.binary);
        c.args(["-M", "microvm", "-accel", "tcg", "-cpu", "max"])
            .arg("-m")
            .arg(spec.memory_mib.to_string())
            .arg("-smp")
            .arg(spec.cpus.to_string())
            .args(["-nodefaults", "-no-user-config", "-nographic", "-no-reboot"])
            .args(["-serial", "stdio", "-kernel"])
            .arg(&spec.kernel)
            .arg("-initrd")
            .arg(&spec.initramfs)
            .arg("-drive")
            .arg(format!(
                "file=nbd+unix:///?socket={},format=raw,if=none,id=rootfs,readonly=on",
                spec.rootfs_socket.display()
            ))
            .args(["-device", "virtio-blk-device,drive=rootfs", "-append"])
            .arg(format!(
                "console=ttyS0 tsc_early_khz={} quiet panic=-1 reboot=t skiff_argv={}",
                tsc_khz(),
                encode_argv(&spec.argv)
            ))
            .stdin(Stdio::null());
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argv_is_nul_separated_hex() {
        assert_eq!(encode_argv(&["sh".into(), "-c".into()]), "7368002d63");
    }
}
