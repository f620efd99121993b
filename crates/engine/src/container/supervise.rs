//! The container from start to exit: the sandbox is created and started
//! by this process, which is the init's parent, waits for it, records its
//! exit and cleans up. A foreground `skiff run` is such a process itself;
//! a detached container gets a helper process (`supervise ID`).

use std::io::Write;
use std::os::fd::OwnedFd;

use oci_spec::runtime::Spec;
use skiff_sandbox::{Prepare, Sandbox};

use super::control::{Control, Phase, Supervisor};
use crate::console::{self, say};
use crate::error::{EngineError, IoContext, Result};
use crate::record::{self, Record, Status};
use crate::Engine;

/// What a supervisor does besides running the container.
#[derive(Default)]
pub struct SuperviseOptions {
    /// A detached supervisor's pipe to its starter: "ready" once the
    /// container runs (or, with `wait_for_start`, once it is created).
    pub ready: Option<std::fs::File>,
    /// Serve the control socket here (see [`super::control`]).
    pub control: Option<std::path::PathBuf>,
    /// Create the container, then wait for a `start` on the control socket.
    pub wait_for_start: bool,
    /// Keep the container's output in its log too (`skiff logs`), as a
    /// foreground `skiff run` does. A `Launch::Logged` always does.
    pub log: bool,
}

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
    /// Output to the container's log alone (a detached container): its
    /// stdout and stderr apart, or its pty under `tty`.
    Logged { tty: bool, stdin: Option<OwnedFd> },
}

