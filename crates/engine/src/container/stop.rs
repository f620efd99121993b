//! Stopping a container: its stop signal, then SIGKILL after a grace
//! period.

use std::time::{Duration, Instant};

use crate::error::{EngineError, Result};
use crate::record::{self, Record, Status};
use crate::Engine;

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
        skiff_sandbox::process::signal(pid, record.stop_signal)?;
        if !self.wait_exit(record, grace)? {
            tracing::info!(id = %record.id, "grace period over; sending SIGKILL");
            if still_same_process(record) {
                skiff_sandbox::process::signal(pid, libc::SIGKILL)?;
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
    /// supervisor died is finished here instead. A record that cannot be
    /// read (other than removed, by `--rm`) is an error, never "exited".
    pub fn wait_exit(&self, record: &Record, limit: Duration) -> Result<bool> {
        let root = &self.config.root;
        let deadline = Instant::now() + limit;
        loop {
            match Record::load(root, &record.id) {
                Ok(r) if r.status == Status::Exited => return Ok(true),
                Err(EngineError::NotFound(_)) => return Ok(true),
                Err(e) => return Err(e),
                Ok(r) if !still_same_process(&r) => {
                    // The process is gone; give a live supervisor a moment
                    // to record it.
                    std::thread::sleep(Duration::from_millis(200));
                    if let Ok(again) = Record::load(root, &record.id) {
                        if again.status != Status::Exited {
                            let mut done = again;
                            done.status = Status::Exited;
                            done.pid = None;
                            done.finished = Some(record::now());
                            let _ = done.save(root);
                            let _ = self.cleanup(&done, false);
                        }
                    }
                    return Ok(true);
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
