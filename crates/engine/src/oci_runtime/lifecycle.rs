//! `create`, `start`, `kill`, `delete` and `run`: the runtime spec's
//! lifecycle, in runc's model (see the module's docs).

use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use skiff_sandbox::hooks::{self, HookKind};
use skiff_sandbox::{Lifecycle, Prepare, SandboxKind, Stdio};

use super::{check_id, parse_spec, ContainerState, OciRuntime, Status};
use crate::error::{EngineError, IoContext, Result};

/// `create`'s options beyond the ID and the bundle.
#[derive(Debug, Default, Clone)]
pub struct CreateOptions {
    /// Where the init's pid is written (whole, atomically).
    pub pid_file: Option<PathBuf>,
    /// A unix socket that receives the pty master when the spec asks for
    /// a terminal (runc's `--console-socket`).
    pub console_socket: Option<PathBuf>,
    pub no_pivot: bool,
}

impl OciRuntime {
    /// `create --bundle B ID`: the container exists, its init waits with
    /// its process not started. The init is a child of this process, which
    /// may exit: the caller's subreaper inherits it.
    pub fn create(
        &self,
        kind: &dyn SandboxKind,
        id: &str,
        bundle: &Path,
        options: &CreateOptions,
    ) -> Result<ContainerState> {
        check_id(id)?;
        let bundle = std::fs::canonicalize(bundle).ctx(|| {
            format!(
                "the bundle {} (give --bundle a directory with config.json)",
                bundle.display()
            )
        })?;
        let config = bundle.join("config.json");
        let bytes = std::fs::read(&config).ctx(|| format!("reading {}", config.display()))?;
        let mut spec = parse_spec(&bytes, &config)?;
        skiff_sandbox::spec::add_runtime_device_rules(&mut spec)?;
        let dir = self.dir(id);
        match std::fs::create_dir(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                return Err(EngineError::Conflict(format!(
                    "container with ID {id} already exists"
                )))
            }
            Err(e) => return Err(EngineError::io(format!("creating {}", dir.display()), e)),
        }
        let made = self.create_in(kind, id, &bundle, &bytes, &spec, options);
        if made.is_err() {
            let _ = skiff_sandbox::rootfs::remove_dir_detaching_mounts(&dir);
        }
        made
    }

    fn create_in(
        &self,
        kind: &dyn SandboxKind,
        id: &str,
        bundle: &Path,
        config: &[u8],
        spec: &oci_spec::runtime::Spec,
        options: &CreateOptions,
    ) -> Result<ContainerState> {
        let dir = self.dir(id);
        crate::record::write_atomically(&dir.join("config.json"), config)?;
        let terminal = spec
            .process()
            .as_ref()
            .and_then(|p| p.terminal())
            .unwrap_or(false);
        // A supervised kind's supervisor connects to it itself: the socket
        // takes one connection.
        let console = if kind.runs_under_supervisor(spec) {
            None
        } else {
            connect_console(options.console_socket.as_deref(), terminal)?
        };
        let cgroups_path = spec
            .linux()
            .as_ref()
            .and_then(|l| l.cgroups_path().as_ref())
            .map(|p| p.to_string_lossy().into_owned());
        let Some(cgroups_path) = cgroups_path.filter(|p| !p.is_empty()) else {
            return Err(EngineError::Invalid(
                "the spec has no linux.cgroupsPath; skiff's runtime needs one (for example /skiff/ID)".into(),
            ));
        };
        if cgroups_path.contains(':') {
            return Err(EngineError::Invalid(format!(
                "linux.cgroupsPath {cgroups_path:?} is a systemd slice:prefix:name; skiff's runtime drives cgroupfs only (set SystemdCgroup = false, or --cgroup-manager cgroupfs)"
            )));
        }
        let fifo = self.fifo(id);
        rustix::fs::mkfifoat(
            rustix::fs::CWD,
            &fifo,
            rustix::fs::Mode::from_raw_mode(0o600),
        )
        .map_err(|e| EngineError::io(format!("creating {}", fifo.display()), e.into()))?;
        let start_fifo = rustix::fs::open(
            &fifo,
            rustix::fs::OFlags::PATH | rustix::fs::OFlags::CLOEXEC,
            rustix::fs::Mode::empty(),
        )
        .map_err(|e| EngineError::io(format!("opening {}", fifo.display()), e.into()))?;
        if kind.runs_under_supervisor(spec) {
            let pid =
                self.create_supervised(kind, id, bundle, options.console_socket.as_deref())?;
            return self.record_created(kind, id, bundle, spec, &cgroups_path, pid, options);
        }
        let stdio = own_stdio(terminal)?;
        let mut sandbox = kind.prepare(Prepare {
            id,
            spec,
            bundle,
            stdio,
            lifecycle: Lifecycle::Detached {
                start_fifo,
                no_pivot: options.no_pivot,
            },
            block_device: None,
            pod: None,
        })?;
        let pid = sandbox.pid();
        let abandon = |e: EngineError| {
            let _ = sandbox_kill(pid);
            let _ = kind.remove_leftovers(&cgroups_path);
            e
        };
        if let Some(sock) = &console {
            let Some(master) = sandbox.take_console() else {
                return Err(abandon(EngineError::Invalid(
                    "the container made no pty".into(),
                )));
            };
            if let Err(e) = send_console(sock, &master) {
                return Err(abandon(e));
            }
        }
        self.record_created(kind, id, bundle, spec, &cgroups_path, pid, options)
            .map_err(abandon)
    }

    /// Writes the state of a container just made, whose init is `pid`,
    /// and its pid file.
    #[allow(clippy::too_many_arguments)]
    fn record_created(
        &self,
        kind: &dyn SandboxKind,
        id: &str,
        bundle: &Path,
        spec: &oci_spec::runtime::Spec,
        cgroups_path: &str,
        pid: i32,
        options: &CreateOptions,
    ) -> Result<ContainerState> {
        let rootfs = spec
            .root()
            .as_ref()
            .map(|r| {
                if r.path().is_relative() {
                    bundle.join(r.path())
                } else {
                    r.path().clone()
                }
            })
            .unwrap_or_default();
        let state = ContainerState {
            id: id.into(),
            bundle: bundle.into(),
            rootfs,
            pid,
            pid_start: crate::record::process_start_time(pid),
            created: crate::record::rfc3339(SystemTime::now()),
            cgroups_path: cgroups_path.to_string(),
            sandbox: kind.name().into(),
            supervised: kind.runs_under_supervisor(spec),
            started: false,
        };
        self.save(&state)?;
        if let Some(pid_file) = &options.pid_file {
            crate::record::write_atomically(pid_file, pid.to_string().as_bytes())?;
        }
        Ok(state)
    }

    /// `start ID`: lets the created container's init run its process, then
    /// runs the `poststart` hooks (a failing one is logged, as the spec
    /// says).
    pub fn start(&self, id: &str) -> Result<()> {
        let mut state = self.load(id)?;
        match self.status(&state) {
            Status::Created => {}
            Status::Stopped => {
                return Err(EngineError::Conflict(format!(
                    "cannot start a container that has stopped ({id})"
                )))
            }
            _ => {
                return Err(EngineError::Conflict(format!(
                    "cannot start an already running container ({id})"
                )))
            }
        }
        let fifo = self.fifo(id);
        if state.supervised() {
            self.supervisor_client(id).start()?;
            let _ = std::fs::remove_file(&fifo);
            state.started = true;
            return self.save(&state);
        }
        // Non-blocking: an init that died must not hang `start`.
        let reader = rustix::fs::open(
            &fifo,
            rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::NONBLOCK | rustix::fs::OFlags::CLOEXEC,
            rustix::fs::Mode::empty(),
        )
        .map_err(|e| EngineError::io(format!("opening {}", fifo.display()), e.into()))?;
        loop {
            let mut fds = [rustix::event::PollFd::new(
                &reader,
                rustix::event::PollFlags::IN,
            )];
            let timeout = rustix::event::Timespec {
                tv_sec: 0,
                tv_nsec: 100_000_000,
            };
            match rustix::event::poll(&mut fds, Some(&timeout)) {
                Ok(0) | Err(rustix::io::Errno::INTR) => {
                    if !Self::alive(&state) {
                        return Err(EngineError::Sandbox(skiff_sandbox::SandboxError::Setup(
                            format!("the init of container {id} exited before it was started"),
                        )));
                    }
                }
                Ok(_) => {
                    let mut b = [0u8; 1];
                    match rustix::io::read(&reader, &mut b) {
                        Ok(1) => break,
                        Ok(_) if !Self::alive(&state) => {
                            return Err(EngineError::Sandbox(skiff_sandbox::SandboxError::Setup(
                                format!("the init of container {id} exited before it was started"),
                            )))
                        }
                        Ok(_) | Err(rustix::io::Errno::AGAIN) => {
                            std::thread::sleep(Duration::from_millis(2))
                        }
                        Err(e) => {
                            return Err(EngineError::io(
                                format!("reading {}", fifo.display()),
                                e.into(),
                            ))
                        }
                    }
                }
                Err(e) => return Err(EngineError::io("waiting on the start FIFO", e.into())),
            }
        }
        let _ = std::fs::remove_file(&fifo);
        state.started = true;
        self.save(&state)?;
        let spec = self.spec(id)?;
        let report = hooks::State::new(id, &spec, &state.bundle, "running", state.pid).to_json();
        if let Err(e) = hooks::run(HookKind::Poststart, &HookKind::Poststart.of(&spec), &report) {
            tracing::warn!(%id, "{e}");
        }
        Ok(())
    }

    /// `kill ID SIGNAL [--all]`: to the init, or to every process of the
    /// container.
    pub fn kill(&self, id: &str, signal: i32, all: bool) -> Result<()> {
        let state = self.load(id)?;
        if self.status(&state) == Status::Stopped {
            if all {
                // Whatever is left in its cgroup (runc does the same).
                for pid in skiff_sandbox::cgroups::procs(&state.cgroups_path).unwrap_or_default() {
                    let _ = skiff_sandbox::process::signal(pid, signal);
                }
                return Ok(());
            }
            return Err(EngineError::Conflict(format!("container {id} not running")));
        }
        // Its processes are in the guest; a signal to QEMU would end it.
        if state.supervised() {
            return self.supervisor_client(id).signal(signal);
        }
        if all {
            let paused = skiff_sandbox::cgroups::is_frozen(&state.cgroups_path);
            for pid in skiff_sandbox::cgroups::procs(&state.cgroups_path)? {
                let _ = skiff_sandbox::process::signal(pid, signal);
            }
            // A frozen process cannot act on a signal until thawed.
            if paused && signal == libc::SIGKILL {
                let _ = skiff_sandbox::cgroups::freeze(&state.cgroups_path, false);
            }
            return Ok(());
        }
        Ok(skiff_sandbox::process::signal(state.pid, signal)?)
    }

    /// `delete [--force] ID`: frees what a stopped container holds (its
    /// cgroup, its state), then runs the `poststop` hooks. With `force` a
    /// container that still runs is killed first, and one that does not
    /// exist is not an error (runc's behaviour, which Podman relies on).
    pub fn delete(&self, kinds: &[&dyn SandboxKind], id: &str, force: bool) -> Result<()> {
        let state = match self.load(id) {
            Ok(s) => s,
            Err(EngineError::NotFound(_) | EngineError::Invalid(_)) if force => {
                let _ = skiff_sandbox::rootfs::remove_dir_detaching_mounts(&self.dir(id));
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        let status = self.status(&state);
        if status != Status::Stopped && status != Status::Created && !force {
            return Err(EngineError::Conflict(format!(
                "cannot delete container {id} that is not stopped: {}; stop it, or use --force",
                status.as_str()
            )));
        }
        let kind = kinds
            .iter()
            .find(|k| k.name() == state.sandbox)
            .ok_or_else(|| {
                EngineError::Invalid(format!(
                    "container {id} runs in a {:?} sandbox, which this runtime does not know",
                    state.sandbox
                ))
            })?;
        if status != Status::Stopped {
            let _ = sandbox_kill(state.pid);
            if status == Status::Paused {
                let _ = skiff_sandbox::cgroups::freeze(&state.cgroups_path, false);
            }
        }
        kind.remove_leftovers(&state.cgroups_path)?;
        let spec = self.spec(id).ok();
        if let Some(spec) = &spec {
            self.remove_pod_leftovers(id, spec);
        }
        // A pod's sandbox holds its containers' roots bound in its share.
        skiff_sandbox::rootfs::remove_dir_detaching_mounts(&self.dir(id))
            .ctx(|| format!("removing {}", self.dir(id).display()))?;
        if let Some(spec) = spec {
            let report = hooks::State::new(id, &spec, &state.bundle, "stopped", 0).to_json();
            if let Err(e) = hooks::run(HookKind::Poststop, &HookKind::Poststop.of(&spec), &report) {
                tracing::warn!(%id, "{e}");
            }
        }
        Ok(())
    }

    /// The init, if this process is its parent (after `create` here, as in
    /// `run`): waits for it and returns its exit code, 128+N for a signal.
    pub fn wait_child(&self, id: &str) -> Result<i32> {
        let state = self.load(id)?;
        let exit = skiff_sandbox::process::wait(state.pid)?;
        Ok(exit.code())
    }
}

fn sandbox_kill(pid: i32) -> Result<()> {
    Ok(skiff_sandbox::process::signal(pid, libc::SIGKILL)?)
}

/// The console socket to hand a pty to: needed exactly when the process
/// has a terminal.
pub(super) fn connect_console(path: Option<&Path>, terminal: bool) -> Result<Option<OwnedFd>> {
    match (path, terminal) {
        (Some(path), true) => {
            let sock = std::os::unix::net::UnixStream::connect(path)
                .ctx(|| format!("connecting to the console socket {}", path.display()))?;
            Ok(Some(sock.into()))
        }
        (None, true) => Err(EngineError::Invalid(
            "the process has a terminal (process.terminal, or -t), so --console-socket is needed"
                .into(),
        )),
        (Some(_), false) => Err(EngineError::Invalid(
            "--console-socket was given but the process has no terminal (process.terminal)".into(),
        )),
        (None, false) => Ok(None),
    }
}

/// The container's streams: a new pty under a terminal, else this
/// process's own three (what conmon and the runc shim hand a runtime).
pub(super) fn own_stdio(terminal: bool) -> Result<Stdio> {
    if terminal {
        return Ok(Stdio::Terminal);
    }
    let dup = |fd: i32| -> Result<OwnedFd> {
        // SAFETY: 0, 1 and 2 are this process's own streams, kept open.
        let b = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
        b.try_clone_to_owned()
            .ctx(|| format!("duplicating stream {fd} for the container"))
    };
    Ok(Stdio::Files {
        stdin: dup(0)?,
        stdout: dup(1)?,
        stderr: dup(2)?,
    })
}

/// Hands the pty master to whoever listens on the console socket, as runc
/// does: one message whose data is the terminal's name, with the
/// descriptor attached.
pub(super) fn send_console(sock: &OwnedFd, master: &OwnedFd) -> Result<()> {
    use rustix::net::{SendAncillaryBuffer, SendAncillaryMessage, SendFlags};
    let fds = [master.as_fd()];
    let mut space = [std::mem::MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut ancillary = SendAncillaryBuffer::new(&mut space);
    ancillary.push(SendAncillaryMessage::ScmRights(&fds));
    rustix::net::sendmsg(
        sock,
        &[std::io::IoSlice::new(b"/dev/ptmx")],
        &mut ancillary,
        SendFlags::NOSIGNAL,
    )
    .map(drop)
    .map_err(|e| EngineError::io("sending the pty to the console socket", e.into()))
}
