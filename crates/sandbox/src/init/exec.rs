//! The last steps: signals reset, streams wired, the command found and
//! exec'd through the sealed exec stub.

use super::channel::FailureKind;
use super::credentials::{load_seccomp, set_rlimits, switch_user};
use super::plan::Plan;
use super::sys::{check, fail, os, Failure, Step};
use super::InitStdio;
use std::ffi::{CStr, CString};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

pub(crate) fn reset_signals() -> Step {
    // The kernel's sigaction, used raw: glibc refuses the two real-time
    // signals it reserves, and those may be ignored too.
    #[repr(C)]
    struct KernelSigaction {
        handler: usize,
        flags: libc::c_ulong,
        restorer: usize,
        mask: u64,
    }
    let dfl = KernelSigaction {
        handler: libc::SIG_DFL,
        flags: 0,
        restorer: 0,
        mask: 0,
    };
    for sig in 1..=64 {
        if sig == libc::SIGKILL || sig == libc::SIGSTOP {
            continue;
        }
        // SAFETY: rt_sigaction reads `dfl`, alive here; 8 is the kernel's
        // sigset size.
        unsafe {
            libc::syscall(
                libc::SYS_rt_sigaction,
                sig,
                &dfl as *const KernelSigaction,
                std::ptr::null_mut::<KernelSigaction>(),
                8usize,
            )
        };
    }
    let none: u64 = 0;
    check(
        // SAFETY: rt_sigprocmask reads one 8-byte set.
        unsafe {
            libc::syscall(
                libc::SYS_rt_sigprocmask,
                libc::SIG_SETMASK,
                &none as *const u64,
                std::ptr::null_mut::<u64>(),
                8usize,
            ) as libc::c_int
        },
        "unblocking signals",
    )
}

pub(crate) fn set_stdio(stdio: &InitStdio, console: Option<&OwnedFd>) -> Step {
    // A session of its own, with or without a pty: a container must never
    // share skiff's controlling terminal (TIOCSTI could type into the
    // user's shell).
    rustix::process::setsid().map_err(|e| fail(format!("setsid: {e}")))?;
    let fds: [RawFd; 3] = match (stdio, console) {
        (_, Some(tty)) => {
            rustix::process::ioctl_tiocsctty(tty)
                .map_err(|e| fail(format!("making the pty the controlling terminal: {e}")))?;
            let t = tty.as_raw_fd();
            [t, t, t]
        }
        (InitStdio::Files(fds), None) => *fds,
        (InitStdio::Terminal, None) => return Err(fail("no pty was made".into())),
    };
    for (target, fd) in fds.iter().enumerate() {
        check(
            // SAFETY: dup2 between descriptors this process owns.
            unsafe { libc::dup2(*fd, target as RawFd) },
            format!("setting up stream {target}"),
        )?;
    }
    Ok(())
}

/// execvpe with the container's PATH; failures in Docker's terms.
/// The exec stub (stub/exec_stub.c, built by build.rs); empty where none
/// is built.
pub(crate) static EXEC_STUB: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/exec_stub"));

/// The stub's first argument, which it insists on.
pub(crate) const STUB_MARKER: &CStr = c"skiff-exec-stub";

/// The exec stub in a sealed memfd, made while the init may still do so.
///
/// Why: while the kernel execs the command it resolves a script's
/// interpreter, and a container whose command is `#!/proc/self/exe` would
/// get the init's own executable: the skiff binary on the host
/// (CVE-2019-5736). Exec'd from here, the init's executable is instead this
/// sealed copy, which nothing can write, and which refuses to run as an
/// interpreter. `None` where no stub was built.
pub(crate) fn sealed_stub() -> Step<Option<OwnedFd>> {
    use rustix::fs::{MemfdFlags, SealFlags};
    if EXEC_STUB.is_empty() {
        return Ok(None);
    }
    let fd = rustix::fs::memfd_create(
        "skiff-exec-stub",
        MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING,
    )
    .map_err(|e| fail(format!("creating the exec stub: {e}")))?;
    let mut written = 0;
    while written < EXEC_STUB.len() {
        written += rustix::io::write(&fd, &EXEC_STUB[written..])
            .map_err(|e| fail(format!("writing the exec stub: {e}")))?;
    }
    rustix::fs::fcntl_add_seals(
        &fd,
        SealFlags::SEAL | SealFlags::SHRINK | SealFlags::GROW | SealFlags::WRITE,
    )
    .map_err(|e| fail(format!("sealing the exec stub: {e}")))?;
    Ok(Some(fd))
}

