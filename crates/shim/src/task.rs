//! The Task service (containerd's task API v2) over the engine's OCI
//! runtime: one shim serves every container of a pod.
//!
//! What clones or forks (create, exec, and start or delete when hooks
//! run) goes through [`crate::helper`]; the rest (signals, the freezer,
//! cgroup figures) is done here. Exits come from containerd-shim's SIGCHLD
//! loop through its monitor.

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use containerd_shim::api::{self, Status};
use containerd_shim::event::Event;
use containerd_shim::monitor::{monitor_subscribe, Subject, Topic};
use containerd_shim::protos::events::task::{
    TaskCreate, TaskDelete, TaskExecAdded, TaskExecStarted, TaskExit, TaskIO, TaskPaused,
    TaskResumed, TaskStart,
};
use containerd_shim::protos::protobuf::well_known_types::timestamp::Timestamp;
use containerd_shim::protos::protobuf::{EnumOrUnknown, MessageDyn, MessageField};
use containerd_shim::protos::ttrpc::{self, Code};
use containerd_shim::protos::types::task::ProcessInfo;
use containerd_shim::publisher::RemotePublisher;
use containerd_shim::{ExitSignal, TtrpcContext};
use skiff_engine::oci_runtime::OciRuntime;
use skiff_engine::EngineError;

use crate::helper::{self, Request, RootfsMount, Step};
use crate::io::{ConsoleSocket, ProcessIo};
use crate::reaper::Reaper;

mod pooled;
use pooled::Pooled;

/// The spec annotation that picks a container's sandbox kind; a pod's
/// containers all run in the kind its sandbox (pause) container got.
pub use skiff_engine::oci_runtime::SANDBOX_ANNOTATION;
const DEFAULT_SANDBOX: &str = "namespace";

/// The environment variable that carries the handler's kind from `shim
/// start` to the shim it spawns (which runs as the binary's real name).
pub const HANDLER_SANDBOX_ENV: &str = "SKIFF_SHIM_SANDBOX";

/// The sandbox kind of the runtime handler, if it names one: the runtime
/// type `io.containerd.skiff-KIND.v2` makes containerd run
/// `containerd-shim-skiff-KIND-v2`, a link to this binary, so each
/// handler (and each RuntimeClass) can pin a kind.
pub fn handler_sandbox() -> Option<String> {
    if let Ok(kind) = std::env::var(HANDLER_SANDBOX_ENV) {
        return Some(kind).filter(|k| !k.is_empty());
    }
    let argv0 = std::env::args_os().next()?;
    let name = Path::new(&argv0).file_name()?.to_str()?.to_owned();
    let kind = name
        .strip_prefix("containerd-shim-skiff-")?
        .strip_suffix("-v2")?;
    (!kind.is_empty()).then(|| kind.to_string())
}

/// How long a process's last output may take to reach containerd.
const DRAIN: Duration = Duration::from_secs(2);

/// Where the shims of containerd namespace `namespace` keep their
/// containers' state (the OCI runtime's root).
pub fn state_root(namespace: &str) -> PathBuf {
    Path::new("/run/skiff-shim").join(namespace)
}

type RpcResult<T> = ttrpc::Result<T>;

fn rpc_error(code: Code, message: impl Into<String>) -> ttrpc::Error {
    ttrpc::Error::RpcStatus(ttrpc::get_status(code, message.into()))
}

/// The engine's errors as the codes containerd maps back to its own.
fn engine_error(e: EngineError) -> ttrpc::Error {
    let code = match &e {
        EngineError::NotFound(_) => Code::NOT_FOUND,
        EngineError::Conflict(_) => Code::FAILED_PRECONDITION,
        EngineError::Invalid(_) => Code::INVALID_ARGUMENT,
        _ => Code::UNKNOWN,
    };
    rpc_error(code, e.to_string())
}

pub(crate) fn timestamp(t: SystemTime) -> Timestamp {
    let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    let mut ts = Timestamp::new();
    ts.seconds = d.as_secs() as i64;
    ts.nanos = d.subsec_nanos() as i32;
    ts
}

/// One process: a container's init, or an exec.
struct Proc {
    pid: i32,
    status: Status,
    exit: Option<(u32, SystemTime)>,
    io: ProcessIo,
    stdin: String,
    stdout: String,
    stderr: String,
    terminal: bool,
    /// An exec's runtime-spec `process`, JSON, until it starts.
    spec: Vec<u8>,
}

impl Proc {
    fn exited(&mut self, code: i32, at: SystemTime) {
        self.exit = Some((code as u32, at));
        self.status = Status::STOPPED;
    }

