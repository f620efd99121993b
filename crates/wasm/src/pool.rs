//! The Wasm pool (docs/wasm.md, "The pool"): one `skiff-wasm serve` per
//! node state directory runs every pooled module of that node, each as a
//! task with its own store, instead of a process of its own. A start is
//! then a message on a socket, and an instance costs what its store and
//! memory cost.
//!
//! The pool is a namespace-sandbox container (namespaces, a cgroup, the
//! default seccomp policy, Docker's default capabilities, no_new_privs)
//! whose root is an empty directory: it reaches nothing of the host's
//! but the descriptors its clients send. Its keeper ([`keeper_main`],
//! started by the first client) is its parent: it waits for it and
//! removes its cgroup when it leaves (it leaves once idle).

use std::collections::BTreeSet;
use std::io::{IoSlice, Read, Write};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rustix::net::{
    AddressFamily, RecvFlags, SendAncillaryBuffer, SendAncillaryMessage, SendFlags, SocketAddrUnix,
    SocketFlags, SocketType,
};
use serde::{Deserialize, Serialize};
use skiff_sandbox::spec::{ContainerSpec, Network, ProcessUser, Resources, Volume};
use skiff_sandbox::{
    Exit, Lifecycle, NamespaceKind, Prepare, Sandbox, SandboxError, SandboxKind, SignalHandle,
    Stats, Stdio,
};

/// The runner and the socket's directory, as the pool sees them.
const RUNNER_IN_POOL: &str = "/.skiff-wasm/runner";
const SOCKET_DIR_IN_POOL: &str = "/.skiff-wasm/sock";
const SOCKET_NAME: &str = "pool.sock";
/// How long a pool may take to come up (a cold start of its runner).
const START_LIMIT: Duration = Duration::from_secs(20);
/// The pool's own limits: it holds every instance's memory, each within
/// its module's limit.
const POOL_PIDS: i64 = 1024;

/// Where one node's pool lives: `DIR/root` (its empty root), `DIR/sock`
/// (its socket), `DIR/lock`, `DIR/pool.log`, `DIR/keeper.pid` and
/// `DIR/pool.pid` (while it runs).
#[derive(Debug, Clone)]
pub struct PoolPlace {
    dir: PathBuf,
    idle: Duration,
}

/// What a module gets from the pool: the start message (docs/wasm.md).
#[derive(Debug, Serialize)]
pub(crate) struct StartRequest {
    pub blake3: String,
    pub argv: Vec<String>,
    pub env: Vec<(String, String)>,
    pub dirs: Vec<(String, bool)>,
    pub memory: Option<usize>,
    pub stdin: bool,
}

#[derive(Debug, Deserialize)]
#[serde(tag = "event", rename_all = "lowercase")]
enum Event {
    Started,
    Exited { code: u8, message: String },
}

impl PoolPlace {
    pub fn new(dir: &Path, idle: Duration) -> Self {
        PoolPlace {
            dir: dir.to_path_buf(),
            idle,
        }
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.join("sock").join(SOCKET_NAME)
    }

    /// The pool's cgroup: one per state directory.
    fn cgroups_path(&self) -> String {
        let h = blake3::hash(self.dir.as_os_str().as_encoded_bytes()).to_hex();
        format!("/skiff/wasm-pool-{}", &h[..12])
    }

