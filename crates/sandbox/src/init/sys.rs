//! Small wrappers the init's steps share: its failure type, and
//! `mount(2)` with the flags a remount must keep.

use super::channel::FailureKind;
use std::ffi::CString;
use std::os::fd::{AsRawFd, OwnedFd};

#[derive(Debug)]
pub(crate) struct Failure {
    pub(crate) kind: FailureKind,
    pub(crate) message: String,
}

pub(crate) type Step<T = ()> = Result<T, Failure>;

pub(crate) fn fail(message: String) -> Failure {
    Failure {
        kind: FailureKind::Setup,
        message,
    }
}

/// `what: strerror(errno)` as a failure.
pub(crate) fn os(what: impl std::fmt::Display) -> Failure {
    fail(format!("{what}: {}", std::io::Error::last_os_error()))
}

pub(crate) fn check(rc: libc::c_int, what: impl std::fmt::Display) -> Step {
    if rc < 0 {
        Err(os(what))
    } else {
        Ok(())
    }
}

pub(crate) fn cpath(p: &str) -> Step<CString> {
    CString::new(p).map_err(|_| fail(format!("{p:?} contains a NUL byte")))
}

/// `mount(2)` with owned strings; `None` passes NULL.
pub(crate) fn mount(
    source: Option<&str>,
    target: &str,
    fstype: Option<&str>,
    flags: libc::c_ulong,
    data: Option<&str>,
) -> Step {
    let (s, t, f, d) = (
        source.map(cpath).transpose()?,
        cpath(target)?,
        fstype.map(cpath).transpose()?,
        data.filter(|d| !d.is_empty()).map(cpath).transpose()?,
    );
    let ptr = |c: &Option<CString>| c.as_ref().map_or(std::ptr::null(), |c| c.as_ptr());
    // SAFETY: every pointer is NULL or a NUL-terminated string alive here.
    let rc = unsafe { libc::mount(ptr(&s), t.as_ptr(), ptr(&f), flags, ptr(&d).cast()) };
    if rc < 0 {
        return Err(os(format!(
            "mounting {} ({}) on {target}",
            source.unwrap_or("-"),
            fstype.unwrap_or("-")
        )));
    }
    Ok(())
}

/// `/proc/self/fd/N`: mounting there mounts on what the descriptor names.
pub(crate) fn fd_path(fd: &OwnedFd) -> String {
    format!("/proc/self/fd/{}", fd.as_raw_fd())
}

/// Mount flags the kernel keeps locked on a mount (in a user namespace a
/// remount may not clear them), as statvfs reports them.
pub(crate) fn kept_flags(path: &str) -> Step<libc::c_ulong> {
    let c = cpath(path)?;
    // SAFETY: statvfs fills the zeroed struct; the path is NUL-terminated.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: as above: `st` is ours, the path a live C string.
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } < 0 {
        return Err(os(format!("statvfs {path}")));
    }
    let mut flags = 0;
    for (st_flag, ms_flag) in [
        (libc::ST_NOSUID, libc::MS_NOSUID),
        (libc::ST_NODEV, libc::MS_NODEV),
        (libc::ST_NOEXEC, libc::MS_NOEXEC),
        (libc::ST_NOATIME, libc::MS_NOATIME),
        (libc::ST_NODIRATIME, libc::MS_NODIRATIME),
        (libc::ST_RELATIME, libc::MS_RELATIME),
        (libc::ST_RDONLY, libc::MS_RDONLY),
    ] {
        if st.f_flag & st_flag != 0 {
            flags |= ms_flag;
        }
    }
    // No atime flag reads as relatime on a remount; keep strictatime.
    if st.f_flag & (libc::ST_NOATIME | libc::ST_RELATIME) == 0 {
        flags |= libc::MS_STRICTATIME;
    }
    Ok(flags)
}

/// Remounts the bind mount at `path` with `flags` added.
pub(crate) fn remount(path: &str, flags: libc::c_ulong) -> Step {
    let kept = kept_flags(path)?;
    mount(
        None,
        path,
        None,
        libc::MS_BIND | libc::MS_REMOUNT | kept | flags,
        None,
    )
}

/// The process dies with its parent (a credential change clears it; the
/// command's start sets it again after the user switch).
pub(crate) fn die_with_parent() -> Step {
    check(
        // SAFETY: prctl with integer arguments.
        unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) },
        "setting the parent-death signal",
    )
}

/// openat2(2), tried again while it answers EAGAIN: with `RESOLVE_IN_ROOT`
/// or `RESOLVE_BENEATH` the kernel gives up a walk that a rename or a mount
/// anywhere on the host raced with (other containers starting), and asks
/// the caller to retry.
pub(crate) fn openat2_retrying<Fd: std::os::fd::AsFd>(
    dir: Fd,
    path: &str,
    flags: rustix::fs::OFlags,
    mode: rustix::fs::Mode,
    how: rustix::fs::ResolveFlags,
) -> rustix::io::Result<OwnedFd> {
    let dir = dir.as_fd();
    let mut tries = 0;
    loop {
        match rustix::fs::openat2(dir, path, flags, mode, how) {
            Err(rustix::io::Errno::AGAIN) if tries < 1000 => tries += 1,
            other => return other,
        }
    }
}
