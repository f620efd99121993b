//! The policies' tests: the default against Docker's rules, profiles
//! parsed and refused, names resolved by libseccomp, filters enforced.

use super::default::{build_default, default_profile, masked_eq};
use super::host::{Host, KernelVersion};
use super::profile::{load_profile, parse_profile};
use super::tables::TRACING;
use super::SeccompError;
use oci_spec::runtime::{
    Arch, Capability, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompFilterFlag,
    LinuxSeccompOperator, LinuxSyscall,
};
use std::collections::{BTreeSet, HashMap};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

const ALL_GATING_CAPS: &[Capability] = &[
    Capability::SysAdmin,
    Capability::SysBoot,
    Capability::SysChroot,
    Capability::SysModule,
    Capability::SysPacct,
    Capability::SysPtrace,
    Capability::SysRawio,
    Capability::SysTime,
    Capability::SysTtyConfig,
    Capability::SysNice,
    Capability::Syslog,
    Capability::Bpf,
    Capability::Perfmon,
    Capability::DacReadSearch,
];

fn amd64(kernel: (u32, u32)) -> Host {
    Host {
        go_arch: "amd64",
        kernel_arch: "x86_64",
        scmp_arch: "SCMP_ARCH_X86_64",
        kernel: Some(KernelVersion(kernel.0, kernel.1, 0)),
    }
}

/// Syscalls allowed with no conditions.
fn unconditional(profile: &LinuxSeccomp) -> BTreeSet<String> {
    rules(profile)
        .iter()
        .filter(|r| r.action() == LinuxSeccompAction::ScmpActAllow && r.args().is_none())
        .flat_map(|r| r.names().iter().cloned())
        .collect()
}

fn rules(profile: &LinuxSeccomp) -> &[LinuxSyscall] {
    profile.syscalls().as_deref().unwrap_or(&[])
}

fn rules_for<'a>(profile: &'a LinuxSeccomp, name: &str) -> Vec<&'a LinuxSyscall> {
    rules(profile)
        .iter()
        .filter(|r| r.names().iter().any(|n| n == name))
        .collect()
}

/// Every syscall name the default profile can mention, for any caps.
fn all_default_names() -> BTreeSet<String> {
    [default_profile(&[]), default_profile(ALL_GATING_CAPS)]
        .iter()
        .flat_map(|p| rules(p).to_vec())
        .flat_map(|r| r.names().clone())
        .collect()
}

#[test]
fn default_denies_with_eperm() {
    let p = default_profile(&[]);
    assert_eq!(p.default_action(), LinuxSeccompAction::ScmpActErrno);
    assert_eq!(p.default_errno_ret(), Some(1));
    #[cfg(target_arch = "x86_64")]
    assert_eq!(
        p.architectures().as_deref(),
        Some(&[Arch::ScmpArchX86_64, Arch::ScmpArchX86, Arch::ScmpArchX32][..])
    );
    #[cfg(target_arch = "aarch64")]
    assert_eq!(
        p.architectures().as_deref(),
        Some(&[Arch::ScmpArchAarch64, Arch::ScmpArchArm][..])
    );
}

#[test]
fn dangerous_syscalls_are_not_allowed_without_caps() {
    let p = default_profile(&[]);
    let allowed = unconditional(&p);
    for name in [
        "keyctl",
        "add_key",
        "request_key",
        "mount",
        "umount2",
        "unshare",
        "setns",
        "reboot",
        "init_module",
        "finit_module",
        "delete_module",
        "kexec_load",
        "kexec_file_load",
        "open_by_handle_at",
        "bpf",
        "perf_event_open",
        "userfaultfd",
        "swapon",
        "swapoff",
        "pivot_root",
        "acct",
        "settimeofday",
        "clock_settime",
        "iopl",
        "ioperm",
        "quotactl",
        "lookup_dcookie",
        "vm86",
        "vm86old",
        "create_module",
        "get_kernel_syms",
        "query_module",
        "nfsservctl",
        "uselib",
        "sysfs",
        "ustat",
        "_sysctl",
        "syslog",
        "chroot",
        "kcmp",
        "pidfd_getfd",
        "process_madvise",
        "vhangup",
        "mbind",
        "io_uring_setup",
        "io_uring_enter",
        "io_uring_register",
    ] {
        assert!(!allowed.contains(name), "{name} must not be allowed");
        assert!(
            rules_for(&p, name).is_empty(),
            "{name} must fall through to the default EPERM"
        );
    }
}