impl Launch {
    /// This process's own streams, as `skiff run` and `skiff exec` give
    /// them: a pty relayed to stdout under `tty`, else pipes copied from
    /// stdin (if `interactive`) and to stdout and stderr.
    pub fn from_this_process(tty: bool, interactive: bool) -> Result<Launch> {
        let dup = |fd: rustix::fd::BorrowedFd<'_>| {
            rustix::io::dup(fd)
                .map_err(|e| EngineError::io("duplicating a standard stream", e.into()))
        };
        Ok(if tty {
            Launch::Terminal {
                interactive,
                output: dup(rustix::stdio::stdout())?.into(),
            }
        } else {
            Launch::Streams {
                stdin: interactive
                    .then(|| dup(rustix::stdio::stdin()))
                    .transpose()?,
                stdout: dup(rustix::stdio::stdout())?,
                stderr: dup(rustix::stdio::stderr())?,
            }
        })
    }

    /// The sandbox's streams, and the terminal's relay (interactive, where
    /// its output goes) under `Terminal`. `Logged` must have been given its
    /// log first ([`crate::container_log`]); here it would discard.
    pub(crate) fn into_stdio(
        self,
    ) -> Result<(skiff_sandbox::Stdio, Option<(bool, std::fs::File)>)> {
        Ok(match self {
            Launch::Logged { .. } => {
                return Err(EngineError::Invalid(
                    "a container's output was to go to a log it was not given".into(),
                ))
            }
            Launch::Streams {
                stdin,
                stdout,
                stderr,
            } => (
                skiff_sandbox::Stdio::Relay {
                    stdin,
                    stdout,
                    stderr,
                    tap: None,
                },
                None,
            ),
            Launch::Terminal {
                interactive,
                output,
            } => (skiff_sandbox::Stdio::Terminal, Some((interactive, output))),
        })
    }
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
        options: SuperviseOptions,
    ) -> Result<i32> {
        let SuperviseOptions {
            mut ready,
            control,
            wait_for_start,
            log,
        } = options;
        // A kind whose signals go through its supervisor always serves
        // the control socket, a foreground run's too.
        let control = control.or_else(|| {
            self.kind(&record.sandbox)
                .ok()
                .filter(|k| k.signals_through_supervisor())
                .map(|_| record::dir(&self.config.root, &record.id).join("control.sock"))
        });
        let control_path = control.clone();
        let _span = tracing::info_span!("container", id = record.short_id()).entered();
        let root = &self.config.root;
        let cdir = record::dir(root, &record.id);
        // Held until this process ends, however it ends (see orphans).
        let _lock = match super::orphans::SupervisorLock::hold(root, &record.id) {
            Ok(l) => l,
            Err(e) => {
                let cleanup = self.cleanup(&record, true).err();
                return Err(e.with_cleanup(cleanup));
            }
        };
        record.keeps_log = crate::container_log::keeps_log(&record, &launch);
        let location = crate::container_log::location(root, &record)
            .filter(|_| log || matches!(launch, Launch::Logged { .. }));
        let prepared = match location {
            Some((path, max)) => {
                crate::container_log::logged(launch, &path, max).map(|(l, log)| (l, Some(log)))
            }
            None => Ok((launch, None)),
        }
        .and_then(|(l, log)| Ok((l.into_stdio()?, log)));
        let ((mut stdio, terminal), log) = match prepared {
            Ok(x) => x,
            Err(e) => {
                let cleanup = self.cleanup(&record, true).err();
                return Err(e.with_cleanup(cleanup));
            }
        };
        if let (skiff_sandbox::Stdio::Relay { tap, .. }, Some(log)) = (&mut stdio, &log) {
            *tap = Some(log.clone());
        }
        // Still single-threaded here, as the namespace sandbox's clone needs.
        tracing::debug!("creating the container");
        let created = self.kind(&record.sandbox).and_then(|kind| {
            Ok(kind.prepare(Prepare {
                id: &record.id,
                spec,
                bundle: &cdir,
                stdio,
                lifecycle: skiff_sandbox::Lifecycle::Supervised,
                block_device: record.block_device.as_deref(),
                pod: None,
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
        let signal = sandbox.signal_handle();
        let (start_tx, start_rx) = std::sync::mpsc::channel();
        let control = match &control {
            Some(path) => {
                match Control::serve(path, signal.clone(), wait_for_start.then_some(start_tx)) {
                    Ok(c) => Some(c),
                    Err(e) => return Err(self.abandon(sandbox.as_mut(), &record, e)),
                }
            }
            None => None,
        };
        // Signals are forwarded from before the start: a Ctrl-C that came
        // between start and forwarding would kill skiff and orphan the
        // container. (The init ignores them until its command installs
        // handlers: a pid namespace's init gets no default actions.) The
        // terminal is attached before the start too, so that nothing that
        // can fail comes between the start and the wait.
        let started = (|| -> Result<(console::Forwarder, Option<console::Console>)> {
            let master = sandbox.take_console();
            let line = match (&terminal, &master) {
                (Some(_), Some(m)) => Some(console::TerminalLine::new(m)?),
                _ => None,
            };
            let forwarder = console::forward_signals(signal.clone(), line)?;
            let console = match (terminal, master) {
                (Some((interactive, output)), Some(master)) => {
                    Some(console::attach(master, interactive, output, log.clone())?)
                }
                _ => None,
            };
            if wait_for_start {
                record.save(root)?;
                if let Some(mut r) = ready.take() {
                    let _ = writeln!(r, "ready");
                }
                await_start(&start_rx, &record)?;
            }
            sandbox.start()?;
            Ok((forwarder, console))
        })();
        let (forwarder, console) = match started {
            Ok(f) => f,
            Err(e) => return Err(self.abandon(sandbox.as_mut(), &record, e)),
        };
        record.status = Status::Running;
        // The container runs; a record that cannot be written (a full disk)
        // must not make skiff leave it unsupervised.
        if let Err(e) = record.save(root) {
            tracing::warn!(id = %record.id, "recording the running container: {e}");
        }
        if let Some(c) = &control {
            c.set(Phase::Running);
        }
        tracing::info!(id = %record.id, pid, "container started");
        if let Some(mut r) = ready {
            let _ = writeln!(r, "ready");
        }

        let waited =
            self.keeping_block_device(record.block_device.as_deref(), &record.image_mount, || {
                sandbox.wait()
            });
        let exit = match waited {
            Ok(exit) => exit,
            Err(e) => return Err(self.abandon(sandbox.as_mut(), &record, e.into())),
        };
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
        if let Some(c) = &control {
            c.set(Phase::Exited(exit.code()));
        }
        if record.oom_killed {
            say(format_args!(
                "skiff: container {} was killed by the kernel's OOM killer: it exceeded its memory limit (raise --memory)",
                record.name
            ));
        }
        let _ = self.cleanup(&record, record.remove_on_exit);
        if let Some(path) = &control_path {
            let _ = std::fs::remove_file(path);
        }
        Ok(exit.code())
    }

    /// After `error`, kills what runs of the container, waits for it and
    /// removes it: a container the supervisor gives up on never runs on
    /// unsupervised. The error comes back, with any cleanup failure.
    fn abandon(
        &self,
        sandbox: &mut dyn Sandbox,
        record: &Record,
        error: EngineError,
    ) -> EngineError {
        let _ = sandbox.signal(libc::SIGKILL);
        let _ = sandbox.wait();
        sandbox.finish_output();
        let mut cleanup = sandbox.delete().err().map(EngineError::from);
        if let Err(e) = self.cleanup(record, true) {
            cleanup.get_or_insert(e);
        }
        error.with_cleanup(cleanup)
    }

    /// The `supervise ID` helper's work: supervises a created container,
    /// with its output in `ROOT/containers/ID/container.log` unless
    /// `streams` names files (a shim's FIFOs), serves its control socket
    /// (`ROOT/containers/ID/control.sock`), and tells its starter (on
    /// stdout) once the container runs, or with `wait_for_start` once it is
    /// created.
    pub fn run_supervisor(&self, id: &str, opts: &SupervisorOptions) -> Result<i32> {
        let root = &self.config.root;
        let record = Record::load(root, id)?;
        let cdir = record::dir(root, id);
        let spec = record::load_spec(root, id)?;
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
        let stdin: Option<OwnedFd> = match &opts.stdin {
            Some(p) => Some(open_stream(p, false)?.into()),
            None if opts.keep_stdin_open => {
                let (reader, writer) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
                    .map_err(|e| EngineError::io("making the container's stdin", e.into()))?;
                // Held open until this process ends.
                std::mem::forget(writer);
                Some(reader)
            }
            None => None,
        };
        // Streams a caller names (a shim's FIFOs) are the caller's to keep;
        // one it leaves out is discarded. Otherwise the output goes to the
        // container's log.
        let named = |p: &Option<std::path::PathBuf>| -> Result<OwnedFd> {
            match p {
                Some(p) => Ok(open_stream(p, true)?.into()),
                None => Ok(devnull
                    .try_clone()
                    .ctx(|| "duplicating /dev/null".into())?
                    .into()),
            }
        };
        let launch = match (&opts.stdout, &opts.stderr) {
            (None, None) => Launch::Logged {
                tty: opts.tty,
                stdin,
            },
            (out, _) if opts.tty => Launch::Terminal {
                interactive: false,
                output: named(out)?.into(),
            },
            (out, err) => Launch::Streams {
                stdin,
                stdout: named(out)?,
                stderr: named(err)?,
            },
        };
        let report = ready
            .try_clone()
            .ctx(|| "duplicating the starter's pipe".into())?;
        let result = self.supervise(
            record,
            &spec,
            launch,
            SuperviseOptions {
                ready: Some(ready),
                control: Some(cdir.join("control.sock")),
                wait_for_start: opts.wait_for_start,
                log: false,
            },
        );
        // The starter reads this only if the container never got ready
        // (after "ready" it has closed its end).
        if let Err(e) = &result {
            let _ = writeln!(&report, "{}{e}", crate::helper::FAILED_PREFIX);
        }
        result
    }

    /// Starts a supervisor helper for a created container, which becomes
    /// the init's parent: the container runs there, not in this process,
    /// so this works from any process, a multithreaded one (a tokio shim)
    /// included. Returns once the container runs, or with
    /// `wait_for_start` once it is created (then [`Supervisor::start`]).
    pub fn spawn_supervisor(
        &self,
        record: &Record,
        opts: &SupervisorOptions,
    ) -> Result<Supervisor> {
        let log = supervisor_log(&self.config.root, record);
        let mut cmd = self.helper_command();
        cmd.arg("supervise");
        if opts.tty {
            cmd.arg("--tty");
        }
        if opts.wait_for_start {
            cmd.arg("--wait-start");
        }
        if opts.keep_stdin_open {
            cmd.arg("--keep-stdin");
        }
        for (flag, path) in [
            ("--stdin", &opts.stdin),
            ("--stdout", &opts.stdout),
            ("--stderr", &opts.stderr),
        ] {
            if let Some(p) = path {
                cmd.arg(flag).arg(p);
            }
        }
        cmd.arg(&record.id);
        crate::helper::spawn(cmd, &log, "the container supervisor")?.wait_ready()?;
        Ok(self.supervisor(&record.id))
    }

    /// The control client of container `id`'s supervisor.
    pub fn supervisor(&self, id: &str) -> Supervisor {
        Supervisor::new(id, record::dir(&self.config.root, id).join("control.sock"))
    }

    /// Starts a supervisor helper for a created container and waits until
    /// the container runs (`skiff run -d`). With `interactive` (`-di`,
    /// `-dit`) its stdin stays open, as Docker keeps it: a shell waits for
    /// input rather than ending at once.
    pub fn start_detached(&self, record: &Record, tty: bool, interactive: bool) -> Result<()> {
        self.spawn_supervisor(
            record,
            &SupervisorOptions {
                tty,
                keep_stdin_open: interactive,
                ..Default::default()
            },
        )
        .map(drop)
    }
}

/// How a supervisor helper is started.
#[derive(Debug, Clone, Default)]
pub struct SupervisorOptions {
    /// A pty, relayed to stdout (or the log).
    pub tty: bool,
    /// Without `stdin`: give the container a stdin that stays open (a pipe
    /// nobody writes to) rather than /dev/null.
    pub keep_stdin_open: bool,
    /// Create, then wait for [`Supervisor::start`].
    pub wait_for_start: bool,
    /// Files (or FIFOs) for the container's streams; by default stdin is
    /// /dev/null and the output goes to the container's log.
    pub stdin: Option<std::path::PathBuf>,
    pub stdout: Option<std::path::PathBuf>,
    pub stderr: Option<std::path::PathBuf>,
}

/// Opens a stream a caller named: a FIFO read-write, so the open does not
/// wait for its other end; a file to append to, or to read.
fn open_stream(path: &std::path::Path, write: bool) -> Result<std::fs::File> {
    use std::os::unix::fs::FileTypeExt;
    let fifo = std::fs::metadata(path).is_ok_and(|m| m.file_type().is_fifo());
    let mut o = std::fs::OpenOptions::new();
    if fifo {
        o.read(true).write(true);
    } else if write {
        o.create(true).append(true);
    } else {
        o.read(true);
    }
    o.open(path).ctx(|| format!("opening {}", path.display()))
}

/// Waits for a `start` on the control socket; gives up if the container's
/// init is killed first (a created container stopped before it ran).
fn await_start(start: &std::sync::mpsc::Receiver<()>, record: &Record) -> Result<()> {
    use std::sync::mpsc::RecvTimeoutError;
    loop {
        match start.recv_timeout(std::time::Duration::from_millis(200)) {
            Ok(()) => return Ok(()),
            Err(RecvTimeoutError::Timeout) if record.running() => {}
            Err(_) => {
                return Err(EngineError::Conflict(format!(
                    "container {} was stopped before it was started",
                    record.name
                )))
            }
        }
    }
}

/// Where a container's supervisor logs (its own messages, not the
/// container's output).
pub(crate) fn supervisor_log(root: &std::path::Path, record: &Record) -> std::path::PathBuf {
    root.join("logs")
        .join(format!("container-{}.log", record.short_id()))
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use skiff_sandbox::{Exit, ImageFacts, SandboxError, SandboxKind, Stats};

    use super::*;
    use crate::EngineConfig;

    /// What the fake sandbox was asked to do, in order.
    type Log = Arc<Mutex<Vec<String>>>;

    #[derive(Clone, Copy)]
    enum FailAt {
        Nothing,
        Start,
        Wait,
    }

    struct FakeKind {
        log: Log,
        fail: FailAt,
    }

    struct FakeSandbox {
        log: Log,
        fail: FailAt,
        waited: bool,
    }

    impl SandboxKind for FakeKind {
        fn name(&self) -> &'static str {
            "fake"
        }
        fn can_handle(&self, _: &ImageFacts) -> bool {
            true
        }
        fn prepare(&self, _: Prepare<'_>) -> Result<Box<dyn Sandbox>, SandboxError> {
            self.log.lock().unwrap().push("prepare".into());
            Ok(Box::new(FakeSandbox {
                log: self.log.clone(),
                fail: self.fail,
                waited: false,
            }))
        }
        fn exec(
            &self,
            _: skiff_sandbox::Running<'_>,
            _: skiff_sandbox::ExecStart<'_>,
        ) -> Result<Box<dyn skiff_sandbox::ExecProcess>, SandboxError> {
            Err(SandboxError::Unsupported(
                "the fake kind runs no exec".into(),
            ))
        }
        fn remove_leftovers(&self, _: &str) -> Result<(), SandboxError> {
            self.log.lock().unwrap().push("remove leftovers".into());
            Ok(())
        }
        fn stats(&self, _: &str) -> Result<skiff_sandbox::Stats, SandboxError> {
            Ok(skiff_sandbox::Stats::default())
        }
    }

    impl Sandbox for FakeSandbox {
        fn pid(&self) -> i32 {
            // A process that exists, so the record's start time reads.
            std::process::id() as i32
        }
        fn take_console(&mut self) -> Option<OwnedFd> {
            None
        }
        fn start(&mut self) -> Result<(), SandboxError> {
            self.log.lock().unwrap().push("start".into());
            match self.fail {
                FailAt::Start => Err(SandboxError::Setup("the start failed".into())),
                _ => Ok(()),
            }
        }
        fn signal(&self, signal: i32) -> Result<(), SandboxError> {
            self.log.lock().unwrap().push(format!("signal {signal}"));
            Ok(())
        }
        fn signal_handle(&self) -> skiff_sandbox::SignalHandle {
            let log = self.log.clone();
            Arc::new(move |s| {
                log.lock().unwrap().push(format!("signal {s}"));
                Ok(())
            })
        }
        fn wait(&mut self) -> Result<Exit, SandboxError> {
            self.log.lock().unwrap().push("wait".into());
            match (self.fail, self.waited) {
                (FailAt::Wait, false) => {
                    self.waited = true;
                    Err(SandboxError::Setup("the wait failed".into()))
                }
                _ => Ok(Exit::Code(7)),
            }
        }
        fn finish_output(&mut self) {}
        fn oom_killed(&self) -> bool {
            false
        }
        fn stats(&self) -> Result<Stats, SandboxError> {
            Ok(Stats::default())
        }
        fn delete(&mut self) -> Result<(), SandboxError> {
            self.log.lock().unwrap().push("delete".into());
            Ok(())
        }
    }

    fn engine(root: &std::path::Path, log: &Log, fail: FailAt) -> Engine {
        Engine::with_kinds(
            EngineConfig {
                root: root.to_path_buf(),
                registry: Default::default(),
                helper: "/nonexistent".into(),
                cache_size: crate::DEFAULT_CACHE_SIZE,
                image_idle_timeout: None,
            },
            vec![Box::new(FakeKind {
                log: log.clone(),
                fail,
            })],
        )
        .unwrap()
    }

    fn record(remove_on_exit: bool) -> Record {
        Record {
            id: "f".repeat(64),
            name: "fake".into(),
            image: "img".into(),
            command: vec!["true".into()],
            created: 0,
            status: Status::Created,
            pid: None,
            pid_start: None,
            exit_code: None,
            oom_killed: false,
            finished: None,
            detached: false,
            remove_on_exit,
            cgroups_path: "/skiff/fake".into(),
            stop_signal: libc::SIGTERM,
            private_network: true,
            image_mount: "/nonexistent".into(),
            layer_size: None,
            log_max_file_bytes: None,
            keeps_log: true,
            sandbox: "fake".into(),
            block_device: None,
        }
    }

    fn streams() -> Launch {
        let null = || -> OwnedFd { std::fs::File::open("/dev/null").unwrap().into() };
        Launch::Streams {
            stdin: None,
            stdout: null(),
            stderr: null(),
        }
    }

    /// A start or a wait that fails leaves nothing running: the sandbox is
    /// killed, reaped and deleted, and the container removed.
    #[test]
    fn a_failure_after_prepare_never_leaves_the_container_running() {
        for (fail, failed_step) in [(FailAt::Start, "start"), (FailAt::Wait, "wait")] {
            let root = tempfile::tempdir().unwrap();
            let log = Log::default();
            let e = engine(root.path(), &log, fail);
            let r = record(false);
            r.save(root.path()).unwrap();
            let err = e
                .supervise(
                    r.clone(),
                    &Spec::default(),
                    streams(),
                    SuperviseOptions::default(),
                )
                .unwrap_err();
            assert!(
                err.to_string()
                    .contains(&format!("the {failed_step} failed")),
                "{err}"
            );
            let log = log.lock().unwrap().clone();
            let tail: Vec<&str> = log.iter().map(String::as_str).collect();
            let at = tail
                .iter()
                .position(|s| *s == "signal 9")
                .expect("never killed");
            assert!(tail[at..].contains(&"wait"), "not reaped: {tail:?}");
            assert!(tail[at..].contains(&"delete"), "not deleted: {tail:?}");
            assert!(
                !record::dir(root.path(), &r.id).exists(),
                "the container is still recorded"
            );
        }
    }

    #[test]
    fn an_exit_is_recorded_and_the_sandbox_cleaned_up() {
        let root = tempfile::tempdir().unwrap();
        let log = Log::default();
        let e = engine(root.path(), &log, FailAt::Nothing);
        let r = record(false);
        r.save(root.path()).unwrap();
        assert_eq!(
            e.supervise(
                r.clone(),
                &Spec::default(),
                streams(),
                SuperviseOptions::default()
            )
            .unwrap(),
            7
        );
        let saved = Record::load(root.path(), &r.id).unwrap();
        assert_eq!((saved.status, saved.exit_code), (Status::Exited, Some(7)));
        assert!(log
            .lock()
            .unwrap()
            .contains(&"remove leftovers".to_string()));
        let r = record(true);
        r.save(root.path()).unwrap();
        e.supervise(
            r.clone(),
            &Spec::default(),
            streams(),
            SuperviseOptions::default(),
        )
        .unwrap();
        assert!(!record::dir(root.path(), &r.id).exists(), "--rm kept it");
    }
}
