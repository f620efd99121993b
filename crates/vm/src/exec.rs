//! `skiff exec` into a VM: the supervisor, which owns the agent channel,
//! serves `ROOT/containers/ID/exec.sock`; each client connection is one
//! process, given a process number of its own on the channel (docs/agent.md).
//! The client speaks the agent protocol as if it were the only process
//! (number 0); the supervisor renumbers its frames both ways.

use std::os::fd::OwnedFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc::{channel, Receiver};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use skiff_agent_protocol::{self as proto, Kind, FIRST_PROCESS};
use skiff_sandbox::seccomp_filter::CompiledFilter;
use skiff_sandbox::{
    ExecProcess, ExecStart, Exit, PodRole, Running, SandboxError, SignalHandle, Stats,
};

use crate::sandbox::io;
use crate::streams::{read_guest, wire, Event, Routes, SocketPath, Streams, Wired};

/// How long the agent may take to answer an exec's start.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// The supervisor's side: accepts exec clients on `socket` and relays
/// their frames to the agent on `agent` as processes 1, 2, ...
pub(crate) fn serve(
    socket: &Path,
    agent: &Arc<Mutex<UnixStream>>,
    routes: &Arc<Routes>,
) -> Result<(), SandboxError> {
    let _ = std::fs::remove_file(socket);
    let path = SocketPath::of(socket)?;
    // In the container's directory, which is root's alone.
    let listener = UnixListener::bind(&path.given)
        .map_err(|e| io(format!("binding {}", socket.display()), e))?;
    let (agent, routes) = (agent.clone(), routes.clone());
    let next = Arc::new(AtomicU32::new(FIRST_PROCESS + 1));
    std::thread::Builder::new()
        .name("skiff-vm-exec".into())
        .spawn(move || {
            for conn in listener.incoming().flatten() {
                let id = next.fetch_add(1, Ordering::SeqCst);
                let Ok(back) = conn.try_clone() else { continue };
                routes
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(id, back);
                let (agent, routes) = (agent.clone(), routes.clone());
                std::thread::spawn(move || relay_client(conn, id, &agent, &routes));
            }
        })
        .map_err(|e| io("starting the exec listener".into(), e))?;
    Ok(())
}

/// One client's frames to the agent as process `id`. A client that goes
/// away takes its process with it, as a namespace exec dies with its
/// caller.
fn relay_client(mut conn: UnixStream, id: u32, agent: &Mutex<UnixStream>, routes: &Routes) {
    let send = |kind: Kind, payload: &[u8]| {
        let mut a = agent.lock().unwrap_or_else(|p| p.into_inner());
        proto::write_frame(&mut *a, kind, id, payload)
    };
    let mut started = false;
    while let Ok(frame) = proto::read_frame(&mut conn) {
        let allowed = matches!(
            frame.kind,
            Kind::Start | Kind::Stdin | Kind::Signal | Kind::Resize | Kind::QueryStats
        );
        if !allowed || frame.process != FIRST_PROCESS || send(frame.kind, &frame.payload).is_err() {
            break;
        }
        started |= frame.kind == Kind::Start;
    }
    let still = routes
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .remove(&id)
        .is_some();
    // A stats query started nothing to end.
    if still && started {
        let _ = send(Kind::Signal, &libc::SIGKILL.to_be_bytes());
    }
}

/// How long the agent may take to answer a stats query.
const STATS_TIMEOUT: Duration = Duration::from_secs(5);

/// The usage of a container in a running VM (`container`, a pod's app
/// container, or the first), as the agent reads it from the container's
/// cgroup in the guest, asked through the supervisor's exec socket.
pub(crate) fn guest_stats(socket: &Path, container: Option<&str>) -> Result<Stats, SandboxError> {
    let path = SocketPath::of(socket)?;
    let mut stream = UnixStream::connect(&path.given).map_err(|e| {
        SandboxError::Setup(format!(
            "reaching the VM's supervisor at {} ({e}): is the pod running?",
            socket.display()
        ))
    })?;
    stream
        .set_read_timeout(Some(STATS_TIMEOUT))
        .map_err(|e| io("setting the stats query's timeout".into(), e))?;
    let query = proto::StatsQuery {
        container: container.map(str::to_string),
    };
    proto::write_body(&mut stream, Kind::QueryStats, FIRST_PROCESS, &query)
        .map_err(|e| io("asking the VM's supervisor for stats".into(), e))?;
    let frame = proto::read_frame(&mut stream).map_err(|e| {
        SandboxError::Setup(format!(
            "the guest did not answer a stats query within {}s ({e})",
            STATS_TIMEOUT.as_secs()
        ))
    })?;
    let bad = |e: std::io::Error| SandboxError::Setup(format!("the guest's stats answer: {e}"));
    match frame.kind {
        Kind::Stats => {
            let s: proto::ContainerStats = frame.body().map_err(bad)?;
            Ok(Stats {
                memory_bytes: s.memory_bytes,
                memory_limit_bytes: s.memory_limit_bytes,
                cpu_nanos: s.cpu_nanos,
                pids: s.pids,
            })
        }
        Kind::Failed => {
            let f: proto::Failed = frame.body().map_err(bad)?;
            Err(SandboxError::Invalid(f.message))
        }
        other => Err(SandboxError::Setup(format!(
            "the guest answered a stats query with {other:?}"
        ))),
    }
}

