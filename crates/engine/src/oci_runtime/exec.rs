//! `exec`: another process in a running container, from a process JSON
//! (`--process`, what containerd and conmon pass) or from arguments.

use std::path::PathBuf;

use oci_spec::runtime::Process;
use skiff_sandbox::{ExecStart, Running, SandboxKind};

use super::lifecycle::{connect_console, own_stdio, send_console};
use super::{OciRuntime, Status};
use crate::error::{EngineError, Result};

/// `exec`'s options.
#[derive(Debug, Default, Clone)]
pub struct ExecOptions {
    /// A runtime-spec `process` object, whole (`--process FILE`).
    pub process_json: Option<Vec<u8>>,
    /// Otherwise: the command, based on the container's own process.
    pub args: Vec<String>,
    pub env: Vec<String>,
    pub cwd: Option<String>,
    /// `UID[:GID]`.
    pub user: Option<String>,
    pub additional_gids: Vec<u32>,
    pub tty: bool,
    /// Capabilities added to the container's set (`--cap CAP_X`).
    pub caps: Vec<String>,
    pub no_new_privs: bool,
    pub detach: bool,
    pub pid_file: Option<PathBuf>,
    pub console_socket: Option<PathBuf>,
}

/// What an exec came to.
pub enum ExecOutcome {
    /// `--detach`: started; its pid.
    Started(i32),
    /// Waited for: its exit code (128+N for a signal).
    Exited(i32),
}

impl OciRuntime {
    /// Starts the process in container `id`; without `detach`, waits for
    /// it, forwarding this process's signals to it.
    pub fn exec(
        &self,
        kind: &dyn SandboxKind,
        id: &str,
        options: &ExecOptions,
    ) -> Result<ExecOutcome> {
        let state = self.load(id)?;
        match self.status(&state) {
            Status::Running => {}
            Status::Paused => {
                return Err(EngineError::Conflict(format!(
                    "container {id} is paused; resume it first"
                )))
            }
            s => {
                return Err(EngineError::Conflict(format!(
                    "cannot exec in a container that is {} ({id})",
                    s.as_str()
                )))
            }
        }
        let spec = self.spec(id)?;
        let process = exec_process(&spec, options)?;
        if state.supervised() {
            if !options.detach {
                return Err(EngineError::Invalid(format!(
                    "container {id} runs in a {} sandbox: exec it detached (-d), or with `skiff exec`",
                    state.sandbox
                )));
            }
            let pid =
                self.exec_supervised(kind, id, &process, options.console_socket.as_deref())?;
            if let Some(pid_file) = &options.pid_file {
                crate::record::write_atomically(pid_file, pid.to_string().as_bytes())?;
            }
            return Ok(ExecOutcome::Started(pid));
        }
        let terminal = process.terminal().unwrap_or(false);
        let console = connect_console(options.console_socket.as_deref(), terminal)?;
        let stdio = own_stdio(terminal)?;
        let mut proc = kind.exec(
            Running {
                pid: state.pid,
                spec: &spec,
                bundle: &state.bundle,
                pod: None,
            },
            ExecStart {
                process: &process,
                stdio,
                detached: options.detach,
            },
        )?;
        let pid = proc.pid();
        if let Some(sock) = &console {
            let master = proc
                .take_console()
                .ok_or_else(|| EngineError::Invalid("the process made no pty".into()))?;
            send_console(sock, &master)?;
        }
        if let Some(pid_file) = &options.pid_file {
            crate::record::write_atomically(pid_file, pid.to_string().as_bytes())?;
        }
        if options.detach {
            return Ok(ExecOutcome::Started(pid));
        }
        let forwarder = crate::console::forward_signals(proc.signal_handle(), None);
        let exit = proc.wait();
        drop(forwarder);
        Ok(ExecOutcome::Exited(exit?.code()))
    }
}

/// The process to start: the given JSON whole, or the container's own
/// process with the arguments and overrides.
fn exec_process(spec: &oci_spec::runtime::Spec, o: &ExecOptions) -> Result<Process> {
    if let Some(json) = &o.process_json {
        let de = &mut serde_json::Deserializer::from_slice(json);
        let p: Process = serde_path_to_error::deserialize(de).map_err(|e| {
            EngineError::Invalid(format!(
                "the process JSON (--process): field {}: {}",
                e.path(),
                e.inner()
            ))
        })?;
        if p.args().as_ref().is_none_or(|a| a.is_empty()) {
            return Err(EngineError::Invalid(
                "the process JSON (--process) has no args".into(),
            ));
        }
        return Ok(p);
    }
    if o.args.is_empty() {
        return Err(EngineError::Invalid(
            "exec needs a command (arguments after the ID) or --process FILE".into(),
        ));
    }
    let mut p = spec.process().clone().unwrap_or_default();
    p.set_args(Some(o.args.clone()));
    p.set_terminal(Some(o.tty));
    p.set_console_size(None);
    if !o.env.is_empty() {
        let mut env = p.env().clone().unwrap_or_default();
        for e in &o.env {
            let key = e.split('=').next().unwrap_or_default();
            env.retain(|old| old.split('=').next() != Some(key));
            env.push(e.clone());
        }
        p.set_env(Some(env));
    }
    if let Some(cwd) = &o.cwd {
        p.set_cwd(cwd.into());
    }
    if let Some(user) = &o.user {
        let (uid, gid) = match user.split_once(':') {
            Some((u, g)) => (u, Some(g)),
            None => (user.as_str(), None),
        };
        let num = |s: &str| -> Result<u32> {
            s.parse().map_err(|_| {
                EngineError::Invalid(format!(
                    "--user {user:?}: give numeric UID[:GID] (the runtime does not read the image's passwd)"
                ))
            })
        };
        let mut u = p.user().clone();
        u.set_uid(num(uid)?);
        if let Some(g) = gid {
            u.set_gid(num(g)?);
        }
        p.set_user(u);
    }
    if !o.additional_gids.is_empty() {
        let mut u = p.user().clone();
        u.set_additional_gids(Some(o.additional_gids.clone()));
        p.set_user(u);
    }
    if !o.caps.is_empty() {
        let mut caps = p.capabilities().clone().unwrap_or_default();
        let extra: Vec<oci_spec::runtime::Capability> = o
            .caps
            .iter()
            .map(|c| {
                c.parse().map_err(|_| {
                    EngineError::Invalid(format!("--cap {c:?} is not a capability (CAP_...)"))
                })
            })
            .collect::<Result<_>>()?;
        let add = |set: &Option<oci_spec::runtime::Capabilities>| {
            let mut s = set.clone().unwrap_or_default();
            s.extend(extra.iter().copied());
            Some(s)
        };
        caps.set_bounding(add(caps.bounding()));
        caps.set_effective(add(caps.effective()));
        caps.set_permitted(add(caps.permitted()));
        p.set_capabilities(Some(caps));
    }
    if o.no_new_privs {
        p.set_no_new_privileges(Some(true));
    }
    Ok(p)
}
