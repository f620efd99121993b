//! The device allow-list on cgroup v2: an eBPF program of type
//! `BPF_PROG_TYPE_CGROUP_DEVICE`, built from the spec's
//! `linux.resources.devices` rules and attached to the container's cgroup.
//!
//! cgroup v1 has a `devices` controller (see [`crate::cgroups`]); cgroup v2
//! has only this program hook. The program is a few instructions per rule
//! and loading it is two `bpf(2)` calls, so no BPF library is needed (the
//! common one, libbpf, also insists on raising `RLIMIT_MEMLOCK`, which
//! fails without `CAP_SYS_RESOURCE`, although kernels since 5.11 charge BPF
//! memory to the memory cgroup instead).
//!
//! Semantics are the v1 controller's: rules in spec order, the last rule
//! that matches decides, and nothing matching means deny.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

use oci_spec::runtime::{LinuxDeviceCgroup, LinuxDeviceType};

use crate::SandboxError;

/// Access bits of `struct bpf_cgroup_dev_ctx.access_type >> 16`.
const ACC_MKNOD: u32 = 1;
const ACC_READ: u32 = 2;
const ACC_WRITE: u32 = 4;
const ACC_ALL: u32 = ACC_MKNOD | ACC_READ | ACC_WRITE;
/// Device types in the low 16 bits of `access_type`.
const DEV_BLOCK: i32 = 1;
const DEV_CHAR: i32 = 2;

/// One rule, normalised: `None` matches anything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceRule {
    pub allow: bool,
    pub kind: Option<i32>,
    pub major: Option<u32>,
    pub minor: Option<u32>,
    pub access: u32,
}

impl DeviceRule {
    /// `None` for rules about things the hook never sees (fifos).
    pub fn from_spec(r: &LinuxDeviceCgroup) -> Option<Self> {
        let kind = match r.typ() {
            None | Some(LinuxDeviceType::A) => None,
            Some(LinuxDeviceType::B) => Some(DEV_BLOCK),
            Some(LinuxDeviceType::C) | Some(LinuxDeviceType::U) => Some(DEV_CHAR),
            Some(LinuxDeviceType::P) => return None,
        };
        let number = |n: Option<i64>| n.and_then(|n| u32::try_from(n).ok());
        let access = match r.access().as_deref() {
            None | Some("") => ACC_ALL,
            Some(s) => s.chars().fold(0, |acc, c| match c {
                'm' => acc | ACC_MKNOD,
                'r' => acc | ACC_READ,
                'w' => acc | ACC_WRITE,
                _ => acc,
            }),
        };
        Some(DeviceRule {
            allow: r.allow(),
            kind,
            major: number(r.major()),
            minor: number(r.minor()),
            access,
        })
    }
}

/// One eBPF instruction (`struct bpf_insn`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(C)]
pub struct Insn {
    pub code: u8,
    /// dst in the low nibble, src in the high one.
    pub regs: u8,
    pub off: i16,
    pub imm: i32,
}

// Opcodes used (linux/bpf.h: class | op | source).
pub const LDX_W: u8 = 0x61; // BPF_LDX | BPF_MEM | BPF_W
pub const MOV64_X: u8 = 0xbf; // BPF_ALU64 | BPF_MOV | BPF_X
pub const MOV64_K: u8 = 0xb7; // BPF_ALU64 | BPF_MOV | BPF_K
pub const AND32_K: u8 = 0x54; // BPF_ALU | BPF_AND | BPF_K
pub const RSH32_K: u8 = 0x74; // BPF_ALU | BPF_RSH | BPF_K
pub const JNE_K: u8 = 0x55; // BPF_JMP | BPF_JNE | BPF_K
pub const JSET_K: u8 = 0x45; // BPF_JMP | BPF_JSET | BPF_K
pub const EXIT: u8 = 0x95; // BPF_JMP | BPF_EXIT

// Registers after the prologue.
const R_ACCESS: u8 = 2;
const R_TYPE: u8 = 3;
const R_MAJOR: u8 = 4;
const R_MINOR: u8 = 5;

fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
    Insn {
        code,
        regs: dst | (src << 4),
        off,
        imm,
    }
}