#[test]
fn everyday_syscalls_are_allowed() {
    let allowed = unconditional(&default_profile(&[]));
    for name in [
        "read",
        "openat",
        "clock_nanosleep",
        "rseq",
        "statx",
        "faccessat2",
        "openat2",
        "close_range",
        "pidfd_open",
        "pidfd_send_signal",
        "epoll_pwait2",
        "getrandom",
        "memfd_create",
        "copy_file_range",
        "membarrier",
        "landlock_create_ruleset",
        "landlock_add_rule",
        "landlock_restrict_self",
        "futex_waitv",
        "set_robust_list",
        "prlimit64",
        "execve",
        "wait4",
        "name_to_handle_at",
        "fchmodat2",
        "socketpair",
    ] {
        assert!(allowed.contains(name), "{name} must be allowed");
    }
    #[cfg(target_arch = "x86_64")]
    assert!(allowed.contains("arch_prctl"));
}

#[test]
fn capabilities_unlock_their_syscalls() {
    let cases: &[(Capability, &[&str])] = &[
        (
            Capability::SysAdmin,
            &[
                "mount",
                "umount2",
                "unshare",
                "setns",
                "sethostname",
                "clone",
                "clone3",
            ],
        ),
        (Capability::SysBoot, &["reboot"]),
        (Capability::SysChroot, &["chroot"]),
        (
            Capability::SysModule,
            &["init_module", "finit_module", "delete_module"],
        ),
        (Capability::SysPacct, &["acct"]),
        (
            Capability::SysPtrace,
            &["kcmp", "pidfd_getfd", "process_madvise"],
        ),
        (Capability::SysRawio, &["iopl", "ioperm"]),
        (Capability::SysTime, &["settimeofday", "clock_settime"]),
        (Capability::SysTtyConfig, &["vhangup"]),
        (
            Capability::SysNice,
            &["mbind", "set_mempolicy", "get_mempolicy"],
        ),
        (Capability::Syslog, &["syslog"]),
        (Capability::Bpf, &["bpf"]),
        (Capability::Perfmon, &["perf_event_open"]),
        (Capability::DacReadSearch, &["open_by_handle_at"]),
    ];
    let without = unconditional(&default_profile(&[]));
    for (cap, names) in cases {
        let with = unconditional(&default_profile(&[*cap]));
        for name in *names {
            assert!(!without.contains(*name), "{name} allowed without {cap}");
            assert!(with.contains(*name), "{name} not allowed with {cap}");
        }
    }
    // No capability opens the keyring.
    let everything = unconditional(&default_profile(ALL_GATING_CAPS));
    for name in [
        "keyctl",
        "add_key",
        "request_key",
        "kexec_load",
        "userfaultfd",
    ] {
        assert!(!everything.contains(name), "{name} allowed with all caps");
    }
}

#[test]
fn clone_is_limited_to_no_new_namespaces() {
    let p = default_profile(&[]);
    let clone = rules_for(&p, "clone");
    assert_eq!(clone.len(), 1, "{clone:?}");
    assert_eq!(clone[0].action(), LinuxSeccompAction::ScmpActAllow);
    assert_eq!(
        clone[0].args().as_deref(),
        Some(&[masked_eq(0, 0x7E02_0000, 0)][..])
    );

    let clone3 = rules_for(&p, "clone3");
    assert_eq!(clone3.len(), 1);
    assert_eq!(clone3[0].action(), LinuxSeccompAction::ScmpActErrno);
    assert_eq!(clone3[0].errno_ret(), Some(38));

    // CAP_SYS_ADMIN: both allowed outright, no leftover conditional rules.
    let admin = default_profile(&[Capability::SysAdmin]);
    for name in ["clone", "clone3"] {
        let r = rules_for(&admin, name);
        assert_eq!(r.len(), 1, "{name}: {r:?}");
        assert_eq!(r[0].action(), LinuxSeccompAction::ScmpActAllow);
        assert!(r[0].args().is_none());
    }
}

