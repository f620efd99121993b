//! Seccomp policies for containers: a built-in default that matches Docker's
//! default profile in effect, and a loader for `--security-opt seccomp=FILE`
//! that reads either the OCI `linux.seccomp` object or Docker's profile format.
//!
//! Everything here produces an [`oci_spec::runtime::LinuxSeccomp`], written
//! into the container's `config.json`; [`crate::seccomp_filter`] compiles it.

use std::collections::BTreeSet;
use std::io::Read;
use std::path::{Path, PathBuf};

use oci_spec::runtime::{
    Arch, Capability, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArg, LinuxSeccompArgBuilder,
    LinuxSeccompFilterFlag, LinuxSeccompOperator, LinuxSyscall,
};
use serde_json::{Map, Value};
use thiserror::Error;

/// A seccomp policy: the spec's `linux.seccomp`.
pub type Policy = LinuxSeccomp;

/// Errors from reading a seccomp profile. Each names the file, the field at
/// fault and how to fix it.
#[derive(Debug, Error)]
pub enum SeccompError {
    #[error("{}: cannot read seccomp profile: {source}; check the path given to --security-opt seccomp=", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: seccomp profile is larger than {limit} bytes; a profile is a JSON file of a few tens of KiB", path.display())]
    TooLarge { path: PathBuf, limit: u64 },
    #[error("{}: seccomp profile is not valid JSON: {source}; a profile is a JSON object such as {{\"defaultAction\": \"SCMP_ACT_ERRNO\", \"syscalls\": [...]}}", path.display())]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("{}: {field} {problem}; {hint}", path.display())]
    Invalid {
        path: PathBuf,
        /// Where in the document, e.g. `syscalls[3].action`.
        field: String,
        problem: String,
        hint: String,
    },
}

// ---------------------------------------------------------------------------
// The default profile
// ---------------------------------------------------------------------------

/// `EPERM`: what a denied syscall returns, as in Docker.
const DENY_ERRNO: u32 = libc::EPERM as u32;
/// `ENOSYS` for clone3 without CAP_SYS_ADMIN: its flags live in a struct that
/// seccomp cannot inspect, and ENOSYS makes glibc fall back to clone(2).
const CLONE3_ERRNO: u32 = libc::ENOSYS as u32;

/// Reading and writing through file descriptors.
const FD_IO: &[&str] = &[
    "read",
    "write",
    "readv",
    "writev",
    "pread64",
    "pwrite64",
    "preadv",
    "preadv2",
    "pwritev",
    "pwritev2",
    "lseek",
    "_llseek",
    "sendfile",
    "sendfile64",
    "splice",
    "tee",
    "vmsplice",
    "copy_file_range",
    "readahead",
    "fadvise64",
    "fadvise64_64",
    "fallocate",
    "fsync",
    "fdatasync",
    "sync",
    "syncfs",
    "sync_file_range",
    "flock",
    "fcntl",
    "fcntl64",
    // Device access is governed by the device cgroup and capabilities.
    "ioctl",
    "close",
    "close_range",
    "dup",
    "dup2",
    "dup3",
    "pipe",
    "pipe2",
    "truncate",
    "truncate64",
    "ftruncate",
    "ftruncate64",
    "cachestat",
];

/// Path lookups and file metadata; the mount namespace bounds what they reach.
const PATHS: &[&str] = &[
    "open",
    "openat",
    "openat2",
    "creat",
    "access",
    "faccessat",
    "faccessat2",
    "stat",
    "stat64",
    "lstat",
    "lstat64",
    "fstat",
    "fstat64",
    "fstatat64",
    "newfstatat",
    "statx",
    "statfs",
    "statfs64",
    "fstatfs",
    "fstatfs64",
    "getcwd",
    "chdir",
    "fchdir",
    "mkdir",
    "mkdirat",
    "mknod",
    "mknodat",
    "rmdir",
    "rename",
    "renameat",
    "renameat2",
    "link",
    "linkat",
    "symlink",
    "symlinkat",
    "unlink",
    "unlinkat",
    "readlink",
    "readlinkat",
    "getdents",
    "getdents64",
    "chmod",
    "fchmod",
    "fchmodat",
    "fchmodat2",
    "chown",
    "chown32",
    "fchown",
    "fchown32",
    "fchownat",
    "lchown",
    "lchown32",
    "umask",
    "utime",
    "utimes",
    "utimensat",
    "utimensat_time64",
    "futimesat",
    // Harmless on its own: only open_by_handle_at (gated below) uses handles.
    "name_to_handle_at",
    "getxattr",
    "lgetxattr",
    "fgetxattr",
    "setxattr",
    "lsetxattr",
    "fsetxattr",
    "listxattr",
    "llistxattr",
    "flistxattr",
    "removexattr",
    "lremovexattr",
    "fremovexattr",
];

/// Waiting for events: poll/select/epoll, inotify and the *fd helpers.
const EVENTS: &[&str] = &[
    "poll",
    "ppoll",
    "ppoll_time64",
    "select",
    "_newselect",
    "pselect6",
    "pselect6_time64",
    "epoll_create",
    "epoll_create1",
    "epoll_ctl",
    "epoll_ctl_old",
    "epoll_wait",
    "epoll_wait_old",
    "epoll_pwait",
    "epoll_pwait2",
    "eventfd",
    "eventfd2",
    "signalfd",
    "signalfd4",
    "timerfd_create",
    "timerfd_gettime",
    "timerfd_gettime64",
    "timerfd_settime",
    "timerfd_settime64",
    "inotify_init",
    "inotify_init1",
    "inotify_add_watch",
    "inotify_rm_watch",
    // Marks need an fanotify fd, and fanotify_init needs CAP_SYS_ADMIN.
    "fanotify_mark",
    // Linux AIO. io_uring is left out, as in current Docker: it has been a
    // steady source of kernel bugs and bypasses seccomp for the ops it runs.
    "io_setup",
    "io_destroy",
    "io_submit",
    "io_cancel",
    "io_getevents",
    "io_pgetevents",
    "io_pgetevents_time64",
];

