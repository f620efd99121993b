//! Compiling a seccomp policy to a kernel BPF program, caching the program
//! on disk, and loading it just before the container's command runs.
//!
//! Compiling `linux.seccomp` with libseccomp (resolving ~360 syscall names
//! for three x86 ABIs) takes about 28 ms, which runtimes that compile in the
//! container's init pay on every start. The policy for a given image and set
//! of options rarely changes, so skiff compiles it once, keyed by a digest of
//! the policy and the libseccomp version, and the init process only hands the
//! stored program to seccomp(2). The policy stays in the container's
//! `config.json` as usual.

use std::io::{Read, Write};
use std::path::Path;

use libseccomp::{ScmpAction, ScmpArch, ScmpArgCompare, ScmpCompareOp, ScmpFilterContext};
use oci_spec::runtime::{
    Arch, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompFilterFlag, LinuxSeccompOperator,
};
use sha2::{Digest, Sha256};

use crate::SandboxError;

/// `seccomp(2)` operation and flags, from linux/seccomp.h.
const SECCOMP_SET_MODE_FILTER: libc::c_ulong = 1;
const SECCOMP_FILTER_FLAG_TSYNC: libc::c_ulong = 1 << 0;
const SECCOMP_FILTER_FLAG_LOG: libc::c_ulong = 1 << 1;
const SECCOMP_FILTER_FLAG_SPEC_ALLOW: libc::c_ulong = 1 << 2;
const SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV: libc::c_ulong = 1 << 5;

/// One classic BPF instruction (`struct sock_filter`) is 8 bytes.
const INSN_BYTES: usize = 8;
/// The kernel's limit on a filter's length (BPF_MAXINSNS).
const MAX_INSNS: usize = 4096;
/// Bumped when the cache's key or contents change meaning.
const CACHE_FORMAT: &str = "skiff-seccomp-bpf-1";

/// A compiled seccomp filter: the BPF program and the flags to load it with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CompiledFilter {
    program: Vec<u8>,
    flags: libc::c_ulong,
}

impl CompiledFilter {
    /// Compiles `policy` with libseccomp.
    pub fn compile(policy: &LinuxSeccomp) -> Result<Self, SandboxError> {
        let program = compile_program(policy)?;
        Self::from_program(program, policy)
    }

    /// The compiled filter for `policy`, from `cache_dir` when an earlier
    /// start compiled the same policy, otherwise compiled and stored there.
    pub fn cached(policy: &LinuxSeccomp, cache_dir: &Path) -> Result<Self, SandboxError> {
        let path = cache_dir.join(format!("{}.bpf", cache_key(policy)?));
        match read_program(&path) {
            Ok(Some(program)) => return Self::from_program(program, policy),
            Ok(None) => {}
            // A damaged entry is compiled again and replaced, not trusted.
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "discarding cached seccomp filter")
            }
        }
        let filter = Self::compile(policy)?;
        if let Err(e) = store_program(cache_dir, &path, &filter.program) {
            tracing::warn!(path = %path.display(), error = %e, "cannot cache the seccomp filter; it will be compiled again next time");
        }
        Ok(filter)
    }

    fn from_program(program: Vec<u8>, policy: &LinuxSeccomp) -> Result<Self, SandboxError> {
        if !is_program_length(program.len()) {
            return Err(SandboxError::Invalid(format!(
                "the seccomp policy compiles to an invalid BPF program ({} bytes; at most {MAX_INSNS} instructions of {INSN_BYTES} bytes); simplify the profile",
                program.len()
            )));
        }
        Ok(CompiledFilter {
            program,
            flags: load_flags(policy),
        })
    }

    /// The BPF program, in this host's byte order (a guest of the same
    /// architecture loads it as it is).
    pub fn program(&self) -> &[u8] {
        &self.program
    }

    /// The flags `seccomp(2)` is to load it with.
    pub fn flags(&self) -> u64 {
        self.flags
    }

    /// The program's length in instructions.
    pub fn instructions(&self) -> usize {
        self.program.len() / INSN_BYTES
    }

    /// Installs the filter on the calling thread (all threads with TSYNC).
    /// The caller must have set no_new_privs or hold CAP_SYS_ADMIN.
    pub fn load(&self) -> std::io::Result<()> {
        let prog = libc::sock_fprog {
            // from_program bounds the length by MAX_INSNS, so it fits.
            len: self.instructions() as libc::c_ushort,
            filter: self.program.as_ptr() as *mut libc::sock_filter,
        };
        // SAFETY: `prog` points at our program, which outlives the call; the
        // kernel copies it.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_seccomp,
                SECCOMP_SET_MODE_FILTER,
                self.flags,
                &prog as *const libc::sock_fprog,
            )
        };
        if rc == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error())
        }
    }
}

