//! Starting the engine's helper processes (image mount daemons, container
//! supervisors) and waiting until each reports that it is ready.
//!
//! A helper is [`EngineConfig::helper`](crate::EngineConfig) run with one
//! of the hidden commands of the helper interface (the crate README lists
//! them), never the current executable: inside a shim that would be the
//! shim.

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use crate::error::{EngineError, IoContext, Result};
use crate::Engine;

impl Engine {
    /// The helper program with `--root` and the registry options, ready
    /// for a helper command's arguments.
    pub(crate) fn helper_command(&self) -> Command {
        let mut cmd = Command::new(&self.config.helper);
        cmd.arg("--root").arg(&self.config.root);
        let reg = &self.config.registry;
        if reg.plain_http {
            cmd.arg("--plain-http");
        }
        if let Some(p) = &reg.proxy {
            cmd.arg("--proxy").arg(p);
        }
        if let Some(m) = &reg.mirror {
            cmd.arg("--mirror").arg(m);
        }
        cmd
    }
}

/// A helper started in a session of its own, stdin from /dev/null, stderr
/// to `log`; it prints "ready" on stdout once it is.
pub(crate) struct Starting {
    child: Child,
    log: std::path::PathBuf,
    what: &'static str,
}

fn running_helpers() -> std::sync::MutexGuard<'static, Vec<Child>> {
    static HELPERS: std::sync::Mutex<Vec<Child>> = std::sync::Mutex::new(Vec::new());
    HELPERS.lock().unwrap_or_else(|e| e.into_inner())
}

/// Reaps the helpers this process started that have exited since (a
/// mount daemon whose image was unmounted). Front ends that live long
/// call it now and then; every new helper's start calls it too.
pub fn reap_exited_helpers() {
    running_helpers().retain_mut(|c| !matches!(c.try_wait(), Ok(Some(_)) | Err(_)));
}

/// Starts `cmd` as a helper (see [`Starting`]); [`Starting::wait_ready`]
/// then waits for it, so the caller can do other work meanwhile.
pub(crate) fn spawn(mut cmd: Command, log: &Path, what: &'static str) -> Result<Starting> {
    reap_exited_helpers();
    if let Some(dir) = log.parent() {
        std::fs::create_dir_all(dir).ctx(|| format!("creating {}", dir.display()))?;
    }
    let log_file = std::fs::File::create(log).ctx(|| format!("creating {}", log.display()))?;
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log_file));
    // SAFETY: setsid is async-signal-safe and touches no memory of ours.
    unsafe {
        use std::os::unix::process::CommandExt;
        cmd.pre_exec(|| rustix::process::setsid().map(|_| ()).map_err(Into::into));
    }
    let child = cmd.spawn().map_err(|e| {
        EngineError::io(
            format!("starting {what} ({})", cmd.get_program().to_string_lossy()),
            e,
        )
    })?;
    Ok(Starting {
        child,
        log: log.to_path_buf(),
        what,
    })
}

/// What a helper writes on its ready pipe, before its error, when it
/// fails before it is ready.
pub(crate) const FAILED_PREFIX: &str = "failed: ";

impl Starting {
    /// Waits for "ready"; returns the helper's pid. If it exits first, the
    /// error is what it said on the pipe, or the end of its log.
    pub(crate) fn wait_ready(mut self) -> Result<u32> {
        let mut line = String::new();
        let mut said = String::new();
        if let Some(out) = self.child.stdout.take() {
            let mut out = BufReader::new(out);
            let _ = out.read_line(&mut line);
            // A helper that fails before it is ready says why on the same
            // pipe: its log may be gone with what it cleaned up.
            if let Some(first) = line.strip_prefix(FAILED_PREFIX) {
                said = first.to_string();
                let _ = out.read_to_string(&mut said);
            }
        }
        if line.trim() == "ready" {
            let pid = self.child.id();
            // A long-lived front end (the snapshotter, a shim) starts
            // helpers for as long as it runs: each is reaped once it exits
            // (by `reap_exited_helpers`), or it stays a zombie. No reaper
            // thread: `skiff run` must stay single-threaded to create
            // containers.
            running_helpers().push(self.child);
            return Ok(pid);
        }
        let status = self
            .child
            .wait()
            .ctx(|| format!("waiting for {}", self.what))?;
        if !said.trim().is_empty() {
            return Err(EngineError::Helper(said.trim_end().to_string()));
        }
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(5).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        Err(EngineError::Helper(format!(
            "{} exited ({status}) before it was ready:\n{}",
            self.what,
            tail.join("\n")
        )))
    }
}