/// Managing the process's own memory.
const MEMORY: &[&str] = &[
    "brk",
    "mmap",
    "mmap2",
    "munmap",
    "mremap",
    "mprotect",
    "madvise",
    "mincore",
    "msync",
    "mlock",
    "mlock2",
    "mlockall",
    "munlock",
    "munlockall",
    "remap_file_pages",
    "membarrier",
    "memfd_create",
    "memfd_secret",
    "pkey_alloc",
    "pkey_free",
    "pkey_mprotect",
    "map_shadow_stack",
];

/// Process and thread life cycle, limits and self-inspection. Cross-process
/// access (ptrace and friends) is handled separately.
const PROCESSES: &[&str] = &[
    "execve",
    "execveat",
    "exit",
    "exit_group",
    "fork",
    "vfork",
    "wait4",
    "waitid",
    "waitpid",
    "kill",
    "tkill",
    "tgkill",
    "pidfd_open",
    "pidfd_send_signal",
    "process_mrelease",
    "getpid",
    "getppid",
    "gettid",
    "getpgid",
    "setpgid",
    "getpgrp",
    "getsid",
    "setsid",
    "set_tid_address",
    "set_robust_list",
    "get_robust_list",
    "rseq",
    "restart_syscall",
    "pause",
    "get_thread_area",
    "set_thread_area",
    "prctl",
    "getrlimit",
    "setrlimit",
    "ugetrlimit",
    "prlimit64",
    "getrusage",
    "getpriority",
    "setpriority",
    "ioprio_get",
    "ioprio_set",
    "capget",
    "capset",
    // Self-sandboxing only ever narrows what the process may do.
    "seccomp",
    "landlock_create_ruleset",
    "landlock_add_rule",
    "landlock_restrict_self",
    "times",
    "uname",
    "sysinfo",
    "getcpu",
    "getrandom",
    "sched_yield",
    "sched_getaffinity",
    "sched_setaffinity",
    "sched_getattr",
    "sched_setattr",
    "sched_getparam",
    "sched_setparam",
    "sched_getscheduler",
    "sched_setscheduler",
    "sched_get_priority_max",
    "sched_get_priority_min",
    "sched_rr_get_interval",
    "sched_rr_get_interval_time64",
    "futex",
    "futex_time64",
    "futex_waitv",
    "futex_wait",
    "futex_wake",
    "futex_requeue",
];

/// Signal handling.
const SIGNALS: &[&str] = &[
    "rt_sigaction",
    "rt_sigpending",
    "rt_sigprocmask",
    "rt_sigqueueinfo",
    "rt_sigreturn",
    "rt_sigsuspend",
    "rt_sigtimedwait",
    "rt_sigtimedwait_time64",
    "rt_tgsigqueueinfo",
    "sigaltstack",
    "sigprocmask",
    "sigreturn",
];

/// User and group ids; the user namespace and capabilities limit them.
const CREDENTIALS: &[&str] = &[
    "getuid",
    "getuid32",
    "geteuid",
    "geteuid32",
    "getgid",
    "getgid32",
    "getegid",
    "getegid32",
    "getresuid",
    "getresuid32",
    "getresgid",
    "getresgid32",
    "getgroups",
    "getgroups32",
    "setuid",
    "setuid32",
    "setgid",
    "setgid32",
    "setreuid",
    "setreuid32",
    "setregid",
    "setregid32",
    "setresuid",
    "setresuid32",
    "setresgid",
    "setresgid32",
    "setgroups",
    "setgroups32",
    "setfsuid",
    "setfsuid32",
    "setfsgid",
    "setfsgid32",
];

/// Clocks and timers. Setting the clock is gated by CAP_SYS_TIME below;
/// adjtimex/clock_adjtime stay open because reading through them is common
/// and the kernel itself requires CAP_SYS_TIME to change anything.
const TIME: &[&str] = &[
    "time",
    "gettimeofday",
    "clock_gettime",
    "clock_gettime64",
    "clock_getres",
    "clock_getres_time64",
    "clock_nanosleep",
    "clock_nanosleep_time64",
    "nanosleep",
    "alarm",
    "getitimer",
    "setitimer",
    "timer_create",
    "timer_delete",
    "timer_getoverrun",
    "timer_gettime",
    "timer_gettime64",
    "timer_settime",
    "timer_settime64",
    "adjtimex",
    "clock_adjtime",
    "clock_adjtime64",
];

/// Socket operations other than socket(2) itself, which is filtered by family.
/// socketcall (32-bit x86) cannot be filtered by argument; Docker keeps it
/// allowed so 32-bit programs work.
const NETWORK: &[&str] = &[
    "socketpair",
    "socketcall",
    "bind",
    "connect",
    "listen",
    "accept",
    "accept4",
    "getsockname",
    "getpeername",
    "getsockopt",
    "setsockopt",
    "shutdown",
    "recv",
    "recvfrom",
    "recvmsg",
    "recvmmsg",
    "recvmmsg_time64",
    "send",
    "sendto",
    "sendmsg",
    "sendmmsg",
];

/// System V IPC and POSIX message queues; the IPC namespace isolates both.
const IPC: &[&str] = &[
    "ipc",
    "msgget",
    "msgctl",
    "msgrcv",
    "msgsnd",
    "semget",
    "semctl",
    "semop",
    "semtimedop",
    "semtimedop_time64",
    "shmget",
    "shmctl",
    "shmat",
    "shmdt",
    "mq_open",
    "mq_unlink",
    "mq_getsetattr",
    "mq_notify",
    "mq_timedreceive",
    "mq_timedreceive_time64",
    "mq_timedsend",
    "mq_timedsend_time64",
];

/// x86 only: TLS set-up and 16-bit segments (Wine, old runtimes).
const X86_ONLY: &[&str] = &["arch_prctl", "modify_ldt"];

/// Arm only: the arm-specific spellings and cache maintenance for JITs.
const ARM_ONLY: &[&str] = &[
    "arm_fadvise64_64",
    "arm_sync_file_range",
    "sync_file_range2",
    "breakpoint",
    "cacheflush",
    "set_tls",
];

/// Inspecting other processes. Docker allows these on kernels from 4.8, which
/// stopped ptrace from being used to get around seccomp.
const TRACING: &[&str] = &["ptrace", "process_vm_readv", "process_vm_writev"];
const TRACING_MIN_KERNEL: KernelVersion = KernelVersion(4, 8, 0);

