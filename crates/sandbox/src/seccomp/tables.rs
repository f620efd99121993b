//! The syscall groups of the default policy: what each allows, and the
//! argument values some are checked against.

use super::host::KernelVersion;
use oci_spec::runtime::Capability;

/// `EPERM`: what a denied syscall returns, as in Docker.
pub(super) const DENY_ERRNO: u32 = libc::EPERM as u32;
/// `ENOSYS` for clone3 without CAP_SYS_ADMIN: its flags live in a struct that
/// seccomp cannot inspect, and ENOSYS makes glibc fall back to clone(2).
pub(super) const CLONE3_ERRNO: u32 = libc::ENOSYS as u32;

/// Reading and writing through file descriptors.
pub(super) const FD_IO: &[&str] = &[
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
pub(super) const PATHS: &[&str] = &[
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
pub(super) const EVENTS: &[&str] = &[
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
pub(super) const MEMORY: &[&str] = &[
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
pub(super) const PROCESSES: &[&str] = &[
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
pub(super) const SIGNALS: &[&str] = &[
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
pub(super) const CREDENTIALS: &[&str] = &[
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
pub(super) const TIME: &[&str] = &[
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
pub(super) const NETWORK: &[&str] = &[
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
pub(super) const IPC: &[&str] = &[
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
pub(super) const X86_ONLY: &[&str] = &["arch_prctl", "modify_ldt"];

/// Arm only: the arm-specific spellings and cache maintenance for JITs.
pub(super) const ARM_ONLY: &[&str] = &[
    "arm_fadvise64_64",
    "arm_sync_file_range",
    "sync_file_range2",
    "breakpoint",
    "cacheflush",
    "set_tls",
];

/// Inspecting other processes. Docker allows these on kernels from 4.8, which
/// stopped ptrace from being used to get around seccomp.
pub(super) const TRACING: &[&str] = &["ptrace", "process_vm_readv", "process_vm_writev"];
pub(super) const TRACING_MIN_KERNEL: KernelVersion = KernelVersion(4, 8, 0);

/// Everything CAP_SYS_ADMIN unlocks: mounts, namespaces, host names, and the
/// admin-only parts of bpf/perf/fanotify/quota.
pub(super) const SYS_ADMIN: &[&str] = &[
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
pub(super) const CAPABILITY_GATED: &[(Capability, &[&str])] = &[
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
pub(super) const PERSONALITY_VALUES: &[u64] = &[0x0, 0x8, 0x20000, 0x20008, 0xffff_ffff];

/// CLONE_NEWNS | NEWCGROUP | NEWUTS | NEWIPC | NEWUSER | NEWPID | NEWNET.
pub(super) const CLONE_NAMESPACE_FLAGS: u64 = 0x7E02_0000;

/// socket(2) families denied: AF_ALG (38, the kernel crypto API, a recurring
/// privilege-escalation surface) and AF_VSOCK (40, reaches the VM host).
pub(super) const AF_ALG: u64 = 38;
pub(super) const AF_VSOCK: u64 = 40;
