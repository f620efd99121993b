//! The VM sandbox kind: each container in a guest of its own under QEMU,
//! its root the image's block device, its process started and relayed by
//! the agent over virtio-serial (docs/agent.md).

use std::fs::File;

use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use oci_spec::runtime::{LinuxNamespaceType, Spec};
use skiff_agent_protocol::{self as proto, Kind, FIRST_PROCESS};
use skiff_sandbox::seccomp_filter::CompiledFilter;
use skiff_sandbox::{
    ExecProcess, ExecStart, Exit, ImageFacts, Lifecycle, PodRole, Prepare, RootKind, Running,
    Sandbox, SandboxError, SandboxKind, SignalHandle, Stats,
};

use crate::hypervisor::{GuestRoot, Hypervisor, Qemu, Share, VmSpec};
use crate::streams::{read_guest, wire, Event, GuestStdio, Routes, SocketPath, Streams};
use crate::GuestAssets;

/// A guest without `--memory`.
pub const DEFAULT_MEMORY_MIB: u32 = 256;
/// What a guest gets beyond its container's `--memory`: its kernel (about
/// 46 MiB of a 128 MiB guest is gone before init), the initramfs, the
/// agent and the page cache of the root. The container's cgroup in the
/// guest holds it to `--memory` itself.
pub const GUEST_OVERHEAD_MIB: u32 = 128;
/// How long a guest may take to boot to its agent, unless
/// `SKIFF_VM_BOOT_TIMEOUT` (seconds) says otherwise: TCG boots in seconds,
/// a loaded host in more.
pub const DEFAULT_BOOT_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the agent may take to answer a start.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a guest may take to power off once its process has exited.
const POWER_OFF_TIMEOUT: Duration = Duration::from_secs(10);

/// The VM sandbox kind (`--sandbox vm`).
pub struct VmKind {
    /// Where the guest's kernel and agent are found ([`GuestAssets::find`]).
    assets_cache: PathBuf,
    /// Where the initramfs builds are kept.
    initramfs_cache: PathBuf,
    /// Compiled seccomp filters, shared with the namespace kind.
    filter_cache: PathBuf,
}

impl VmKind {
    pub fn new(assets_cache: &Path, initramfs_cache: &Path, filter_cache: &Path) -> Self {
        VmKind {
            assets_cache: assets_cache.to_path_buf(),
            initramfs_cache: initramfs_cache.to_path_buf(),
            filter_cache: filter_cache.to_path_buf(),
        }
    }
}

impl SandboxKind for VmKind {
    fn name(&self) -> &'static str {
        "vm"
    }

    fn can_handle(&self, image: &ImageFacts) -> bool {
        (image.os.is_empty() || image.os == "linux") && !image.asks_for_wasm()
    }

    fn root(&self) -> RootKind {
        RootKind::BlockDevice
    }

    fn signals_through_supervisor(&self) -> bool {
        true
    }

    fn volumes_read_only_by_default(&self) -> bool {
        true
    }

    /// A pod's app container runs in its sandbox's VM; anything else
    /// boots one.
    fn prepare(&self, container: Prepare<'_>) -> Result<Box<dyn Sandbox>, SandboxError> {
        if let Some(PodRole::Member {
            sandbox,
            share,
            name,
        }) = container.pod
        {
            return Ok(Box::new(crate::pod::PodMember::prepare(
                container,
                sandbox,
                share,
                name,
                &self.filter_cache,
            )?));
        }
        Ok(Box::new(VmSandbox::boot(self, container)?))
    }

    /// Through the container's supervisor, which relays the process's
    /// frames on the agent channel (`ROOT/containers/ID/exec.sock`).
    fn exec(
        &self,
        container: Running<'_>,
        start: ExecStart<'_>,
    ) -> Result<Box<dyn ExecProcess>, SandboxError> {
        Ok(Box::new(crate::exec::VmExec::start(
            container,
            start,
            &self.filter_cache,
        )?))
    }

    /// QEMU runs in the container's cgroup: removing it ends the VM.
    fn remove_leftovers(&self, cgroups_path: &str) -> Result<(), SandboxError> {
        skiff_sandbox::cgroups::remove(cgroups_path)
    }

    /// The host's view: QEMU's CPU time and memory, the guest's included.
    fn stats(&self, cgroups_path: &str) -> Result<Stats, SandboxError> {
        Ok(skiff_sandbox::cgroups::stats(cgroups_path))
    }

    /// A pod's app container has no host cgroup of its own that counts
    /// it (its supervisor's holds nothing of the guest): its agent reads
    /// the container's cgroup in the pod's guest. Anything else is its
    /// whole VM, as the host counts it.
    fn running_stats(
        &self,
        running: Running<'_>,
        cgroups_path: &str,
    ) -> Result<Stats, SandboxError> {
        match running.pod {
            Some(PodRole::Member { sandbox, name, .. }) => {
                crate::exec::guest_stats(&sandbox.join("exec.sock"), Some(name))
            }
            _ => self.stats(cgroups_path),
        }
    }
}