/// Everything CAP_SYS_ADMIN unlocks: mounts, namespaces, host names, and the
/// admin-only parts of bpf/perf/fanotify/quota.
const SYS_ADMIN: &[&str] = &[
    "mount",
    "umount",
    "umount2",
    "mount_setattr",
    "move_mount",
    "open_tree",
    "fsopen",
    "fsconfig",
    "fsmount",
    "fspick",
    "unshare",
    "setns",
    "clone",
    "clone3",
    "sethostname",
    "setdomainname",
    "bpf",
    "perf_event_open",
    "fanotify_init",
    "lookup_dcookie",
    "quotactl",
    "quotactl_fd",
    "syslog",
];

/// Syscalls that only make sense with a capability, which the kernel checks
/// too; the filter keeps them shut when the capability was not granted.
const CAPABILITY_GATED: &[(Capability, &[&str])] = &[
    (Capability::SysAdmin, SYS_ADMIN),
    (Capability::SysBoot, &["reboot"]),
    (Capability::SysChroot, &["chroot"]),
    (
        Capability::SysModule,
        &["init_module", "finit_module", "delete_module"],
    ),
    (Capability::SysPacct, &["acct"]),
    (
        Capability::SysPtrace,
        &[
            "kcmp",
            "pidfd_getfd",
            "process_madvise",
            "process_vm_readv",
            "process_vm_writev",
            "ptrace",
        ],
    ),
    (Capability::SysRawio, &["iopl", "ioperm"]),
    (
        Capability::SysTime,
        &["settimeofday", "stime", "clock_settime", "clock_settime64"],
    ),
    (Capability::SysTtyConfig, &["vhangup"]),
    (
        Capability::SysNice,
        &[
            "get_mempolicy",
            "mbind",
            "set_mempolicy",
            "set_mempolicy_home_node",
        ],
    ),
    (Capability::Syslog, &["syslog"]),
    (Capability::Bpf, &["bpf"]),
    (Capability::Perfmon, &["perf_event_open"]),
    // The "shocker" escape: file handles bypass the container's mount view.
    (Capability::DacReadSearch, &["open_by_handle_at"]),
];

/// personality(2) values that are safe: PER_LINUX, PER_LINUX32, UNAME26
/// variants, and 0xffffffff which only queries. Anything else (such as
/// ADDR_NO_RANDOMIZE) is denied.
const PERSONALITY_VALUES: &[u64] = &[0x0, 0x8, 0x20000, 0x20008, 0xffff_ffff];

/// CLONE_NEWNS | NEWCGROUP | NEWUTS | NEWIPC | NEWUSER | NEWPID | NEWNET.
const CLONE_NAMESPACE_FLAGS: u64 = 0x7E02_0000;

/// socket(2) families denied: AF_ALG (38, the kernel crypto API, a recurring
/// privilege-escalation surface) and AF_VSOCK (40, reaches the VM host).
const AF_ALG: u64 = 38;
const AF_VSOCK: u64 = 40;

/// The default seccomp policy for a container granted `capabilities`
/// (normally its bounding set): equivalent in effect to Docker's default
/// profile. Unlisted syscalls fail with EPERM.
pub fn default_profile(capabilities: &[Capability]) -> LinuxSeccomp {
    build_default(capabilities, &Host::detect())
}

fn build_default(capabilities: &[Capability], host: &Host) -> LinuxSeccomp {
    let granted = |cap: &Capability| capabilities.contains(cap);

    let mut allowed: BTreeSet<&'static str> = [
        FD_IO,
        PATHS,
        EVENTS,
        MEMORY,
        PROCESSES,
        SIGNALS,
        CREDENTIALS,
        TIME,
        NETWORK,
        IPC,
    ]
    .into_iter()
    .flatten()
    .copied()
    .collect();
    allowed.extend(host.arch_syscalls());
    // Moby: allowed without CAP_SYS_PTRACE once the kernel is 4.8 or later.
    if host.kernel.is_some_and(|k| k >= TRACING_MIN_KERNEL) {
        allowed.extend(TRACING);
    }
    for (cap, names) in CAPABILITY_GATED {
        if granted(cap) {
            allowed.extend(names.iter().copied());
        }
    }
    // Stricter than Docker, whose device cgroup lets any device node be
    // created (only opened is checked): no block device nodes, unless
    // CAP_SYS_ADMIN is granted. Other node types stay allowed below.
    let block_nodes_allowed = granted(&Capability::SysAdmin);
    if !block_nodes_allowed {
        allowed.remove("mknod");
        allowed.remove("mknodat");
    }

    let mut rules = vec![syscall_rule(
        allowed.iter().copied(),
        LinuxSeccompAction::ScmpActAllow,
        None,
        None,
    )];

    // Rules with argument checks, for syscalls not already allowed outright.
    let mut conditional = |name: &'static str, args: Vec<LinuxSeccompArg>| {
        if !allowed.contains(name) {
            rules.push(syscall_rule(
                [name],
                LinuxSeccompAction::ScmpActAllow,
                None,
                Some(args),
            ));
        }
    };
    // Only address families other than AF_ALG and AF_VSOCK. Conditions in one
    // rule are ANDed, so "not 38 and not 40" takes three rules.
    conditional(
        "socket",
        vec![arg(0, LinuxSeccompOperator::ScmpCmpLt, AF_ALG)],
    );
    conditional(
        "socket",
        vec![arg(0, LinuxSeccompOperator::ScmpCmpEq, AF_ALG + 1)],
    );
    conditional(
        "socket",
        vec![arg(0, LinuxSeccompOperator::ScmpCmpGt, AF_VSOCK)],
    );
    for &value in PERSONALITY_VALUES {
        conditional(
            "personality",
            vec![arg(0, LinuxSeccompOperator::ScmpCmpEq, value)],
        );
    }
    // Threads and processes yes, new namespaces no. s390 passes the flags
    // as the second argument.
    let flags_index = if host.go_arch == "s390x" { 1 } else { 0 };
    conditional(
        "clone",
        vec![masked_eq(flags_index, CLONE_NAMESPACE_FLAGS, 0)],
    );

    if !block_nodes_allowed {
        for (name, mode_index) in [("mknod", 1), ("mknodat", 2)] {
            for file_type in NODE_TYPES_WITHOUT_BLOCK {
                conditional(name, vec![masked_eq(mode_index, S_IFMT, file_type)]);
            }
        }
    }

    if !allowed.contains("clone3") {
        rules.push(syscall_rule(
            ["clone3"],
            LinuxSeccompAction::ScmpActErrno,
            Some(CLONE3_ERRNO),
            None,
        ));
    }

    let mut profile = LinuxSeccomp::default();
    profile.set_default_action(LinuxSeccompAction::ScmpActErrno);
    profile.set_default_errno_ret(Some(DENY_ERRNO));
    profile.set_architectures(host.architectures());
    profile.set_syscalls(Some(rules));
    profile
}