    fn exit_status(&self) -> (u32, MessageField<Timestamp>) {
        match self.exit {
            Some((code, at)) => (code, MessageField::some(timestamp(at))),
            None => (0, MessageField::none()),
        }
    }
}

struct Container {
    bundle: PathBuf,
    sandbox: String,
    /// Whether the shim mounted its rootfs (and so unmounts it).
    rootfs_mounted: bool,
    /// Hooks that spawn processes at start or delete, run in a helper.
    poststart_hooks: bool,
    poststop_hooks: bool,
    init: Proc,
    execs: HashMap<String, Proc>,
    /// Whether its module runs in the node's Wasm pool ([`pooled`]), and
    /// that module until it ends.
    in_pool: bool,
    pooled: Option<Pooled>,
}

impl Container {
    /// The init (`exec_id` empty) or an exec.
    fn process(&self, exec_id: &str) -> RpcResult<&Proc> {
        if exec_id.is_empty() {
            return Ok(&self.init);
        }
        self.execs.get(exec_id).ok_or_else(|| no_exec(exec_id))
    }

    fn process_mut(&mut self, exec_id: &str) -> RpcResult<&mut Proc> {
        if exec_id.is_empty() {
            return Ok(&mut self.init);
        }
        self.execs.get_mut(exec_id).ok_or_else(|| no_exec(exec_id))
    }
}

fn no_exec(exec_id: &str) -> ttrpc::Error {
    rpc_error(Code::NOT_FOUND, format!("exec {exec_id} does not exist"))
}

struct Inner {
    namespace: String,
    root: PathBuf,
    runtime: OciRuntime,
    publisher: RemotePublisher,
    reaper: Reaper,
    containers: Mutex<HashMap<String, Container>>,
    /// Signalled on every exit the shim records.
    changed: Condvar,
    exit: Arc<ExitSignal>,
}

/// The Task service containerd-shim serves over ttrpc.
pub struct TaskService {
    inner: Arc<Inner>,
}

impl TaskService {
    pub fn new(namespace: &str, publisher: RemotePublisher, exit: Arc<ExitSignal>) -> Self {
        let root = state_root(namespace);
        let runtime = match OciRuntime::new(&root) {
            Ok(r) => r,
            Err(e) => {
                // Without its state root the shim can serve nothing.
                tracing::error!("{e}");
                std::process::exit(1);
            }
        };
        let inner = Arc::new(Inner {
            namespace: namespace.into(),
            root,
            runtime,
            publisher,
            reaper: Reaper::default(),
            containers: Mutex::new(HashMap::new()),
            changed: Condvar::new(),
            exit,
        });
        match monitor_subscribe(Topic::All) {
            Ok(subscription) => {
                let inner = Arc::clone(&inner);
                std::thread::spawn(move || {
                    for event in subscription.rx.iter() {
                        if let Subject::Pid(pid) = event.subject {
                            inner.on_exit(pid, event.exit_code);
                        }
                    }
                });
            }
            Err(e) => {
                tracing::error!("subscribing to process exits: {e}");
                std::process::exit(1);
            }
        }
        TaskService { inner }
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, Container>> {
        self.containers.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn publish<E: Event + MessageDyn + 'static>(&self, event: E) {
        let topic = event.topic();
        if let Err(e) =
            self.publisher
                .publish(Default::default(), &topic, &self.namespace, Box::new(event))
        {
            tracing::warn!("publishing {topic}: {e}");
        }
    }

    /// A child exited: a container's process (its exit is published), or
    /// one nobody has claimed yet.
    fn on_exit(&self, pid: i32, code: i32) {
        let now = SystemTime::now();
        let mut containers = self.lock();
        let mut event = None;
        'find: for (id, c) in containers.iter_mut() {
            if c.init.pid == pid && c.init.exit.is_none() {
                c.init.exited(code, now);
                event = Some(exit_event(id, id, &c.init));
                break;
            }
            for (exec_id, p) in c.execs.iter_mut() {
                if p.pid == pid && p.exit.is_none() {
                    p.exited(code, now);
                    event = Some(exit_event(id, exec_id, p));
                    break 'find;
                }
            }
        }
        drop(containers);
        match event {
            Some(e) => self.announce_exit(e),
            None => self.reaper.store(pid, code),
        }
    }

    /// Tells containerd that task `req.id` exists, its pid `pid`.
    fn publish_created(&self, req: &api::CreateTaskRequest, pid: i32) {
        self.publish(TaskCreate {
            container_id: req.id.clone(),
            bundle: req.bundle.clone(),
            rootfs: req.rootfs.clone(),
            io: MessageField::some(TaskIO {
                stdin: req.stdin.clone(),
                stdout: req.stdout.clone(),
                stderr: req.stderr.clone(),
                terminal: req.terminal,
                ..Default::default()
            }),
            pid: pid as u32,
            ..Default::default()
        });
    }

