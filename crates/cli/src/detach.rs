//! Starting a detached skiff process (a mount daemon, a container
//! supervisor) and waiting until it reports that it is ready.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};

/// Runs `cmd` in a new session, stdin from /dev/null and stderr to `log`,
/// and waits for it to print "ready" on stdout. Returns its pid; if it
/// exits first, the error quotes the end of its log.
pub fn start(mut cmd: Command, log: &Path, what: &str) -> Result<u32> {
    std::fs::create_dir_all(log.parent().expect("has a parent"))?;
    let log_file =
        std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log_file));
    // SAFETY: setsid is async-signal-safe and touches no memory of ours.
    unsafe {
        use std::os::unix::process::CommandExt;
        cmd.pre_exec(|| rustix::process::setsid().map(|_| ()).map_err(Into::into));
    }
    let mut child = cmd.spawn().with_context(|| format!("starting {what}"))?;
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("piped")).read_line(&mut line)?;
    if line.trim() == "ready" {
        return Ok(child.id());
    }
    let status = child.wait()?;
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let tail: Vec<&str> = text.lines().rev().take(5).collect();
    let tail: Vec<&str> = tail.into_iter().rev().collect();
    bail!(
        "{what} exited ({status}) before it was ready:\n{}",
        tail.join("\n")
    );
}