/// The program for `rules`: returns 1 (allow) or 0 (deny) for the
/// `struct bpf_cgroup_dev_ctx` in r1.
pub fn program(rules: &[DeviceRule]) -> Vec<Insn> {
    let mut p = vec![
        insn(LDX_W, R_ACCESS, 1, 0, 0),
        insn(MOV64_X, R_TYPE, R_ACCESS, 0, 0),
        insn(AND32_K, R_TYPE, 0, 0, 0xffff),
        insn(RSH32_K, R_ACCESS, 0, 0, 16),
        insn(LDX_W, R_MAJOR, 1, 4, 0),
        insn(LDX_W, R_MINOR, 1, 8, 0),
    ];
    // The last matching rule wins: test them from the end.
    for r in rules.iter().rev() {
        // (opcode, register, immediate) of each "skip this rule" test.
        let mut tests: Vec<(u8, u8, i32)> = Vec::new();
        if let Some(k) = r.kind {
            tests.push((JNE_K, R_TYPE, k));
        }
        if r.access & ACC_ALL != ACC_ALL {
            // Any requested access outside the rule's: not this rule.
            tests.push((JSET_K, R_ACCESS, (!r.access & ACC_ALL) as i32));
        }
        if let Some(m) = r.major {
            tests.push((JNE_K, R_MAJOR, m as i32));
        }
        if let Some(m) = r.minor {
            tests.push((JNE_K, R_MINOR, m as i32));
        }
        let n = tests.len();
        for (i, (code, reg, imm)) in tests.into_iter().enumerate() {
            // Past the remaining tests and this rule's two-instruction verdict.
            let skip = (n - i - 1 + 2) as i16;
            p.push(insn(code, reg, 0, skip, imm));
        }
        p.push(insn(MOV64_K, 0, 0, 0, i32::from(r.allow)));
        p.push(insn(EXIT, 0, 0, 0, 0));
        if n == 0 {
            // Matches everything: the rest is unreachable, which the
            // verifier refuses.
            return p;
        }
    }
    p.push(insn(MOV64_K, 0, 0, 0, 0));
    p.push(insn(EXIT, 0, 0, 0, 0));
    p
}

/// Whether `/sys/fs/cgroup` is the cgroup v2 hierarchy (a unified host),
/// where containers get v2 cgroups.
pub fn unified_host() -> bool {
    const CGROUP2_SUPER_MAGIC: u64 = 0x6367_7270;
    rustix::fs::statfs("/sys/fs/cgroup").is_ok_and(|s| s.f_type as u64 == CGROUP2_SUPER_MAGIC)
}

// bpf(2) commands, program and attach types, flags (linux/bpf.h).
const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_ATTACH: libc::c_long = 8;
const BPF_PROG_TYPE_CGROUP_DEVICE: u32 = 15;
const BPF_CGROUP_DEVICE: u32 = 6;
const BPF_F_ALLOW_MULTI: u32 = 2;

/// The leading fields of `union bpf_attr` for `BPF_PROG_LOAD`.
#[repr(C)]
#[derive(Default)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
}

/// The leading fields of `union bpf_attr` for `BPF_PROG_ATTACH`.
#[repr(C)]
#[derive(Default)]
struct ProgAttachAttr {
    target_fd: u32,
    attach_bpf_fd: u32,
    attach_type: u32,
    attach_flags: u32,
}

fn bpf<T>(cmd: libc::c_long, attr: &mut T) -> std::io::Result<i64> {
    // SAFETY: attr is a live, fully initialised repr(C) prefix of bpf_attr
    // and its size is passed; the kernel zero-extends the rest.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *mut T as *mut libc::c_void,
            std::mem::size_of::<T>(),
        )
    };
    if r < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// Loads the program for `rules` and attaches it to the cgroup directory