    /// Wakes the waiters on an exit just recorded, and tells containerd.
    fn announce_exit(&self, event: TaskExit) {
        self.changed.notify_all();
        self.publish(event);
    }

    /// A pid just learnt: takes an exit that came before it.
    fn claim_early_exit(&self, proc_: &mut Proc) -> bool {
        let Some(code) = self.reaper.take(proc_.pid) else {
            return false;
        };
        proc_.exited(code, SystemTime::now());
        true
    }

    fn outcome_path(&self) -> PathBuf {
        use std::sync::atomic::{AtomicU64, Ordering};
        static NEXT: AtomicU64 = AtomicU64::new(0);
        self.root.join(format!(
            ".outcome-{}-{}.json",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ))
    }

    fn helper(
        &self,
        id: &str,
        sandbox: &str,
        step: Step,
        stdio: [OwnedFd; 3],
    ) -> RpcResult<Option<i32>> {
        self.helper_detecting(id, sandbox, false, step, stdio)
            .map(|done| done.pid)
    }

    /// [`Self::helper`], reporting the kind a Create used when
    /// `detect_wasm` let the helper change it.
    fn helper_detecting(
        &self,
        id: &str,
        sandbox: &str,
        detect_wasm: bool,
        step: Step,
        stdio: [OwnedFd; 3],
    ) -> RpcResult<helper::Done> {
        let request = Request {
            root: self.root.clone(),
            id: id.into(),
            sandbox: sandbox.into(),
            detect_wasm,
            step,
            outcome: self.outcome_path(),
        };
        helper::run(&self.reaper, &request, stdio).map_err(|e| rpc_error(Code::UNKNOWN, e))
    }

    /// Streams for a new process: the helper's three descriptors, the
    /// shim's side (complete for pipes), and the console socket a pty
    /// master comes back on.
    fn streams(
        &self,
        stdin: &str,
        stdout: &str,
        stderr: &str,
        terminal: bool,
    ) -> RpcResult<([OwnedFd; 3], ProcessIo, Option<ConsoleSocket>)> {
        let fail = |e: String| rpc_error(Code::INVALID_ARGUMENT, e);
        if terminal {
            let socket = ConsoleSocket::bind(&self.root).map_err(fail)?;
            return Ok((null_stdio()?, ProcessIo::default(), Some(socket)));
        }
        let (io, fds) = ProcessIo::pipes(stdin, stdout, stderr).map_err(fail)?;
        Ok((fds, io, None))
    }

    /// The pod's kind for a new container: the runtime handler's (see
    /// [`handler_sandbox`]), which an annotation may not change; else its
    /// own annotation, else the kind of the pod it joins, else the default.
    /// With it, whether the kind is still open: nothing named one, so a
    /// command that is a module takes the Wasm kind once the root is
    /// mounted.
    fn choose_sandbox(&self, spec: &serde_json::Value) -> RpcResult<(String, bool)> {
        let annotations = spec.get("annotations");
        let named = annotations
            .and_then(|a| a.get(SANDBOX_ANNOTATION))
            .and_then(|v| v.as_str());
        let pod = annotations
            .and_then(|a| a.get("io.kubernetes.cri.sandbox-id"))
            .and_then(|v| v.as_str());
        let pod_kind = pod.and_then(|p| self.lock().get(p).map(|c| c.sandbox.clone()));
        let handler = handler_sandbox();
        if let Some(h) = &handler {
            if let Some(n) = named.filter(|n| n != h) {
                return Err(rpc_error(
                    Code::INVALID_ARGUMENT,
                    format!("{SANDBOX_ANNOTATION}={n} differs from the runtime handler's sandbox kind {h}, which an annotation may not change"),
                ));
            }
        }
        let named = named.or(handler.as_deref());
        // Nothing named a kind (a pod's namespace kind lets its containers
        // be modules too, in its namespaces): a command that is a module
        // may still pick the Wasm kind once the root is mounted (runwasi's
        // rule).
        let open = named.is_none() && pod_kind.as_deref().is_none_or(|p| p == DEFAULT_SANDBOX);
        let kind = match (named, pod_kind) {
            (Some(n), Some(p)) if n != p => {
                return Err(rpc_error(
                    Code::INVALID_ARGUMENT,
                    format!("{SANDBOX_ANNOTATION}={n} differs from its pod's sandbox kind {p}; a pod's containers share one sandbox kind"),
                ))
            }
            (Some(n), _) => n.to_string(),
            (None, Some(p)) => p,
            // crun's Wasm annotations pick the Wasm kind, as crun's handler.
            (None, None) if skiff_engine::oci_runtime::asks_for_wasm(annotations) => "wasm".to_string(),
            (None, None) => DEFAULT_SANDBOX.to_string(),
        };
        // Named now, so a wrong kind fails before anything is made.
        self.runtime
            .sandbox_kind(&kind)
            .map_err(|e| rpc_error(Code::INVALID_ARGUMENT, format!("{SANDBOX_ANNOTATION}: {e}")))?;
        let open = open && kind == DEFAULT_SANDBOX;
        Ok((kind, open))
    }
}

