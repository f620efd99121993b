//! What of the machine a policy depends on: its architecture in each
//! naming, and the kernel's version.

use super::tables::{ARM_ONLY, X86_ONLY};
use oci_spec::runtime::Arch;

/// A kernel release as (major, minor, patch).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct KernelVersion(pub(super) u32, pub(super) u32, pub(super) u32);

impl KernelVersion {
    /// Parses the leading `X.Y[.Z]` of a release such as `6.1.0-18-amd64`.
    pub(super) fn parse(release: &str) -> Option<Self> {
        let numeric: &str = release
            .split(|c: char| !(c.is_ascii_digit() || c == '.'))
            .next()?;
        let mut parts = numeric.split('.').filter(|p| !p.is_empty());
        let major = parts.next()?.parse().ok()?;
        let minor = parts.next()?.parse().ok()?;
        let patch = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
        Some(Self(major, minor, patch))
    }
}

/// What of the machine a profile depends on.
#[derive(Clone, Debug)]
pub(super) struct Host {
    /// Go's name for the architecture, which Docker profiles use in `arches`.
    pub(super) go_arch: &'static str,
    /// The kernel's name for it, accepted as well.
    pub(super) kernel_arch: &'static str,
    /// libseccomp's name, which `archMap` entries are keyed by.
    pub(super) scmp_arch: &'static str,
    pub(super) kernel: Option<KernelVersion>,
}

impl Host {
    pub(super) fn detect() -> Self {
        let (go_arch, kernel_arch, scmp_arch) = if cfg!(target_arch = "x86_64") {
            ("amd64", "x86_64", "SCMP_ARCH_X86_64")
        } else if cfg!(target_arch = "aarch64") {
            ("arm64", "aarch64", "SCMP_ARCH_AARCH64")
        } else if cfg!(target_arch = "x86") {
            ("386", "x86", "SCMP_ARCH_X86")
        } else if cfg!(target_arch = "arm") {
            ("arm", "arm", "SCMP_ARCH_ARM")
        } else if cfg!(target_arch = "riscv64") {
            ("riscv64", "riscv64", "SCMP_ARCH_RISCV64")
        } else if cfg!(target_arch = "s390x") {
            ("s390x", "s390x", "SCMP_ARCH_S390X")
        } else if cfg!(all(target_arch = "powerpc64", target_endian = "little")) {
            ("ppc64le", "ppc64le", "SCMP_ARCH_PPC64LE")
        } else if cfg!(target_arch = "loongarch64") {
            ("loong64", "loongarch64", "SCMP_ARCH_LOONGARCH64")
        } else {
            ("unknown", "unknown", "SCMP_ARCH_NATIVE")
        };
        Self {
            go_arch,
            kernel_arch,
            scmp_arch,
            kernel: running_kernel(),
        }
    }

    /// Whether a Docker `arches` entry names this machine.
    pub(super) fn is_arch(&self, name: &str) -> bool {
        name == self.go_arch || name == self.kernel_arch
    }

    /// The native ABI plus the compat ABIs its kernel can also run, so that
    /// 32-bit programs are filtered rather than refused outright.
    pub(super) fn architectures(&self) -> Option<Vec<Arch>> {
        match self.go_arch {
            "amd64" => Some(vec![
                Arch::ScmpArchX86_64,
                Arch::ScmpArchX86,
                Arch::ScmpArchX32,
            ]),
            "arm64" => Some(vec![Arch::ScmpArchAarch64, Arch::ScmpArchArm]),
            _ => None,
        }
    }

    pub(super) fn arch_syscalls(&self) -> &'static [&'static str] {
        match self.go_arch {
            "amd64" | "386" => X86_ONLY,
            "arm64" | "arm" => ARM_ONLY,
            _ => &[],
        }
    }
}

pub(super) fn running_kernel() -> Option<KernelVersion> {
    // SAFETY: utsname is plain old data, and uname fills it in.
    let mut uts: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: `uts` is a valid, writable utsname.
    if unsafe { libc::uname(&mut uts) } != 0 {
        return None;
    }
    // SAFETY: uname NUL-terminates the release field.
    let release = unsafe { std::ffi::CStr::from_ptr(uts.release.as_ptr()) };
    KernelVersion::parse(&release.to_string_lossy())
}