    /// A connection to the pool, which is started first if none serves.
    pub(crate) fn connect(
        &self,
        namespace: &NamespaceKind,
        runner: &Path,
    ) -> Result<OwnedFd, SandboxError> {
        if let Ok(c) = connect(&self.socket()) {
            return Ok(c);
        }
        std::fs::create_dir_all(&self.dir)
            .map_err(|e| crate::io_error(format!("creating {}", self.dir.display()), e))?;
        // Root's alone: the socket, its log and pids.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&self.dir, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| crate::io_error(format!("closing {}", self.dir.display()), e))?;
        let lock = std::fs::File::create(self.dir.join("lock"))
            .map_err(|e| crate::io_error(format!("creating {}/lock", self.dir.display()), e))?;
        rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockExclusive)
            .map_err(|e| crate::io_error("locking the Wasm pool".into(), e.into()))?;
        if let Ok(c) = connect(&self.socket()) {
            return Ok(c);
        }
        self.start(namespace, runner)?;
        connect(&self.socket()).map_err(|e| {
            SandboxError::Setup(format!(
                "the Wasm pool started but its socket {} refuses: {e}",
                self.socket().display()
            ))
        })
    }

    /// Starts the pool through its keeper and waits until it serves. The
    /// keeper is this same binary run with [`KEEPER_ARG`] (every front
    /// end dispatches it), so it is a fresh, single-threaded process that
    /// holds nothing of the caller's.
    fn start(&self, namespace: &NamespaceKind, runner: &Path) -> Result<(), SandboxError> {
        // What a pool that died with -9 left: its processes and cgroup.
        namespace.remove_leftovers(&self.cgroups_path())?;
        let job = KeeperJob {
            dir: self.dir.clone(),
            idle_seconds: self.idle.as_secs(),
            runner: runner.to_path_buf(),
            filter_cache: namespace.filter_cache().to_path_buf(),
        };
        let job = serde_json::to_string(&job)
            .map_err(|e| SandboxError::Invalid(format!("the pool keeper's job: {e}")))?;
        let mut keeper = std::process::Command::new("/proc/self/exe")
            .arg(KEEPER_ARG)
            .arg(job)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .map_err(|e| crate::io_error("starting the Wasm pool's keeper".into(), e))?;
        // The keeper writes "ready" or why not, then closes its end; it
        // gives up on its own after START_LIMIT.
        let mut report = String::new();
        if let Some(mut out) = keeper.stdout.take() {
            let _ = out.read_to_string(&mut report);
        }
        // It forked itself away at once: this reaps the parent half.
        let _ = keeper.wait();
        match report.trim() {
            "ready" => Ok(()),
            "" => Err(SandboxError::Setup(format!(
                "the Wasm pool's keeper ended without a word; see {}",
                self.dir.join("pool.log").display()
            ))),
            why => Err(SandboxError::Setup(format!("the Wasm pool: {why}"))),
        }
    }

    /// The pool's container: the runner serving on the socket, in an
    /// empty, read-only root.
    fn spec(&self, runner: &Path) -> Result<oci_spec::runtime::Spec, SandboxError> {
        let root = self.dir.join("root");
        let sock = self.dir.join("sock");
        for d in [
            root.join(".skiff-wasm/sock"),
            root.join("proc"),
            root.join("dev"),
            root.join("sys"),
            sock.clone(),
        ] {
            std::fs::create_dir_all(&d)
                .map_err(|e| crate::io_error(format!("creating {}", d.display()), e))?;
        }
        let runner_mountpoint = root.join(".skiff-wasm/runner");
        if !runner_mountpoint.exists() {
            std::fs::File::create(&runner_mountpoint).map_err(|e| {
                crate::io_error(format!("creating {}", runner_mountpoint.display()), e)
            })?;
        }
        let capabilities: BTreeSet<String> =
            skiff_sandbox::capabilities::effective_capabilities(&[], &[])?;
        let seccomp = skiff_sandbox::seccomp::default_profile(
            &skiff_sandbox::capabilities::to_oci_capabilities(&capabilities),
        );
        ContainerSpec {
            rootfs: root,
            args: vec![
                RUNNER_IN_POOL.into(),
                "serve".into(),
                "--socket".into(),
                format!("{SOCKET_DIR_IN_POOL}/{SOCKET_NAME}"),
                "--idle-timeout".into(),
                self.idle.as_secs().max(1).to_string(),
            ],
            env: vec!["PATH=/".into()],
            cwd: "/".into(),
            user: ProcessUser::default(),
            hostname: "skiff-wasm-pool".into(),
            etc_files: Vec::new(),
            terminal: false,
            network: Network::None,
            read_only: true,
            volumes: vec![
                Volume {
                    source: runner.to_path_buf(),
                    destination: RUNNER_IN_POOL.into(),
                    read_only: true,
                },
                Volume {
                    source: sock,
                    destination: SOCKET_DIR_IN_POOL.into(),
                    read_only: false,
                },
            ],
            resources: Resources {
                memory_bytes: None,
                cpus: None,
                pids: Some(POOL_PIDS),
            },
            capabilities,
            seccomp: Some(seccomp),
            userns: None,
            cgroups_path: self.cgroups_path(),
            memory_swap_supported: false,
            rlimits: skiff_sandbox::rlimits::container_limits(&[])?,
        }
        .to_oci()
    }
}