#[test]
fn personality_and_socket_are_argument_checked() {
    let p = default_profile(&[]);
    let values: Vec<u64> = rules_for(&p, "personality")
        .iter()
        .map(|r| {
            let args = r.args().as_deref().unwrap_or(&[]);
            assert_eq!(args.len(), 1);
            assert_eq!(args[0].op(), LinuxSeccompOperator::ScmpCmpEq);
            args[0].value()
        })
        .collect();
    assert_eq!(values, [0x0, 0x8, 0x20000, 0x20008, 0xffff_ffff]);
    assert_eq!(rules_for(&p, "socket").len(), 3);
    assert!(!unconditional(&p).contains("socket"));
}

#[test]
fn tracing_follows_kernel_version() {
    let old = unconditional(&build_default(&[], &amd64((4, 4))));
    let new = unconditional(&build_default(&[], &amd64((6, 1))));
    for name in TRACING {
        assert!(!old.contains(*name), "{name} on 4.4");
        assert!(new.contains(*name), "{name} on 6.1");
    }
    let traced = unconditional(&build_default(&[Capability::SysPtrace], &amd64((4, 4))));
    assert!(traced.contains("ptrace"));
}

#[test]
fn allowlist_size() {
    let n = unconditional(&default_profile(&[])).len();
    println!("default profile allows {n} syscalls outright");
    assert!(n > 300, "{n}");
}

#[test]
fn kernel_versions_parse() {
    assert_eq!(
        KernelVersion::parse("6.1.0-18-amd64"),
        Some(KernelVersion(6, 1, 0))
    );
    assert_eq!(KernelVersion::parse("4.8"), Some(KernelVersion(4, 8, 0)));
    assert_eq!(
        KernelVersion::parse("5.15.133.1-microsoft-standard-WSL2"),
        Some(KernelVersion(5, 15, 133))
    );
    assert_eq!(KernelVersion::parse("banana"), None);
    assert_eq!(KernelVersion::parse("6"), None);
}

// -- load_profile ------------------------------------------------------

fn write_profile(text: &str) -> (tempdir::Dir, PathBuf) {
    let dir = tempdir::Dir::new();
    let path = dir.0.join("profile.json");
    std::fs::write(&path, text).unwrap();
    (dir, path)
}

/// A scratch directory removed on drop (no tempfile dependency here).
mod tempdir {
    use std::path::PathBuf;
    use std::sync::atomic::{AtomicUsize, Ordering};

    pub struct Dir(pub PathBuf);

