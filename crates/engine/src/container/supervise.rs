//! The container from start to exit: the sandbox is created and started
//! by this process, which is the init's parent, waits for it, records its
//! exit and cleans up. A foreground `skiff run` is such a process itself;
//! a detached container gets a helper process (`supervise ID`).

use std::io::Write;
use std::os::fd::OwnedFd;

use oci_spec::runtime::Spec;
use skiff_sandbox::Prepare;

use crate::console::{self, say};
use crate::error::{EngineError, IoContext, Result};
use crate::record::{self, Record, Status};
use crate::Engine;

/// How the supervisor wires the container's streams.
pub enum Launch {
    /// Copied through pipes to and from these (stdin: `None` reads
    /// /dev/null); the container never gets them.
    Streams {
        stdin: Option<OwnedFd>,
        stdout: OwnedFd,
        stderr: OwnedFd,
    },
    /// A pty, relayed to `output` (and from our stdin if interactive).
    Terminal {
        interactive: bool,
        output: std::fs::File,
    },
}

impl Engine {
    /// Creates and starts the container, waits for it and cleans up; the
    /// container's exit code. This process must be single-threaded (the
    /// sandbox clones the init from it). `ready` (a detached supervisor's
    /// pipe to its starter) gets "ready" once the container runs.
    pub fn supervise(
        &self,
        mut record: Record,
        spec: &Spec,
        launch: Launch,
        ready: Option<std::fs::File>,
    ) -> Result<i32> {
        let _span = tracing::info_span!("container", id = record.short_id()).entered();
        let root = &self.config.root;
        let cdir = record::dir(root, &record.id);
        let (stdio, terminal) = match launch {
            Launch::Streams {
                stdin,
                stdout,
                stderr,
            } => (
                skiff_sandbox::Stdio::Relay {
                    stdin,
                    stdout,
                    stderr,
                },
                None,
            ),
            Launch::Terminal {
                interactive,
                output,
            } => (skiff_sandbox::Stdio::Terminal, Some((interactive, output))),
        };
        // Still single-threaded here, as the namespace sandbox's clone needs.
        tracing::debug!("creating the container");
        let created = self.kind(&record.sandbox).and_then(|kind| {
            Ok(kind.prepare(Prepare {
                spec,
                bundle: &cdir,
                stdio,
            })?)
        });
        let mut sandbox = match created {
            Ok(s) => s,
            Err(e) => {
                let cleanup = self.cleanup(&record, true).err();
                return Err(e.with_cleanup(cleanup));
            }
        };
        let pid = sandbox.pid();
        record.pid = Some(pid);
        record.pid_start = record::process_start_time(pid);
        // Signals are forwarded from before the start: a Ctrl-C that came
        // between start and forwarding would kill skiff and orphan the
        // container. (The init ignores them until its command installs
        // handlers: a pid namespace's init gets no default actions.)
        let started = (|| -> Result<console::Forwarder> {
            let forwarder = console::forward_signals(pid, terminal.is_some())?;
            sandbox.start()?;
            Ok(forwarder)
        })();
        let forwarder = match started {
            Ok(f) => f,
            Err(e) => {
                let _ = skiff_sandbox::process::signal(pid, libc::SIGKILL);
                let _ = skiff_sandbox::process::wait(pid);
                let cleanup = self.cleanup(&record, true).err();
                return Err(e.with_cleanup(cleanup));
            }
        };
        record.status = Status::Running;
        // The container runs; a record that cannot be written (a full disk)
        // must not make skiff leave it unsupervised.
        if let Err(e) = record.save(root) {
            tracing::warn!(id = %record.id, "recording the running container: {e}");
        }
        tracing::info!(id = %record.id, pid, "container started");
        if let Some(mut r) = ready {
            let _ = writeln!(r, "ready");
        }

        let console = match (terminal, sandbox.take_console()) {
            (Some((interactive, output)), Some(master)) => {
                Some(console::attach(master, interactive, output)?)
            }
            _ => None,
        };
        let exit = sandbox.wait()?;
        tracing::debug!(?exit, "container exited");
        sandbox.finish_output();
        if let Some(c) = console {
            c.finish();
        }
        drop(forwarder);

        record.oom_killed = sandbox.oom_killed();
        record.status = Status::Exited;
        record.exit_code = Some(exit.code());
        record.finished = Some(record::now());
        record.pid = None;
        if !record.remove_on_exit {
            let _ = record.save(root);
        }
        if record.oom_killed {
            say(format_args!(
                "skiff: container {} was killed by the kernel's OOM killer: it exceeded its memory limit (raise --memory)",
                record.name
            ));
        }
        let _ = self.cleanup(&record, record.remove_on_exit);
        Ok(exit.code())
    }

    /// The `supervise ID` helper's work: supervises a created container
    /// with its output in `ROOT/containers/ID/container.log`, and tells its
    /// starter (on stdout) once the container runs.
    pub fn run_supervisor(&self, id: &str, tty: bool) -> Result<i32> {
        let root = &self.config.root;
        let record = Record::load(root, id)?;
        let config = record::dir(root, id).join("config.json");
        let spec = Spec::load(&config).map_err(|e| {
            EngineError::Invalid(format!(
                "reading the container's spec {}: {e}",
                config.display()
            ))
        })?;
        let log_path = record::log_path(root, id);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .ctx(|| format!("opening {}", log_path.display()))?;
        // Readiness goes to the starter's pipe; nothing else may: the pipe
        // must close when the starter stops reading.
        let ready: std::fs::File = rustix::io::dup(rustix::stdio::stdout())
            .map_err(|e| EngineError::io("duplicating stdout", e.into()))?
            .into();
        let devnull = std::fs::File::options()
            .write(true)
            .open("/dev/null")
            .ctx(|| "opening /dev/null".into())?;
        rustix::stdio::dup2_stdout(&devnull)
            .map_err(|e| EngineError::io("redirecting stdout", e.into()))?;
        let launch = if tty {
            Launch::Terminal {
                interactive: false,
                output: log,
            }
        } else {
            // One open file for both: the container gets one pipe, and the
            // log keeps the order of everything it wrote.
            Launch::Streams {
                stdin: None,
                stdout: log.try_clone().ctx(|| "duplicating the log".into())?.into(),
                stderr: log.into(),
            }
        };
        self.supervise(record, &spec, launch, Some(ready))
    }

    /// Starts a supervisor helper for a created container and waits until
    /// the container runs.
    pub fn start_detached(&self, record: &Record, tty: bool) -> Result<()> {
        let log = self
            .config
            .root
            .join("logs")
            .join(format!("container-{}.log", record.short_id()));
        let mut cmd = self.helper_command();
        cmd.arg("supervise")
            .args(tty.then_some("--tty"))
            .arg(&record.id);
        crate::helper::spawn(cmd, &log, "the container supervisor")?.wait_ready()?;
        Ok(())
    }
}