/// Whole instructions, at least one, within the kernel's limit.
fn is_program_length(bytes: usize) -> bool {
    bytes > 0 && bytes % INSN_BYTES == 0 && bytes <= MAX_INSNS * INSN_BYTES
}

/// The cache file's name: a digest of everything the program depends on.
fn cache_key(policy: &LinuxSeccomp) -> Result<String, SandboxError> {
    let json = serde_json::to_vec(policy)
        .map_err(|e| SandboxError::Invalid(format!("serialising the seccomp policy: {e}")))?;
    let lib = libseccomp::ScmpVersion::current()
        .map(|v| format!("{}.{}.{}", v.major, v.minor, v.micro))
        .unwrap_or_default();
    let mut h = Sha256::new();
    for part in [
        CACHE_FORMAT.as_bytes(),
        lib.as_bytes(),
        std::env::consts::ARCH.as_bytes(),
    ] {
        h.update((part.len() as u64).to_le_bytes());
        h.update(part);
    }
    h.update(&json);
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

fn read_program(path: &Path) -> std::io::Result<Option<Vec<u8>>> {
    let mut file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut program = Vec::new();
    Read::by_ref(&mut file)
        .take((MAX_INSNS * INSN_BYTES + 1) as u64)
        .read_to_end(&mut program)?;
    if !is_program_length(program.len()) {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("{} bytes is not a BPF program", program.len()),
        ));
    }
    Ok(Some(program))
}

/// Writes the program beside its final name and renames it into place, so
/// concurrent starts never read half a file.
fn store_program(dir: &Path, path: &Path, program: &[u8]) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    // One process creates containers one at a time, so its pid is unique.
    let tmp = dir.join(format!(".tmp-{}", std::process::id()));
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(program)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)
}

fn load_flags(policy: &LinuxSeccomp) -> libc::c_ulong {
    policy.flags().iter().flatten().fold(0, |acc, flag| {
        acc | match flag {
            LinuxSeccompFilterFlag::SeccompFilterFlagTsync => SECCOMP_FILTER_FLAG_TSYNC,
            LinuxSeccompFilterFlag::SeccompFilterFlagLog => SECCOMP_FILTER_FLAG_LOG,
            LinuxSeccompFilterFlag::SeccompFilterFlagSpecAllow => SECCOMP_FILTER_FLAG_SPEC_ALLOW,
            LinuxSeccompFilterFlag::SeccompFilterFlagWaitKillableRecv => {
                SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV
            }
        }
    })
}

