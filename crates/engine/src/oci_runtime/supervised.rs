//! Containers of a kind that runs under a supervisor of its own (the VM:
//! its process is in the guest, reached through the agent channel, which
//! one host process must hold). runc's model still holds for the caller:
//! `create` returns with the container made and not started, and the
//! "init" it reports is that supervisor, which exits with the container's
//! exit code; `start`, `kill` and `exec` go through the supervisor's
//! control and exec sockets in `ROOT/ID/`. A detached exec is a relay
//! process of the same kind, whose exit is the exec's.
//!
//! Both are this same binary, run with [`SUPERVISOR_ARG`]: every front end
//! that creates containers through [`OciRuntime`] (the `skiff-oci` runtime
//! command, the shim's helper) hands that argument to
//! [`supervisor_main`] before anything else.

use std::ffi::OsString;
use std::io::{BufRead, BufReader, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio as ProcessStdio};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use skiff_sandbox::{ExecStart, Lifecycle, Prepare, Running, SandboxKind};

use super::lifecycle::{connect_console, own_stdio, send_console};
use super::{parse_spec, OciRuntime};
use crate::container::control::{Control, Phase, Supervisor};
use crate::error::{EngineError, Result};

/// The first argument that makes a front end's binary a supervisor or an
/// exec relay.
pub const SUPERVISOR_ARG: &str = "--skiff-oci-supervisor";

/// The descriptor a supervisor or relay reports on: "ready", or
/// "failed: WHY".
const REPORT_FD: i32 = 3;

/// How long a supervisor may take to be ready: a TCG guest boots in
/// seconds, and the boot timeout is the VM kind's own.
const READY_LIMIT: Duration = Duration::from_secs(180);

#[derive(Debug, Serialize, Deserialize)]
enum Job {
    /// Holds container `id`'s sandbox from create to its exit (its state
    /// is written once this is ready).
    Supervise {
        bundle: PathBuf,
        console_socket: Option<PathBuf>,
    },
    /// Runs one exec in it and waits for it.
    Exec {
        process_json: Vec<u8>,
        console_socket: Option<PathBuf>,
    },
}

#[derive(Debug, Serialize, Deserialize)]
struct Request {
    root: PathBuf,
    kind: String,
    id: String,
    job: Job,
}

impl OciRuntime {
    /// The supervisor's control socket.
    fn control_socket(&self, id: &str) -> PathBuf {
        self.dir(id).join("control.sock")
    }

    pub(super) fn supervisor_client(&self, id: &str) -> Supervisor {
        Supervisor::new(id, self.control_socket(id))
    }

    /// `create` for a kind that runs under a supervisor: starts it, with
    /// this process's streams, and waits until the sandbox is made. Its
    /// pid is the container's.
    pub(super) fn create_supervised(
        &self,
        kind: &dyn SandboxKind,
        id: &str,
        bundle: &Path,
        console_socket: Option<&Path>,
    ) -> Result<i32> {
        let job = Job::Supervise {
            bundle: bundle.to_path_buf(),
            console_socket: console_socket.map(Path::to_path_buf),
        };
        self.spawn_helper(kind, id, job)
    }

    /// A detached exec for such a kind: a relay process whose exit is the
    /// exec's; its pid.
    pub(super) fn exec_supervised(
        &self,
        kind: &dyn SandboxKind,
        id: &str,
        process: &oci_spec::runtime::Process,
        console_socket: Option<&Path>,
    ) -> Result<i32> {
        let process_json =
            serde_json::to_vec(process).map_err(|e| EngineError::Invalid(e.to_string()))?;
        let job = Job::Exec {
            process_json,
            console_socket: console_socket.map(Path::to_path_buf),
        };
        self.spawn_helper(kind, id, job)
    }