    impl Dir {
        pub fn new() -> Self {
            static NEXT: AtomicUsize = AtomicUsize::new(0);
            let path = std::env::temp_dir().join(format!(
                "skiff-seccomp-test-{}-{}",
                std::process::id(),
                NEXT.fetch_add(1, Ordering::Relaxed)
            ));
            std::fs::create_dir_all(&path).unwrap();
            Dir(path)
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

fn parse(text: &str, caps: &[Capability], host: &Host) -> Result<LinuxSeccomp, SeccompError> {
    parse_profile(Path::new("p.json"), text.as_bytes(), caps, host)
}

fn parse_err(text: &str) -> String {
    parse(text, &[], &amd64((6, 1)))
        .expect_err("profile should be rejected")
        .to_string()
}

#[test]
fn loads_oci_format() {
    let text = r#"{
        "defaultAction": "SCMP_ACT_ERRNO",
        "defaultErrnoRet": 1,
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86"],
        "flags": ["SECCOMP_FILTER_FLAG_LOG"],
        "syscalls": [
            {"names": ["read", "write"], "action": "SCMP_ACT_ALLOW"},
            {"names": ["getcwd"], "action": "SCMP_ACT_ERRNO", "errnoRet": 11},
            {"names": ["clone"], "action": "SCMP_ACT_ALLOW",
             "args": [{"index": 0, "value": 2114060288, "op": "SCMP_CMP_MASKED_EQ"}]},
            {"names": ["personality"], "action": "SCMP_ACT_ALLOW",
             "args": [{"index": 0, "value": 8, "valueTwo": 0, "op": "SCMP_CMP_EQ"}]}
        ]
    }"#;
    let (_dir, path) = write_profile(text);
    let p = load_profile(&path, &[]).unwrap();
    assert_eq!(p.default_action(), LinuxSeccompAction::ScmpActErrno);
    assert_eq!(p.default_errno_ret(), Some(1));
    assert_eq!(
        p.architectures().as_deref(),
        Some(&[Arch::ScmpArchX86_64, Arch::ScmpArchX86][..])
    );
    assert_eq!(
        p.flags().as_deref(),
        Some(&[LinuxSeccompFilterFlag::SeccompFilterFlagLog][..])
    );
    let r = rules(&p);
    assert_eq!(r.len(), 4);
    assert_eq!(r[0].names(), &["read", "write"]);
    assert_eq!(r[1].errno_ret(), Some(11));
    assert_eq!(
        r[2].args().as_deref(),
        Some(&[masked_eq(0, 2114060288, 0)][..])
    );
    let personality = &r[3].args().as_ref().unwrap()[0];
    assert_eq!(personality.value(), 8);
    assert_eq!(personality.value_two(), Some(0));
}

#[test]
fn loads_whole_oci_config() {
    let text = r#"{"ociVersion": "1.0.2", "linux": {"seccomp": {
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": ["keyctl"], "action": "SCMP_ACT_ERRNO"}]}}}"#;
    let p = parse(text, &[], &amd64((6, 1))).unwrap();
    assert_eq!(p.default_action(), LinuxSeccompAction::ScmpActAllow);
    assert_eq!(rules(&p)[0].names(), &["keyctl"]);
}

const DOCKER_PROFILE: &str = r#"{
    "defaultAction": "SCMP_ACT_ERRNO",
    "defaultErrnoRet": 1,
    "archMap": [
        {"architecture": "SCMP_ARCH_X86_64",
         "subArchitectures": ["SCMP_ARCH_X86", "SCMP_ARCH_X32"]},
        {"architecture": "SCMP_ARCH_AARCH64", "subArchitectures": ["SCMP_ARCH_ARM"]},
        {"architecture": "SCMP_ARCH_RISCV64", "subArchitectures": null}
    ],
    "syscalls": [
        {"names": ["read", "write"], "action": "SCMP_ACT_ALLOW"},
        {"name": "getpid", "action": "SCMP_ACT_ALLOW", "comment": "old single form"},
        {"names": ["ptrace"], "action": "SCMP_ACT_ALLOW", "includes": {"minKernel": "4.8"}},
        {"names": ["arch_prctl"], "action": "SCMP_ACT_ALLOW",
         "includes": {"arches": ["amd64", "x32"]}},
        {"names": ["cacheflush"], "action": "SCMP_ACT_ALLOW",
         "includes": {"arches": ["arm", "arm64"]}},
        {"names": ["mount", "clone"], "action": "SCMP_ACT_ALLOW",
         "includes": {"caps": ["CAP_SYS_ADMIN"]}},
        {"names": ["clone"], "action": "SCMP_ACT_ALLOW",
         "args": [{"index": 0, "value": 2114060288, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ"}],
         "excludes": {"caps": ["CAP_SYS_ADMIN"], "arches": ["s390", "s390x"]}},
        {"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38,
         "excludes": {"caps": ["CAP_SYS_ADMIN"]}},
        {"names": ["reboot"], "action": "SCMP_ACT_ALLOW",
         "includes": {"caps": ["SYS_BOOT"]}}
    ]
}"#;

fn names_of(p: &LinuxSeccomp) -> Vec<Vec<String>> {
    rules(p).iter().map(|r| r.names().clone()).collect()
}

#[test]
fn loads_docker_format_without_caps() {
    let p = parse(DOCKER_PROFILE, &[], &amd64((6, 1))).unwrap();
    assert_eq!(
        p.architectures().as_deref(),
        Some(&[Arch::ScmpArchX86_64, Arch::ScmpArchX86, Arch::ScmpArchX32][..])
    );
    assert_eq!(
        names_of(&p),
        [
            vec!["read", "write"],
            vec!["getpid"],
            vec!["ptrace"],
            vec!["arch_prctl"],
            vec!["clone"],
            vec!["clone3"],
        ]
    );
    let clone = &rules(&p)[4];
    assert_eq!(
        clone.args().as_deref(),
        Some(&[masked_eq(0, 2114060288, 0)][..])
    );
    assert_eq!(rules(&p)[5].errno_ret(), Some(38));
}

#[test]
fn loads_docker_format_with_caps_and_old_kernel() {
    let caps = [Capability::SysAdmin, Capability::SysBoot];
    let p = parse(DOCKER_PROFILE, &caps, &amd64((4, 4))).unwrap();
    assert_eq!(
        names_of(&p),
        [
            vec!["read", "write"],
            vec!["getpid"],
            vec!["arch_prctl"],
            vec!["mount", "clone"],
            vec!["reboot"],
        ]
    );
}

#[test]
fn docker_arch_map_picks_this_machine() {
    let arm = Host {
        go_arch: "arm64",
        kernel_arch: "aarch64",
        scmp_arch: "SCMP_ARCH_AARCH64",
        kernel: Some(KernelVersion(6, 1, 0)),
    };
    let p = parse(DOCKER_PROFILE, &[], &arm).unwrap();
    assert_eq!(
        p.architectures().as_deref(),
        Some(&[Arch::ScmpArchAarch64, Arch::ScmpArchArm][..])
    );
    assert!(names_of(&p).contains(&vec!["cacheflush".to_string()]));
    assert!(!names_of(&p).contains(&vec!["arch_prctl".to_string()]));
}

#[test]
fn rejects_garbage_with_clear_errors() {
    let cases: &[(&str, &str)] = &[
        ("not json at all", "not valid JSON"),
        ("[1, 2]", "the document is an array, not a JSON object"),
        (r#"{"syscalls": []}"#, "defaultAction is missing"),
        (
            r#"{"defaultAction": "SCMP_ACT_FOO"}"#,
            r#"defaultAction "SCMP_ACT_FOO" is not a seccomp action; use SCMP_ACT_ALLOW"#,
        ),
        (
            r#"{"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [
                {"names": ["read"], "action": "SCMP_ACT_ALLOW"},
                {"names": ["write"], "action": "SCMP_ACT_FOO"}]}"#,
            r#"syscalls[1].action "SCMP_ACT_FOO" is not a seccomp action; use SCMP_ACT_ALLOW, SCMP_ACT_ERRNO"#,
        ),
        (
            r#"{"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{"action": "SCMP_ACT_ALLOW"}]}"#,
            "syscalls[0].names is missing",
        ),
        (
            r#"{"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{"names": ["read"]}]}"#,
            "syscalls[0].action is missing",
        ),
        (
            r#"{"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [
                {"name": "read", "names": ["write"], "action": "SCMP_ACT_ALLOW"}]}"#,
            "syscalls[0].name is given together with names",
        ),
        (
            r#"{"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [
                {"names": ["Read Me"], "action": "SCMP_ACT_ALLOW"}]}"#,
            r#"syscalls[0].names[0] "Read Me" is not a syscall name"#,
        ),
        (
            r#"{"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{"names": [], "action": "SCMP_ACT_ALLOW"}]}"#,
            "syscalls[0].names is empty",
        ),
        (
            r#"{"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{"names": ["clone"],
                "action": "SCMP_ACT_ALLOW", "args": [{"index": 7, "value": 1, "op": "SCMP_CMP_EQ"}]}]}"#,
            "syscalls[0].args[0].index is 7; syscalls have at most 6 arguments",
        ),
        (
            r#"{"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{"names": ["clone"],
                "action": "SCMP_ACT_ALLOW", "args": [{"index": 0, "value": -1, "op": "SCMP_CMP_EQ"}]}]}"#,
            "syscalls[0].args[0].value is the number -1, not a whole number",
        ),
        (
            r#"{"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{"names": ["clone"],
                "action": "SCMP_ACT_ALLOW", "args": [{"index": 0, "value": 1, "op": "EQ"}]}]}"#,
            r#"syscalls[0].args[0].op "EQ" is not a seccomp comparison; use SCMP_CMP_EQ"#,
        ),
        (
            r#"{"defaultAction": "SCMP_ACT_ERRNO", "architectures": ["SCMP_ARCH_Z80"]}"#,
            r#"architectures[0] "SCMP_ARCH_Z80" is not a seccomp architecture"#,
        ),
        (
            r#"{"defaultAction": "SCMP_ACT_ERRNO", "architectures": ["SCMP_ARCH_X86_64"],
                "archMap": [{"architecture": "SCMP_ARCH_X86_64"}]}"#,
            "architectures is given together with archMap",
        ),
        (
            r#"{"defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 70000}"#,
            "defaultErrnoRet is the number 70000, not an errno number",
        ),
        (
            r#"{"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{"names": ["ptrace"],
                "action": "SCMP_ACT_ALLOW", "includes": {"minKernel": "four"}}]}"#,
            r#"syscalls[0].includes.minKernel "four" is not a kernel version"#,
        ),
        (
            r#"{"defaultAction": "SCMP_ACT_NOTIFY"}"#,
            "defaultAction is SCMP_ACT_NOTIFY",
        ),
        (
            r#"{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_NOTIFY"}]}"#,
            "listenerPath is missing",
        ),
        (
            r#"{"defaultAction": "SCMP_ACT_ERRNO", "syscalls": {"names": ["read"]}}"#,
            "syscalls is an object, not an array",
        ),
        (
            r#"{"defaultAction": "SCMP_ACT_ERRNO", "flags": ["SECCOMP_FILTER_FLAG_BOGUS"]}"#,
            r#"flags[0] "SECCOMP_FILTER_FLAG_BOGUS" is not a seccomp filter flag"#,
        ),
        (
            r#"{"ociVersion": "1.0.2", "linux": {}}"#,
            "linux.seccomp is missing",
        ),
    ];
    for (text, expected) in cases {
        let message = parse_err(text);
        assert!(
            message.starts_with("p.json: "),
            "error should name the file: {message}"
        );
        assert!(
            message.contains(expected),
            "for {text}\nexpected: {expected}\n     got: {message}"
        );
    }
}

