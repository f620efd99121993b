//! Running another process in a running container (`skiff exec`): in all
//! its namespaces and its cgroup, with its capabilities, seccomp policy and
//! limits, as the user asked or the container's.

use std::path::PathBuf;

use oci_spec::runtime::Spec;
use skiff_sandbox::{ExecStart, Running};

use super::supervise::Launch;
use crate::console;
use crate::error::{EngineError, Result};
use crate::record;
use crate::Engine;

/// A process to start in a container, as `skiff exec` takes it.
#[derive(Debug, Clone, Default)]
pub struct ExecRequest {
    /// The command and its arguments.
    pub command: Vec<String>,
    /// `NAME=VALUE` added to the container's environment.
    pub env: Vec<String>,
    /// The working directory (default: the container's).
    pub workdir: Option<String>,
    /// `USER[:GROUP]` (default: the container's user).
    pub user: Option<String>,
    pub tty: bool,
}

impl Engine {
    /// Runs `req` in the running container `key` (name, ID or prefix) with
    /// these streams, and waits for it; its exit code. This process must be
    /// single-threaded (the namespace kind forks from it).
    pub fn exec(&self, key: &str, req: &ExecRequest, launch: Launch) -> Result<i32> {
        let root = &self.config.root;
        let record = self.find(key)?;
        let Some(pid) = record.pid.filter(|_| record.running()) else {
            return Err(EngineError::Conflict(format!(
                "container {} is not running; start a new one with `skiff run`",
                record.name
            )));
        };
        if req.command.is_empty() {
            return Err(EngineError::Invalid(
                "give a command to run in the container".into(),
            ));
        }
        let cdir = record::dir(root, &record.id);
        let spec = record::load_spec(root, &record.id)?;
        let kind = self.kind(&record.sandbox)?;
        // Names are the container's own: its files, seen through its root;
        // a guest's root is not the host's to look into, so the image's.
        let users_root = match kind.root() {
            skiff_sandbox::RootKind::Directory => PathBuf::from(format!("/proc/{pid}/root")),
            skiff_sandbox::RootKind::BlockDevice => record.image_mount.clone(),
        };
        let process = exec_process(&spec, req, &users_root)?;
        let (stdio, terminal) = launch.into_stdio()?;
        let mut proc = kind.exec(
            Running {
                pid,
                spec: &spec,
                bundle: &cdir,
                pod: None,
            },
            ExecStart {
                process: &process,
                stdio,
                detached: false,
            },
        )?;
        let signal = proc.signal_handle();
        let master = proc.take_console();
        let line = match (&terminal, &master) {
            (Some(_), Some(m)) => console::TerminalLine::new(m).ok(),
            _ => None,
        };
        let forwarder = console::forward_signals(signal.clone(), line);
        let console = match (terminal, master) {
            (Some((interactive, output)), Some(master)) => {
                console::attach(master, interactive, output, None).ok()
            }
            _ => None,
        };
        let exit = proc.wait();
        proc.finish_output();
        if let Some(c) = console {
            c.finish();
        }
        drop(forwarder);
        Ok(exit?.code())
    }
}

/// The spec's `process` for the exec: the container's, with the request's
/// command, environment, directory, user and terminal.
fn exec_process(
    spec: &Spec,
    req: &ExecRequest,
    users_root: &std::path::Path,
) -> Result<oci_spec::runtime::Process> {
    let mut process = spec
        .process()
        .clone()
        .ok_or_else(|| EngineError::Invalid("the container's spec has no process".into()))?;
    process.set_args(Some(req.command.clone()));
    let mut env = process.env().clone().unwrap_or_default();
    for e in &req.env {
        let Some((k, _)) = e.split_once('=').filter(|(k, _)| !k.is_empty()) else {
            return Err(EngineError::Invalid(format!("-e {e:?}: give NAME=VALUE")));
        };
        env.retain(|x| !x.starts_with(&format!("{k}=")));
        env.push(e.clone());
    }
    if req.tty && !env.iter().any(|e| e.starts_with("TERM=")) {
        env.push("TERM=xterm".into());
    }
    process.set_env(Some(env));
    if let Some(w) = &req.workdir {
        if !w.starts_with('/') {
            return Err(EngineError::Invalid(format!(
                "-w {w:?}: the working directory must be an absolute path"
            )));
        }
        process.set_cwd(PathBuf::from(w));
    }
    if let Some(u) = &req.user {
        let resolved = skiff_sandbox::user::resolve(users_root, u)?;
        let mut user = process.user().clone();
        user.set_uid(resolved.user.uid);
        user.set_gid(resolved.user.gid);
        user.set_additional_gids(Some(resolved.user.additional_gids));
        process.set_user(user);
    }
    process.set_terminal(Some(req.tty));
    Ok(process)
}