/// The file type bits of a mode, and each type but S_IFBLK (0 means a
/// regular file, as mknod(2) reads it).
const S_IFMT: u64 = 0o170000;
const NODE_TYPES_WITHOUT_BLOCK: [u64; 5] = [0, 0o100000, 0o020000, 0o010000, 0o140000];

fn syscall_rule<'a>(
    names: impl IntoIterator<Item = &'a str>,
    action: LinuxSeccompAction,
    errno: Option<u32>,
    args: Option<Vec<LinuxSeccompArg>>,
) -> LinuxSyscall {
    let mut rule = LinuxSyscall::default();
    rule.set_names(names.into_iter().map(str::to_owned).collect());
    rule.set_action(action);
    rule.set_errno_ret(errno);
    rule.set_args(args);
    rule
}

fn arg(index: usize, op: LinuxSeccompOperator, value: u64) -> LinuxSeccompArg {
    arg_with(index, op, value, None)
}

fn arg_with(
    index: usize,
    op: LinuxSeccompOperator,
    value: u64,
    value_two: Option<u64>,
) -> LinuxSeccompArg {
    let builder = LinuxSeccompArgBuilder::default()
        .index(index)
        .op(op)
        .value(value);
    let builder = match value_two {
        Some(two) => builder.value_two(two),
        None => builder,
    };
    // Every field is set or has a default, so building cannot fail.
    builder.build().expect("LinuxSeccompArg fields are all set")
}

/// A condition `(argument & mask) == expected`, read as runc and crun read
/// it: `value` is the mask, `valueTwo` the expected value.
fn masked_eq(index: usize, mask: u64, expected: u64) -> LinuxSeccompArg {
    arg_with(
        index,
        LinuxSeccompOperator::ScmpCmpMaskedEq,
        mask,
        Some(expected),
    )
}

// ---------------------------------------------------------------------------
// The host
// ---------------------------------------------------------------------------

/// A kernel release as (major, minor, patch).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct KernelVersion(u32, u32, u32);