/// The first argument that makes a front end's binary the pool's keeper.
pub const KEEPER_ARG: &str = "--skiff-wasm-pool-keeper";

/// What the keeper is told, as its one argument (JSON).
#[derive(Debug, Serialize, Deserialize)]
struct KeeperJob {
    dir: PathBuf,
    idle_seconds: u64,
    runner: PathBuf,
    filter_cache: PathBuf,
}

/// The keeper's `main`, for a front end whose first argument is
/// [`KEEPER_ARG`]: starts the pool as its child, writes "ready" (or why
/// not) to its stdout once the pool's socket answers, then waits for the
/// pool and removes what it leaves. Returns the exit status.
pub fn keeper_main(args: &[std::ffi::OsString]) -> i32 {
    let job: KeeperJob = match args
        .first()
        .and_then(|a| a.to_str())
        .map(serde_json::from_str)
    {
        Some(Ok(j)) => j,
        _ => {
            println!("{KEEPER_ARG} needs its job");
            return 2;
        }
    };
    // Out of the caller's session, and no longer its child: the pool
    // outlives every client.
    // SAFETY: this process is single-threaded (a front end dispatches
    // KEEPER_ARG before starting any thread).
    match unsafe { libc::fork() } {
        0 => {}
        -1 => {
            println!("forking the keeper: {}", std::io::Error::last_os_error());
            return 1;
        }
        _ => return 0,
    }
    let _ = rustix::process::setsid();
    // Whatever the caller let through exec (a descriptor made without
    // CLOEXEC) is closed: the keeper and the pool outlive the caller, and
    // must not hold its pipes open.
    // SAFETY: close_range on descriptors this process never uses; Rust
    // owns none of them here (only 0, 1 and 2 are in use).
    unsafe { libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32) };
    let Ok(report) = rustix::io::fcntl_dupfd_cloexec(rustix::stdio::stdout(), 3) else {
        return 1;
    };
    if let Ok(null) = rustix::fs::open(
        "/dev/null",
        rustix::fs::OFlags::RDWR | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    ) {
        // SAFETY: 1 is this process's own stdout, replaced by /dev/null
        // (the report keeps the pipe).
        let _ = unsafe { libc::dup2(std::os::fd::AsRawFd::as_raw_fd(&null), 1) };
    }
    let place = PoolPlace::new(&job.dir, Duration::from_secs(job.idle_seconds));
    let namespace = NamespaceKind::new(&job.filter_cache);
    let mut report = std::fs::File::from(report);
    let spec = match place.spec(&job.runner) {
        Ok(s) => s,
        Err(e) => {
            let _ = writeln!(report, "{e}");
            return 1;
        }
    };
    let _ = std::fs::write(place.dir.join("keeper.pid"), std::process::id().to_string());
    let mut sandbox = match prepare_pool(&place, &namespace, &spec) {
        Ok(s) => s,
        Err(e) => {
            let _ = writeln!(report, "{e}");
            return 1;
        }
    };
    let _ = std::fs::write(place.dir.join("pool.pid"), sandbox.pid().to_string());
    let deadline = Instant::now() + START_LIMIT;
    loop {
        if connect(&place.socket()).is_ok() {
            let _ = writeln!(report, "ready");
            break;
        }
        let exited = rustix::process::waitpid(
            rustix::process::Pid::from_raw(sandbox.pid()),
            rustix::process::WaitOptions::NOHANG,
        );
        if matches!(exited, Ok(Some(_))) || Instant::now() > deadline {
            let log = std::fs::read_to_string(place.dir.join("pool.log")).unwrap_or_default();
            let _ = writeln!(
                report,
                "its runner did not come up: {}",
                log.lines().last().unwrap_or("no output")
            );
            let _ = sandbox.delete();
            return 1;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    drop(report);
    let _ = sandbox.wait();
    let _ = sandbox.delete();
    let _ = std::fs::remove_file(place.dir.join("pool.pid"));
    let _ = std::fs::remove_file(place.dir.join("keeper.pid"));
    0
}

fn prepare_pool(
    place: &PoolPlace,
    namespace: &NamespaceKind,
    spec: &oci_spec::runtime::Spec,
) -> Result<Box<dyn Sandbox>, SandboxError> {
    let null = || {
        rustix::fs::open(
            "/dev/null",
            rustix::fs::OFlags::RDWR | rustix::fs::OFlags::CLOEXEC,
            rustix::fs::Mode::empty(),
        )
        .map_err(|e| crate::io_error("opening /dev/null".into(), e.into()))
    };
    let log = std::fs::File::create(place.dir.join("pool.log"))
        .map_err(|e| crate::io_error("creating the pool's log".into(), e))?;
    let log2 = log
        .try_clone()
        .map_err(|e| crate::io_error("dup".into(), e))?;
    let mut sandbox = namespace.prepare(Prepare {
        id: "skiff-wasm-pool",
        spec,
        bundle: &place.dir,
        stdio: Stdio::Files {
            stdin: null()?,
            stdout: log.into(),
            stderr: log2.into(),
        },
        lifecycle: Lifecycle::Supervised,
        block_device: None,
        pod: None,
    })?;
    sandbox.start()?;
    Ok(sandbox)
}

fn connect(socket: &Path) -> std::io::Result<OwnedFd> {
    let fd = rustix::net::socket_with(
        AddressFamily::UNIX,
        SocketType::SEQPACKET,
        SocketFlags::CLOEXEC,
        None,
    )?;
    rustix::net::connect(&fd, &SocketAddrUnix::new(socket)?)?;
    Ok(fd)
}

/// A module run by the pool: the client's end of its connection.
pub struct PooledInstance {
    /// Until the start.
    pending: Option<Pending>,
    /// Once started; shared with the signal handles given out before.
    connection: Arc<Mutex<Option<Arc<OwnedFd>>>>,
    /// Why it could not start, reported as its exit.
    exited_early: Option<Exit>,
    relay: Option<skiff_sandbox::relay::Relay>,
}

struct Pending {
    /// Connected at the prepare, while the caller is single-threaded (a
    /// pool that must be started is forked from it); an open connection
    /// keeps the pool from its idle exit.
    connection: OwnedFd,
    request: StartRequest,
    /// The compiled module, the root, stdin, stdout, stderr, the dirs.
    fds: Vec<OwnedFd>,
}

impl PooledInstance {
    pub(crate) fn prepare(
        connection: OwnedFd,
        request: StartRequest,
        compiled: &Path,
        root: &Path,
        dirs: &[PathBuf],
        stdio: Stdio,
    ) -> Result<Self, SandboxError> {
        let open_dir = |p: &Path| {
            rustix::fs::open(
                p,
                rustix::fs::OFlags::RDONLY
                    | rustix::fs::OFlags::DIRECTORY
                    | rustix::fs::OFlags::CLOEXEC,
                rustix::fs::Mode::empty(),
            )
            .map_err(|e| crate::io_error(format!("opening {}", p.display()), e.into()))
        };
        let cwasm = rustix::fs::open(
            compiled,
            rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::CLOEXEC,
            rustix::fs::Mode::empty(),
        )
        .map_err(|e| crate::io_error(format!("opening {}", compiled.display()), e.into()))?;
        let mut fds = vec![cwasm, open_dir(root)?];
        let (streams, relay) = match stdio {
            Stdio::Relay {
                stdin,
                stdout,
                stderr,
                tap,
            } => {
                let (ends, relay) = skiff_sandbox::relay::remote(stdin, stdout, stderr, tap)?;
                (ends, Some(relay))
            }
            Stdio::Files {
                stdin,
                stdout,
                stderr,
            } => ([stdin, stdout, stderr], None),
            Stdio::Terminal => {
                return Err(SandboxError::Unsupported(
                    "the Wasm pool takes pipes, not a terminal".into(),
                ))
            }
        };
        fds.extend(streams);
        for d in dirs {
            fds.push(open_dir(d)?);
        }
        Ok(PooledInstance {
            pending: Some(Pending {
                connection,
                request,
                fds,
            }),
            connection: Arc::default(),
            exited_early: None,
            relay,
        })
    }

    /// Sends the start message with its descriptors; the pool's first
    /// answer.
    fn send_start(pending: Pending) -> Result<(OwnedFd, Event), SandboxError> {
        let message = serde_json::to_vec(&pending.request)
            .map_err(|e| SandboxError::Invalid(format!("the pool's start message: {e}")))?;
        let fds: Vec<BorrowedFd<'_>> = pending.fds.iter().map(|f| f.as_fd()).collect();
        let mut space =
            vec![MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(fds.len()))];
        let mut control = SendAncillaryBuffer::new(&mut space);
        control.push(SendAncillaryMessage::ScmRights(&fds));
        let conn = pending.connection;
        let sent = rustix::net::sendmsg(
            &conn,
            &[IoSlice::new(&message)],
            &mut control,
            SendFlags::NOSIGNAL,
        );
        match sent
            .map_err(std::io::Error::from)
            .and_then(|_| receive(&conn))
        {
            Ok(Some(event)) => Ok((conn, event)),
            Ok(None) => Err(SandboxError::Setup(
                "the Wasm pool hung up before it took the module".into(),
            )),
            Err(e) => Err(crate::io_error(
                "giving the module to the Wasm pool".into(),
                e,
            )),
        }
    }
}