    fn spawn_helper(&self, kind: &dyn SandboxKind, id: &str, job: Job) -> Result<i32> {
        let request = Request {
            root: self.root.clone(),
            kind: kind.name().into(),
            id: id.into(),
            job,
        };
        let text =
            serde_json::to_string(&request).map_err(|e| EngineError::Invalid(e.to_string()))?;
        let (report_r, report_w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
            .map_err(|e| EngineError::io("making the supervisor's report pipe", e.into()))?;
        let mut cmd = Command::new("/proc/self/exe");
        cmd.arg(SUPERVISOR_ARG).arg(text);
        let raw = report_w.as_raw_fd();
        // SAFETY: dup2 is async-signal-safe and touches no memory of ours;
        // the supervisor gets its report pipe as fd 3 and its own session.
        unsafe {
            use std::os::unix::process::CommandExt;
            cmd.pre_exec(move || {
                if libc::dup2(raw, REPORT_FD) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                libc::setsid();
                Ok(())
            });
        }
        let mut child = cmd
            .stdin(ProcessStdio::inherit())
            .spawn()
            .map_err(|e| EngineError::io("starting the container's supervisor", e))?;
        drop(report_w);
        let pid = child.id() as i32;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(std::fs::File::from(report_r)).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx.recv_timeout(READY_LIMIT).unwrap_or_default();
        let line = line.trim_end();
        if line == "ready" {
            // Not waited for: it outlives this process, and the caller's
            // subreaper (a shim, conmon) reaps it.
            return Ok(pid);
        }
        let _ = child.kill();
        let _ = child.wait();
        Err(match line.strip_prefix("failed: ") {
            Some(why) => EngineError::Helper(why.to_string()),
            None => EngineError::Helper(
                format!(
                    "the container's supervisor ended before it was ready{}",
                    if line.is_empty() { "" } else { ": " }
                ) + line,
            ),
        })
    }
}

/// The supervisor's or relay's whole life, for a front end's `main` when
/// its first argument is [`SUPERVISOR_ARG`]; the process's exit status.
pub fn supervisor_main(args: &[OsString]) -> i32 {
    // SAFETY: fd 3 was given by the spawner for this; owned from here.
    let report: OwnedFd = unsafe { std::os::fd::FromRawFd::from_raw_fd(REPORT_FD) };
    let mut report = Some(std::fs::File::from(report));
    let request = args
        .first()
        .and_then(|a| a.to_str())
        .ok_or_else(|| EngineError::Invalid(format!("{SUPERVISOR_ARG} needs its request")))
        .and_then(|t| {
            serde_json::from_str::<Request>(t)
                .map_err(|e| EngineError::Invalid(format!("{SUPERVISOR_ARG}: {e}")))
        });
    let result = request.and_then(|r| run(&r, &mut report));
    match result {
        Ok(code) => code,
        Err(e) => {
            match report.take() {
                Some(mut r) => {
                    let _ = writeln!(r, "failed: {e}");
                }
                // After "ready" the caller has gone: the container's own
                // stderr is where its user looks.
                None => {
                    tracing::error!("{e}");
                    eprintln!("skiff: {e}");
                }
            }
            125
        }
    }
}

fn ready(report: &mut Option<std::fs::File>) {
    if let Some(mut r) = report.take() {
        let _ = writeln!(r, "ready");
    }
}

fn run(request: &Request, report: &mut Option<std::fs::File>) -> Result<i32> {
    let runtime = OciRuntime::new(&request.root)?;
    let kind = runtime.sandbox_kind(&request.kind)?;
    let id = &request.id;
    let dir = runtime.dir(id);
    let path = dir.join("config.json");
    let mut spec = parse_spec(
        &std::fs::read(&path)
            .map_err(|e| EngineError::io(format!("reading {}", path.display()), e))?,
        &path,
    )?;
    match &request.job {
        Job::Supervise {
            bundle,
            console_socket,
        } => {
            // The sandbox's files go in the state directory, so its root
            // is named whole.
            if let Some(mut root) = spec.root().clone() {
                if root.path().is_relative() {
                    root.set_path(bundle.join(root.path()));
                }
                spec.set_root(Some(root));
            }
            let terminal = spec
                .process()
                .as_ref()
                .and_then(|p| p.terminal())
                .unwrap_or(false);
            let console = connect_console(console_socket.as_deref(), terminal)?;
            let place = runtime.pod_place(id, &spec)?;
            if let Some(p) = &place {
                p.make_share()?;
            }
            let mut sandbox = kind.prepare(Prepare {
                id,
                spec: &spec,
                bundle: &dir,
                stdio: own_stdio(terminal)?,
                lifecycle: Lifecycle::Supervised,
                block_device: None,
                pod: place.as_ref().map(|p| p.role()),
            })?;
            if let Some(sock) = &console {
                let master = sandbox
                    .take_console()
                    .ok_or_else(|| EngineError::Invalid("the container made no pty".into()))?;
                send_console(sock, &master)?;
            }
            // A signal before the start ends the container, as it ends a
            // runc init that waits on its FIFO.
            let early = Arc::new(AtomicI32::new(0));
            let inner = sandbox.signal_handle();
            let seen = early.clone();
            let signal: skiff_sandbox::SignalHandle = Arc::new(move |sig| {
                seen.store(sig, Ordering::SeqCst);
                inner(sig)
            });
            let (start_tx, start_rx) = std::sync::mpsc::channel();
            let control = Control::serve(&runtime.control_socket(id), signal, Some(start_tx))?;
            ready(report);
            loop {
                match start_rx.recv_timeout(Duration::from_millis(100)) {
                    Ok(()) => break,
                    Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                        let sig = early.load(Ordering::SeqCst);
                        if sig != 0 {
                            let _ = sandbox.signal(libc::SIGKILL);
                            let _ = sandbox.wait();
                            let _ = sandbox.delete();
                            control.set(Phase::Exited(128 + sig));
                            return Ok(128 + sig);
                        }
                    }
                    Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
                }
            }
            sandbox.start()?;
            control.set(Phase::Running);
            let exit = sandbox.wait();
            sandbox.finish_output();
            let code = match exit {
                Ok(e) => e.code(),
                Err(e) => {
                    tracing::error!(%id, "{e}");
                    125
                }
            };
            control.set(Phase::Exited(code));
            let _ = sandbox.delete();
            let _ = std::fs::remove_file(runtime.control_socket(id));
            Ok(code)
        }
        Job::Exec {
            process_json,
            console_socket,
        } => {
            let state = runtime.load(id)?;
            let process: oci_spec::runtime::Process = serde_json::from_slice(process_json)
                .map_err(|e| EngineError::Invalid(format!("the exec's process: {e}")))?;
            let terminal = process.terminal().unwrap_or(false);
            let console = connect_console(console_socket.as_deref(), terminal)?;
            let place = runtime.pod_place(id, &spec)?;
            let mut proc = kind.exec(
                Running {
                    pid: state.pid,
                    spec: &spec,
                    bundle: &dir,
                    pod: place.as_ref().map(|p| p.role()),
                },
                ExecStart {
                    process: &process,
                    stdio: own_stdio(terminal)?,
                    detached: false,
                },
            )?;
            if let Some(sock) = &console {
                let master = proc
                    .take_console()
                    .ok_or_else(|| EngineError::Invalid("the process made no pty".into()))?;
                send_console(sock, &master)?;
            }
            ready(report);
            let forwarder = crate::console::forward_signals(proc.signal_handle(), None);
            let exit = proc.wait();
            proc.finish_output();
            drop(forwarder);
            Ok(exit?.code())
        }
    }
}