impl KernelVersion {
    /// Parses the leading `X.Y[.Z]` of a release such as `6.1.0-18-amd64`.
    fn parse(release: &str) -> Option<Self> {
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
struct Host {
    /// Go's name for the architecture, which Docker profiles use in `arches`.
    go_arch: &'static str,
    /// The kernel's name for it, accepted as well.
    kernel_arch: &'static str,
    /// libseccomp's name, which `archMap` entries are keyed by.
    scmp_arch: &'static str,
    kernel: Option<KernelVersion>,
}

impl Host {
    fn detect() -> Self {
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
    fn is_arch(&self, name: &str) -> bool {
        name == self.go_arch || name == self.kernel_arch
    }

    /// The native ABI plus the compat ABIs its kernel can also run, so that
    /// 32-bit programs are filtered rather than refused outright.
    fn architectures(&self) -> Option<Vec<Arch>> {
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

    fn arch_syscalls(&self) -> &'static [&'static str] {
        match self.go_arch {
            "amd64" | "386" => X86_ONLY,
            "arm64" | "arm" => ARM_ONLY,
            _ => &[],
        }
    }
}

fn running_kernel() -> Option<KernelVersion> {
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

// ---------------------------------------------------------------------------
// Loading a profile file
// ---------------------------------------------------------------------------

/// Profiles are small; this only stops `seccomp=/dev/zero` from eating memory.
const MAX_PROFILE_BYTES: u64 = 8 << 20;

const ACTION_HINT: &str = "use SCMP_ACT_ALLOW, SCMP_ACT_ERRNO, SCMP_ACT_KILL, \
     SCMP_ACT_KILL_PROCESS, SCMP_ACT_KILL_THREAD, SCMP_ACT_TRAP, SCMP_ACT_TRACE, \
     SCMP_ACT_LOG or SCMP_ACT_NOTIFY";
const ARCH_HINT: &str = "use a libseccomp architecture such as SCMP_ARCH_X86_64, SCMP_ARCH_X86, \
     SCMP_ARCH_X32, SCMP_ARCH_AARCH64 or SCMP_ARCH_ARM";
const OP_HINT: &str = "use SCMP_CMP_EQ, SCMP_CMP_NE, SCMP_CMP_LT, SCMP_CMP_LE, SCMP_CMP_GT, \
     SCMP_CMP_GE or SCMP_CMP_MASKED_EQ";
const FLAG_HINT: &str = "use SECCOMP_FILTER_FLAG_LOG, SECCOMP_FILTER_FLAG_SPEC_ALLOW, \
     SECCOMP_FILTER_FLAG_TSYNC or SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV";
const ERRNO_HINT: &str = "give an errno number from 0 to 4095, e.g. 1 for EPERM or 38 for ENOSYS";

/// Reads a profile for `--security-opt seccomp=FILE`.
///
/// Accepts the OCI runtime-spec `linux.seccomp` object (or a whole OCI
/// `config.json` holding one) and Docker's profile format. Docker's
/// `includes`/`excludes` are resolved here against `capabilities`, this
/// machine's architecture and its kernel, as dockerd would.
pub fn load_profile(
    path: &Path,
    capabilities: &[Capability],
) -> Result<LinuxSeccomp, SeccompError> {
    let file = std::fs::File::open(path).map_err(|source| SeccompError::Read {
        path: path.to_owned(),
        source,
    })?;
    let mut bytes = Vec::new();
    file.take(MAX_PROFILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|source| SeccompError::Read {
            path: path.to_owned(),
            source,
        })?;
    if bytes.len() as u64 > MAX_PROFILE_BYTES {
        return Err(SeccompError::TooLarge {
            path: path.to_owned(),
            limit: MAX_PROFILE_BYTES,
        });
    }
    parse_profile(path, &bytes, capabilities, &Host::detect())
}

fn parse_profile(
    path: &Path,
    bytes: &[u8],
    capabilities: &[Capability],
    host: &Host,
) -> Result<LinuxSeccomp, SeccompError> {
    let document: Value = serde_json::from_slice(bytes).map_err(|source| SeccompError::Json {
        path: path.to_owned(),
        source,
    })?;
    let granted: BTreeSet<String> = capabilities.iter().map(capability_name).collect();
    let parser = Parser {
        path,
        host,
        granted: &granted,
    };
    parser.profile(&document)
}

/// `CAP_SYS_ADMIN` style, as profiles spell capabilities.
fn capability_name(cap: &Capability) -> String {
    // The serde name is the exact OCI spelling.
    match serde_json::to_value(cap) {
        Ok(Value::String(name)) => name,
        _ => format!("CAP_{cap}"),
    }
}

/// Normalises a capability as written in a profile: case-insensitive, with or
/// without the `CAP_` prefix.
fn normalise_capability(name: &str) -> String {
    let upper = name.trim().to_ascii_uppercase();
    if upper.starts_with("CAP_") {
        upper
    } else {
        format!("CAP_{upper}")
    }
}

struct Parser<'a> {
    path: &'a Path,
    host: &'a Host,
    granted: &'a BTreeSet<String>,
}

/// Docker's `includes`/`excludes`.
#[derive(Default)]
struct Filter {
    caps: Vec<String>,
    arches: Vec<String>,
    min_kernel: Option<KernelVersion>,
}

impl Parser<'_> {
    fn invalid(
        &self,
        field: impl Into<String>,
        problem: impl Into<String>,
        hint: impl Into<String>,
    ) -> SeccompError {
        SeccompError::Invalid {
            path: self.path.to_owned(),
            field: field.into(),
            problem: problem.into(),
            hint: hint.into(),
        }
    }

    fn profile(&self, document: &Value) -> Result<LinuxSeccomp, SeccompError> {
        let Value::Object(top) = document else {
            return Err(self.invalid(
                "the document",
                format!("is {}, not a JSON object", describe(document)),
                "a profile looks like {\"defaultAction\": \"SCMP_ACT_ERRNO\", \"syscalls\": [...]}",
            ));
        };
        // A whole OCI config.json: use its linux.seccomp.
        if !top.contains_key("defaultAction") {
            if let Some(linux) = top.get("linux") {
                return match linux.get("seccomp") {
                    Some(seccomp @ Value::Object(_)) => self.profile(seccomp),
                    _ => Err(self.invalid(
                        "linux.seccomp",
                        "is missing",
                        "this looks like an OCI config.json without a seccomp section; \
                         pass a seccomp profile instead",
                    )),
                };
            }
        }
        self.warn_unknown(
            "the profile",
            top,
            &[
                "defaultAction",
                "defaultErrnoRet",
                "architectures",
                "archMap",
                "flags",
                "listenerPath",
                "listenerMetadata",
                "syscalls",
            ],
        );

        let default_action = match top.get("defaultAction") {
            None | Some(Value::Null) => {
                return Err(self.invalid(
                    "defaultAction",
                    "is missing",
                    "add e.g. \"defaultAction\": \"SCMP_ACT_ERRNO\" to deny unlisted syscalls",
                ))
            }
            Some(v) => self.action("defaultAction", v)?,
        };
        if default_action == LinuxSeccompAction::ScmpActNotify {
            return Err(self.invalid(
                "defaultAction",
                "is SCMP_ACT_NOTIFY",
                "the container could not even send its notify fd; notify only specific syscalls",
            ));
        }
        let default_errno = self.optional_errno("defaultErrnoRet", top.get("defaultErrnoRet"))?;

        let mut profile = LinuxSeccomp::default();
        profile.set_default_action(default_action);
        profile.set_default_errno_ret(default_errno);
        profile.set_architectures(self.architectures(top)?);
        profile.set_flags(self.flags(top.get("flags"))?);
        profile.set_listener_path(
            self.optional_string("listenerPath", top.get("listenerPath"))?
                .map(PathBuf::from),
        );
        profile.set_listener_metadata(
            self.optional_string("listenerMetadata", top.get("listenerMetadata"))?,
        );

        let mut rules = Vec::new();
        let mut notifies = false;
        for (i, entry) in self
            .optional_array("syscalls", top.get("syscalls"))?
            .iter()
            .enumerate()
        {
            if let Some(rule) = self.syscall(&format!("syscalls[{i}]"), entry)? {
                notifies |= rule.action() == LinuxSeccompAction::ScmpActNotify;
                rules.push(rule);
            }
        }
        if notifies && profile.listener_path().is_none() {
            return Err(self.invalid(
                "listenerPath",
                "is missing but a rule uses SCMP_ACT_NOTIFY",
                "set listenerPath to the seccomp agent's socket, or use another action",
            ));
        }
        profile.set_syscalls(Some(rules));
        Ok(profile)
    }

    fn architectures(&self, top: &Map<String, Value>) -> Result<Option<Vec<Arch>>, SeccompError> {
        let listed = self.optional_array("architectures", top.get("architectures"))?;
        let map = self.optional_array("archMap", top.get("archMap"))?;
        if !listed.is_empty() && !map.is_empty() {
            return Err(self.invalid(
                "architectures",
                "is given together with archMap",
                "keep only one of the two",
            ));
        }
        let mut arches = Vec::new();
        for (i, name) in listed.iter().enumerate() {
            arches.push(self.arch(&format!("architectures[{i}]"), name)?);
        }
        // Docker's archMap: the entry for this machine and its compat ABIs.
        for (i, entry) in map.iter().enumerate() {
            let field = format!("archMap[{i}]");
            let Value::Object(entry) = entry else {
                return Err(self.invalid(
                    &field,
                    format!("is {}, not an object", describe(entry)),
                    "write {\"architecture\": \"SCMP_ARCH_X86_64\", \"subArchitectures\": [...]}",
                ));
            };
            let main_field = format!("{field}.architecture");
            let Some(main) = self.optional_string(&main_field, entry.get("architecture"))? else {
                return Err(self.invalid(
                    main_field,
                    "is missing",
                    "name the architecture this entry is for, e.g. \"SCMP_ARCH_X86_64\"",
                ));
            };
            if main != self.host.scmp_arch {
                continue;
            }
            arches.push(self.arch(&main_field, &Value::String(main))?);
            let sub_field = format!("{field}.subArchitectures");
            for (j, sub) in self
                .optional_array(&sub_field, entry.get("subArchitectures"))?
                .iter()
                .enumerate()
            {
                arches.push(self.arch(&format!("{sub_field}[{j}]"), sub)?);
            }
        }
        Ok((!arches.is_empty()).then_some(arches))
    }

    fn flags(
        &self,
        value: Option<&Value>,
    ) -> Result<Option<Vec<LinuxSeccompFilterFlag>>, SeccompError> {
        let mut flags = Vec::new();
        for (i, flag) in self.optional_array("flags", value)?.iter().enumerate() {
            let field = format!("flags[{i}]");
            flags.push(self.enum_value(&field, flag, "a seccomp filter flag", FLAG_HINT)?);
        }
        Ok((!flags.is_empty()).then_some(flags))
    }

    /// One `syscalls` entry; `None` when includes/excludes leave it out here.
    fn syscall(&self, field: &str, entry: &Value) -> Result<Option<LinuxSyscall>, SeccompError> {
        let Value::Object(entry) = entry else {
            return Err(self.invalid(
                field,
                format!("is {}, not an object", describe(entry)),
                "write {\"names\": [\"...\"], \"action\": \"SCMP_ACT_ALLOW\"}",
            ));
        };
        self.warn_unknown(
            field,
            entry,
            &[
                "name", "names", "action", "errnoRet", "args", "includes", "excludes", "comment",
            ],
        );

        let names = self.names(field, entry)?;
        let action_field = format!("{field}.action");
        let action = match entry.get("action") {
            None | Some(Value::Null) => {
                return Err(self.invalid(
                    action_field,
                    "is missing",
                    format!("say what happens to these syscalls; {ACTION_HINT}"),
                ))
            }
            Some(v) => self.action(&action_field, v)?,
        };
        if action == LinuxSeccompAction::ScmpActNotify && names.iter().any(|n| n == "write") {
            return Err(self.invalid(
                action_field,
                "is SCMP_ACT_NOTIFY for write",
                "the container needs write to hand over its notify fd; use another action for write",
            ));
        }
        let errno = self.optional_errno(&format!("{field}.errnoRet"), entry.get("errnoRet"))?;
        let args = self.args(field, entry.get("args"))?;
        let includes = self.filter(&format!("{field}.includes"), entry.get("includes"))?;
        let excludes = self.filter(&format!("{field}.excludes"), entry.get("excludes"))?;

        if !self.applies(&includes, &excludes) {
            return Ok(None);
        }
        Ok(Some(syscall_rule(
            names.iter().map(String::as_str),
            action,
            errno,
            args,
        )))
    }

    fn names(&self, field: &str, entry: &Map<String, Value>) -> Result<Vec<String>, SeccompError> {
        let single = entry.get("name").filter(|v| !v.is_null());
        let many = entry.get("names").filter(|v| !v.is_null());
        let names = match (single, many) {
            (Some(_), Some(_)) => {
                return Err(self.invalid(
                    format!("{field}.name"),
                    "is given together with names",
                    "keep only \"names\": [...]",
                ))
            }
            (None, None) => {
                return Err(self.invalid(
                    format!("{field}.names"),
                    "is missing",
                    "list the syscalls this rule is for, e.g. \"names\": [\"read\", \"write\"]",
                ))
            }
            (Some(one), None) => vec![(format!("{field}.name"), one)],
            (None, Some(list)) => {
                let list_field = format!("{field}.names");
                let Value::Array(list) = list else {
                    return Err(self.invalid(
                        list_field,
                        format!("is {}, not an array", describe(list)),
                        "write \"names\": [\"read\", \"write\"]",
                    ));
                };
                if list.is_empty() {
                    return Err(self.invalid(
                        list_field,
                        "is empty",
                        "list at least one syscall, or remove the rule",
                    ));
                }
                list.iter()
                    .enumerate()
                    .map(|(i, v)| (format!("{list_field}[{i}]"), v))
                    .collect()
            }
        };
        names
            .into_iter()
            .map(|(field, value)| {
                let name = self.string(&field, value, "a syscall name")?;
                let looks_right = !name.is_empty()
                    && name
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
                if looks_right {
                    Ok(name.to_owned())
                } else {
                    Err(self.invalid(
                        field,
                        format!("{name:?} is not a syscall name"),
                        "syscall names are lower case, like \"openat\" or \"clock_nanosleep\"",
                    ))
                }
            })
            .collect()
    }

    fn args(
        &self,
        field: &str,
        value: Option<&Value>,
    ) -> Result<Option<Vec<LinuxSeccompArg>>, SeccompError> {
        let list_field = format!("{field}.args");
        let list = self.optional_array(&list_field, value)?;
        if list.is_empty() {
            return Ok(None);
        }
        let mut args = Vec::with_capacity(list.len());
        for (i, item) in list.iter().enumerate() {
            let field = format!("{list_field}[{i}]");
            let Value::Object(item) = item else {
                return Err(self.invalid(
                    &field,
                    format!("is {}, not an object", describe(item)),
                    "write {\"index\": 0, \"value\": 1, \"op\": \"SCMP_CMP_EQ\"}",
                ));
            };
            let index_field = format!("{field}.index");
            let index = self.required_u64(&index_field, item.get("index"))?;
            if index > 5 {
                return Err(self.invalid(
                    index_field,
                    format!("is {index}"),
                    "syscalls have at most 6 arguments, numbered 0 to 5",
                ));
            }
            let value = self.required_u64(&format!("{field}.value"), item.get("value"))?;
            let value_two = match item.get("valueTwo") {
                None | Some(Value::Null) => None,
                Some(v) => Some(self.u64(&format!("{field}.valueTwo"), v)?),
            };
            let op_field = format!("{field}.op");
            let op: LinuxSeccompOperator = match item.get("op") {
                None | Some(Value::Null) => {
                    return Err(self.invalid(op_field, "is missing", OP_HINT));
                }
                Some(v) => self.enum_value(&op_field, v, "a seccomp comparison", OP_HINT)?,
            };
            // `index` is at most 5 here, so the cast cannot truncate.
            let index = index as usize;
            args.push(if op == LinuxSeccompOperator::ScmpCmpMaskedEq {
                masked_eq(index, value, value_two.unwrap_or(0))
            } else {
                arg_with(index, op, value, value_two)
            });
        }
        Ok(Some(args))
    }

    fn filter(&self, field: &str, value: Option<&Value>) -> Result<Filter, SeccompError> {
        let obj = match value {
            None | Some(Value::Null) => return Ok(Filter::default()),
            Some(Value::Object(obj)) => obj,
            Some(other) => {
                return Err(self.invalid(
                    field,
                    format!("is {}, not an object", describe(other)),
                    "write {\"caps\": [...], \"arches\": [...], \"minKernel\": \"4.8\"}",
                ))
            }
        };
        let strings = |key: &str| -> Result<Vec<String>, SeccompError> {
            let list_field = format!("{field}.{key}");
            self.optional_array(&list_field, obj.get(key))?
                .iter()
                .enumerate()
                .map(|(i, v)| {
                    self.string(&format!("{list_field}[{i}]"), v, "a name")
                        .map(str::to_owned)
                })
                .collect()
        };
        let min_kernel_field = format!("{field}.minKernel");
        let min_kernel = match self.optional_string(&min_kernel_field, obj.get("minKernel"))? {
            None => None,
            Some(text) => Some(
                KernelVersion::parse(&text)
                    .filter(|_| text.trim().chars().all(|c| c.is_ascii_digit() || c == '.'))
                    .ok_or_else(|| {
                        self.invalid(
                            min_kernel_field,
                            format!("{text:?} is not a kernel version"),
                            "write it as \"MAJOR.MINOR\", e.g. \"4.8\"",
                        )
                    })?,
            ),
        };
        Ok(Filter {
            caps: strings("caps")?
                .iter()
                .map(|c| normalise_capability(c))
                .collect(),
            arches: strings("arches")?,
            min_kernel,
        })
    }

    /// Docker's rule: every include must hold and no exclude may.
    fn applies(&self, includes: &Filter, excludes: &Filter) -> bool {
        let kernel_at_least = |min: KernelVersion| self.host.kernel.is_some_and(|k| k >= min);
        let has_cap = |cap: &String| self.granted.contains(cap);

        if excludes.arches.iter().any(|a| self.host.is_arch(a))
            || excludes.caps.iter().any(has_cap)
            || excludes.min_kernel.is_some_and(kernel_at_least)
        {
            return false;
        }
        (includes.arches.is_empty() || includes.arches.iter().any(|a| self.host.is_arch(a)))
            && includes.caps.iter().all(has_cap)
            && includes.min_kernel.is_none_or(kernel_at_least)
    }

    fn action(&self, field: &str, value: &Value) -> Result<LinuxSeccompAction, SeccompError> {
        self.enum_value(field, value, "a seccomp action", ACTION_HINT)
    }

    fn arch(&self, field: &str, value: &Value) -> Result<Arch, SeccompError> {
        self.enum_value(field, value, "a seccomp architecture", ARCH_HINT)
    }

    /// Parses a string into one of oci-spec's enums by its JSON spelling.
    fn enum_value<T: serde::de::DeserializeOwned>(
        &self,
        field: &str,
        value: &Value,
        what: &str,
        hint: &str,
    ) -> Result<T, SeccompError> {
        let text = self.string(field, value, what)?;
        serde_json::from_value(Value::String(text.to_owned()))
            .map_err(|_| self.invalid(field, format!("{text:?} is not {what}"), hint))
    }

    fn string<'v>(
        &self,
        field: &str,
        value: &'v Value,
        what: &str,
    ) -> Result<&'v str, SeccompError> {
        value.as_str().ok_or_else(|| {
            self.invalid(
                field,
                format!("is {}, not a string", describe(value)),
                format!("write {what} in double quotes"),
            )
        })
    }

