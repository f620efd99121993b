//! skiff-agent: PID 1 of a VM sandbox's guest. See README.md and
//! docs/agent.md.

mod boot;
mod pod;
mod spawn;

use std::collections::HashMap;
use std::fs::File;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use skiff_agent_protocol::{self as proto, Kind, FIRST_PROCESS};

/// Where the container's root is assembled: the image's EROFS under a
/// writable overlay.
pub(crate) const NEWROOT: &str = "/newroot";

fn main() {
    if let Err(e) = boot::boot().and_then(serve) {
        eprintln!("skiff-agent: {e}");
    }
    boot::power_off();
}

/// A process the host started.
pub(crate) struct Process {
    pub(crate) pid: i32,
    /// Confirmed by its exec; until then its exit is its spawner's to report.
    pub(crate) started: bool,
    /// Its wait status once reaped.
    pub(crate) reaped: Option<i32>,
    pub(crate) stdin: Option<SyncSender<Vec<u8>>>,
    /// The terminal's master side, for resizes.
    pub(crate) terminal: Option<Arc<OwnedFd>>,
    /// Reports from its output readers, one per stream, at their end.
    pub(crate) outputs: Option<Receiver<()>>,
    pub(crate) streams: usize,
    /// The pod container it is the first process of: its end removes it.
    pub(crate) leads: Option<String>,
}

/// A container in the guest: the first (named "") or a pod's.
pub(crate) struct Container {
    pub(crate) root: std::path::PathBuf,
    /// Its cgroup's directory.
    pub(crate) cgroup: String,
    /// Its first process's number: later processes join its namespaces.
    pub(crate) leader: u32,
}

/// The agent's state, shared by its threads.
pub(crate) struct Agent {
    port: Mutex<File>,
    pub(crate) processes: Mutex<HashMap<u32, Process>>,
    /// By name.
    pub(crate) containers: Mutex<HashMap<String, Container>>,
    /// Told once the first process's exit is reported.
    done: Mutex<Option<std::sync::mpsc::Sender<()>>>,
    pub(crate) forker: spawn::Forker,
}

impl Agent {
    pub(crate) fn send(&self, kind: Kind, process: u32, payload: &[u8]) {
        let mut port = self.port.lock().unwrap_or_else(|p| p.into_inner());
        // A host that stopped reading is gone; the read loop sees it.
        let _ = proto::write_frame(&mut *port, kind, process, payload);
    }

    pub(crate) fn send_body(&self, kind: Kind, process: u32, body: &impl serde::Serialize) {
        let mut port = self.port.lock().unwrap_or_else(|p| p.into_inner());
        let _ = proto::write_body(&mut *port, kind, process, body);
    }

    pub(crate) fn fail(&self, process: u32, reason: proto::FailReason, message: String) {
        eprintln!("skiff-agent: process {process}: {message}");
        self.send_body(Kind::Failed, process, &proto::Failed { reason, message });
    }
}

/// Answers the host until the first process has exited (or the host is
/// gone), then returns so that PID 1 powers the guest off.
fn serve(port: File) -> Result<(), String> {
    let reader = port
        .try_clone()
        .map_err(|e| format!("duplicating the agent port: {e}"))?;
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let agent = Arc::new(Agent {
        port: Mutex::new(port),
        processes: Mutex::new(HashMap::new()),
        containers: Mutex::new(HashMap::new()),
        done: Mutex::new(Some(done_tx)),
        forker: spawn::Forker::start(),
    });
    agent.send_body(
        Kind::Ready,
        FIRST_PROCESS,
        &proto::Ready {
            version: proto::VERSION,
            kernel: boot::kernel_release(),
        },
    );
    {
        let agent = agent.clone();
        std::thread::spawn(move || reap(&agent));
    }
    {
        let agent = agent.clone();
        std::thread::spawn(move || read_host(&agent, reader));
    }
    // The first process's exit, reported; or the host gone.
    let _ = done_rx.recv();
    Ok(())
}

/// The host's frames, in order, until it closes the port.
fn read_host(agent: &Arc<Agent>, mut port: File) {
    loop {
        let frame = match proto::read_frame(&mut port) {
            Ok(f) => f,
            Err(e) => {
                eprintln!("skiff-agent: the host's channel ended: {e}");
                // Nothing more can be asked: end the container and the VM.
                // SAFETY: kill with integer arguments; PID 1 is spared.
                unsafe { libc::kill(-1, libc::SIGKILL) };
                std::thread::sleep(Duration::from_millis(100));
                boot::power_off();
            }
        };
        handle(agent, frame);
    }
}

