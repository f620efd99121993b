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
use self::rootfs::{enter_rootfs, enter_rootfs_without_pivot, prepare_rootfs};
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
    if plan.detached && PAST_START.load(std::sync::atomic::Ordering::Relaxed) {
        // No one reads the channel after `start`: the container's own
        // stderr is where its caller (a shim, conmon) looks.
        let line = format!("skiff: {}\n", failure.message);
        // SAFETY: write(2) of a local buffer to our own descriptor.
        unsafe { libc::write(2, line.as_ptr().cast(), line.len()) };
        let code = match failure.kind {
            channel::FailureKind::NotFound => 127,
            channel::FailureKind::NotExecutable => 126,
            channel::FailureKind::Setup => 1,
        };
        // SAFETY: _exit runs nothing of the parent's copied state.
        unsafe { libc::_exit(code) }
    }
    // SAFETY: _exit runs nothing of the parent's copied state.
    unsafe { libc::_exit(1) }
}

/// Set once a detached init has been started: its failures then go to
/// the container's stderr.
static PAST_START: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Joins the namespaces the spec names by path (the user one first).
fn join_namespaces(plan: &Plan) -> Step {
    use std::os::fd::AsRawFd;
    for (fd, typ) in &plan.joins {
        check(
            // SAFETY: setns on a namespace descriptor this process holds.
            unsafe { libc::setns(fd.as_raw_fd(), *typ) },
            format!("joining the namespace the spec names ({typ:#x})"),
        )?;
    }
    Ok(())
}

/// Writes `linux.sysctl` (checked to be namespaced) through `/proc/sys`,
/// already in the container's namespaces.
fn write_sysctls(plan: &Plan) -> Step {
    for (key, value) in &plan.sysctls {
        let path = format!("/proc/sys/{}", key.replace('.', "/"));
        std::fs::write(&path, value)
            .map_err(|e| fail(format!("setting the sysctl {key}={value:?}: {e}")))?;
    }
    Ok(())
}

/// Blocks until `start` opens the FIFO for reading, then tells it the
/// container goes on (runc's exec.fifo protocol).
fn await_start_fifo(fd: RawFd) -> Step {
    let path = format!("/proc/self/fd/{fd}");
    let fifo = loop {
        match rustix::fs::open(
            path.as_str(),
            rustix::fs::OFlags::WRONLY | rustix::fs::OFlags::CLOEXEC,
            rustix::fs::Mode::empty(),
        ) {
            Ok(f) => break f,
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => {
                return Err(fail(format!(
                "waiting for start on its FIFO through {path} (the spec needs a /proc mount): {e}"
            )))
            }
        }
    };
    rustix::io::write(&fifo, b"0").map_err(|e| fail(format!("answering start: {e}")))?;
    Ok(())
}

/// Runs hooks from the init: a failure is the init's failure.
fn run_hooks(
    kind: crate::hooks::HookKind,
    hooks: &[oci_spec::runtime::Hook],
    state: &[u8],
) -> Step {
    crate::hooks::run(kind, hooks, state).map_err(|e| fail(e.to_string()))
}

pub(crate) fn setup_and_exec(
    plan: &Plan,
    sock: BorrowedFd<'_>,
    stdio: &InitStdio,
) -> Step<std::convert::Infallible> {
    // The init, and later its command, dies with its parent, unless it is
    // made to outlive it (runc's model).
    if !plan.detached {
        die_with_parent()?;
    }
    join_namespaces(plan)?;
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
        if !plan.detached {
            die_with_parent()?;
        }
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
    write_sysctls(plan)?;
    let console = if plan.terminal {
        Some(make_console(&root, sock, plan.console_size)?)
    } else {
        None
    };
    // The parent runs `prestart` and `createRuntime` now, and sends the
    // state the init's own hooks read.
    let state = if plan.hook_sync {
        send(sock, &[message::HOOKS])?;
        channel::receive_body(sock, message::STATE)?
    } else {
        Vec::new()
    };
    run_hooks(
        crate::hooks::HookKind::CreateContainer,
        &plan.create_container_hooks,
        &state,
    )?;
    if plan.no_pivot {
        enter_rootfs_without_pivot(&root)?;
    } else {
        enter_rootfs(&root)?;
    }
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
    match plan.start_fifo {
        None => expect(sock, message::START)?,
        Some(fd) => {
            await_start_fifo(fd)?;
            PAST_START.store(true, std::sync::atomic::Ordering::Relaxed);
        }
    }
    run_hooks(
        crate::hooks::HookKind::StartContainer,
        &plan.start_container_hooks,
        &state,
    )?;
    exec::run_command(plan, stdio, console.as_ref())
}
