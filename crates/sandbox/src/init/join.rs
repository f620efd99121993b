//! A process exec'd into a running container (`skiff exec`): the child's
//! side. A forked child of the caller joins the container's cgroup, then
//! its namespaces (its user namespace first), and forks the process that
//! runs the command, as a sibling (`CLONE_PARENT`): the caller is its
//! parent and waits for it, and it is born in the container's pid
//! namespace. That process takes a pty from the container's devpts under
//! a terminal, then starts the command as the init does
//! ([`super::exec::run_command`]).

use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::path::PathBuf;

use super::channel::{message, report_failure, send};
use super::devices::open_pty;
use super::exec::run_command;
use super::plan::Plan;
use super::sys::{check, die_with_parent, fail, Step};
use super::InitStdio;

/// What to join: the namespaces (each an open `/proc/PID/ns/X` with its
/// `CLONE_NEW*` type, the user namespace first) and the cgroup files to
/// write `0` to.
pub(crate) struct Target {
    pub(crate) namespaces: Vec<(OwnedFd, libc::c_int)>,
    pub(crate) cgroup_files: Vec<PathBuf>,
}

/// The forked child's whole life: join, fork the command's process, report
/// its pid, exit. Never returns.
pub(crate) fn run(
    plan: &Plan,
    target: &Target,
    sock: BorrowedFd<'_>,
    parent_end: RawFd,
    stdio: &InitStdio,
) -> ! {
    // SAFETY: closing a descriptor this process owns and never uses.
    unsafe { libc::close(parent_end) };
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        join_and_fork(plan, target, sock, stdio)
    }));
    let failure = match outcome {
        Ok(Ok(())) => {
            // SAFETY: _exit runs nothing of the parent's copied state.
            unsafe { libc::_exit(0) }
        }
        Ok(Err(f)) => f,
        Err(_) => fail("the exec's helper panicked".into()),
    };
    report_failure(sock, &failure);
    // SAFETY: as above.
    unsafe { libc::_exit(1) }
}

fn join_and_fork(plan: &Plan, target: &Target, sock: BorrowedFd<'_>, stdio: &InitStdio) -> Step {
    // Not dumpable until the command's exec: the container's processes
    // must not trace or read the memory of one that still holds skiff's
    // descriptors and the host's credentials (runc's CVE-2016-9962).
    check(
        // SAFETY: prctl with integer arguments.
        unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) },
        "making the exec's helper non-dumpable",
    )?;
    if !plan.detached {
        die_with_parent()?;
    }
    // The cgroup first, while the host's /sys/fs/cgroup is in view.
    for f in &target.cgroup_files {
        std::fs::write(f, "0").map_err(|e| {
            fail(format!(
                "joining the container's cgroup ({}): {e}",
                f.display()
            ))
        })?;
    }
    for (fd, typ) in &target.namespaces {
        check(
            // SAFETY: setns on a namespace descriptor this process holds.
            unsafe { libc::setns(fd.as_raw_fd(), *typ) },
            format!("joining the container's namespace ({typ:#x})"),
        )?;
    }
    // SAFETY: a plain fork-like clone of this single-threaded process; the
    // child goes on below and never returns into the caller's frames.
    let pid = unsafe {
        libc::syscall(
            libc::SYS_clone,
            (libc::CLONE_PARENT | libc::SIGCHLD) as libc::c_ulong,
            0usize,
            0usize,
            0usize,
            0usize,
        )
    };
    if pid < 0 {
        return Err(fail(format!(
            "forking the exec's process: {}",
            std::io::Error::last_os_error()
        )));
    }
    if pid == 0 {
        let failure = match run_exec(plan, sock, stdio) {
            Ok(never) => match never {},
            Err(f) => f,
        };
        report_failure(sock, &failure);
        // SAFETY: _exit runs nothing of the caller's copied state.
        unsafe { libc::_exit(1) }
    }
    let mut packet = vec![message::PID];
    packet.extend_from_slice(&(pid as i32).to_ne_bytes());
    send(sock, &packet)
}

fn run_exec(
    plan: &Plan,
    sock: BorrowedFd<'_>,
    stdio: &InitStdio,
) -> Step<std::convert::Infallible> {
    // Its parent is the caller now: die with it until the command runs.
    if !plan.detached {
        die_with_parent()?;
    }
    let console = if plan.terminal {
        let root = rustix::fs::open(
            "/",
            rustix::fs::OFlags::PATH | rustix::fs::OFlags::DIRECTORY | rustix::fs::OFlags::CLOEXEC,
            rustix::fs::Mode::empty(),
        )
        .map_err(|e| fail(format!("opening the container's root: {e}")))?;
        Some(open_pty(&root, sock, plan.console_size)?)
    } else {
        None
    };
    run_command(plan, stdio, console.as_ref())
}
