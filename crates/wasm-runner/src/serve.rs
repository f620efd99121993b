//! `skiff-wasm serve`: a pool that runs many modules in one process, each
//! instance a task with its own store, WASI context, memory limit and
//! preopens (docs/wasm.md, "The pool").
//!
//! A client (skiff) connects to the pool's `SOCK_SEQPACKET` socket and
//! sends one [`Start`] with its descriptors; the pool answers `started`
//! once the module runs and `exited` with its code when it ends. A
//! `signal` message from the client, or the client hanging up, stops the
//! instance. The pool itself runs as the process of a namespace-sandbox
//! container, so it holds no descriptor of the host's but those its
//! clients send, and a bug in the engine is still contained.

use std::collections::HashMap;
use std::io::IoSliceMut;
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustix::net::{
    AddressFamily, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, ReturnFlags, SendFlags,
    SocketAddrUnix, SocketFlags, SocketType,
};
use serde::{Deserialize, Serialize};
use tokio::io::unix::AsyncFd;
use wasmtime::component::Component;
use wasmtime::{Engine, InstancePre, Linker, Module, Precompiled, StoreLimitsBuilder};
use wasmtime_wasi::cli::{AsyncStdinStream, AsyncStdoutStream, InputFile, OutputFile};
use wasmtime_wasi::p2::bindings::CommandPre;
use wasmtime_wasi::{FsPerms, WasiCtxBuilder};

use crate::{exit_of, start_export, ComponentState, Ended, State, EXIT_CANNOT_RUN, EXIT_USAGE};

/// The descriptors a [`Start`] comes with, in this order, then one per
/// entry of [`Start::dirs`].
const FDS_BEFORE_DIRS: usize = 5;
/// At most this many `-v` directories per instance.
const MAX_DIRS: usize = 32;
/// The largest request: argv and env of a container, with room to spare.
const MAX_REQUEST: usize = 256 << 10;
/// The largest message once a module runs (`{"signal": N}`).
const MAX_SIGNAL: usize = 256;
/// How often a running module checks whether to yield or stop.
const EPOCH_TICK: Duration = Duration::from_millis(10);
/// Compiled modules the pool keeps loaded.
const MAX_LOADED: usize = 64;
/// Bytes of a module's output held before its writes wait.
const OUTPUT_BUDGET: usize = 64 << 10;

/// What a client asks the pool to run. Its descriptors: the compiled
/// module, the image's tree (a directory, the module's `/`), stdin,
/// stdout, stderr (pipes), then one directory per `dirs` entry.
#[derive(Debug, Deserialize)]
struct Start {
    /// BLAKE3 of the compiled module, as skiff recorded it when it
    /// compiled it.
    blake3: String,
    argv: Vec<String>,
    #[serde(default)]
    env: Vec<(String, String)>,
    /// Preopened at these paths: (path, writable).
    #[serde(default)]
    dirs: Vec<(String, bool)>,
    /// The module's memory limit in bytes.
    #[serde(default)]
    memory: Option<usize>,
    /// Whether the stdin descriptor is one to read; otherwise the module's
    /// stdin is empty.
    #[serde(default)]
    stdin: bool,
}

/// What the pool tells a client.
#[derive(Debug, Serialize)]
#[serde(tag = "event", rename_all = "lowercase")]
enum Event {
    /// The module runs.
    Started,
    /// It has ended: its exit code, and why if it did not exit itself.
    Exited { code: u8, message: String },
}

/// What a client may send once its module runs.
#[derive(Debug, Deserialize)]
struct Signal {
    signal: i32,
}

/// A compiled module or component, ready to instantiate.
#[derive(Clone)]
enum Loaded {
    Module(InstancePre<State>),
    Component(CommandPre<ComponentState>),
}

struct Pool {
    engine: Engine,
    loaded: Mutex<HashMap<String, Loaded>>,
    /// Instances running now; the epoch ticks only while there are any.
    running: AtomicUsize,
    wake_ticker: tokio::sync::Notify,
    /// Connections open now, for the idle exit.
    connections: tokio::sync::watch::Sender<usize>,
}

