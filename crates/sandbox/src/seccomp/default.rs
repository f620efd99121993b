//! The default policy: Docker's default profile in effect, built from
//! [`super::tables`] for the capabilities a container has and the host.

use super::host::Host;
use super::tables::{
    AF_ALG, AF_VSOCK, CAPABILITY_GATED, CLONE3_ERRNO, CLONE_NAMESPACE_FLAGS, CREDENTIALS,
    DENY_ERRNO, EVENTS, FD_IO, IPC, MEMORY, NETWORK, PATHS, PERSONALITY_VALUES, PROCESSES, SIGNALS,
    TIME, TRACING, TRACING_MIN_KERNEL,
};
use oci_spec::runtime::{
    Capability, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArg, LinuxSeccompArgBuilder,
    LinuxSeccompOperator, LinuxSyscall,
};
use std::collections::BTreeSet;

/// The default seccomp policy for a container granted `capabilities`
/// (normally its bounding set): equivalent in effect to Docker's default
/// profile. Unlisted syscalls fail with EPERM.
pub fn default_profile(capabilities: &[Capability]) -> LinuxSeccomp {
    build_default(capabilities, &Host::detect())
}

pub(super) fn build_default(capabilities: &[Capability], host: &Host) -> LinuxSeccomp {
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
pub(super) const S_IFMT: u64 = 0o170000;
pub(super) const NODE_TYPES_WITHOUT_BLOCK: [u64; 5] = [0, 0o100000, 0o020000, 0o010000, 0o140000];

pub(super) fn syscall_rule<'a>(
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

pub(super) fn arg(index: usize, op: LinuxSeccompOperator, value: u64) -> LinuxSeccompArg {
    arg_with(index, op, value, None)
}

pub(super) fn arg_with(
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
pub(super) fn masked_eq(index: usize, mask: u64, expected: u64) -> LinuxSeccompArg {
    arg_with(
        index,
        LinuxSeccompOperator::ScmpCmpMaskedEq,
        mask,
        Some(expected),
    )
}