/// The command's path, found as execvp would (along the container's PATH
/// unless it has a '/'), checked as the user it runs as; failures in
/// Docker's terms.
pub(crate) fn find_command(plan: &Plan) -> Step<CString> {
    let name = plan.args[0].to_string_lossy().into_owned();
    let candidates: Vec<CString> = if name.contains('/') {
        vec![plan.args[0].clone()]
    } else {
        plan.path
            .split(':')
            .map(|d| if d.is_empty() { "." } else { d })
            .filter_map(|d| CString::new(format!("{d}/{name}")).ok())
            .collect()
    };
    let mut denied = false;
    for c in candidates {
        match rustix::fs::stat(c.as_c_str()) {
            Ok(st) => {
                let regular = rustix::fs::FileType::from_raw_mode(st.st_mode)
                    == rustix::fs::FileType::RegularFile;
                let runnable =
                    rustix::fs::access(c.as_c_str(), rustix::fs::Access::EXEC_OK).is_ok();
                if regular && runnable {
                    return Ok(c);
                }
                denied = true;
            }
            Err(rustix::io::Errno::NOENT | rustix::io::Errno::NOTDIR) => {}
            Err(rustix::io::Errno::ACCESS) => denied = true,
            Err(e) => return Err(fail(format!("looking for {name:?}: {e}"))),
        }
    }
    Err(if denied {
        Failure {
            kind: FailureKind::NotExecutable,
            message: format!("{name:?} is not executable (permission denied)"),
        }
    } else if name.contains('/') {
        Failure {
            kind: FailureKind::NotFound,
            message: format!("{name:?}: no such file or directory in the image"),
        }
    } else {
        Failure {
            kind: FailureKind::NotFound,
            message: format!(
                "executable file {name:?} not found in $PATH ({})",
                plan.path
            ),
        }
    })
}

/// Execs the command, through the stub when there is one.
pub(crate) fn exec(plan: &Plan, stub: Option<&OwnedFd>) -> Step<std::convert::Infallible> {
    let path = find_command(plan)?;
    let mut argv: Vec<*const libc::c_char> = plan.args.iter().map(|a| a.as_ptr()).collect();
    argv.push(std::ptr::null());
    let mut envp: Vec<*const libc::c_char> = plan.env.iter().map(|e| e.as_ptr()).collect();
    envp.push(std::ptr::null());
    if let Some(stub) = stub {
        let mut stub_argv = vec![STUB_MARKER.as_ptr(), path.as_ptr()];
        stub_argv.extend_from_slice(&argv);
        // SAFETY: the descriptor, argv and envp are valid and NUL-terminated;
        // execveat only returns on failure.
        unsafe {
            libc::syscall(
                libc::SYS_execveat,
                stub.as_raw_fd(),
                c"".as_ptr(),
                stub_argv.as_ptr(),
                envp.as_ptr(),
                libc::AT_EMPTY_PATH,
            )
        };
        let e = std::io::Error::last_os_error();
        // Only a host that forbids executing memfds (vm.memfd_noexec=2)
        // lands here; the command still runs, without the stub.
        if !matches!(e.raw_os_error(), Some(libc::EACCES | libc::EPERM)) {
            return Err(fail(format!("running the exec stub: {e}")));
        }
    }
    // SAFETY: as above; execve only returns on failure.
    unsafe { libc::execve(path.as_ptr(), argv.as_ptr(), envp.as_ptr()) };
    Err(Failure {
        kind: FailureKind::NotExecutable,
        message: format!(
            "cannot run {:?}: {}",
            plan.args[0],
            std::io::Error::last_os_error()
        ),
    })
}

/// The command's start, shared by the init and by a process exec'd into a
/// running container: signals reset, limits set, streams wired, every other
/// descriptor closed at exec, the working directory entered, the user and
/// capabilities, `no_new_privs` and seccomp, then the exec itself.
pub(crate) fn run_command(
    plan: &Plan,
    stdio: &InitStdio,
    console: Option<&OwnedFd>,
) -> Step<std::convert::Infallible> {
    // SAFETY: umask cannot fail.
    unsafe { libc::umask(0o022) };
    reset_signals()?;
    // As root, before the user switch: raising a hard limit may need
    // CAP_SYS_RESOURCE, which the switch drops.
    set_rlimits(&plan.rlimits)?;
    let stub = sealed_stub()?;
    set_stdio(stdio, console)?;
    // Everything else closes at exec; the socket stays usable until then.
    check(
        // SAFETY: close_range only sets flags on our own descriptors.
        unsafe {
            libc::syscall(
                libc::SYS_close_range,
                3,
                libc::c_uint::MAX,
                libc::CLOSE_RANGE_CLOEXEC,
            ) as libc::c_int
        },
        "marking inherited descriptors close-on-exec",
    )?;
    // As root first (runc's order), again as the user if root could not.
    // SAFETY: chdir with a NUL-terminated path.
    let entered = unsafe { libc::chdir(plan.cwd.as_ptr()) } == 0;
    if !plan.no_new_privs {
        // Without no_new_privs, loading a filter needs CAP_SYS_ADMIN, which
        // the user switch may drop.
        load_seccomp(plan)?;
    }
    switch_user(plan)?;
    // The command dies with its supervisor, as the init did until now: an
    // unsupervised container would have no one to relay its output or
    // record its exit. After the user switch, which clears it, and before
    // the default seccomp policy. Best effort: the engine kills what a
    // dead supervisor leaves running anyway.
    if !plan.detached {
        // SAFETY: prctl with integer arguments.
        unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
    }
    if let Some(domain) = plan.personality {
        // SAFETY: personality(2) with a domain constant.
        if unsafe { libc::personality(domain) } < 0 {
            return Err(os("setting linux.personality"));
        }
    }
    // SAFETY: chdir with a NUL-terminated path.
    if !entered && unsafe { libc::chdir(plan.cwd.as_ptr()) } < 0 {
        return Err(os(format!("entering the working directory {:?}", plan.cwd)));
    }
    if plan.no_new_privs {
        check(
            // SAFETY: prctl with integer arguments.
            unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) },
            "setting no_new_privs",
        )?;
        load_seccomp(plan)?;
    }
    exec(plan, stub.as_ref())
}
