//! Containers whose supervisor died (killed with -9, or by the OOM killer).
//!
//! A supervisor holds an exclusive `flock` on `ROOT/containers/ID/
//! supervisor.lock` for as long as it runs; the kernel drops it when the
//! process dies, however it dies. A record that says running, whose init is
//! gone and whose lock is free, is an orphan: the next command that sees
//! it records the exit as unknown and tears down what the container held,
//! removing it altogether if it was started with `--rm`.

use std::fs::File;

use crate::error::{EngineError, IoContext, Result};
use crate::record::{self, Record, Status};
use crate::Engine;

/// The lock a live supervisor holds; held by an orphan's reaper while it
/// finishes the container, so two reapers never collide.
pub(crate) struct SupervisorLock {
    _file: File,
}

fn lock_path(root: &std::path::Path, id: &str) -> std::path::PathBuf {
    record::dir(root, id).join("supervisor.lock")
}

impl SupervisorLock {
    /// Takes the lock for a supervisor starting, waiting for a reaper that
    /// holds it. Its descriptor is close-on-exec: the container's process
    /// never keeps it.
    pub(crate) fn hold(root: &std::path::Path, id: &str) -> Result<SupervisorLock> {
        let path = lock_path(root, id);
        let file = File::create(&path).ctx(|| format!("creating {}", path.display()))?;
        rustix::fs::flock(&file, rustix::fs::FlockOperation::LockExclusive)
            .map_err(|e| EngineError::io(format!("locking {}", path.display()), e.into()))?;
        Ok(SupervisorLock { _file: file })
    }

    /// The lock, if no supervisor holds it (and the container's directory
    /// still exists).
    pub(crate) fn try_take(root: &std::path::Path, id: &str) -> Option<SupervisorLock> {
        Self::try_open(root, id, true)
    }

    /// As [`SupervisorLock::try_take`], but only where a supervisor made the
    /// lock file: a container of a skiff from before locks is never taken
    /// for unsupervised.
    fn try_take_made(root: &std::path::Path, id: &str) -> Option<SupervisorLock> {
        Self::try_open(root, id, false)
    }

    fn try_open(root: &std::path::Path, id: &str, create: bool) -> Option<SupervisorLock> {
        let file = File::options()
            .create(create)
            .truncate(false)
            .write(true)
            .open(lock_path(root, id))
            .ok()?;
        rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive).ok()?;
        Some(SupervisorLock { _file: file })
    }
}

/// Whether `r` says it runs, with an init that is gone: its supervisor is
/// either recording the exit right now, or dead.
fn maybe_orphan(r: &Record) -> bool {
    matches!(r.status, Status::Running | Status::Created) && r.pid.is_some() && !r.running()
}

impl Engine {
    /// Finishes every container whose supervisor died (see the module).
    /// Failures are logged: the caller's own work goes on.
    /// Returns every record as it is afterwards (each finished one read
    /// again, a removed one left out), so a caller lists the directory once.
    pub fn reap_orphans(&self) -> Result<Vec<Record>> {
        let root = &self.config.root;
        let mut all = record::all(root)?;
        let mut changed = false;
        for r in &all {
            if maybe_orphan(r) {
                if let Some(lock) = SupervisorLock::try_take(root, &r.id) {
                    changed |= self.finish_orphan(&r.id, &lock);
                }
            } else if r.running() {
                // Its command's exec cleared the parent-death signal (a
                // setuid program): kill what runs unsupervised.
                if let Some(lock) = SupervisorLock::try_take_made(root, &r.id) {
                    self.kill_unsupervised(r, &lock);
                    changed = true;
                }
            }
        }
        if changed {
            all = record::all(root)?;
        }
        Ok(all)
    }

    fn kill_unsupervised(&self, r: &Record, lock: &SupervisorLock) {
        tracing::info!(id = %r.id, name = %r.name, "its supervisor died; killing the container");
        if let Some(pid) = r.pid {
            let _ = skiff_sandbox::process::signal(pid, libc::SIGKILL);
        }
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while r.running() && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        self.finish_orphan(&r.id, lock);
    }

    /// Records the exit of an orphan whose lock `_held` is taken, and cleans
    /// it up. Returns whether it was one (a supervisor may have finished it
    /// between the look and the lock).
    pub(crate) fn finish_orphan(&self, id: &str, _held: &SupervisorLock) -> bool {
        let root = &self.config.root;
        let Ok(mut r) = Record::load(root, id) else {
            return false;
        };
        if !maybe_orphan(&r) {
            return false;
        }
        tracing::info!(id = %r.id, name = %r.name, "its supervisor died; cleaning up the container");
        r.status = Status::Exited;
        r.pid = None;
        r.exit_code = None;
        r.finished = Some(record::now());
        if !r.remove_on_exit {
            if let Err(e) = r.save(root) {
                tracing::warn!(id = %r.id, "recording the exit of an orphaned container: {e}");
            }
        }
        if let Err(e) = self.cleanup(&r, r.remove_on_exit) {
            tracing::warn!(id = %r.id, "cleaning up an orphaned container: {e}");
        }
        true
    }
}
