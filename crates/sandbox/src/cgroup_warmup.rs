//! Overlapping the first cgroup migration's wait with the work before it.
//!
//! Moving a process into a cgroup (writing `cgroup.procs`) takes the
//! kernel's global `cgroup_threadgroup_rwsem` for writing. When nobody has
//! taken it for a while, taking it waits for a full RCU grace period (its
//! `rcu_sync` must switch every fork and exit on the host to the slow path
//! first): 10-25 ms on this machine, the largest single part of a
//! container's start. Once taken, it stays cheap until a grace period after
//! the last writer left. runc, crun and libcontainer all pay that wait
//! serially, in the middle of creating the container.
//!
//! [`start`] forks a child that writes `0` ("myself") to the `cgroup.procs`
//! of the cgroup it is already in: a migration that moves nothing but takes
//! the lock, so the grace period runs while `skiff run` mounts the overlay
//! and writes the spec. When libcontainer then moves the container's first
//! process, the wait is over or shorter. The child changes nothing; if the
//! kernel works otherwise, all it costs is a fork.

use rustix::process::{Pid, WaitOptions};

/// The forked child; [`Warmup::reap`] collects it.
pub struct Warmup {
    pid: Pid,
}

/// Forks the child. `None` if there is nothing to write to or fork failed
/// (the container start is then as slow as without it).
///
/// Call while single-threaded: the child runs only async-signal-safe code,
/// but a fork of a threaded process would still copy other threads' locks.
pub fn start() -> Option<Warmup> {
    let path = own_cgroup_procs()?;
    let path = std::ffi::CString::new(path.into_os_string().into_encoded_bytes()).ok()?;
    // SAFETY: the child only calls open, write and _exit (async-signal-safe)
    // on data prepared before the fork, then exits.
    match unsafe { libc::fork() } {
        0 => unsafe {
            let fd = libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
            if fd >= 0 {
                libc::write(fd, b"0".as_ptr().cast(), 1);
            }
            libc::_exit(0)
        },
        pid if pid > 0 => Some(Warmup {
            pid: Pid::from_raw(pid)?,
        }),
        _ => None,
    }
}

impl Warmup {
    /// Waits for the child (it is done long before the container is).
    pub fn reap(self) {
        let _ = rustix::process::waitpid(Some(self.pid), WaitOptions::empty());
    }
}

/// `cgroup.procs` of this process's own cgroup in some mounted hierarchy:
/// any hierarchy will do, the lock is global.
fn own_cgroup_procs() -> Option<std::path::PathBuf> {
    let text = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let root = std::path::Path::new("/sys/fs/cgroup");
    for line in text.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        let rel = path.trim_start_matches('/');
        let dir = match controllers {
            // The v2 hierarchy: /sys/fs/cgroup itself or, on hybrid hosts,
            // its `unified` mount.
            "" => [root.to_path_buf(), root.join("unified")]
                .into_iter()
                .map(|d| d.join(rel))
                .find(|d| d.join("cgroup.controllers").exists())?,
            c if !c.starts_with("name=") => root.join(c.split(',').next()?).join(rel),
            _ => continue,
        };
        let procs = dir.join("cgroup.procs");
        if procs.exists() {
            return Some(procs);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_child_moves_nothing_and_exits() {
        let before = std::fs::read_to_string("/proc/self/cgroup").unwrap();
        let procs = own_cgroup_procs().expect("a mounted cgroup hierarchy");
        assert!(procs.ends_with("cgroup.procs"), "{procs:?}");
        let w = start().expect("forked");
        let pid = w.pid;
        w.reap();
        // Reaped: no such process any more.
        assert!(!std::path::Path::new(&format!("/proc/{}", pid.as_raw_nonzero())).exists());
        assert_eq!(
            std::fs::read_to_string("/proc/self/cgroup").unwrap(),
            before
        );
    }
}
