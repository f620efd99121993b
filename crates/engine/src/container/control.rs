//! A supervisor's control socket, both ends: how another process (a shim,
//! `skiff stop`) starts, signals and waits for a container whose
//! supervisor helper is the init's parent. The protocol is in
//! docs/supervisor.md: one request line per connection, one answer line.
//!
//! By hand over a Unix socket: four one-line requests need no RPC
//! framework, and the socket lives in the container's root-only
//! directory.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Condvar, Mutex};

use skiff_sandbox::SignalHandle;

use crate::error::{EngineError, IoContext, Result};

/// Where a container is in its life, as the supervisor knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Created,
    Running,
    Exited(i32),
}

impl Phase {
    fn render(self) -> String {
        match self {
            Phase::Created => "created".into(),
            Phase::Running => "running".into(),
            Phase::Exited(code) => format!("exited {code}"),
        }
    }
}

/// The supervisor's shared state, which its control thread answers from.
pub(crate) struct Control {
    phase: Mutex<Phase>,
    changed: Condvar,
    /// Taken by the first `start`.
    start: Mutex<Option<Sender<()>>>,
    signal: SignalHandle,
}

impl Control {
    /// Serves `socket` on a thread; `start` (if any) is sent one message
    /// when a client asks to start.
    pub(crate) fn serve(
        socket: &Path,
        signal: SignalHandle,
        start: Option<Sender<()>>,
    ) -> Result<Arc<Control>> {
        let _ = std::fs::remove_file(socket);
        let listener =
            skiff_fs::socket::bind(socket).ctx(|| format!("listening on {}", socket.display()))?;
        let control = Arc::new(Control {
            phase: Mutex::new(Phase::Created),
            changed: Condvar::new(),
            start: Mutex::new(start),
            signal,
        });
        let c = control.clone();
        std::thread::Builder::new()
            .name("skiff-control".into())
            .spawn(move || {
                for conn in listener.incoming().flatten() {
                    let c = c.clone();
                    // `wait` blocks: one thread per connection.
                    std::thread::spawn(move || c.answer(conn));
                }
            })
            .ctx(|| "starting the supervisor's control thread".into())?;
        Ok(control)
    }

    /// Records a new phase and wakes the waiters.
    pub(crate) fn set(&self, phase: Phase) {
        if let Ok(mut p) = self.phase.lock() {
            *p = phase;
        }
        self.changed.notify_all();
    }

    fn answer(&self, conn: UnixStream) {
        let mut line = String::new();
        let Ok(reader) = conn.try_clone() else { return };
        if BufReader::new(reader).read_line(&mut line).is_err() {
            return;
        }
        let reply = match line.split_whitespace().collect::<Vec<_>>().as_slice() {
            ["start"] => match self.start.lock().ok().and_then(|mut s| s.take()) {
                Some(tx) if tx.send(()).is_ok() => "ok".to_string(),
                _ => "error the container was started already".to_string(),
            },
            ["signal", n] => match n.parse::<i32>() {
                Ok(sig) => match (self.signal)(sig) {
                    Ok(()) => "ok".into(),
                    Err(e) => format!("error {e}"),
                },
                Err(_) => format!("error {n:?} is not a signal number"),
            },
            ["state"] => self.phase.lock().map(|p| p.render()).unwrap_or_default(),
            ["wait"] => {
                let mut p = match self.phase.lock() {
                    Ok(p) => p,
                    Err(_) => return,
                };
                while !matches!(*p, Phase::Exited(_)) {
                    p = match self.changed.wait(p) {
                        Ok(p) => p,
                        Err(_) => return,
                    };
                }
                p.render()
            }
            _ => format!("error unknown request {:?}", line.trim()),
        };
        let mut conn = conn;
        let _ = writeln!(conn, "{reply}");
    }
}

/// A client of one container's supervisor.
#[derive(Debug, Clone)]
pub struct Supervisor {
    pub id: String,
    socket: PathBuf,
}

impl Supervisor {
    pub(crate) fn new(id: &str, socket: PathBuf) -> Self {
        Supervisor {
            id: id.to_string(),
            socket,
        }
    }

    fn ask(&self, request: &str) -> Result<String> {
        let fail = |e: std::io::Error| {
            EngineError::io(
                format!(
                    "asking the supervisor of container {} ({request})",
                    &self.id[..12.min(self.id.len())]
                ),
                e,
            )
        };
        let mut conn = skiff_fs::socket::connect(&self.socket).map_err(fail)?;
        writeln!(conn, "{request}").map_err(fail)?;
        let mut line = String::new();
        BufReader::new(conn).read_line(&mut line).map_err(fail)?;
        let line = line.trim().to_string();
        if line.is_empty() {
            return Err(EngineError::Helper(format!(
                "the supervisor of container {} went away",
                self.id
            )));
        }
        match line.strip_prefix("error ") {
            Some(e) => Err(EngineError::Conflict(e.to_string())),
            None => Ok(line),
        }
    }

    /// Runs a container that was created without starting.
    pub fn start(&self) -> Result<()> {
        self.ask("start").map(drop)
    }

    pub fn signal(&self, signal: i32) -> Result<()> {
        self.ask(&format!("signal {signal}")).map(drop)
    }

    /// `created`, `running` or `exited CODE`.
    pub fn state(&self) -> Result<String> {
        self.ask("state")
    }

    /// Waits until the container exits; its exit code.
    pub fn wait(&self) -> Result<i32> {
        let line = self.ask("wait")?;
        line.strip_prefix("exited ")
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| EngineError::Helper(format!("the supervisor answered {line:?}")))
    }
}