#[test]
fn load_profile_reports_missing_file() {
    let err = load_profile(Path::new("/nonexistent/skiff/profile.json"), &[]).unwrap_err();
    let message = err.to_string();
    assert!(
        message.starts_with("/nonexistent/skiff/profile.json: cannot read seccomp profile"),
        "{message}"
    );
}

#[test]
fn load_profile_refuses_endless_input() {
    let err = load_profile(Path::new("/dev/zero"), &[]).unwrap_err();
    assert!(matches!(err, SeccompError::TooLarge { .. }), "{err}");
}

// -- checks against libseccomp and the kernel --------------------------

/// libseccomp's name for an architecture, as scmp_sys_resolver takes it.
fn resolver_arch(arch: Arch) -> &'static str {
    match arch {
        Arch::ScmpArchX86_64 => "x86_64",
        Arch::ScmpArchX86 => "x86",
        Arch::ScmpArchX32 => "x32",
        Arch::ScmpArchAarch64 => "aarch64",
        Arch::ScmpArchArm => "arm",
        other => panic!("no resolver name for {other:?}"),
    }
}

fn resolve(arch: &str, name: &str) -> i64 {
    let out = Command::new("scmp_sys_resolver")
        .args(["-a", arch, name])
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run scmp_sys_resolver ({e}); install it with `apt-get install seccomp`")
        });
    assert!(
        out.status.success(),
        "scmp_sys_resolver -a {arch} {name} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    text.trim()
        .parse()
        .unwrap_or_else(|_| panic!("scmp_sys_resolver printed {text:?} for {name}"))
}