fn handle(agent: &Arc<Agent>, frame: proto::Frame) {
    let id = frame.process;
    match frame.kind {
        Kind::Start => match frame.body::<proto::Start>() {
            Ok(start) => spawn::start(agent, id, start),
            Err(e) => agent.fail(id, proto::FailReason::Invalid, e.to_string()),
        },
        Kind::Stdin => {
            let tx = {
                let procs = agent.processes.lock().unwrap_or_else(|p| p.into_inner());
                procs.get(&id).and_then(|p| p.stdin.clone())
            };
            if let Some(tx) = tx {
                let close = frame.payload.is_empty();
                let _ = tx.send(frame.payload);
                if close {
                    let mut procs = agent.processes.lock().unwrap_or_else(|p| p.into_inner());
                    if let Some(p) = procs.get_mut(&id) {
                        p.stdin = None;
                    }
                }
            }
        }
        Kind::Signal => {
            let Ok(sig) = <[u8; 4]>::try_from(&frame.payload[..]).map(i32::from_be_bytes) else {
                return;
            };
            let procs = agent.processes.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(p) = procs.get(&id).filter(|p| p.reaped.is_none()) {
                // SAFETY: kill with integer arguments.
                unsafe { libc::kill(p.pid, sig) };
            }
        }
        Kind::Resize => {
            let Ok(b) = <[u8; 4]>::try_from(&frame.payload[..]) else {
                return;
            };
            let procs = agent.processes.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(t) = procs.get(&id).and_then(|p| p.terminal.clone()) {
                spawn::resize(
                    &t,
                    u16::from_be_bytes([b[0], b[1]]),
                    u16::from_be_bytes([b[2], b[3]]),
                );
            }
        }
        Kind::QueryStats => match frame.body::<proto::StatsQuery>() {
            Ok(query) => match container_stats(agent, query.container.as_deref().unwrap_or("")) {
                Ok(stats) => agent.send_body(Kind::Stats, id, &stats),
                Err(m) => agent.fail(id, proto::FailReason::Invalid, m),
            },
            Err(e) => agent.fail(id, proto::FailReason::Invalid, e.to_string()),
        },
        // Guest-to-host kinds from the host: ignored.
        _ => {}
    }
}

/// The usage of container `name` ("" for the first), from its cgroup.
fn container_stats(agent: &Agent, name: &str) -> Result<proto::ContainerStats, String> {
    let cgroup = agent
        .containers
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(name)
        .map(|c| c.cgroup.clone())
        .ok_or_else(|| format!("no container {name:?} runs in this guest"))?;
    let read = |file: &str| std::fs::read_to_string(format!("{cgroup}/{file}")).ok();
    let number = |file: &str| read(file).and_then(|v| v.trim().parse::<u64>().ok());
    let cpu_nanos = read("cpu.stat").and_then(|stat| {
        stat.lines()
            .find_map(|l| l.strip_prefix("usage_usec "))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(|usec| usec * 1000)
    });
    Ok(proto::ContainerStats {
        memory_bytes: number("memory.current"),
        memory_limit_bytes: number("memory.max"),
        cpu_nanos,
        pids: number("pids.current"),
    })
}

/// PID 1's duty: reaps every child, orphans included, and reports each
/// started process's exit once its output is all sent. The first
/// process's exit ends every other process, then the agent.
fn reap(agent: &Arc<Agent>) {
    loop {
        let mut status = 0;
        // SAFETY: waitpid writes the status into our local.
        let pid = unsafe { libc::waitpid(-1, &mut status, 0) };
        if pid < 0 {
            // No children yet (ECHILD), or interrupted.
            std::thread::sleep(Duration::from_millis(20));
            continue;
        }
        let found = {
            let mut procs = agent.processes.lock().unwrap_or_else(|p| p.into_inner());
            let entry = procs.iter_mut().find(|(_, p)| p.pid == pid);
            match entry {
                Some((&id, p)) if p.started => {
                    p.reaped = Some(status);
                    Some((id, p.outputs.take(), p.streams, p.leads.take()))
                }
                Some((_, p)) => {
                    p.reaped = Some(status);
                    None
                }
                None => None,
            }
        };
        let Some((id, outputs, streams, leads)) = found else {
            continue;
        };
        finish(agent.clone(), id, status, outputs, streams, leads);
    }
}

