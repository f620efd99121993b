//! Waiting for and signalling a container's processes: what the
//! lifecycle ([`crate::container`]) and the cgroup code share.

use rustix::process::{Pid, Signal, WaitOptions};

use crate::SandboxError;

/// How a container's init process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Code(i32),
    Signal(i32),
}

impl Exit {
    /// The shell convention: the code, or 128 + the signal.
    pub fn code(self) -> i32 {
        match self {
            Exit::Code(c) => c,
            Exit::Signal(s) => 128 + s,
        }
    }
}

/// Waits for a child process (the container's init is ours).
pub fn wait(pid: i32) -> Result<Exit, SandboxError> {
    let p = Pid::from_raw(pid).ok_or_else(|| SandboxError::Setup(format!("invalid pid {pid}")))?;
    loop {
        match rustix::process::waitpid(Some(p), WaitOptions::empty()) {
            Ok(Some((_, status))) => {
                if let Some(code) = status.exit_status() {
                    return Ok(Exit::Code(code));
                }
                if let Some(sig) = status.terminating_signal() {
                    return Ok(Exit::Signal(sig));
                }
            }
            Ok(None) => {}
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(SandboxError::io(format!("waiting for pid {pid}"), e.into())),
        }
    }
}

/// Sends a signal to one process; a process that is already gone is fine.
pub fn signal(pid: i32, sig: i32) -> Result<(), SandboxError> {
    let (Some(p), Some(s)) = (Pid::from_raw(pid), Signal::from_named_raw(sig)) else {
        return Err(SandboxError::Setup(format!(
            "cannot send signal {sig} to pid {pid}"
        )));
    };
    match rustix::process::kill_process(p, s) {
        Ok(()) | Err(rustix::io::Errno::SRCH) => Ok(()),
        Err(e) => Err(SandboxError::io(format!("signalling pid {pid}"), e.into())),
    }
}