fn exit_event(container_id: &str, id: &str, p: &Proc) -> TaskExit {
    let (exit_status, exited_at) = p.exit_status();
    TaskExit {
        container_id: container_id.into(),
        id: id.into(),
        pid: p.pid as u32,
        exit_status,
        exited_at,
        ..Default::default()
    }
}

fn has_hooks(spec: &serde_json::Value, kind: &str) -> bool {
    spec.get("hooks")
        .and_then(|h| h.get(kind))
        .and_then(|h| h.as_array())
        .is_some_and(|a| !a.is_empty())
}

fn drain(copies: Vec<JoinHandle<()>>) {
    let deadline = std::time::Instant::now() + DRAIN;
    while copies.iter().any(|c| !c.is_finished()) && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn not_found(id: &str) -> ttrpc::Error {
    rpc_error(
        Code::NOT_FOUND,
        format!("container {id} does not exist in this shim"),
    )
}

impl containerd_shim::Task for TaskService {
    fn create(
        &self,
        _ctx: &TtrpcContext,
        req: api::CreateTaskRequest,
    ) -> RpcResult<api::CreateTaskResponse> {
        let s = &self.inner;
        let id = req.id.clone();
        if s.lock().contains_key(&id) {
            return Err(rpc_error(
                Code::ALREADY_EXISTS,
                format!("container {id} already exists"),
            ));
        }
        if !req.checkpoint.is_empty() {
            return Err(rpc_error(
                Code::UNIMPLEMENTED,
                "skiff's shim cannot restore a checkpoint",
            ));
        }
        let bundle = PathBuf::from(&req.bundle);
        let config = bundle.join("config.json");
        let spec: serde_json::Value = std::fs::read(&config)
            .map_err(|e| e.to_string())
            .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
            .map_err(|e| rpc_error(Code::INVALID_ARGUMENT, format!("{}: {e}", config.display())))?;
        let (mut sandbox, open) = s.choose_sandbox(&spec)?;
        let rootfs: Vec<RootfsMount> = req
            .rootfs
            .iter()
            .map(|m| RootfsMount {
                fs_type: m.type_.clone(),
                source: m.source.clone(),
                options: m.options.clone(),
            })
            .collect();
        if sandbox == "wasm" {
            if let Some(created) = self.create_pooled(&req, &bundle, &rootfs, &spec)? {
                return Ok(created);
            }
        }
        let (fds, mut io, console) =
            s.streams(&req.stdin, &req.stdout, &req.stderr, req.terminal)?;
        let created = s.helper_detecting(
            &id,
            &sandbox,
            open,
            Step::Create {
                bundle: bundle.clone(),
                rootfs: rootfs.clone(),
                console_socket: console.as_ref().map(|c| c.path().to_path_buf()),
            },
            fds,
        )?;
        if let Some(detected) = created.sandbox {
            sandbox = detected;
        }
        let pid = created.pid.unwrap_or(0);
        if let Some(console) = &console {
            let made = console
                .receive()
                .and_then(|master| ProcessIo::terminal(master, &req.stdin, &req.stdout));
            match made {
                Ok(t) => io = t,
                Err(e) => {
                    if let Ok(kind) = s.runtime.sandbox_kind(&sandbox) {
                        let _ = s.runtime.delete(&[&*kind], &id, true);
                    }
                    if !rootfs.is_empty() {
                        helper::unmount_rootfs(&bundle.join("rootfs"));
                    }
                    return Err(rpc_error(Code::UNKNOWN, e));
                }
            }
        }
        let mut init = Proc {
            pid,
            status: Status::CREATED,
            exit: None,
            io,
            stdin: req.stdin.clone(),
            stdout: req.stdout.clone(),
            stderr: req.stderr.clone(),
            terminal: req.terminal,
            spec: Vec::new(),
        };
        let early = s
            .claim_early_exit(&mut init)
            .then(|| exit_event(&id, &id, &init));
        s.lock().insert(
            id.clone(),
            Container {
                bundle: bundle.clone(),
                sandbox,
                rootfs_mounted: !rootfs.is_empty(),
                poststart_hooks: has_hooks(&spec, "poststart"),
                poststop_hooks: has_hooks(&spec, "poststop"),
                init,
                execs: HashMap::new(),
                in_pool: false,
                pooled: None,
            },
        );
        s.publish_created(&req, pid);
        if let Some(e) = early {
            s.announce_exit(e);
        }
        Ok(api::CreateTaskResponse {
            pid: pid as u32,
            ..Default::default()
        })
    }

    fn start(&self, _ctx: &TtrpcContext, req: api::StartRequest) -> RpcResult<api::StartResponse> {
        let s = &self.inner;
        let id = &req.id;
        if !req.exec_id.is_empty() {
            return self.start_exec(id, &req.exec_id);
        }
        let (sandbox, hooks, pid, pooled) = {
            let mut containers = s.lock();
            let c = containers.get_mut(id).ok_or_else(|| not_found(id))?;
            if c.init.status != Status::CREATED || c.init.exit.is_some() {
                return Err(rpc_error(
                    Code::FAILED_PRECONDITION,
                    format!("container {id} is not created (it has started, or exited)"),
                ));
            }
            let pooled = match c.pooled.take() {
                Some(Pooled::Created(module)) => Some(module),
                other => {
                    c.pooled = other;
                    None
                }
            };
            (c.sandbox.clone(), c.poststart_hooks, c.init.pid, pooled)
        };
        if let Some(module) = pooled {
            self.start_pooled(id, module)?;
        } else if hooks {
            let null = null_stdio()?;
            s.helper(id, &sandbox, Step::Start, null)?;
        } else {
            s.runtime.start(id).map_err(engine_error)?;
        }
        if let Some(c) = s.lock().get_mut(id) {
            if c.init.exit.is_none() {
                c.init.status = Status::RUNNING;
            }
        }
        s.publish(TaskStart {
            container_id: id.clone(),
            pid: pid as u32,
            ..Default::default()
        });
        Ok(api::StartResponse {
            pid: pid as u32,
            ..Default::default()
        })
    }

    fn exec(&self, _ctx: &TtrpcContext, req: api::ExecProcessRequest) -> RpcResult<api::Empty> {
        let s = &self.inner;
        let mut containers = s.lock();
        let c = containers
            .get_mut(&req.id)
            .ok_or_else(|| not_found(&req.id))?;
        if c.execs.contains_key(&req.exec_id) {
            return Err(rpc_error(
                Code::ALREADY_EXISTS,
                format!(
                    "exec {} already exists in container {}",
                    req.exec_id, req.id
                ),
            ));
        }
        if c.init.exit.is_some() {
            return Err(rpc_error(
                Code::FAILED_PRECONDITION,
                format!("container {} has exited", req.id),
            ));
        }
        let spec = req
            .spec
            .as_ref()
            .map(|a| a.value.clone())
            .unwrap_or_default();
        c.execs.insert(
            req.exec_id.clone(),
            Proc {
                pid: 0,
                status: Status::CREATED,
                exit: None,
                io: ProcessIo::default(),
                stdin: req.stdin.clone(),
                stdout: req.stdout.clone(),
                stderr: req.stderr.clone(),
                terminal: req.terminal,
                spec,
            },
        );
        drop(containers);
        s.publish(TaskExecAdded {
            container_id: req.id.clone(),
            exec_id: req.exec_id.clone(),
            ..Default::default()
        });
        Ok(api::Empty::new())
    }

    fn wait(&self, _ctx: &TtrpcContext, req: api::WaitRequest) -> RpcResult<api::WaitResponse> {
        let s = &self.inner;
        let mut containers = s.lock();
        loop {
            let c = containers
                .get_mut(&req.id)
                .ok_or_else(|| not_found(&req.id))?;
            let p = c.process_mut(&req.exec_id)?;
            if p.exit.is_some() {
                let (exit_status, exited_at) = p.exit_status();
                let copies = p.io.take_copies();
                drop(containers);
                drain(copies);
                return Ok(api::WaitResponse {
                    exit_status,
                    exited_at,
                    ..Default::default()
                });
            }
            containers = s
                .changed
                .wait(containers)
                .unwrap_or_else(|p| p.into_inner());
        }
    }

    fn kill(&self, _ctx: &TtrpcContext, req: api::KillRequest) -> RpcResult<api::Empty> {
        let s = &self.inner;
        let signal = req.signal as i32;
        let containers = s.lock();
        let c = containers.get(&req.id).ok_or_else(|| not_found(&req.id))?;
        if req.exec_id.is_empty() {
            if c.init.exit.is_some() && !req.all {
                return Err(rpc_error(Code::NOT_FOUND, "process already finished"));
            }
            if c.in_pool {
                let ended = c.init.exit.is_some();
                drop(containers);
                // `--all` after the end: nothing is left to signal.
                return if ended {
                    Ok(api::Empty::new())
                } else {
                    self.kill_pooled(&req.id, signal)
                };
            }
            drop(containers);
            return match s.runtime.kill(&req.id, signal, req.all) {
                Ok(()) => Ok(api::Empty::new()),
                Err(EngineError::Conflict(_)) => {
                    Err(rpc_error(Code::NOT_FOUND, "process already finished"))
                }
                Err(e) => Err(engine_error(e)),
            };
        }
        let p = c.process(&req.exec_id)?;
        if p.exit.is_some() || p.pid <= 0 {
            return Err(rpc_error(Code::NOT_FOUND, "process already finished"));
        }
        // SAFETY: kill(2) on a live child of this shim (not yet reaped).
        if unsafe { libc::kill(p.pid, signal) } != 0 {
            return Err(rpc_error(
                Code::UNKNOWN,
                format!(
                    "signalling exec {}: {}",
                    req.exec_id,
                    std::io::Error::last_os_error()
                ),
            ));
        }
        Ok(api::Empty::new())
    }

    fn delete(
        &self,
        _ctx: &TtrpcContext,
        req: api::DeleteRequest,
    ) -> RpcResult<api::DeleteResponse> {
        let s = &self.inner;
        let id = &req.id;
        if !req.exec_id.is_empty() {
            let mut containers = s.lock();
            let c = containers.get_mut(id).ok_or_else(|| not_found(id))?;
            let running = c
                .execs
                .get(&req.exec_id)
                .map(|p| p.pid > 0 && p.exit.is_none())
                .ok_or_else(|| no_exec(&req.exec_id))?;
            if running {
                return Err(rpc_error(
                    Code::FAILED_PRECONDITION,
                    format!("exec {} is still running", req.exec_id),
                ));
            }
            let mut p = c.execs.remove(&req.exec_id).expect("checked above");
            drop(containers);
            drain(p.io.take_copies());
            let (exit_status, exited_at) = p.exit_status();
            return Ok(api::DeleteResponse {
                pid: p.pid.max(0) as u32,
                exit_status,
                exited_at,
                ..Default::default()
            });
        }
        let (sandbox, hooks, copies, bundle, mounted, pooled) = {
            let mut containers = s.lock();
            let c = containers.get_mut(id).ok_or_else(|| not_found(id))?;
            if c.init.exit.is_none() && c.init.status != Status::CREATED {
                return Err(rpc_error(
                    Code::FAILED_PRECONDITION,
                    format!("container {id} is still running; kill it first"),
                ));
            }
            let pooled = c.pooled.take();
            let was_pooled = c.in_pool;
            if let Some(Pooled::Created(mut module)) = pooled {
                module.delete();
            }
            (
                c.sandbox.clone(),
                c.poststop_hooks,
                c.init.io.take_copies(),
                c.bundle.clone(),
                c.rootfs_mounted,
                was_pooled,
            )
        };
        drain(copies);
        if pooled {
            // Nothing of it is in the runtime's state: the pool held it.
        } else if hooks {
            s.helper(id, &sandbox, Step::Delete { force: true }, null_stdio()?)?;
        } else {
            let kind = s.runtime.sandbox_kind(&sandbox).map_err(engine_error)?;
            s.runtime
                .delete(&[&*kind], id, true)
                .map_err(engine_error)?;
        }
        if mounted {
            helper::unmount_rootfs(&bundle.join("rootfs"));
        }
        let Some(mut c) = s.lock().remove(id) else {
            return Err(not_found(id));
        };
        c.init.io.close_stdin();
        let (exit_status, exited_at) = c.init.exit_status();
        s.publish(TaskDelete {
            container_id: id.clone(),
            pid: c.init.pid as u32,
            exit_status,
            exited_at: exited_at.clone(),
            id: id.clone(),
            ..Default::default()
        });
        Ok(api::DeleteResponse {
            pid: c.init.pid as u32,
            exit_status,
            exited_at,
            ..Default::default()
        })
    }

    fn state(&self, _ctx: &TtrpcContext, req: api::StateRequest) -> RpcResult<api::StateResponse> {
        let s = &self.inner;
        let containers = s.lock();
        let c = containers.get(&req.id).ok_or_else(|| not_found(&req.id))?;
        let p = c.process(&req.exec_id)?;
        let (exit_status, exited_at) = p.exit_status();
        Ok(api::StateResponse {
            id: req.id.clone(),
            bundle: c.bundle.display().to_string(),
            pid: p.pid.max(0) as u32,
            status: EnumOrUnknown::new(p.status),
            stdin: p.stdin.clone(),
            stdout: p.stdout.clone(),
            stderr: p.stderr.clone(),
            terminal: p.terminal,
            exit_status,
            exited_at,
            exec_id: req.exec_id.clone(),
            ..Default::default()
        })
    }

    fn pids(&self, _ctx: &TtrpcContext, req: api::PidsRequest) -> RpcResult<api::PidsResponse> {
        let s = &self.inner;
        let pids = match s.lock().get(&req.id) {
            None => return Err(not_found(&req.id)),
            // A pooled module has no process of its own: the pid that
            // stands for it.
            Some(c) if c.in_pool => vec![c.init.pid],
            Some(_) => Vec::new(),
        };
        let pids = if pids.is_empty() {
            s.runtime.pids(&req.id).map_err(engine_error)?
        } else {
            pids
        };
        Ok(api::PidsResponse {
            processes: pids
                .into_iter()
                .map(|pid| ProcessInfo {
                    pid: pid as u32,
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        })
    }

    fn pause(&self, _ctx: &TtrpcContext, req: api::PauseRequest) -> RpcResult<api::Empty> {
        self.set_paused(&req.id, true)
    }

    fn resume(&self, _ctx: &TtrpcContext, req: api::ResumeRequest) -> RpcResult<api::Empty> {
        self.set_paused(&req.id, false)
    }

    fn close_io(&self, _ctx: &TtrpcContext, req: api::CloseIORequest) -> RpcResult<api::Empty> {
        let s = &self.inner;
        let mut containers = s.lock();
        let c = containers
            .get_mut(&req.id)
            .ok_or_else(|| not_found(&req.id))?;
        let p = c.process_mut(&req.exec_id)?;
        if req.stdin {
            p.io.close_stdin();
        }
        Ok(api::Empty::new())
    }

    fn resize_pty(&self, _ctx: &TtrpcContext, req: api::ResizePtyRequest) -> RpcResult<api::Empty> {
        let s = &self.inner;
        let containers = s.lock();
        let c = containers.get(&req.id).ok_or_else(|| not_found(&req.id))?;
        let p = c.process(&req.exec_id)?;
        let clamp = |v: u32| v.min(u32::from(u16::MAX)) as u16;
        p.io.resize(clamp(req.width), clamp(req.height))
            .map_err(|e| rpc_error(Code::FAILED_PRECONDITION, e))?;
        Ok(api::Empty::new())
    }

    fn update(&self, _ctx: &TtrpcContext, req: api::UpdateTaskRequest) -> RpcResult<api::Empty> {
        let s = &self.inner;
        self.refuse_in_pool(&req.id, "its resources updated")?;
        let value = req
            .resources
            .as_ref()
            .map(|a| a.value.as_slice())
            .unwrap_or_default();
        let resources: oci_spec::runtime::LinuxResources =
            serde_json::from_slice(value).map_err(|e| {
                rpc_error(
                    Code::INVALID_ARGUMENT,
                    format!("the resources to update: {e}"),
                )
            })?;
        s.runtime
            .update(&req.id, &resources)
            .map_err(engine_error)?;
        Ok(api::Empty::new())
    }

    fn stats(&self, _ctx: &TtrpcContext, req: api::StatsRequest) -> RpcResult<api::StatsResponse> {
        let s = &self.inner;
        let in_pool = s
            .lock()
            .get(&req.id)
            .map(|c| c.in_pool)
            .ok_or_else(|| not_found(&req.id))?;
        // A pooled module's use is not apart from its pool's: nothing to
        // report, rather than a figure that is not its own.
        let stats = if in_pool {
            skiff_engine::oci_runtime::Stats::default()
        } else {
            s.runtime.stats(&req.id).map_err(engine_error)?
        };
        let any = crate::metrics::to_any(&stats, skiff_engine::oci_runtime::unified_cgroups())
            .map_err(|e| rpc_error(Code::UNKNOWN, e))?;
        Ok(api::StatsResponse {
            stats: MessageField::some(any),
            ..Default::default()
        })
    }

    fn connect(
        &self,
        _ctx: &TtrpcContext,
        req: api::ConnectRequest,
    ) -> RpcResult<api::ConnectResponse> {
        let s = &self.inner;
        let task_pid = s
            .lock()
            .get(&req.id)
            .map(|c| c.init.pid.max(0) as u32)
            .unwrap_or(0);
        Ok(api::ConnectResponse {
            shim_pid: std::process::id(),
            task_pid,
            version: env!("CARGO_PKG_VERSION").into(),
            ..Default::default()
        })
    }

    fn shutdown(&self, _ctx: &TtrpcContext, _req: api::ShutdownRequest) -> RpcResult<api::Empty> {
        let s = &self.inner;
        // One shim serves a whole pod: it stays while any container does.
        if s.lock().is_empty() {
            s.exit.signal();
        }
        Ok(api::Empty::new())
    }
}

fn null_stdio() -> RpcResult<[OwnedFd; 3]> {
    crate::io::null_stdio().map_err(|e| rpc_error(Code::UNKNOWN, e))
}

impl TaskService {
    fn start_exec(&self, id: &str, exec_id: &str) -> RpcResult<api::StartResponse> {
        let s = &self.inner;
        let (sandbox, spec, stdin, stdout, stderr, terminal) = {
            let containers = s.lock();
            let c = containers.get(id).ok_or_else(|| not_found(id))?;
            let p = c.process(exec_id)?;
            if p.status != Status::CREATED {
                return Err(rpc_error(
                    Code::FAILED_PRECONDITION,
                    format!("exec {exec_id} has already started"),
                ));
            }
            (
                c.sandbox.clone(),
                p.spec.clone(),
                p.stdin.clone(),
                p.stdout.clone(),
                p.stderr.clone(),
                p.terminal,
            )
        };
        let (fds, mut io, console) = s.streams(&stdin, &stdout, &stderr, terminal)?;
        let started = s.helper(
            id,
            &sandbox,
            Step::Exec {
                process_json: spec,
                console_socket: console.as_ref().map(|c| c.path().to_path_buf()),
            },
            fds,
        );
        let pid = match started {
            Ok(pid) => pid.unwrap_or(0),
            Err(e) => {
                // A failed exec is an exited one, so a Wait never hangs.
                if let Some(p) = s.lock().get_mut(id).and_then(|c| c.execs.get_mut(exec_id)) {
                    p.exited(255, SystemTime::now());
                }
                s.changed.notify_all();
                return Err(e);
            }
        };
        if let Some(console) = &console {
            match console
                .receive()
                .and_then(|master| ProcessIo::terminal(master, &stdin, &stdout))
            {
                Ok(t) => io = t,
                Err(e) => {
                    // SAFETY: kill(2) on the exec's process, a child of this shim.
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                    return Err(rpc_error(Code::UNKNOWN, e));
                }
            }
        }
        let mut early = None;
        if let Some(p) = s.lock().get_mut(id).and_then(|c| c.execs.get_mut(exec_id)) {
            p.pid = pid;
            p.status = Status::RUNNING;
            p.io = io;
            if s.claim_early_exit(p) {
                early = Some(exit_event(id, exec_id, p));
            }
        }
        s.publish(TaskExecStarted {
            container_id: id.into(),
            exec_id: exec_id.into(),
            pid: pid as u32,
            ..Default::default()
        });
        if let Some(e) = early {
            s.announce_exit(e);
        }
        Ok(api::StartResponse {
            pid: pid as u32,
            ..Default::default()
        })
    }

    /// Refuses what a module in the Wasm pool cannot have done: it has no
    /// cgroup or process of its own.
    fn refuse_in_pool(&self, id: &str, what: &str) -> RpcResult<()> {
        match self.inner.lock().get(id) {
            None => Err(not_found(id)),
            Some(c) if c.in_pool => Err(rpc_error(
                Code::UNIMPLEMENTED,
                format!("container {id} is a module in the Wasm pool, which cannot be {what}; run it with SKIFF_WASM_POOL=off in the shim's environment for a process of its own"),
            )),
            Some(_) => Ok(()),
        }
    }

    fn set_paused(&self, id: &str, paused: bool) -> RpcResult<api::Empty> {
        let s = &self.inner;
        self.refuse_in_pool(id, if paused { "paused" } else { "resumed" })?;
        s.runtime.set_paused(id, paused).map_err(engine_error)?;
        if let Some(c) = s.lock().get_mut(id) {
            if c.init.exit.is_none() {
                c.init.status = if paused {
                    Status::PAUSED
                } else {
                    Status::RUNNING
                };
            }
        }
        if paused {
            s.publish(TaskPaused {
                container_id: id.into(),
                ..Default::default()
            });
        } else {
            s.publish(TaskResumed {
                container_id: id.into(),
                ..Default::default()
            });
        }
        Ok(api::Empty::new())
    }
}