/// Reports process `id`'s exit once its output is all sent (on a thread:
/// a stream held open by a leftover process is waited on for 2 s at most).
/// The first process's report ends the agent; a pod container's first
/// process's end removes its container first.
pub(crate) fn finish(
    agent: Arc<Agent>,
    id: u32,
    status: i32,
    outputs: Option<Receiver<()>>,
    streams: usize,
    leads: Option<String>,
) {
    if id == FIRST_PROCESS {
        // The container is over: nothing of it outlives its first
        // process, as in a pid namespace.
        // SAFETY: kill with integer arguments; PID 1 is spared.
        unsafe { libc::kill(-1, libc::SIGKILL) };
    }
    std::thread::spawn(move || {
        if let Some(rx) = outputs {
            for _ in 0..streams {
                if rx.recv_timeout(Duration::from_secs(2)).is_err() {
                    break;
                }
            }
        }
        if let Some(name) = leads {
            pod::remove(&agent, &name);
        }
        agent.send_body(Kind::Exited, id, &exited(status));
        let mut procs = agent.processes.lock().unwrap_or_else(|p| p.into_inner());
        procs.remove(&id);
        drop(procs);
        if id == FIRST_PROCESS {
            let done = agent.done.lock().unwrap_or_else(|p| p.into_inner()).take();
            if let Some(done) = done {
                let _ = done.send(());
            }
        }
    });
}

fn exited(status: i32) -> proto::Exited {
    let oom_killed = oom_kills() > 0;
    if libc::WIFSIGNALED(status) {
        proto::Exited {
            code: None,
            signal: Some(libc::WTERMSIG(status)),
            oom_killed,
        }
    } else {
        proto::Exited {
            code: Some(libc::WEXITSTATUS(status)),
            signal: None,
            oom_killed,
        }
    }
}

/// How often the guest kernel's OOM killer has struck since boot.
fn oom_kills() -> u64 {
    std::fs::read_to_string("/proc/vmstat")
        .ok()
        .and_then(|v| {
            v.lines()
                .find_map(|l| l.strip_prefix("oom_kill "))
                .and_then(|n| n.trim().parse().ok())
        })
        .unwrap_or(0)
}

/// Copies one output stream of process `id` to the host, then reports
/// its end on `done`.
pub(crate) fn relay_output(
    agent: Arc<Agent>,
    id: u32,
    kind: Kind,
    from: OwnedFd,
    done: std::sync::mpsc::Sender<()>,
) {
    std::thread::spawn(move || {
        let mut buf = vec![0u8; proto::MAX_PAYLOAD];
        loop {
            // SAFETY: reads into our buffer, within its length.
            let n = unsafe { libc::read(from.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            if n > 0 {
                agent.send(kind, id, &buf[..n as usize]);
                continue;
            }
            if n < 0 && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            // EOF; a terminal whose other side has closed reads EIO.
            break;
        }
        let _ = done.send(());
    });
}

/// Feeds the host's stdin frames to process `id`; an empty frame (or the
/// process's end) closes its stdin.
pub(crate) fn relay_input(to: OwnedFd, rx: Receiver<Vec<u8>>) {
    std::thread::spawn(move || {
        while let Ok(chunk) = rx.recv() {
            if chunk.is_empty() {
                break;
            }
            let mut at = 0;
            while at < chunk.len() {
                // SAFETY: writes from our buffer, within its length.
                let n = unsafe {
                    libc::write(
                        to.as_raw_fd(),
                        chunk[at..].as_ptr().cast(),
                        chunk.len() - at,
                    )
                };
                if n < 0 {
                    if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                        continue;
                    }
                    return;
                }
                at += n as usize;
            }
        }
    });
}

/// How many stdin chunks wait for a process that does not read them
/// before the host's channel waits too.
pub(crate) const STDIN_BACKLOG: usize = 256;

pub(crate) fn stdin_channel() -> (SyncSender<Vec<u8>>, Receiver<Vec<u8>>) {
    sync_channel(STDIN_BACKLOG)
}
