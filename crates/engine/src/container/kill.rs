//! Signalling a container, and waiting for it to exit.

use std::time::Duration;

use crate::error::{EngineError, Result};
use crate::record::{self, Record};
use crate::Engine;

impl Engine {
    /// Sends `signal` to the container's init. A container that is not
    /// running is an error (as `docker kill`'s), never a signal to a pid
    /// that another process may have taken.
    pub fn kill(&self, record: &Record, signal: i32) -> Result<()> {
        let live = record.running()
            && record
                .pid
                .is_some_and(|p| record::process_start_time(p) == record.pid_start);
        match record.pid {
            Some(pid) if live => self.signal_container(record, pid, signal),
            _ => Err(EngineError::Conflict(format!(
                "container {} is not running",
                record.name
            ))),
        }
    }

    /// Sends `signal` to a live container: to its init's pid, or through
    /// its supervisor for a kind whose pid is not its process (a VM's).
    pub(crate) fn signal_container(&self, record: &Record, pid: i32, signal: i32) -> Result<()> {
        if self
            .kind(&record.sandbox)
            .is_ok_and(|k| k.signals_through_supervisor())
        {
            return self.supervisor(&record.id).signal(signal);
        }
        Ok(skiff_sandbox::process::signal(pid, signal)?)
    }

    /// Blocks until the container has exited; its exit code, or `None` if
    /// it was removed (`--rm`) before its code could be read.
    pub fn wait(&self, record: &Record) -> Result<Option<i32>> {
        while !self.wait_exit(record, Duration::from_secs(3600))? {}
        match Record::load(&self.config.root, &record.id) {
            Ok(r) => Ok(r.exit_code),
            Err(EngineError::NotFound(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }
}
