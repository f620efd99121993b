//! Removing a container, and the cleanup every end of a container shares.

use std::time::Duration;

use skiff_sandbox::rootfs::{self, OverlayDirs};

use crate::error::{EngineError, IoContext, Result};
use crate::record::{self, Record};
use crate::{root_dir, Engine};

impl Engine {
    /// Removes a container (by name, ID or unique ID prefix): its writable
    /// layer, log and record. A running one is refused unless `force`,
    /// which kills it first.
    pub fn remove(&self, key: &str, force: bool) -> Result<Record> {
        let record = record::find(&self.config.root, key)?;
        if record.running() {
            if !force {
                return Err(EngineError::Conflict(format!(
                    "container {} is running; stop it with `skiff stop {}`, or use `skiff rm -f`",
                    record.name, record.name
                )));
            }
            if let Some(pid) = record.pid {
                // Through the supervisor where the kind says so; if it is
                // gone, to the pid (a VM's hypervisor) all the same.
                if self.signal_container(&record, pid, libc::SIGKILL).is_err() {
                    skiff_sandbox::process::signal(pid, libc::SIGKILL)?;
                }
            }
            if !self.wait_exit(&record, Duration::from_secs(10))? {
                return Err(EngineError::Conflict(format!(
                    "container {} did not die after SIGKILL",
                    record.name
                )));
            }
        }
        self.cleanup(&record, true)?;
        Ok(record)
    }

    /// Tears down what a container holds on the host (its cgroup, overlay
    /// and a bounded layer's filesystem); with `remove`, deletes its
    /// directory too. Every step is tried; each failure is logged, and the
    /// first is returned.
    pub fn cleanup(&self, record: &Record, remove: bool) -> Result<()> {
        let root = &self.config.root;
        let mut first: Option<EngineError> = None;
        let mut fail = |e: EngineError| {
            tracing::warn!(id = %record.id, "{e}");
            first.get_or_insert(e);
        };
        let leftovers = self
            .kind(&record.sandbox)
            .and_then(|k| Ok(k.remove_leftovers(&record.cgroups_path)?));
        if let Err(e) = leftovers {
            fail(e);
        }
        tracing::debug!("cgroup removed");
        let cdir = record::dir(root, &record.id);
        let scratch = root_dir::scratch_dir(root, &record.id);
        let dirs = OverlayDirs::new(&cdir, &scratch, record.layer_size);
        match rootfs::unmount_overlay(&dirs) {
            // Only an empty mount point is removed, so a mount that is
            // somehow still there keeps its files.
            Ok(()) => match std::fs::remove_dir(&dirs.merged) {
                Ok(()) => {
                    let _ = std::fs::remove_dir_all(&scratch);
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    let _ = std::fs::remove_dir_all(&scratch);
                }
                Err(e) => fail(EngineError::io(
                    format!("removing {}", dirs.merged.display()),
                    e,
                )),
            },
            Err(e) => fail(e.into()),
        }
        if remove {
            if let Err(e) =
                std::fs::remove_dir_all(&cdir).ctx(|| format!("removing {}", cdir.display()))
            {
                fail(e);
            }
            // The supervisor's own log goes with the container.
            match std::fs::remove_file(super::supervise::supervisor_log(root, record)) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => fail(EngineError::io(
                    "removing the supervisor's log".to_string(),
                    e,
                )),
                _ => {}
            }
        }
        tracing::debug!("cleaned up");
        match first {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}
