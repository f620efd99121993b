//! Exits the shim's reaper (containerd-shim's SIGCHLD loop, which waits
//! for every child) saw but no container process claimed yet: helpers the
//! shim waits for, and inits or execs that died before the shim learnt
//! their pid. Kept until claimed, so no exit is lost to that race.

use std::collections::HashMap;
use std::process::Command;
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

/// Beyond this many unclaimed exits (orphans reparented to the shim that
/// nobody asks about), the oldest are forgotten.
const MAX_UNCLAIMED: usize = 4096;

#[derive(Default)]
pub struct Reaper {
    unclaimed: Mutex<Unclaimed>,
    arrived: Condvar,
}

#[derive(Default)]
struct Unclaimed {
    codes: HashMap<i32, i32>,
    order: std::collections::VecDeque<i32>,
}

impl Reaper {
    /// Records `pid`'s exit status for whoever claims it.
    pub fn store(&self, pid: i32, code: i32) {
        let mut u = self.unclaimed.lock().unwrap_or_else(|p| p.into_inner());
        if u.codes.insert(pid, code).is_none() {
            u.order.push_back(pid);
        }
        while u.order.len() > MAX_UNCLAIMED {
            if let Some(old) = u.order.pop_front() {
                u.codes.remove(&old);
            }
        }
        self.arrived.notify_all();
    }

    /// `pid`'s exit status, if it has exited unclaimed.
    pub fn take(&self, pid: i32) -> Option<i32> {
        let mut u = self.unclaimed.lock().unwrap_or_else(|p| p.into_inner());
        let code = u.codes.remove(&pid)?;
        u.order.retain(|&p| p != pid);
        Some(code)
    }

    /// Starts `command`; its exit is then [`Reaper::wait`]ed for, never
    /// through std (the SIGCHLD loop reaps it first).
    pub fn spawn(&self, command: &mut Command) -> Result<i32, String> {
        let child = command
            .spawn()
            .map_err(|e| format!("starting skiff's shim helper: {e}"))?;
        Ok(child.id() as i32)
    }

    /// Blocks until `pid` (a child of this process) has exited, or for at
    /// most `limit`; its status.
    pub fn wait(&self, pid: i32, limit: Duration) -> Option<i32> {
        let deadline = Instant::now() + limit;
        let mut u = self.unclaimed.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if let Some(code) = u.codes.remove(&pid) {
                u.order.retain(|&p| p != pid);
                return Some(code);
            }
            let left = deadline.checked_duration_since(Instant::now())?;
            u = self
                .arrived
                .wait_timeout(u, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }
}