/// `serve --socket PATH [--idle-timeout SECONDS]`.
pub fn serve(args: &[String]) -> Result<(), String> {
    let mut socket = None;
    let mut idle = Duration::from_secs(600);
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = || it.next().cloned().ok_or(format!("{a} needs a value"));
        match a.as_str() {
            "--socket" => socket = Some(value()?),
            "--idle-timeout" => {
                let v = value()?;
                idle = Duration::from_secs(
                    v.parse()
                        .map_err(|_| format!("--idle-timeout {v}: not a number of seconds"))?,
                );
            }
            other => return Err(format!("unknown argument {other}")),
        }
    }
    let socket = socket.ok_or("serve needs --socket PATH")?;
    let listener = listen(&socket)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("skiff-wasm-pool")
        .enable_all()
        .build()
        .map_err(|e| format!("starting the pool's runtime: {e}"))?;
    // The path's own inode (not the socket's): whether it is still ours.
    let ours = rustix::fs::stat(socket.as_str()).map(|st| st.st_ino).ok();
    let result = runtime.block_on(accept_until_idle(listener, idle));
    // Unless another pool has bound the path since.
    if rustix::fs::stat(socket.as_str()).map(|st| st.st_ino).ok() == ours {
        let _ = std::fs::remove_file(&socket);
    }
    result
}

fn listen(path: &str) -> Result<OwnedFd, String> {
    let _ = std::fs::remove_file(path);
    let fd = rustix::net::socket_with(
        AddressFamily::UNIX,
        SocketType::SEQPACKET,
        SocketFlags::CLOEXEC | SocketFlags::NONBLOCK,
        None,
    )
    .map_err(|e| format!("making the pool's socket: {e}"))?;
    // Root's alone from its first moment: no window where others connect.
    let old = rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o177));
    let bound = SocketAddrUnix::new(path).and_then(|addr| rustix::net::bind(&fd, &addr));
    rustix::process::umask(old);
    bound.map_err(|e| format!("binding the pool's socket {path}: {e}"))?;
    rustix::net::listen(&fd, 128).map_err(|e| format!("listening on {path}: {e}"))?;
    Ok(fd)
}

async fn accept_until_idle(listener: OwnedFd, idle: Duration) -> Result<(), String> {
    let engine = crate::engine()?;
    let (connections, mut watch) = tokio::sync::watch::channel(0usize);
    let pool = Arc::new(Pool {
        engine,
        loaded: Mutex::default(),
        running: AtomicUsize::new(0),
        wake_ticker: tokio::sync::Notify::new(),
        connections,
    });
    tokio::spawn(tick_epochs(pool.clone()));
    let listener = watch_fd(listener).map_err(|e| format!("watching the pool's socket: {e}"))?;
    loop {
        let open = *watch.borrow_and_update();
        tokio::select! {
            ready = listener.readable() => {
                let mut guard = ready.map_err(|e| format!("the pool's socket: {e}"))?;
                match rustix::net::accept_with(
                    listener.get_ref(),
                    SocketFlags::CLOEXEC | SocketFlags::NONBLOCK,
                ) {
                    Ok(conn) => spawn_client(&pool, conn),
                    Err(rustix::io::Errno::AGAIN) => guard.clear_ready(),
                    Err(rustix::io::Errno::INTR | rustix::io::Errno::CONNABORTED) => {}
                    Err(e) => return Err(format!("accepting a client: {e}")),
                }
            }
            _ = watch.changed() => {}
            _ = tokio::time::sleep(idle), if open == 0 => {
                // A client that connected as the timer fired is served,
                // not dropped.
                match rustix::net::accept_with(
                    listener.get_ref(),
                    SocketFlags::CLOEXEC | SocketFlags::NONBLOCK,
                ) {
                    Ok(conn) => spawn_client(&pool, conn),
                    Err(_) => return Ok(()),
                }
            }
        }
    }
}

fn spawn_client(pool: &Arc<Pool>, conn: OwnedFd) {
    pool.connections.send_modify(|n| *n += 1);
    let pool = pool.clone();
    tokio::spawn(async move {
        serve_one(&pool, conn).await;
        pool.connections.send_modify(|n| *n -= 1);
    });
}

/// Advances the engine's epoch while any module runs, so that each yields
/// (and sees a stop) at least every [`EPOCH_TICK`].
async fn tick_epochs(pool: Arc<Pool>) {
    loop {
        if pool.running.load(Ordering::SeqCst) == 0 {
            pool.wake_ticker.notified().await;
            continue;
        }
        tokio::time::sleep(EPOCH_TICK).await;
        pool.engine.increment_epoch();
    }
}

/// Counts a running instance for as long as it lives.
struct RunningGuard<'a>(&'a Pool);

impl<'a> RunningGuard<'a> {
    fn new(pool: &'a Pool) -> Self {
        pool.running.fetch_add(1, Ordering::SeqCst);
        pool.wake_ticker.notify_one();
        RunningGuard(pool)
    }
}