/// Translates the OCI policy into libseccomp rules and exports the program.
/// Reads arguments as runc does: for SCMP_CMP_MASKED_EQ, `value` is the mask
/// and `valueTwo` the expected value.
fn compile_program(policy: &LinuxSeccomp) -> Result<Vec<u8>, SandboxError> {
    let fail = |what: String| {
        move |e: libseccomp::error::SeccompError| {
            SandboxError::Invalid(format!("seccomp policy: {what}: {e}"))
        }
    };
    let default = action(policy.default_action(), policy.default_errno_ret())?;
    let mut ctx = ScmpFilterContext::new(default).map_err(fail("creating the filter".into()))?;
    for arch in policy.architectures().iter().flatten() {
        ctx.add_arch(scmp_arch(*arch))
            .map_err(fail(format!("adding architecture {arch:?}")))?;
    }
    for rule in policy.syscalls().iter().flatten() {
        let act = action(rule.action(), rule.errno_ret())?;
        // libseccomp refuses rules that repeat the default action.
        if act == default {
            continue;
        }
        let compares: Vec<ScmpArgCompare> = rule
            .args()
            .iter()
            .flatten()
            .map(|a| {
                let op = match a.op() {
                    LinuxSeccompOperator::ScmpCmpNe => ScmpCompareOp::NotEqual,
                    LinuxSeccompOperator::ScmpCmpLt => ScmpCompareOp::Less,
                    LinuxSeccompOperator::ScmpCmpLe => ScmpCompareOp::LessOrEqual,
                    LinuxSeccompOperator::ScmpCmpEq => ScmpCompareOp::Equal,
                    LinuxSeccompOperator::ScmpCmpGe => ScmpCompareOp::GreaterEqual,
                    LinuxSeccompOperator::ScmpCmpGt => ScmpCompareOp::Greater,
                    LinuxSeccompOperator::ScmpCmpMaskedEq => {
                        return ScmpArgCompare::new(
                            a.index() as u32,
                            ScmpCompareOp::MaskedEqual(a.value()),
                            a.value_two().unwrap_or(0),
                        )
                    }
                };
                ScmpArgCompare::new(a.index() as u32, op, a.value())
            })
            .collect();
        // One rule may test each argument once; repeated indices become
        // separate rules (any of them matching applies the action), as runc does.
        let mut seen = std::collections::HashSet::new();
        let repeated = rule
            .args()
            .iter()
            .flatten()
            .any(|a| !seen.insert(a.index()));
        for name in rule.names() {
            let Ok(nr) = libseccomp::ScmpSyscall::from_name(name) else {
                // A name this libseccomp does not know for any of the
                // architectures: nothing to filter.
                tracing::debug!(syscall = %name, "seccomp: unknown syscall name, rule skipped");
                continue;
            };
            let added = if compares.is_empty() {
                ctx.add_rule(act, nr)
            } else if repeated {
                compares
                    .iter()
                    .try_for_each(|c| ctx.add_rule_conditional(act, nr, &[*c]).map(|_| ()))
                    .map(|_| &mut ctx)
            } else {
                ctx.add_rule_conditional(act, nr, &compares)
            };
            added.map_err(fail(format!("adding the rule for {name}")))?;
        }
    }
    let mut out = std::fs::File::from(
        rustix::fs::memfd_create("skiff-seccomp", rustix::fs::MemfdFlags::CLOEXEC).map_err(
            |e| SandboxError::io("creating a memfd for the seccomp filter".into(), e.into()),
        )?,
    );
    ctx.export_bpf(&out)
        .map_err(fail("exporting the BPF program".into()))?;
    let mut program = Vec::new();
    std::io::Seek::rewind(&mut out)
        .and_then(|_| out.read_to_end(&mut program))
        .map_err(|e| SandboxError::io("reading back the seccomp filter".into(), e))?;
    Ok(program)
}

fn action(action: LinuxSeccompAction, errno: Option<u32>) -> Result<ScmpAction, SandboxError> {
    Ok(match action {
        LinuxSeccompAction::ScmpActKill | LinuxSeccompAction::ScmpActKillThread => {
            ScmpAction::KillThread
        }
        LinuxSeccompAction::ScmpActKillProcess => ScmpAction::KillProcess,
        LinuxSeccompAction::ScmpActTrap => ScmpAction::Trap,
        LinuxSeccompAction::ScmpActErrno => {
            ScmpAction::Errno(errno.unwrap_or(libc::EPERM as u32) as i32)
        }
        LinuxSeccompAction::ScmpActTrace => {
            ScmpAction::Trace(errno.unwrap_or(libc::EPERM as u32) as u16)
        }
        LinuxSeccompAction::ScmpActAllow => ScmpAction::Allow,
        LinuxSeccompAction::ScmpActLog => ScmpAction::Log,
        LinuxSeccompAction::ScmpActNotify => {
            return Err(SandboxError::Unsupported(
                "seccomp policy: SCMP_ACT_NOTIFY needs a seccomp agent, which skiff does not run; use SCMP_ACT_ERRNO or SCMP_ACT_LOG".into(),
            ))
        }
    })
}

