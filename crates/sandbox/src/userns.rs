//! A user namespace made before the container, for `--userns`.
//!
//! libcontainer 0.7 switches to its systemd cgroup driver whenever the spec
//! asks it to create a user namespace, and there is no systemd on the hosts
//! skiff targets. Joining an existing namespace by path keeps its cgroupfs
//! driver, so skiff creates the namespace itself: a child process unshares
//! it and waits, skiff writes the ID maps, libcontainer joins it through
//! `/proc/PID/ns/user`, and the child exits once the container holds the
//! namespace.

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;

use crate::SandboxError;

/// A process holding a new user namespace; dropping it ends the process.
pub struct UserNamespace {
    pid: libc::pid_t,
    /// Closing this releases the holder.
    _hold: OwnedFd,
}

impl UserNamespace {
    /// A new user namespace with `uid_map` and `gid_map` (the text of
    /// `/proc/PID/uid_map`, e.g. `0 100000 65536`). The caller must be
    /// single-threaded, as for creating containers.
    pub fn create(uid_map: &str, gid_map: &str) -> Result<Self, SandboxError> {
        let (ready_r, ready_w) = pipe()?;
        let (hold_r, hold_w) = pipe()?;
        // SAFETY: the child only makes async-signal-safe calls (prctl,
        // unshare, write, read, _exit) before it exits.
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            return Err(SandboxError::io(
                "forking the user namespace holder".into(),
                std::io::Error::last_os_error(),
            ));
        }
        if pid == 0 {
            // SAFETY: see above; the child never returns into Rust code.
            unsafe {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                let ok: u8 = (libc::unshare(libc::CLONE_NEWUSER) == 0) as u8;
                libc::write(ready_w.as_raw_fd(), (&ok as *const u8).cast(), 1);
                let mut b = 0u8;
                // Returns at EOF: the parent closed its end or died.
                libc::read(hold_r.as_raw_fd(), (&mut b as *mut u8).cast(), 1);
                libc::_exit(0);
            }
        }
        drop(ready_w);
        drop(hold_r);
        let ns = UserNamespace { pid, _hold: hold_w };
        let mut ok = [0u8];
        let n = rustix::io::read(&ready_r, &mut ok)
            .map_err(|e| SandboxError::io("waiting for the user namespace".into(), e.into()))?;
        if n != 1 || ok[0] != 1 {
            return Err(SandboxError::Runtime(
                "cannot create a user namespace (unshare(CLONE_NEWUSER) failed); check user.max_user_namespaces".into(),
            ));
        }
        for (file, map) in [("uid_map", uid_map), ("gid_map", gid_map)] {
            let path = format!("/proc/{pid}/{file}");
            std::fs::write(&path, map)
                .map_err(|e| SandboxError::io(format!("writing {path} ({map:?})"), e))?;
        }
        Ok(ns)
    }

    /// The namespace, for the spec's `linux.namespaces[].path`.
    pub fn path(&self) -> PathBuf {
        PathBuf::from(format!("/proc/{}/ns/user", self.pid))
    }
}

impl Drop for UserNamespace {
    fn drop(&mut self) {
        // SAFETY: signalling and reaping our own child.
        unsafe {
            libc::kill(self.pid, libc::SIGKILL);
            libc::waitpid(self.pid, std::ptr::null_mut(), 0);
        }
    }
}

fn pipe() -> Result<(OwnedFd, OwnedFd), SandboxError> {
    rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
        .map_err(|e| SandboxError::io("creating a pipe".into(), e.into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_are_in_place_and_the_holder_goes_away() {
        let ns = UserNamespace::create("0 100000 65536\n", "0 100000 65536\n").unwrap();
        let pid = ns.pid;
        let map = std::fs::read_to_string(format!("/proc/{pid}/uid_map")).unwrap();
        let fields: Vec<&str> = map.split_whitespace().collect();
        assert_eq!(fields, ["0", "100000", "65536"]);
        let ours = std::fs::read_link("/proc/self/ns/user").unwrap();
        assert_ne!(std::fs::read_link(ns.path()).unwrap(), ours);
        drop(ns);
        assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists());
    }
}