    fn optional_string(
        &self,
        field: &str,
        value: Option<&Value>,
    ) -> Result<Option<String>, SeccompError> {
        match value {
            None | Some(Value::Null) => Ok(None),
            Some(v) => self
                .string(field, v, "the value")
                .map(|s| Some(s.to_owned())),
        }
    }

    /// A list that may be absent or null (Docker writes `null` for empty).
    fn optional_array<'v>(
        &self,
        field: &str,
        value: Option<&'v Value>,
    ) -> Result<&'v [Value], SeccompError> {
        match value {
            None | Some(Value::Null) => Ok(&[]),
            Some(Value::Array(items)) => Ok(items),
            Some(other) => Err(self.invalid(
                field,
                format!("is {}, not an array", describe(other)),
                "write a JSON list: [...]",
            )),
        }
    }

    fn u64(&self, field: &str, value: &Value) -> Result<u64, SeccompError> {
        value.as_u64().ok_or_else(|| {
            self.invalid(
                field,
                format!(
                    "is {}, not a whole number from 0 to 2^64-1",
                    describe(value)
                ),
                "write the number without quotes, e.g. 0 or 2114060288",
            )
        })
    }

    fn required_u64(&self, field: &str, value: Option<&Value>) -> Result<u64, SeccompError> {
        match value {
            None | Some(Value::Null) => Err(self.invalid(
                field,
                "is missing",
                "every argument condition needs index, value and op",
            )),
            Some(v) => self.u64(field, v),
        }
    }

    fn optional_errno(
        &self,
        field: &str,
        value: Option<&Value>,
    ) -> Result<Option<u32>, SeccompError> {
        match value {
            None | Some(Value::Null) => Ok(None),
            Some(v) => match v.as_u64() {
                Some(n) if n <= 4095 => Ok(Some(n as u32)),
                _ => Err(self.invalid(
                    field,
                    format!("is {}, not an errno number", describe(v)),
                    ERRNO_HINT,
                )),
            },
        }
    }

    fn warn_unknown(&self, field: &str, obj: &Map<String, Value>, known: &[&str]) {
        for key in obj.keys().filter(|k| !known.contains(&k.as_str())) {
            tracing::warn!(
                path = %self.path.display(),
                "seccomp profile: ignoring unknown key {key:?} in {field}"
            );
        }
    }
}