/// One event from the pool; `None` when it hung up.
fn receive(conn: &OwnedFd) -> std::io::Result<Option<Event>> {
    // An event is a line of JSON (a message for the module is shorter than
    // a page); this buffer lives as long as the module.
    let mut buf = vec![0u8; 4 << 10];
    loop {
        match rustix::net::recv(conn, &mut buf, RecvFlags::empty()) {
            Ok((0, _)) => return Ok(None),
            Ok((n, _)) => {
                return serde_json::from_slice(&buf[..n])
                    .map(Some)
                    .map_err(|e| std::io::Error::other(format!("a message from the pool: {e}")))
            }
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn signal_over(conn: &OwnedFd, signal: i32) -> Result<(), SandboxError> {
    let message = serde_json::json!({ "signal": signal }).to_string();
    rustix::net::send(conn, message.as_bytes(), SendFlags::NOSIGNAL)
        .map(|_| ())
        .map_err(|e| crate::io_error("signalling the module through the pool".into(), e.into()))
}

impl Sandbox for PooledInstance {
    /// The module has no process of its own: the one that holds its
    /// connection stands for it (the pool stops the module when it dies).
    fn pid(&self) -> i32 {
        std::process::id() as i32
    }

    fn take_console(&mut self) -> Option<OwnedFd> {
        None
    }

    fn start(&mut self) -> Result<(), SandboxError> {
        let pending = self
            .pending
            .take()
            .ok_or_else(|| SandboxError::Setup("the module was started already".into()))?;
        let (conn, event) = Self::send_start(pending)?;
        if let Event::Exited { code, .. } = event {
            self.exited_early = Some(Exit::Code(code.into()));
        }
        *lock(&self.connection) = Some(Arc::new(conn));
        Ok(())
    }

    fn signal(&self, signal: i32) -> Result<(), SandboxError> {
        (self.signal_handle())(signal)
    }

    fn signal_handle(&self) -> SignalHandle {
        let slot = self.connection.clone();
        Arc::new(move |signal| match lock(&slot).clone() {
            Some(c) => signal_over(&c, signal),
            None => Err(SandboxError::Setup("the module has not started".into())),
        })
    }

    fn wait(&mut self) -> Result<Exit, SandboxError> {
        if let Some(exit) = self.exited_early.take() {
            return Ok(exit);
        }
        let conn = lock(&self.connection)
            .clone()
            .ok_or_else(|| SandboxError::Setup("the module has not started".into()))?;
        loop {
            match receive(&conn) {
                Ok(Some(Event::Exited { code, message })) => {
                    if !message.is_empty() {
                        tracing::debug!(%message, "the pooled module ended");
                    }
                    return Ok(Exit::Code(code.into()));
                }
                Ok(Some(Event::Started)) => {}
                Ok(None) => {
                    tracing::warn!(
                        "the Wasm pool went away while the module ran: it ends as killed"
                    );
                    return Ok(Exit::Signal(libc::SIGKILL));
                }
                Err(e) => return Err(crate::io_error("waiting for the module".into(), e)),
            }
        }
    }

    fn finish_output(&mut self) {
        if let Some(r) = self.relay.take() {
            r.finish();
        }
    }

    fn oom_killed(&self) -> bool {
        false
    }

    /// The module's own memory is not apart from the pool's: the pool's
    /// cgroup is what a reader can see.
    fn stats(&self) -> Result<Stats, SandboxError> {
        Ok(Stats::default())
    }

    fn delete(&mut self) -> Result<(), SandboxError> {
        *lock(&self.connection) = None;
        self.pending = None;
        Ok(())
    }
}