/// `cgroup` (alongside programs its ancestors have: all must allow).
pub fn attach(rules: &[DeviceRule], cgroup: &Path) -> Result<(), SandboxError> {
    let insns = program(rules);
    let license = c"Apache-2.0";
    let mut name = [0u8; 16];
    name[..13].copy_from_slice(b"skiff_devices");
    let mut log = vec![0u8; 64 * 1024];
    let load = |log_level: u32, log: &mut [u8]| {
        let mut attr = ProgLoadAttr {
            prog_type: BPF_PROG_TYPE_CGROUP_DEVICE,
            insn_cnt: insns.len() as u32,
            insns: insns.as_ptr() as u64,
            license: license.as_ptr() as u64,
            log_level,
            log_size: if log_level > 0 { log.len() as u32 } else { 0 },
            log_buf: if log_level > 0 {
                log.as_mut_ptr() as u64
            } else {
                0
            },
            prog_name: name,
            ..Default::default()
        };
        bpf(BPF_PROG_LOAD, &mut attr)
    };
    let prog = match load(0, &mut log) {
        Ok(fd) => fd,
        Err(e) => {
            // Again with the verifier's log, for the message.
            let _ = load(1, &mut log);
            let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
            let detail = String::from_utf8_lossy(&log[..end]).trim().to_string();
            return Err(SandboxError::io(
                format!("loading the cgroup v2 device program (verifier: {detail:?}); the kernel needs CONFIG_CGROUP_BPF and skiff needs CAP_BPF or CAP_SYS_ADMIN"),
                e,
            ));
        }
    };
    // SAFETY: BPF_PROG_LOAD returned a new descriptor that nothing else owns.
    let prog = unsafe { OwnedFd::from_raw_fd(prog as i32) };
    let dir = std::fs::File::open(cgroup)
        .map_err(|e| SandboxError::io(format!("opening cgroup {}", cgroup.display()), e))?;
    let mut attr = ProgAttachAttr {
        target_fd: dir.as_raw_fd() as u32,
        attach_bpf_fd: prog.as_raw_fd() as u32,
        attach_type: BPF_CGROUP_DEVICE,
        attach_flags: BPF_F_ALLOW_MULTI,
    };
    bpf(BPF_PROG_ATTACH, &mut attr).map_err(|e| {
        SandboxError::io(
            format!("attaching the device program to {}", cgroup.display()),
            e,
        )
    })?;
    // The attachment holds the program for the cgroup's life.
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::LinuxDeviceCgroupBuilder;

    /// Runs the program on one device access, as the kernel would.
    fn eval(p: &[Insn], kind: i32, access: u32, major: u32, minor: u32) -> u64 {
        let ctx = [(access << 16) | kind as u32, major, minor];
        let mut r = [0u64; 11];
        let mut pc = 0usize;
        loop {
            let i = p[pc];
            let (dst, src) = ((i.regs & 0xf) as usize, (i.regs >> 4) as usize);
            let imm = i.imm as i64 as u64;
            let jump = |cond: bool| if cond { i.off as usize } else { 0 };
            pc += 1;
            match i.code {
                LDX_W => {
                    assert_eq!(src, 1);
                    r[dst] = ctx[i.off as usize / 4] as u64;
                }
                MOV64_X => r[dst] = r[src],
                MOV64_K => r[dst] = imm,
                AND32_K => r[dst] = (r[dst] as u32 & i.imm as u32) as u64,
                RSH32_K => r[dst] = ((r[dst] as u32) >> i.imm) as u64,
                JNE_K => pc += jump(r[dst] != imm),
                JSET_K => pc += jump(r[dst] & imm != 0),
                EXIT => return r[0],
                c => panic!("unexpected opcode {c:#x}"),
            }
        }
    }

    fn rule(
        allow: bool,
        typ: LinuxDeviceType,
        major: Option<i64>,
        minor: Option<i64>,
        access: &str,
    ) -> DeviceRule {
        let mut b = LinuxDeviceCgroupBuilder::default()
            .allow(allow)
            .typ(typ)
            .access(access);
        if let Some(m) = major {
            b = b.major(m);
        }
        if let Some(m) = minor {
            b = b.minor(m);
        }
        DeviceRule::from_spec(&b.build().unwrap()).unwrap()
    }

    fn docker_rules() -> Vec<DeviceRule> {
        use LinuxDeviceType::{A, B, C};
        vec![
            rule(false, A, None, None, "rwm"),
            rule(true, C, None, None, "m"),
            rule(true, B, None, None, "m"),
            rule(true, C, Some(1), Some(3), "rwm"),
            rule(true, C, Some(136), None, "rwm"),
        ]
    }

    #[test]
    fn the_last_matching_rule_decides_and_nothing_matching_denies() {
        let p = program(&docker_rules());
        let (m, r, w) = (ACC_MKNOD, ACC_READ, ACC_WRITE);
        // /dev/null: every access.
        assert_eq!(eval(&p, DEV_CHAR, r | w, 1, 3), 1);
        // /dev/mem (1:1): may be created, never opened.
        assert_eq!(eval(&p, DEV_CHAR, m, 1, 1), 1);
        assert_eq!(eval(&p, DEV_CHAR, r, 1, 1), 0);
        assert_eq!(eval(&p, DEV_CHAR, w, 1, 1), 0);
        // A block device: the same.
        assert_eq!(eval(&p, DEV_BLOCK, m, 8, 0), 1);
        assert_eq!(eval(&p, DEV_BLOCK, r, 8, 0), 0);
        // Any pts minor.
        assert_eq!(eval(&p, DEV_CHAR, r | w, 136, 7), 1);
        // Wrong type with the right numbers.
        assert_eq!(eval(&p, DEV_BLOCK, r, 1, 3), 0);
        // An access partly outside a rule falls through to the rules before.
        assert_eq!(eval(&p, DEV_CHAR, m | r, 1, 1), 0);
        // No rules: deny everything.
        assert_eq!(eval(&program(&[]), DEV_CHAR, r, 1, 3), 0);
        // Every instruction is reachable (the verifier rejects dead code):
        // the catch-all first rule ends the program.
        assert_eq!(p.last().unwrap().code, EXIT);
        assert_eq!(p[p.len() - 2], insn(MOV64_K, 0, 0, 0, 0));
        assert_ne!(p[p.len() - 4].code, EXIT);
    }

    #[test]
    fn a_later_deny_overrides_an_earlier_allow() {
        let mut rules = docker_rules();
        rules.push(rule(false, LinuxDeviceType::C, Some(1), Some(3), "w"));
        let p = program(&rules);
        assert_eq!(eval(&p, DEV_CHAR, ACC_READ, 1, 3), 1);
        assert_eq!(eval(&p, DEV_CHAR, ACC_WRITE, 1, 3), 0);
    }

    #[test]
    fn fifo_rules_are_ignored_and_unknown_numbers_match_any() {
        let fifo = LinuxDeviceCgroupBuilder::default()
            .allow(true)
            .typ(LinuxDeviceType::P)
            .build()
            .unwrap();
        assert_eq!(DeviceRule::from_spec(&fifo), None);
        let any = rule(true, LinuxDeviceType::A, None, None, "");
        assert_eq!(any.access, ACC_ALL);
        assert_eq!(eval(&program(&[any]), DEV_BLOCK, ACC_WRITE, 259, 1), 1);
    }
}