/// A short description of a JSON value for error messages.
fn describe(value: &Value) -> String {
    match value {
        Value::Null => "null".into(),
        Value::Bool(b) => format!("the boolean {b}"),
        Value::Number(n) => format!("the number {n}"),
        Value::String(s) if s.chars().count() <= 40 => format!("the string {s:?}"),
        Value::String(_) => "a string".into(),
        Value::Array(_) => "an array".into(),
        Value::Object(_) => "an object".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
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
                panic!(
                    "cannot run scmp_sys_resolver ({e}); install it with `apt-get install seccomp`"
                )
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

    /// Loads `profile` with our compiler in a forked child and runs raw
    /// syscalls there, so the test process itself stays unfiltered.
    fn probe_in_child(profile: &LinuxSeccomp) -> Probes {
        let mut profile = profile.clone();
        profile.set_default_errno_ret(Some(PROBE_ERRNO));

        let mut fds = [0; 2];
        // SAFETY: `fds` has room for the two descriptors pipe writes.
        assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
        let [read_fd, write_fd] = fds;
        // SAFETY: the child only makes syscalls, formats into a buffer,
        // writes it and _exits; it never returns into the test harness.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork failed");
        if pid == 0 {
            // SAFETY: closing our copy of the read end.
            unsafe { libc::close(read_fd) };
            let report = match child_probes(&profile) {
                Ok(report) => report,
                Err(e) => format!("error {e}\n"),
            };
            // SAFETY: writing an owned buffer to our pipe, then leaving.
            unsafe {
                libc::write(write_fd, report.as_ptr().cast(), report.len());
                libc::_exit(0);
            }
        }
        // SAFETY: closing the parent's copy of the write end.
        unsafe { libc::close(write_fd) };
        let mut report = String::new();
        {
            use std::os::fd::FromRawFd;
            // SAFETY: read_fd is ours and open; File takes ownership.
            let mut pipe = unsafe { std::fs::File::from_raw_fd(read_fd) };
            pipe.read_to_string(&mut report).unwrap();
        }
        let mut status = 0;
        // SAFETY: reaping the child we forked.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        assert!(
            libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
            "probe child died: status {status:#x}, report {report:?}"
        );
        assert!(!report.starts_with("error"), "{report}");
        report
            .lines()
            .map(|line| {
                let mut parts = line.split(' ');
                let name = parts.next().unwrap().to_owned();
                let ret = parts.next().unwrap().parse().unwrap();
                let errno = parts.next().unwrap().parse().unwrap();
                (name, (ret, errno))
            })
            .collect()
    }

    /// Runs in the forked child: apply the filter, then try each syscall.
    fn child_probes(profile: &LinuxSeccomp) -> Result<String, String> {
        // SAFETY: plain prctl; needed to load a filter without CAP_SYS_ADMIN.
        if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
            return Err("PR_SET_NO_NEW_PRIVS failed".into());
        }
        crate::seccomp_filter::CompiledFilter::compile(profile)
            .map_err(|e| e.to_string())?
            .load()
            .map_err(|e| format!("loading the filter: {e}"))?;

        let mut report = String::new();
        let mut record = |name: &str, ret: i64| {
            let errno = if ret < 0 {
                std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
            } else {
                0
            };
            report.push_str(&format!("{name} {ret} {errno}\n"));
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
        record("clone_plain", clone(sigchld));
        record(
            "clone_newuser",
            clone(sigchld | libc::CLONE_NEWUSER as libc::c_long),
        );
        record(
            "clone_newnet",
            clone(sigchld | libc::CLONE_NEWNET as libc::c_long),
        );
        // The rest pass null or invalid arguments, so even where allowed they
        // fail in the kernel without lasting effects.
        record("getpid", sys(libc::SYS_getpid, [0; 6]));
        record("clone3", sys(libc::SYS_clone3, [0; 6]));
        record("keyctl", sys(libc::SYS_keyctl, [0, -3, 0, 0, 0, 0]));
        record("add_key", sys(libc::SYS_add_key, [0, 0, 0, 0, -2, 0]));
        record("request_key", sys(libc::SYS_request_key, [0; 6]));
        let newuser = libc::CLONE_NEWUSER as libc::c_long;
        record("unshare", sys(libc::SYS_unshare, [newuser, 0, 0, 0, 0, 0]));
        record("mount", sys(libc::SYS_mount, [0; 6]));
        // Bad magic numbers: never reboots, even when allowed.
        record("reboot", sys(libc::SYS_reboot, [0; 6]));
        record("init_module", sys(libc::SYS_init_module, [0; 6]));
        let query = 0xffff_ffff;
        record(
            "personality_query",
            sys(libc::SYS_personality, [query, 0, 0, 0, 0, 0]),
        );
        let no_randomize = 0x0040000;
        record(
            "personality_norandom",
            sys(libc::SYS_personality, [no_randomize, 0, 0, 0, 0, 0]),
        );
        for (name, family, kind) in [
            ("socket_unix", libc::AF_UNIX, libc::SOCK_STREAM),
            ("socket_alg", libc::AF_ALG, libc::SOCK_SEQPACKET),
            ("socket_vsock", libc::AF_VSOCK, libc::SOCK_STREAM),
            ("socket_netlink", libc::AF_NETLINK, libc::SOCK_RAW),
        ] {
            let args = [family as libc::c_long, kind as libc::c_long, 0, 0, 0, 0];
            record(name, sys(libc::SYS_socket, args));
        }
        Ok(report)
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
}