/// Unknown names make the compiler drop the rule with only a warning, so
/// a typo would silently deny a syscall. Every name must be known to
/// libseccomp and be a real syscall on at least one filtered ABI.
#[test]
fn every_default_name_resolves_with_libseccomp() {
    let arches: Vec<&str> = default_profile(&[])
        .architectures()
        .as_deref()
        .unwrap_or(&[])
        .iter()
        .map(|a| resolver_arch(*a))
        .collect();
    assert!(!arches.is_empty(), "no architectures on this host");
    let mut unknown = Vec::new();
    for name in all_default_names() {
        let numbers: Vec<i64> = arches.iter().map(|a| resolve(a, &name)).collect();
        // -1 is libseccomp's "no such name". Other negatives mean "known,
        // not a syscall on this ABI", except -100..-299, which libseccomp
        // filters as socketcall/ipc sub-calls on 32-bit x86.
        let real = |n: i64| n >= 0 || (-299..=-100).contains(&n);
        if numbers.contains(&-1) || !numbers.iter().copied().any(real) {
            unknown.push(format!("{name} {numbers:?}"));
        }
    }
    assert!(
        unknown.is_empty(),
        "not syscalls on {arches:?} per libseccomp: {unknown:?}"
    );
}

/// Results of the probe syscalls, as (return value, errno).
type Probes = HashMap<String, (i64, i32)>;

/// A distinctive errno so denials by our filter cannot be confused with
/// the kernel's own EPERM.
const PROBE_ERRNO: u32 = 131; // ENOTRECOVERABLE

