//! Stopping a container: its stop signal, then SIGKILL after a grace
//! period.

use std::time::{Duration, Instant};

use crate::error::{EngineError, Result};
use crate::record::{self, Record, Status};
use crate::Engine;

use super::orphans::SupervisorLock;

impl Engine {
    /// Signals the container and waits until its supervisor has recorded
    /// the exit (or, if the supervisor is gone, until the process is).
    pub fn stop(&self, record: &Record, grace: Duration) -> Result<()> {
        if !record.running() {
            return Ok(());
        }
        let Some(pid) = record.pid else {
            return Ok(());
        };
        self.signal_container(record, pid, record.stop_signal)?;
        if !self.wait_exit(record, grace)? {
            tracing::info!(id = %record.id, "grace period over; sending SIGKILL");
            if still_same_process(record) {
                self.signal_container(record, pid, libc::SIGKILL)?;
            }
            if !self.wait_exit(record, Duration::from_secs(10))? {
                return Err(EngineError::Conflict(format!(
                    "container {} did not exit after SIGKILL (pid {pid}); check `dmesg`",
                    record.name
                )));
            }
        }
        Ok(())
    }

    /// Whether the container exited within `limit`. A record whose
    /// supervisor died is finished here instead (see [`super::orphans`]). A record that cannot be
    /// read (other than removed, by `--rm`) is an error, never "exited".
    pub fn wait_exit(&self, record: &Record, limit: Duration) -> Result<bool> {
        let root = &self.config.root;
        let deadline = Instant::now() + limit;
        loop {
            match Record::load(root, &record.id) {
                Ok(r) if r.status == Status::Exited => return Ok(true),
                Err(EngineError::NotFound(_)) => return Ok(true),
                Err(e) => return Err(e),
                // The process is gone: a live supervisor is recording
                // it; a dead one's container is finished here.
                Ok(r) if !still_same_process(&r) => {
                    if let Some(lock) = SupervisorLock::try_take(root, &r.id) {
                        self.finish_orphan(&r.id, &lock);
                        return Ok(true);
                    }
                }
                Ok(_) => {}
            }
            if Instant::now() >= deadline {
                return Ok(false);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn still_same_process(r: &Record) -> bool {
    r.pid
        .is_some_and(|p| record::process_start_time(p) == r.pid_start)
}