fn scmp_arch(arch: Arch) -> ScmpArch {
    match arch {
        Arch::ScmpArchNative => ScmpArch::Native,
        Arch::ScmpArchX86 => ScmpArch::X86,
        Arch::ScmpArchX86_64 => ScmpArch::X8664,
        Arch::ScmpArchX32 => ScmpArch::X32,
        Arch::ScmpArchArm => ScmpArch::Arm,
        Arch::ScmpArchAarch64 => ScmpArch::Aarch64,
        Arch::ScmpArchMips => ScmpArch::Mips,
        Arch::ScmpArchMips64 => ScmpArch::Mips64,
        Arch::ScmpArchMips64n32 => ScmpArch::Mips64N32,
        Arch::ScmpArchMipsel => ScmpArch::Mipsel,
        Arch::ScmpArchMipsel64 => ScmpArch::Mipsel64,
        Arch::ScmpArchMipsel64n32 => ScmpArch::Mipsel64N32,
        Arch::ScmpArchPpc => ScmpArch::Ppc,
        Arch::ScmpArchPpc64 => ScmpArch::Ppc64,
        Arch::ScmpArchPpc64le => ScmpArch::Ppc64Le,
        Arch::ScmpArchS390 => ScmpArch::S390,
        Arch::ScmpArchS390x => ScmpArch::S390X,
        Arch::ScmpArchRiscv64 => ScmpArch::Riscv64,
        Arch::ScmpArchParisc => ScmpArch::Parisc,
        Arch::ScmpArchParisc64 => ScmpArch::Parisc64,
        Arch::ScmpArchLoongarch64 => ScmpArch::Loongarch64,
        Arch::ScmpArchM68k => ScmpArch::M68k,
        Arch::ScmpArchSh => ScmpArch::Sh,
        Arch::ScmpArchSheb => ScmpArch::Sheb,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::seccomp::default_profile;

    #[test]
    fn cache_returns_the_compiled_program() {
        let dir = tempfile::tempdir().unwrap();
        let policy = default_profile(&[]);
        let fresh = CompiledFilter::compile(&policy).unwrap();
        let first = CompiledFilter::cached(&policy, dir.path()).unwrap();
        assert_eq!(first, fresh);
        let files: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(files.len(), 1, "one cache entry, no temporary left");
        let second = CompiledFilter::cached(&policy, dir.path()).unwrap();
        assert_eq!(second, fresh);
        // A different policy gets its own entry.
        let other = default_profile(&[oci_spec::runtime::Capability::SysAdmin]);
        let with_admin = CompiledFilter::cached(&other, dir.path()).unwrap();
        assert_ne!(with_admin, fresh);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2);
    }

    #[test]
    fn damaged_cache_entry_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let policy = default_profile(&[]);
        let good = CompiledFilter::cached(&policy, dir.path()).unwrap();
        let entry = std::fs::read_dir(dir.path())
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path();
        std::fs::write(&entry, b"not bpf").unwrap();
        assert_eq!(CompiledFilter::cached(&policy, dir.path()).unwrap(), good);
        assert_eq!(std::fs::read(&entry).unwrap(), good.program);
    }

    #[test]
    fn notify_is_refused_with_a_hint() {
        let mut policy = default_profile(&[]);
        policy.set_default_action(LinuxSeccompAction::ScmpActNotify);
        let err = CompiledFilter::compile(&policy).unwrap_err().to_string();
        assert!(err.contains("SCMP_ACT_NOTIFY"), "{err}");
    }

    #[test]
    fn flags_are_kept_for_loading() {
        let mut policy = default_profile(&[]);
        policy.set_flags(Some(vec![
            LinuxSeccompFilterFlag::SeccompFilterFlagLog,
            LinuxSeccompFilterFlag::SeccompFilterFlagSpecAllow,
        ]));
        let f = CompiledFilter::compile(&policy).unwrap();
        assert_eq!(
            f.flags,
            SECCOMP_FILTER_FLAG_LOG | SECCOMP_FILTER_FLAG_SPEC_ALLOW
        );
        assert!(f.instructions() > 100 && f.instructions() <= MAX_INSNS);
    }
}