/// The probe syscalls, in the order the child makes them.
const PROBES: &[&str] = &[
    "clone_plain",
    "clone_newuser",
    "clone_newnet",
    "getpid",
    "clone3",
    "keyctl",
    "add_key",
    "request_key",
    "unshare",
    "mount",
    "reboot",
    "init_module",
    "personality_query",
    "personality_norandom",
    "socket_unix",
    "socket_alg",
    "socket_vsock",
    "socket_netlink",
];

/// Compiles `profile` here, then loads it in a forked child that runs raw
/// syscalls, so the test process itself stays unfiltered.
///
/// The test harness is multithreaded, so the child may only make system
/// calls: another thread may have held the allocator's lock at the fork.
/// Everything it needs (the compiled program, the results array) exists
/// before the fork, and the results go back as raw bytes.
fn probe_in_child(profile: &LinuxSeccomp) -> Probes {
    let mut profile = profile.clone();
    profile.set_default_errno_ret(Some(PROBE_ERRNO));
    let filter = crate::seccomp_filter::CompiledFilter::compile(&profile).unwrap();
    let mut results = [[0i64; 2]; PROBES.len()];

    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two descriptors pipe writes.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    let [read_fd, write_fd] = fds;
    // SAFETY: the child only makes system calls into memory that exists
    // already, writes it and _exits; it never returns into the harness.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        // SAFETY: as above: system calls only, then _exit.
        unsafe {
            libc::close(read_fd);
            let status = if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
                2
            } else if filter.load().is_err() {
                3
            } else {
                child_probes(&mut results);
                0
            };
            libc::write(
                write_fd,
                results.as_ptr().cast(),
                std::mem::size_of_val(&results),
            );
            libc::_exit(status);
        }
    }
    // SAFETY: closing the parent's copy of the write end.
    unsafe { libc::close(write_fd) };
    let mut bytes = Vec::new();
    {
        use std::os::fd::FromRawFd;
        // SAFETY: read_fd is ours and open; File takes ownership.
        let mut pipe = unsafe { std::fs::File::from_raw_fd(read_fd) };
        pipe.read_to_end(&mut bytes).unwrap();
    }
    let mut status = 0;
    // SAFETY: reaping the child we forked.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "probe child failed: status {status:#x} (2: no_new_privs, 3: loading the filter)"
    );
    assert_eq!(bytes.len(), std::mem::size_of_val(&results));
    PROBES
        .iter()
        .zip(bytes.chunks_exact(16))
        .map(|(name, pair)| {
            let ret = i64::from_ne_bytes(pair[..8].try_into().unwrap());
            let errno = i64::from_ne_bytes(pair[8..].try_into().unwrap()) as i32;
            (name.to_string(), (ret, errno))
        })
        .collect()
}

/// Runs in the forked child, under the filter: each probe of [`PROBES`]
/// in order, into `out` as (return value, errno). System calls only.
fn child_probes(out: &mut [[i64; 2]; PROBES.len()]) {
    let mut next = 0;
    let mut record = |ret: i64| {
        let errno = if ret < 0 {
            // SAFETY: reading this thread's errno.
            unsafe { *libc::__errno_location() as i64 }
        } else {
            0
        };
        out[next] = [ret, errno];
        next += 1;
    };
    // Forks with raw clone; a child that appears exits at once.
    let clone = |flags: libc::c_long| -> i64 {
        let pid = sys(libc::SYS_clone, [flags, 0, 0, 0, 0, 0]);
        if pid == 0 {
            // SAFETY: leaving the grandchild immediately.
            unsafe { libc::_exit(0) };
        }
        if pid > 0 {
            let mut status = 0;
            // SAFETY: reaping the grandchild.
            unsafe { libc::waitpid(pid as libc::pid_t, &mut status, 0) };
        }
        pid
    };
    let sigchld = libc::SIGCHLD as libc::c_long;
    record(clone(sigchld));
    record(clone(sigchld | libc::CLONE_NEWUSER as libc::c_long));
    record(clone(sigchld | libc::CLONE_NEWNET as libc::c_long));
    // The rest pass null or invalid arguments, so even where allowed they
    // fail in the kernel without lasting effects.
    record(sys(libc::SYS_getpid, [0; 6]));
    record(sys(libc::SYS_clone3, [0; 6]));
    record(sys(libc::SYS_keyctl, [0, -3, 0, 0, 0, 0]));
    record(sys(libc::SYS_add_key, [0, 0, 0, 0, -2, 0]));
    record(sys(libc::SYS_request_key, [0; 6]));
    let newuser = libc::CLONE_NEWUSER as libc::c_long;
    record(sys(libc::SYS_unshare, [newuser, 0, 0, 0, 0, 0]));
    record(sys(libc::SYS_mount, [0; 6]));
    // Bad magic numbers: never reboots, even when allowed.
    record(sys(libc::SYS_reboot, [0; 6]));
    record(sys(libc::SYS_init_module, [0; 6]));
    record(sys(libc::SYS_personality, [0xffff_ffff, 0, 0, 0, 0, 0]));
    record(sys(libc::SYS_personality, [0x0040000, 0, 0, 0, 0, 0]));
    for (family, kind) in [
        (libc::AF_UNIX, libc::SOCK_STREAM),
        (libc::AF_ALG, libc::SOCK_SEQPACKET),
        (libc::AF_VSOCK, libc::SOCK_STREAM),
        (libc::AF_NETLINK, libc::SOCK_RAW),
    ] {
        record(sys(
            libc::SYS_socket,
            [family as libc::c_long, kind as libc::c_long, 0, 0, 0, 0],
        ));
    }
}