/// One container's VM.
pub struct VmSandbox {
    qemu: Child,
    cgroups_path: String,
    agent_socket: PathBuf,
    console_log: PathBuf,
    channel: Arc<Mutex<UnixStream>>,
    events: Receiver<Event>,
    streams: Streams,
    /// Exec clients, by the process number given to each.
    routes: Arc<Routes>,
    /// The streams, until the start wires them.
    stdio: Option<GuestStdio>,
    console: Option<OwnedFd>,
    relay: Option<skiff_sandbox::relay::Relay>,
    start: proto::Start,
    /// Set once SIGKILL has ended the VM.
    killed: Arc<AtomicBool>,
    exec_socket: PathBuf,
    oom_killed: bool,
    /// A pod sandbox's share, where its containers' roots are bound.
    pod_share: Option<PathBuf>,
}

impl VmSandbox {
    fn boot(kind: &VmKind, c: Prepare<'_>) -> Result<Self, SandboxError> {
        if !matches!(c.lifecycle, Lifecycle::Supervised) {
            return Err(SandboxError::Unsupported(
                "the VM sandbox runs under skiff's own supervisor (skiff run, the shim); the OCI runtime command cannot create one yet".into(),
            ));
        }
        let spec = c.spec;
        let network = network_namespace(spec)?;
        let network = network
            .map(|path| {
                std::fs::File::open(&path).map(OwnedFd::from).map_err(|e| {
                    io(
                        format!("opening the pod's network namespace {}", path.display()),
                        e,
                    )
                })
            })
            .transpose()?;
        let pod_share = match c.pod {
            Some(PodRole::Sandbox { share }) => Some(share.to_path_buf()),
            _ => None,
        };
        let shares = shares(spec)?;
        let (memory_mib, cpus) = guest_size(spec)?;
        let cgroups_path = spec
            .linux()
            .as_ref()
            .and_then(|l| l.cgroups_path().as_ref())
            .map(|p| p.to_string_lossy().into_owned())
            .ok_or_else(|| {
                SandboxError::Invalid("the runtime spec needs linux.cgroupsPath".into())
            })?;
        let seccomp = match spec.linux().as_ref().and_then(|l| l.seccomp().as_ref()) {
            Some(policy) => Some(CompiledFilter::cached(policy, &kind.filter_cache)?),
            None => None,
        };
        let mut start = start_request(spec, seccomp.as_ref())?;
        start.shares = shares
            .iter()
            .map(|s| proto::SharedDir {
                tag: s.tag.clone(),
                destination: s.destination.clone(),
                read_only: s.read_only,
                file: s.file.clone(),
            })
            .collect();
        let (stdio, console, relay) = wire(c.stdio)?;

        let assets = GuestAssets::find(&kind.assets_cache)
            .map_err(|e| SandboxError::Unsupported(e.to_string()))?;
        let initramfs = crate::initramfs::ensure(&assets, &kind.initramfs_cache)
            .map_err(|e| SandboxError::Setup(e.to_string()))?;
        let agent_socket = c.bundle.join("agent.sock");
        let console_log = c.bundle.join("console.log");
        let _ = std::fs::remove_file(&agent_socket);
        let agent_path = SocketPath::of(&agent_socket)?;
        // Held until QEMU has the paths open.
        let block_path = c.block_device.map(SocketPath::of).transpose()?;
        let root = match &block_path {
            Some(p) => GuestRoot::Block(p.given.clone()),
            None => directory_root(spec, c.bundle)?,
        };
        // In the container's directory, which is root's alone.
        let listener = UnixListener::bind(&agent_path.given).map_err(|e| SandboxError::Io {
            context: format!("binding {}", agent_socket.display()),
            source: e,
        })?;
        listener
            .set_nonblocking(true)
            .map_err(|e| io(format!("making {} non-blocking", agent_socket.display()), e))?;
        let log = File::create(&console_log)
            .map_err(|e| io(format!("creating {}", console_log.display()), e))?;
        let (qemu, why_not_kvm) = Qemu::detect();
        if let Some(why) = why_not_kvm {
            eprintln!("skiff: {why}");
        }
        let mut cmd = qemu.command(&VmSpec {
            kernel: assets.kernel.clone(),
            initramfs,
            root,
            agent_socket: agent_path.given.clone(),
            memory_mib,
            cpus,
            shares,
            pod_share: pod_share.clone(),
        });
        let log_err = log
            .try_clone()
            .map_err(|e| io(format!("duplicating {}", console_log.display()), e))?;
        cmd.stdout(log).stderr(log_err);
        let keep = [
            agent_path.fd(),
            block_path.as_ref().and_then(SocketPath::fd),
        ];
        let network_fd = network.as_ref().map(|fd| fd.as_raw_fd());
        // SAFETY: setsid, prctl and fcntl are async-signal-safe and touch
        // no memory of the parent. QEMU leaves the terminal's process
        // group (the supervisor forwards signals), dies with its
        // supervisor, keeps the directories its socket paths go through,
        // and runs in the pod's network namespace if it has one.
        unsafe {
            cmd.pre_exec(move || {
                libc::setsid();
                if let Some(fd) = network_fd {
                    if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                for fd in keep.into_iter().flatten() {
                    if libc::fcntl(fd, libc::F_SETFD, 0) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let cgroup = skiff_sandbox::cgroups::Cgroup::create(&cgroups_path, None)?;
        let booted = Instant::now();
        let mut child = cmd.spawn().map_err(|e| {
            cgroup.remove();
            SandboxError::Unsupported(format!(
                "starting {}: {e}; install Debian's qemu-system-x86",
                qemu.binary.display()
            ))
        })?;
        let joined = skiff_sandbox::cgroups::join_files(&cgroups_path).and_then(|files| {
            for f in files {
                std::fs::write(&f, child.id().to_string())
                    .map_err(|e| io(format!("moving QEMU into {}", f.display()), e))?;
            }
            Ok(())
        });
        let connected = joined
            .and_then(|()| accept(&listener, &mut child, &console_log, boot_timeout(), booted));
        let stream = match connected {
            Ok(s) => s,
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                let _ = std::fs::remove_file(&agent_socket);
                cgroup.remove();
                return Err(e);
            }
        };
        drop(listener);
        let _ = std::fs::remove_file(&agent_socket);
        let reader = stream
            .try_clone()
            .map_err(|e| io("duplicating the agent channel".into(), e))?;
        let (tx, events) = channel();
        let streams = Streams::new()?;
        let routes: Arc<Routes> = Arc::default();
        {
            let (outputs, routes) = (streams.outputs.clone(), routes.clone());
            std::thread::Builder::new()
                .name("skiff-vm-agent".into())
                .spawn(move || read_guest(reader, tx, &outputs, Some(&routes)))
                .map_err(|e| io("starting the agent reader".into(), e))?;
        }
        let channel = Arc::new(Mutex::new(stream));
        let exec_socket = c.bundle.join("exec.sock");
        crate::exec::serve(&exec_socket, &channel, &routes)?;
        let mut sandbox = VmSandbox {
            qemu: child,
            cgroups_path,
            agent_socket,
            console_log,
            channel,
            events,
            streams,
            routes,
            stdio: Some(stdio),
            console,
            relay,
            start,
            killed: Arc::new(AtomicBool::new(false)),
            exec_socket,
            oom_killed: false,
            pod_share,
        };
        let deadline = booted + boot_timeout();
        match sandbox.next_event(deadline, "boot to its agent") {
            Ok(Event::Ready(r)) if r.version == proto::VERSION => {
                tracing::info!(
                    kernel = %r.kernel,
                    elapsed_ms = booted.elapsed().as_millis() as u64,
                    "the guest's agent is ready"
                );
                Ok(sandbox)
            }
            Ok(Event::Ready(r)) => Err(sandbox.give_up(SandboxError::Setup(format!(
                "the guest's agent speaks protocol version {}, and this skiff speaks {}: rebuild the agent (make agent) with this skiff",
                r.version,
                proto::VERSION
            )))),
            Ok(_) => Err(sandbox.give_up(SandboxError::Setup(
                "the guest's agent spoke before it was ready".into(),
            ))),
            Err(e) => Err(sandbox.give_up(e)),
        }
    }

    /// The next event, or an error naming `what` if none comes by
    /// `deadline` or the VM ends.
    fn next_event(&mut self, deadline: Instant, what: &str) -> Result<Event, SandboxError> {
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.events.recv_timeout(left.min(Duration::from_millis(200))) {
                Ok(Event::Closed(why)) => {
                    return Err(SandboxError::Setup(format!(
                        "the VM ended before it could {what} ({why}){}",
                        console_tail(&self.console_log)
                    )))
                }
                Ok(e) => return Ok(e),
                Err(RecvTimeoutError::Timeout) if Instant::now() < deadline => {}
                Err(_) => {
                    return Err(SandboxError::Setup(format!(
                        "the guest did not {what} within {}s; set SKIFF_VM_BOOT_TIMEOUT to wait longer{}",
                        boot_timeout().as_secs(),
                        console_tail(&self.console_log)
                    )))
                }
            }
        }
    }

    /// Ends the VM after `error`; the error comes back.
    fn give_up(&mut self, error: SandboxError) -> SandboxError {
        self.kill_vm();
        let _ = self.qemu.wait();
        let _ = skiff_sandbox::cgroups::remove(&self.cgroups_path);
        error
    }

    fn kill_vm(&mut self) {
        self.killed.store(true, Ordering::SeqCst);
        let _ = self.qemu.kill();
    }

    fn send(&self, kind: Kind, payload: &[u8]) -> Result<(), SandboxError> {
        let mut c = self.channel.lock().unwrap_or_else(|p| p.into_inner());
        proto::write_frame(&mut *c, kind, FIRST_PROCESS, payload)
            .map_err(|e| io("writing to the guest's agent".into(), e))
    }
}

impl Sandbox for VmSandbox {
    /// QEMU's pid: the VM is the container's footprint on the host.
    fn pid(&self) -> i32 {
        self.qemu.id() as i32
    }

    fn take_console(&mut self) -> Option<OwnedFd> {
        self.console.take()
    }

    fn start(&mut self) -> Result<(), SandboxError> {
        let stdio = self
            .stdio
            .take()
            .ok_or_else(|| SandboxError::Invalid("the VM's process was started already".into()))?;
        let mut start = self.start.clone();
        let pending = self.streams.attach(stdio, &mut start);
        let body = serde_json::to_vec(&start)
            .map_err(|e| SandboxError::Invalid(format!("encoding the start request: {e}")))?;
        self.send(Kind::Start, &body)?;
        let answer = self.next_event(
            Instant::now() + START_TIMEOUT,
            "start the container's process",
        )?;
        crate::streams::started(answer)?;
        self.streams.run(pending, &self.channel)
    }

    fn signal(&self, signal: i32) -> Result<(), SandboxError> {
        (self.signal_handle())(signal)
    }

    fn signal_handle(&self) -> SignalHandle {
        let channel = self.channel.clone();
        let killed = self.killed.clone();
        let qemu = self.qemu.id() as i32;
        Arc::new(move |signal| {
            if signal == libc::SIGKILL {
                // Sure and bounded, whatever the guest is doing: the VM ends.
                killed.store(true, Ordering::SeqCst);
                return skiff_sandbox::process::signal(qemu, libc::SIGKILL);
            }
            let mut c = channel.lock().unwrap_or_else(|p| p.into_inner());
            proto::write_frame(&mut *c, Kind::Signal, FIRST_PROCESS, &signal.to_be_bytes())
                .map_err(|e| io("signalling through the guest's agent".into(), e))
        })
    }

    fn wait(&mut self) -> Result<Exit, SandboxError> {
        let exit = loop {
            let event = self
                .events
                .recv()
                .unwrap_or_else(|_| Event::Closed("the agent reader ended".into()));
            match event {
                Event::Exited(e) => {
                    self.oom_killed = e.oom_killed;
                    break crate::streams::exit_of(&e);
                }
                // SIGKILL ends the VM, and so the process.
                Event::Closed(_) if self.killed.load(Ordering::SeqCst) => {
                    break Exit::Signal(libc::SIGKILL)
                }
                Event::Closed(why) => {
                    self.kill_vm();
                    let _ = self.qemu.wait();
                    self.end_streams();
                    return Err(SandboxError::Setup(format!(
                        "the VM ended before the container's process did ({why}){}",
                        console_tail(&self.console_log)
                    )));
                }
                _ => {}
            }
        };
        self.end_streams();
        // The agent powers the guest off after its report.
        let deadline = Instant::now() + POWER_OFF_TIMEOUT;
        loop {
            match self.qemu.try_wait() {
                Ok(Some(_)) => break,
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                _ => {
                    tracing::warn!("the guest did not power off; ending its VM");
                    let _ = self.qemu.kill();
                    let _ = self.qemu.wait();
                    break;
                }
            }
        }
        Ok(exit)
    }

    fn finish_output(&mut self) {
        self.end_streams();
        if let Some(r) = self.relay.take() {
            r.finish();
        }
    }

    /// As the agent read the guest kernel's count.
    fn oom_killed(&self) -> bool {
        self.oom_killed
    }

    fn stats(&self) -> Result<Stats, SandboxError> {
        Ok(skiff_sandbox::cgroups::stats(&self.cgroups_path))
    }

    fn delete(&mut self) -> Result<(), SandboxError> {
        if !matches!(self.qemu.try_wait(), Ok(Some(_))) {
            self.kill_vm();
            let _ = self.qemu.wait();
        }
        self.end_streams();
        let _ = std::fs::remove_file(&self.agent_socket);
        let _ = std::fs::remove_file(&self.exec_socket);
        // What the pod's containers' supervisors left bound, if they died.
        if let Some(share) = &self.pod_share {
            let _ = skiff_sandbox::rootfs::remove_dir_detaching_mounts(share);
        }
        skiff_sandbox::cgroups::remove(&self.cgroups_path)
    }
}

impl Drop for VmSandbox {
    fn drop(&mut self) {
        self.streams.end();
        if !matches!(self.qemu.try_wait(), Ok(Some(_))) {
            let _ = self.qemu.kill();
            let _ = self.qemu.wait();
        }
    }
}

impl VmSandbox {
    /// Closes the host's ends of the output, so the relay sees their end;
    /// exec clients lose their processes with the VM.
    fn end_streams(&mut self) {
        self.streams.end();
        self.routes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }
}

pub(crate) fn io(context: String, source: std::io::Error) -> SandboxError {
    SandboxError::Io { context, source }
}

fn boot_timeout() -> Duration {
    std::env::var("SKIFF_VM_BOOT_TIMEOUT")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .filter(|&s| s > 0)
        .map_or(DEFAULT_BOOT_TIMEOUT, Duration::from_secs)
}

/// QEMU's connection to the agent socket, unless QEMU exits first.
fn accept(
    listener: &UnixListener,
    qemu: &mut Child,
    console_log: &Path,
    limit: Duration,
    since: Instant,
) -> Result<UnixStream, SandboxError> {
    loop {
        match listener.accept() {
            Ok((s, _)) => {
                s.set_nonblocking(false)
                    .map_err(|e| io("making the agent channel blocking".into(), e))?;
                return Ok(s);
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(io("accepting QEMU's agent channel".into(), e)),
        }
        if let Ok(Some(status)) = qemu.try_wait() {
            return Err(SandboxError::Setup(format!(
                "QEMU exited ({status}) before it attached the agent channel{}",
                console_tail(console_log)
            )));
        }
        if since.elapsed() > limit {
            return Err(SandboxError::Setup(format!(
                "QEMU did not attach the agent channel within {}s",
                limit.as_secs()
            )));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The network namespace QEMU joins: none (a private one, loopback in
/// the guest), or the one the spec names (a CRI pod's). The host's own
/// network is an error that names it, never skipped.
fn network_namespace(spec: &Spec) -> Result<Option<PathBuf>, SandboxError> {
    let linux = spec
        .linux()
        .as_ref()
        .ok_or_else(|| SandboxError::Invalid("the runtime spec has no linux section".into()))?;
    let network = linux
        .namespaces()
        .iter()
        .flatten()
        .find(|n| n.typ() == LinuxNamespaceType::Network);
    match network {
        Some(n) => Ok(n.path().clone()),
        None => Err(SandboxError::Unsupported(
            "the VM sandbox has no host network: use --network none (loopback in the guest)".into(),
        )),
    }
}

/// The spec's bind mounts (`-v`) as host directories shared with the
/// guest, each a 9p device of its own: the guest sees those and nothing
/// else of the host. A single file cannot be shared so, and says so.
fn shares(spec: &Spec) -> Result<Vec<Share>, SandboxError> {
    let mut out = Vec::new();
    for m in spec.mounts().iter().flatten() {
        let options = m.options().clone().unwrap_or_default();
        let bind = m.typ().as_deref() == Some("bind")
            || options.iter().any(|o| o == "bind" || o == "rbind");
        if !bind {
            continue;
        }
        let destination = m.destination().to_string_lossy().into_owned();
        // The guest's own /dev/shm stands for a runtime's (a CRI pod's
        // shared one is its sandbox's, in the guest).
        if destination == "/dev/shm" {
            continue;
        }
        let source = m.source().clone().unwrap_or_default();
        let read_only = options.iter().any(|o| o == "ro");
        // A file goes in through its directory, which is shared read-only
        // unless the file is writable; the guest binds the file alone.
        // Files of one directory share one device.
        let (source, file) = match std::fs::metadata(&source) {
            Ok(m) if m.is_dir() => (source, None),
            Ok(m) if m.is_file() => {
                let (Some(dir), Some(name)) = (source.parent(), source.file_name()) else {
                    return Err(SandboxError::Invalid(format!(
                        "-v {}:{destination}: not a file's path",
                        source.display()
                    )));
                };
                (dir.to_path_buf(), Some(name.to_string_lossy().into_owned()))
            }
            Ok(_) => {
                return Err(SandboxError::Unsupported(format!(
                    "-v {}:{destination}: the VM sandbox shares directories and regular files only",
                    source.display()
                )))
            }
            Err(e) => {
                return Err(SandboxError::Invalid(format!(
                    "-v {}:{destination}: {e}",
                    source.display()
                )))
            }
        };
        let tag = match out.iter().find(|s: &&Share| {
            s.file.is_some() && file.is_some() && s.source == source && s.read_only == read_only
        }) {
            Some(same) => same.tag.clone(),
            None => format!("vol{}", out.len()),
        };
        out.push(Share {
            tag,
            source,
            destination,
            read_only,
            file,
        });
    }
    Ok(out)
}

/// The spec's root directory (relative to the bundle, as the runtime spec
/// allows) shared with the guest as its root, for a caller that has no
/// block device of the image (an OCI bundle's snapshot).
fn directory_root(spec: &Spec, bundle: &Path) -> Result<GuestRoot, SandboxError> {
    let root = spec
        .root()
        .as_ref()
        .ok_or_else(|| SandboxError::Invalid("the runtime spec has no root".into()))?;
    let path = if root.path().is_relative() {
        bundle.join(root.path())
    } else {
        root.path().clone()
    };
    if !path.is_dir() {
        return Err(SandboxError::Invalid(format!(
            "the container's root {} is not a directory",
            path.display()
        )));
    }
    Ok(GuestRoot::Directory {
        source: path,
        read_only: root.readonly().unwrap_or(false),
    })
}

/// The spec's resources, where a guest is sized by them.
fn resources(spec: &Spec) -> Option<&oci_spec::runtime::LinuxResources> {
    spec.linux().as_ref().and_then(|l| l.resources().as_ref())
}

/// The guest's memory and vCPUs from the spec's limits: `--memory` plus
/// [`GUEST_OVERHEAD_MIB`] (the limit itself is the container's cgroup's
/// in the guest), `--cpus` rounded up to whole vCPUs (the fraction is the
/// cgroup's `cpu.max`).
fn guest_size(spec: &Spec) -> Result<(u32, u32), SandboxError> {
    let resources = resources(spec);
    let memory = resources
        .and_then(|r| r.memory().as_ref())
        .and_then(|m| m.limit())
        .filter(|&l| l > 0);
    let memory_mib = match memory {
        Some(bytes) => {
            let mib = (bytes as u64).div_ceil(1 << 20) + GUEST_OVERHEAD_MIB as u64;
            u32::try_from(mib.max(DEFAULT_MEMORY_MIB as u64)).map_err(|_| {
                SandboxError::Invalid(format!("--memory {mib}m is too large for a guest"))
            })?
        }
        None => DEFAULT_MEMORY_MIB,
    };
    let host_cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as u32;
    let cpus = match cpu_max(spec) {
        Some(c) => c.quota.div_ceil(c.period).clamp(1, host_cpus as u64) as u32,
        None => 1,
    };
    Ok((memory_mib, cpus))
}

/// The spec's CPU quota, if it sets one.
fn cpu_max(spec: &Spec) -> Option<proto::CpuMax> {
    let cpu = resources(spec)?.cpu().as_ref()?;
    match (cpu.quota()?, cpu.period()?) {
        (quota, period) if quota > 0 && period > 0 => Some(proto::CpuMax {
            quota: quota as u64,
            period,
        }),
        _ => None,
    }
}

/// The container's cgroup limits in the guest, from the spec's (the
/// namespace sandbox writes the same ones on the host). The spec's swap
/// is memory plus swap; v2's is swap alone.
fn guest_cgroup(spec: &Spec) -> proto::CgroupLimits {
    let r = resources(spec);
    let memory = r.and_then(|r| r.memory().as_ref());
    let limit = memory.and_then(|m| m.limit()).filter(|&l| l > 0);
    let swap = memory.and_then(|m| m.swap()).filter(|&s| s >= 0);
    proto::CgroupLimits {
        memory_max: limit.map(|l| l as u64),
        swap_max: match (limit, swap) {
            (Some(l), Some(s)) => Some((s - l).max(0) as u64),
            _ => None,
        },
        cpu_max: cpu_max(spec),
        pids_max: r
            .and_then(|r| r.pids().as_ref())
            .map(|p| p.limit())
            .filter(|&p| p > 0)
            .map(|p| p as u64),
    }
}

/// The agent's start request for the spec's process.
pub(crate) fn start_request(
    spec: &Spec,
    seccomp: Option<&CompiledFilter>,
) -> Result<proto::Start, SandboxError> {
    let process = spec
        .process()
        .as_ref()
        .ok_or_else(|| SandboxError::Invalid("the runtime spec has no process".into()))?;
    let mut start = process_request(process, spec, seccomp)?;
    start.cgroup = guest_cgroup(spec);
    Ok(start)
}

/// The agent's start request for `process`, in the container of `spec`.
pub(crate) fn process_request(
    process: &oci_spec::runtime::Process,
    spec: &Spec,
    seccomp: Option<&CompiledFilter>,
) -> Result<proto::Start, SandboxError> {
    let user = process.user();
    let files = spec
        .annotations()
        .iter()
        .flatten()
        .filter_map(|(k, v)| {
            let name = k.strip_prefix(skiff_sandbox::spec::ETC_FILE_ANNOTATION)?;
            skiff_sandbox::spec::ETC_FILES
                .contains(&name)
                .then(|| proto::RootFile {
                    path: format!("/etc/{name}"),
                    contents: v.clone(),
                })
        })
        .collect();
    Ok(proto::Start {
        args: process.args().clone().unwrap_or_default(),
        env: process.env().clone().unwrap_or_default(),
        cwd: process.cwd().to_string_lossy().into_owned(),
        uid: user.uid(),
        gid: user.gid(),
        additional_gids: user.additional_gids().clone().unwrap_or_default(),
        terminal: process
            .terminal()
            .unwrap_or(false)
            .then_some(proto::TerminalSize { rows: 24, cols: 80 }),
        hostname: spec.hostname().clone(),
        files,
        capabilities: process
            .capabilities()
            .as_ref()
            .map(|c| skiff_sandbox::capabilities::mask(c.bounding())),
        no_new_privileges: process.no_new_privileges().unwrap_or(false),
        seccomp: seccomp.map(|f| proto::SeccompFilter {
            program: proto::to_hex(f.program()),
            flags: f.flags(),
        }),
        shares: Vec::new(),
        cgroup: proto::CgroupLimits::default(),
        container: None,
        new_container: None,
    })
}

/// The end of the guest's console, for an error: a kernel panic's line
/// if there is one.
fn console_tail(log: &Path) -> String {
    let Ok(text) = std::fs::read(log) else {
        return String::new();
    };
    let text = String::from_utf8_lossy(&text[text.len().saturating_sub(16 * 1024)..]).into_owned();
    if let Some(line) = text.lines().find(|l| l.contains("Kernel panic")) {
        return format!("; the guest kernel panicked: {}", line.trim());
    }
    let last: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    match last.len() {
        0 => String::new(),
        n => format!(
            "; the guest's console ended with: {}",
            last[n.saturating_sub(3)..].join(" | ")
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_specs_limits_size_the_guest_and_its_cgroup() {
        let spec: Spec = serde_json::from_value(serde_json::json!({
            "ociVersion": "1.0.2",
            "root": {"path": "rootfs"},
            "linux": {"resources": {
                "memory": {"limit": 1073741824u64, "swap": 2147483648u64},
                "cpu": {"quota": 150000, "period": 100000},
                "pids": {"limit": 20}
            }}
        }))
        .unwrap();
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as u32;
        assert_eq!(
            guest_size(&spec).unwrap(),
            (1024 + GUEST_OVERHEAD_MIB, 2.min(cpus))
        );
        assert_eq!(
            guest_cgroup(&spec),
            proto::CgroupLimits {
                memory_max: Some(1 << 30),
                swap_max: Some(1 << 30),
                cpu_max: Some(proto::CpuMax {
                    quota: 150000,
                    period: 100000
                }),
                pids_max: Some(20),
            }
        );
        // No limits: the default guest, a cgroup without limits; the
        // spec's -1 is no limit.
        let spec: Spec = serde_json::from_value(serde_json::json!({
            "ociVersion": "1.0.2",
            "root": {"path": "rootfs"},
            "linux": {"resources": {"memory": {"limit": 6291456, "swap": -1}, "cpu": {"quota": -1, "period": 100000}}}
        }))
        .unwrap();
        assert_eq!(guest_size(&spec).unwrap(), (DEFAULT_MEMORY_MIB, 1));
        let limits = guest_cgroup(&spec);
        assert_eq!(limits.memory_max, Some(6291456));
        assert_eq!(
            (limits.swap_max, limits.cpu_max, limits.pids_max),
            (None, None, None)
        );
    }

    #[test]
    fn a_panic_is_named_from_the_console() {
        let d = tempfile::tempdir().unwrap();
        let log = d.path().join("console.log");
        std::fs::write(
            &log,
            "[    1.0] something\n[    2.0] Kernel panic - not syncing: Attempted to kill init!\n",
        )
        .unwrap();
        assert!(console_tail(&log).contains("panicked: [    2.0] Kernel panic"));
        std::fs::write(&log, "a\nb\n\nc\nd\n").unwrap();
        assert_eq!(
            console_tail(&log),
            "; the guest's console ended with: b | c | d"
        );
        assert_eq!(console_tail(&d.path().join("none")), "");
    }
}
