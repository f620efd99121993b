//! The container's init process, from its clone to its `exec`: mounts,
//! `/dev`, `pivot_root`, masked and read-only paths, then (once told to
//! start) its streams, user, capabilities, `no_new_privs`, seccomp, exec.
//!
//! One module per step, in the order the init takes them:
//! [`plan`] (worked out before the clone), [`rootfs`], [`devices`],
//! [`protections`], [`credentials`], [`exec`]; [`channel`] is the report
//! protocol to the parent, both ends; [`sys`] the wrappers they share.

pub(crate) mod channel;
mod credentials;
mod devices;
mod exec;
pub(crate) mod join;
pub(crate) mod plan;
mod protections;
mod rootfs;
pub(crate) mod sys;

use std::os::fd::{BorrowedFd, RawFd};

use self::channel::{expect, send};
use self::devices::make_console;
use self::protections::{check_kernel_filesystems, make_cwd, mask, read_only};
use self::rootfs::{enter_rootfs, prepare_rootfs};
use self::sys::{check, die_with_parent, fail, remount, Step};
pub(crate) use channel::message;
pub(crate) use plan::Plan;

/// The standard streams the init gets.
pub(crate) enum InitStdio {
    Files([RawFd; 3]),
    Terminal,
}

/// The init's whole life after the clone. Never returns: it execs the
/// command or exits, having told the parent why.
pub(crate) fn run(plan: &Plan, sock: BorrowedFd<'_>, parent_end: RawFd, stdio: &InitStdio) -> ! {
    // The parent's end of the socket came along in the clone; closed, a
    // parent that dies shows as end-of-file here.
    // SAFETY: closing a descriptor this process owns and never uses.
    unsafe { libc::close(parent_end) };
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        setup_and_exec(plan, sock, stdio)
    }));
    let failure = match outcome {
        Ok(Ok(never)) => match never {},
        Ok(Err(f)) => f,
        // Never unwind into the parent's copied frames.
        Err(_) => fail("the container's init panicked".into()),
    };
    channel::report_failure(sock, &failure);
    // SAFETY: _exit runs nothing of the parent's copied state.
    unsafe { libc::_exit(1) }
}

pub(crate) fn setup_and_exec(
    plan: &Plan,
    sock: BorrowedFd<'_>,
    stdio: &InitStdio,
) -> Step<std::convert::Infallible> {
    // The init, and later its command, dies with its parent.
    die_with_parent()?;
    if plan.user_namespace {
        expect(sock, message::MAPPED)?;
        // Become the namespace's root (host root is not mapped in it).
        check(
            // SAFETY: plain set*id syscalls; this process is single-threaded.
            unsafe { libc::setresgid(0, 0, 0) },
            "setresgid(0) in the user namespace",
        )?;
        check(
            // SAFETY: as above.
            unsafe { libc::setresuid(0, 0, 0) },
            "setresuid(0) in the user namespace",
        )?;
        // Changing credentials cleared the parent-death signal.
        die_with_parent()?;
    }
    // SAFETY: umask cannot fail; devices get exact modes.
    unsafe { libc::umask(0) };
    if plan.cgroup_namespace {
        // Here, not at the clone: the namespace's root is the cgroup the
        // process is in when it unshares, and on v2 the clone put it there.
        check(
            // SAFETY: unshare with a flag constant.
            unsafe { libc::unshare(libc::CLONE_NEWCGROUP) },
            "creating the cgroup namespace",
        )?;
    }
    let root = prepare_rootfs(plan)?;
    let console = if plan.terminal {
        Some(make_console(&root, sock)?)
    } else {
        None
    };
    enter_rootfs(&root)?;
    check_kernel_filesystems(plan)?;
    for p in &plan.masked {
        mask(p)?;
    }
    for p in &plan.readonly {
        read_only(p)?;
    }
    make_cwd(&plan.cwd)?;
    if let Some(h) = &plan.hostname {
        check(
            // SAFETY: the pointer and length describe `h`.
            unsafe { libc::sethostname(h.as_ptr().cast(), h.len()) },
            format!("setting the hostname {h:?}"),
        )?;
    }
    if plan.readonly_root {
        remount("/", libc::MS_RDONLY)?;
    }
    send(sock, &[message::READY])?;
    expect(sock, message::START)?;

    exec::run_command(plan, stdio, console.as_ref())
}