/// A raw syscall with all six arguments as full-width longs, so seccomp
/// sees exactly these values.
fn sys(nr: libc::c_long, a: [libc::c_long; 6]) -> i64 {
    // SAFETY: callers pass arguments the kernel validates; none point at
    // memory this process relies on.
    unsafe { libc::syscall(nr, a[0], a[1], a[2], a[3], a[4], a[5]) }
}

fn denied(probes: &Probes, name: &str) -> bool {
    let (ret, errno) = probes[name];
    ret == -1 && errno == PROBE_ERRNO as i32
}

#[test]
fn filter_is_enforced_without_caps() {
    let probes = probe_in_child(&default_profile(&[]));
    for name in [
        "keyctl",
        "add_key",
        "request_key",
        "unshare",
        "mount",
        "reboot",
        "init_module",
        "clone_newuser",
        "clone_newnet",
        "personality_norandom",
        "socket_alg",
        "socket_vsock",
    ] {
        assert!(
            denied(&probes, name),
            "{name} not denied: {:?}",
            probes[name]
        );
    }
    for name in [
        "getpid",
        "clone_plain",
        "personality_query",
        "socket_unix",
        "socket_netlink",
    ] {
        assert!(probes[name].0 >= 0, "{name} failed: {:?}", probes[name]);
    }
    assert_eq!(probes["clone3"], (-1, libc::ENOSYS), "clone3");
}

#[test]
fn filter_is_enforced_with_caps() {
    let probes = probe_in_child(&default_profile(&[
        Capability::SysAdmin,
        Capability::SysBoot,
        Capability::SysModule,
    ]));
    // Reaching the kernel, whatever it then says.
    for name in [
        "unshare",
        "mount",
        "reboot",
        "init_module",
        "clone3",
        "clone_newnet",
    ] {
        assert!(
            !denied(&probes, name),
            "{name} still denied: {:?}",
            probes[name]
        );
    }
    assert_ne!(probes["clone3"].1, libc::ENOSYS, "clone3 still ENOSYS");
    for name in ["keyctl", "add_key", "request_key", "socket_alg"] {
        assert!(
            denied(&probes, name),
            "{name} not denied: {:?}",
            probes[name]
        );
    }
}

#[test]
fn loaded_docker_clone_rule_is_enforced() {
    let mut p = parse(DOCKER_PROFILE, &[], &Host::detect()).unwrap();
    // Keep the child working: the default's rules, with the file's clone.
    let mut merged = rules(&default_profile(&[])).to_vec();
    merged.retain(|r| !r.names().iter().any(|n| n == "clone" || n == "clone3"));
    merged.extend(rules(&p).iter().cloned());
    p.set_syscalls(Some(merged));
    let probes = probe_in_child(&p);
    assert!(probes["clone_plain"].0 >= 0, "{:?}", probes["clone_plain"]);
    assert!(
        denied(&probes, "clone_newuser"),
        "{:?}",
        probes["clone_newuser"]
    );
}