impl Drop for RunningGuard<'_> {
    fn drop(&mut self) {
        self.0.running.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn serve_one(pool: &Pool, conn: OwnedFd) {
    let Ok(conn) = watch_fd(conn) else {
        return;
    };
    let (request, fds) = match receive(&conn, MAX_REQUEST).await {
        Ok(Some(r)) => r,
        // The client left before asking; nothing to say.
        Ok(None) | Err(_) => return,
    };
    let (code, message) = match run_request(pool, &conn, request, fds).await {
        Ok(ended) => ended,
        Err((code, message)) => (code, message),
    };
    // The whole message went to the module's stderr; the client's is
    // short, so it fits the client's buffer.
    let message: String = message.chars().take(1024).collect();
    let _ = send(&conn, &Event::Exited { code, message }).await;
}

/// Runs one client's module to its end: its exit code, with a message
/// when it did not exit by itself.
async fn run_request(
    pool: &Pool,
    conn: &AsyncFd<OwnedFd>,
    request: Vec<u8>,
    fds: Vec<OwnedFd>,
) -> Result<(u8, String), (u8, String)> {
    let usage = |e: String| (EXIT_USAGE, e);
    let start: Start = serde_json::from_slice(&request)
        .map_err(|e| usage(format!("a request the pool cannot read: {e}")))?;
    if start.argv.is_empty() {
        return Err(usage("the request names no module (argv is empty)".into()));
    }
    if start.dirs.len() > MAX_DIRS || fds.len() != FDS_BEFORE_DIRS + start.dirs.len() {
        return Err(usage(format!(
            "the request came with {} descriptors, not {}",
            fds.len(),
            FDS_BEFORE_DIRS + start.dirs.len()
        )));
    }
    let mut fds = fds.into_iter();
    let mut next = || fds.next().expect("counted above");
    let (cwasm, root, stdin, stdout, stderr) = (next(), next(), next(), next(), next());
    let dirs: Vec<OwnedFd> = fds.collect();
    // Kept to report to: the WASI context takes the other.
    let report_to = stderr.try_clone().ok();
    let name = start.argv[0].clone();
    let outcome = async {
        let loaded = load(pool, &start.blake3, cwasm)?;
        let wasi = wasi_context(&start, root, stdin, stdout, stderr, dirs)?;
        let mut limits = StoreLimitsBuilder::new().trap_on_grow_failure(true);
        if let Some(bytes) = start.memory {
            limits = limits.memory_size(bytes);
        }
        let limits = limits.build();
        let _running = RunningGuard::new(pool);
        let ended = tokio::select! {
            ended = run_loaded(&pool.engine, loaded, wasi, limits, conn) => ended?,
            signal = stop_requested(conn) => {
                return Ok((128 + signal as u8, format!("stopped by signal {signal}")));
            }
        };
        Ok(match ended {
            Ok(code) => (code, String::new()),
            Err(e) => exit_of(e, start.memory),
        })
    }
    .await;
    let (code, message) = match outcome {
        Ok(ended) => ended,
        Err(failed) => failed,
    };
    if !message.is_empty() {
        if let Some(fd) = report_to {
            report(fd, &format!("skiff-wasm: {name}: {message}\n")).await;
        }
    }
    Ok((code, message))
}

/// The module skiff compiled, loaded once per pool: a hit trusts the
/// client's digest (only root reaches the socket); a miss reads the file
/// and checks that digest before deserializing it.
fn load(pool: &Pool, blake3_hex: &str, cwasm: OwnedFd) -> Result<Loaded, (u8, String)> {
    let usage = |e: String| (EXIT_USAGE, e);
    if let Some(l) = pool
        .loaded
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(blake3_hex)
    {
        return Ok(l.clone());
    }
    let mut compiled = Vec::new();
    std::io::Read::read_to_end(&mut std::fs::File::from(cwasm), &mut compiled)
        .map_err(|e| usage(format!("reading the compiled module: {e}")))?;
    if blake3::hash(&compiled).to_hex().as_str() != blake3_hex {
        return Err(usage(
            "the compiled module is not the one skiff recorded (its digest differs)".into(),
        ));
    }
    let cannot = |what: &str, e: wasmtime::Error| (EXIT_CANNOT_RUN, format!("{what}: {e:#}"));
    let loaded = match Engine::detect_precompiled(&compiled) {
        Some(Precompiled::Component) => {
            // SAFETY: the bytes are what `compile` wrote with this engine's
            // configuration, checked against the digest skiff recorded then.
            let component = unsafe { Component::deserialize(&pool.engine, &compiled) }
                .map_err(|e| cannot("loading the compiled component", e))?;
            let mut linker = wasmtime::component::Linker::<ComponentState>::new(&pool.engine);
            wasmtime_wasi::p2::add_to_linker_async(&mut linker)
                .map_err(|e| (EXIT_USAGE, format!("{e:#}")))?;
            let pre = linker
                .instantiate_pre(&component)
                .and_then(CommandPre::new)
                .map_err(|e| cannot("linking the component", e))?;
            Loaded::Component(pre)
        }
        _ => {
            // SAFETY: as above.
            let module = unsafe { Module::deserialize(&pool.engine, &compiled) }
                .map_err(|e| cannot("loading the compiled module", e))?;
            let mut linker: Linker<State> = Linker::new(&pool.engine);
            wasmtime_wasi::p1::add_to_linker_async(&mut linker, |s: &mut State| &mut s.wasi)
                .map_err(|e| (EXIT_USAGE, format!("{e:#}")))?;
            let pre = linker
                .instantiate_pre(&module)
                .map_err(|e| cannot("linking the module", e))?;
            Loaded::Module(pre)
        }
    };
    let mut cache = pool.loaded.lock().unwrap_or_else(|p| p.into_inner());
    if cache.len() >= MAX_LOADED {
        cache.clear();
    }
    cache.insert(blake3_hex.to_string(), loaded.clone());
    Ok(loaded)
}

fn wasi_context(
    start: &Start,
    root: OwnedFd,
    stdin: OwnedFd,
    stdout: OwnedFd,
    stderr: OwnedFd,
    dirs: Vec<OwnedFd>,
) -> Result<WasiCtxBuilder, (u8, String)> {
    let usage = |e: String| (EXIT_USAGE, e);
    let mut wasi = WasiCtxBuilder::new();
    wasi.args(&start.argv).envs(&start.env);
    // Pipes are read and written without blocking a worker; anything
    // else (a file, /dev/null) never blocks for long, and is used as is.
    let is_pipe = |fd: &OwnedFd| {
        rustix::fs::fstat(fd).is_ok_and(|st| {
            rustix::fs::FileType::from_raw_mode(st.st_mode) == rustix::fs::FileType::Fifo
        })
    };
    let not_pipe = |what: &str, e: std::io::Error| usage(format!("the module's {what}: {e}"));
    for (fd, is_stdout) in [(stdout, true), (stderr, false)] {
        let what = if is_stdout { "stdout" } else { "stderr" };
        if is_pipe(&fd) {
            let pipe =
                tokio::net::unix::pipe::Sender::from_owned_fd(fd).map_err(|e| not_pipe(what, e))?;
            let stream = AsyncStdoutStream::new(OUTPUT_BUDGET, pipe);
            if is_stdout {
                wasi.stdout(stream);
            } else {
                wasi.stderr(stream);
            }
        } else {
            let file = OutputFile::new(std::fs::File::from(fd));
            if is_stdout {
                wasi.stdout(file);
            } else {
                wasi.stderr(file);
            }
        }
    }
    if start.stdin {
        if is_pipe(&stdin) {
            let pipe = tokio::net::unix::pipe::Receiver::from_owned_fd(stdin)
                .map_err(|e| not_pipe("stdin", e))?;
            wasi.stdin(AsyncStdinStream::new(pipe));
        } else {
            wasi.stdin(InputFile::new(std::fs::File::from(stdin)));
        }
    }
    // The directories came as descriptors; wasmtime opens a preopen by
    // path, so each is reopened through this process's own fd table.
    let by_fd = |fd: &OwnedFd| format!("/proc/self/fd/{}", fd.as_raw_fd());
    wasi.preopened_dir(by_fd(&root), "/", FsPerms::ReadOnly)
        .map_err(|e| usage(format!("opening the image's tree: {e:#}")))?;
    for ((path, writable), fd) in start.dirs.iter().zip(&dirs) {
        let perms = if *writable {
            FsPerms::ReadWrite
        } else {
            FsPerms::ReadOnly
        };
        wasi.preopened_dir(by_fd(fd), path, perms)
            .map_err(|e| usage(format!("opening {path}: {e:#}")))?;
    }
    Ok(wasi)
}

/// Instantiates and runs one module; it yields at every epoch tick.
async fn run_loaded(
    engine: &Engine,
    loaded: Loaded,
    mut wasi: WasiCtxBuilder,
    limits: wasmtime::StoreLimits,
    conn: &AsyncFd<OwnedFd>,
) -> Result<Ended, (u8, String)> {
    let cannot = |e: wasmtime::Error| (EXIT_CANNOT_RUN, format!("{e:#}"));
    match loaded {
        Loaded::Module(pre) => {
            let mut store = State::store(engine, &mut wasi, limits);
            store.epoch_deadline_async_yield_and_update(1);
            let instance = pre.instantiate_async(&mut store).await.map_err(cannot)?;
            let start = start_export(&instance, &mut store)?;
            let _ = send(conn, &Event::Started).await;
            Ok(start.call_async(&mut store, ()).await.map(|()| 0))
        }
        Loaded::Component(pre) => {
            let mut store = ComponentState::store(engine, &mut wasi, limits);
            store.epoch_deadline_async_yield_and_update(1);
            let command = pre.instantiate_async(&mut store).await.map_err(cannot)?;
            let _ = send(conn, &Event::Started).await;
            Ok(command
                .wasi_cli_run()
                .call_run(&mut store)
                .await
                .map(|result| u8::from(result.is_err())))
        }
    }
}

/// Waits for the client to ask for a stop: the signal it names, or
/// SIGKILL when it hangs up (or says what the pool cannot read).
async fn stop_requested(conn: &AsyncFd<OwnedFd>) -> i32 {
    loop {
        match receive(conn, MAX_SIGNAL).await {
            Ok(Some((message, _))) => {
                if let Ok(Signal { signal }) = serde_json::from_slice(&message) {
                    if (1..64).contains(&signal) {
                        return signal;
                    }
                }
            }
            Ok(None) | Err(_) => return libc::SIGKILL,
        }
    }
}

/// One message of at most `max` bytes and the descriptors it carried;
/// `None` at end of stream.
async fn receive(
    conn: &AsyncFd<OwnedFd>,
    max: usize,
) -> std::io::Result<Option<(Vec<u8>, Vec<OwnedFd>)>> {
    // Sized per message: a waiting module holds this buffer all its life.
    let mut buf = vec![0u8; max];
    let mut space =
        [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(FDS_BEFORE_DIRS + MAX_DIRS))];
    loop {
        let mut guard = conn.readable().await?;
        let mut control = RecvAncillaryBuffer::new(&mut space);
        let received = rustix::net::recvmsg(
            conn.get_ref(),
            &mut [IoSliceMut::new(&mut buf)],
            &mut control,
            RecvFlags::CMSG_CLOEXEC | RecvFlags::DONTWAIT,
        );
        match received {
            Ok(msg) => {
                let fds: Vec<OwnedFd> = control
                    .drain()
                    .filter_map(|m| match m {
                        RecvAncillaryMessage::ScmRights(fds) => Some(fds),
                        _ => None,
                    })
                    .flatten()
                    .collect();
                if msg.flags.contains(ReturnFlags::TRUNC) || msg.flags.contains(ReturnFlags::CTRUNC)
                {
                    return Err(std::io::Error::other("a message too large for the pool"));
                }
                if msg.bytes == 0 && fds.is_empty() {
                    return Ok(None);
                }
                buf.truncate(msg.bytes);
                return Ok(Some((buf, fds)));
            }
            Err(rustix::io::Errno::AGAIN) => guard.clear_ready(),
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
}

async fn send(conn: &AsyncFd<OwnedFd>, event: &Event) -> std::io::Result<()> {
    let bytes = serde_json::to_vec(event).map_err(std::io::Error::other)?;
    loop {
        let mut guard = conn.writable().await?;
        match rustix::net::send(
            conn.get_ref(),
            &bytes,
            SendFlags::DONTWAIT | SendFlags::NOSIGNAL,
        ) {
            Ok(_) => return Ok(()),
            Err(rustix::io::Errno::AGAIN) => guard.clear_ready(),
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
}

/// Writes a short message to the module's stderr (a pipe the pool made
/// non-blocking), waiting while it is full; given up if the reader left.
async fn report(fd: OwnedFd, message: &str) {
    if rustix::io::ioctl_fionbio(&fd, true).is_err() {
        return;
    }
    let Ok(fd) = watch_fd(fd) else {
        return;
    };
    let mut rest = message.as_bytes();
    while !rest.is_empty() {
        let Ok(mut guard) = fd.writable().await else {
            return;
        };
        match rustix::io::write(fd.get_ref().as_fd(), rest) {
            Ok(n) => rest = &rest[n..],
            Err(rustix::io::Errno::AGAIN) => guard.clear_ready(),
            Err(rustix::io::Errno::INTR) => {}
            Err(_) => return,
        }
    }
}

/// Registers `fd` with the runtime's reactor.
fn watch_fd(fd: OwnedFd) -> std::io::Result<AsyncFd<OwnedFd>> {
    // SAFETY: an `OwnedFd` names one descriptor, open until it is dropped,
    // and the `AsyncFd` owns it for its whole life.
    Ok(unsafe { AsyncFd::register(fd) }?)
}