/// A process exec'd into a VM, seen from the `skiff exec` side.
pub struct VmExec {
    /// Its pid in the guest: the host has no process for it.
    pid: i32,
    channel: Arc<Mutex<UnixStream>>,
    events: Receiver<Event>,
    streams: Streams,
    console: Option<OwnedFd>,
    relay: Option<skiff_sandbox::relay::Relay>,
}

impl VmExec {
    pub(crate) fn start(
        container: Running<'_>,
        start: ExecStart<'_>,
        filter_cache: &Path,
    ) -> Result<Self, SandboxError> {
        if start.detached {
            return Err(SandboxError::Unsupported(
                "a detached exec into a VM sandbox is not supported".into(),
            ));
        }
        // A pod's container is in its sandbox's VM, under its own name.
        let (socket, name) = match container.pod {
            Some(PodRole::Member { sandbox, name, .. }) => {
                (sandbox.join("exec.sock"), Some(name.to_string()))
            }
            _ => (container.bundle.join("exec.sock"), None),
        };
        let spec = container.spec;
        let seccomp = match spec.linux().as_ref().and_then(|l| l.seccomp().as_ref()) {
            Some(policy) => Some(CompiledFilter::cached(policy, filter_cache)?),
            None => None,
        };
        let mut request = crate::sandbox::process_request(start.process, spec, seccomp.as_ref())?;
        request.container = name;
        Self::begin(&socket, request, wire(start.stdio)?)
    }

    /// Connects to the supervisor's exec socket and starts `request` there.
    pub(crate) fn begin(
        socket: &Path,
        mut request: proto::Start,
        (stdio, console, relay): Wired,
    ) -> Result<Self, SandboxError> {
        let path = SocketPath::of(socket)?;
        let stream = UnixStream::connect(&path.given).map_err(|e| {
            SandboxError::Setup(format!(
                "reaching the VM's supervisor at {} ({e}): is the container running?",
                socket.display()
            ))
        })?;
        let streams = Streams::new()?;
        let pending = streams.attach(stdio, &mut request);
        let reader = stream
            .try_clone()
            .map_err(|e| io("duplicating the exec channel".into(), e))?;
        let (tx, events) = channel();
        {
            let outputs = streams.outputs.clone();
            std::thread::Builder::new()
                .name("skiff-vm-exec".into())
                .spawn(move || read_guest(reader, tx, &outputs, None))
                .map_err(|e| io("starting the exec reader".into(), e))?;
        }
        let channel = Arc::new(Mutex::new(stream));
        {
            let body = serde_json::to_vec(&request)
                .map_err(|e| SandboxError::Invalid(format!("encoding the start request: {e}")))?;
            let mut c = channel.lock().unwrap_or_else(|p| p.into_inner());
            proto::write_frame(&mut *c, Kind::Start, FIRST_PROCESS, &body)
                .map_err(|e| io("writing to the VM's supervisor".into(), e))?;
        }
        let deadline = Instant::now() + START_TIMEOUT;
        let answer = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match events.recv_timeout(left) {
                Ok(Event::Closed(why)) => {
                    return Err(SandboxError::Setup(format!(
                        "the VM's supervisor closed the exec before it started ({why})"
                    )))
                }
                Ok(Event::Ready(_)) => {}
                Ok(e) => break e,
                Err(_) => {
                    return Err(SandboxError::Setup(format!(
                        "the guest did not start the exec within {}s",
                        START_TIMEOUT.as_secs()
                    )))
                }
            }
        };
        let pid = crate::streams::started(answer)?;
        streams.run(pending, &channel)?;
        Ok(VmExec {
            pid,
            channel,
            events,
            streams,
            console,
            relay,
        })
    }
}

impl ExecProcess for VmExec {
    fn pid(&self) -> i32 {
        self.pid
    }

    fn take_console(&mut self) -> Option<OwnedFd> {
        self.console.take()
    }

    /// Every signal, SIGKILL too, goes to the agent: the VM runs on.
    fn signal_handle(&self) -> SignalHandle {
        let channel = self.channel.clone();
        Arc::new(move |signal| {
            let mut c = channel.lock().unwrap_or_else(|p| p.into_inner());
            proto::write_frame(&mut *c, Kind::Signal, FIRST_PROCESS, &signal.to_be_bytes())
                .map_err(|e| io("signalling through the VM's supervisor".into(), e))
        })
    }

    fn wait(&mut self) -> Result<Exit, SandboxError> {
        let exit = loop {
            match self.events.recv() {
                Ok(Event::Exited(e)) => {
                    break crate::streams::exit_of(&e);
                }
                Ok(Event::Closed(why)) => {
                    self.streams.end();
                    return Err(SandboxError::Setup(format!(
                        "the exec's channel ended before the process did ({why}): did the container stop?"
                    )));
                }
                Ok(_) => {}
                Err(_) => {
                    self.streams.end();
                    return Err(SandboxError::Setup("the exec's reader ended".into()));
                }
            }
        };
        self.streams.end();
        Ok(exit)
    }

    fn finish_output(&mut self) {
        self.streams.end();
        if let Some(r) = self.relay.take() {
            r.finish();
        }
    }
}
