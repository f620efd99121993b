//! `skiff-wasm`: the Wasm sandbox's inside half (docs/wasm.md).
//!
//! - `skiff-wasm hash` prints the engine's compatibility hash, the key
//!   under which skiff caches what `compile` makes.
//! - `skiff-wasm compile` reads a module on stdin and writes it compiled
//!   for this engine on stdout. skiff runs it as an unprivileged user with
//!   no environment.
//! - `skiff-wasm run --cwasm FILE --blake3 HEX [--memory BYTES] [--root
//!   PATH] [--dir PATH:ro|rw]... -- ARGV...` runs a
//!   module skiff compiled, under WASI preview 1. It is the process of a
//!   namespace-sandbox container (namespaces, cgroup, seccomp,
//!   `no_new_privs`), so a bug in the engine is still contained.
//! - `skiff-wasm serve --socket PATH` runs many modules in one process,
//!   one task each ([`serve`]): the pool behind `skiff run --sandbox wasm`
//!   and a Wasm pod.
//!
//! Its arguments are parsed by hand: they are an internal interface between
//! skiff and this binary, never typed by a user.

mod serve;

use std::hash::{Hash, Hasher};
use std::io::{Read, Write};
use std::process::ExitCode;
use std::sync::atomic::{AtomicI32, Ordering};

use wasmtime::component::{Component, ResourceTable};
use wasmtime::{
    Config, Engine, Linker, Module, Precompiled, Store, StoreLimits, StoreLimitsBuilder, Trap,
};
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::{FsPerms, I32Exit, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

/// Exit codes besides the module's own, as docs/wasm.md lists them.
const EXIT_USAGE: u8 = 125;
/// The module cannot run: not valid, or it imports what is not provided.
const EXIT_CANNOT_RUN: u8 = 126;
/// A trap ends the module as SIGKILL would (as runwasi reports it).
const EXIT_TRAP: u8 = 128 + libc::SIGKILL as u8;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("hash") => hash(),
        Some("compile") => compile(),
        Some("run") => return run(&args[1..]),
        Some("serve") => serve::serve(&args[1..]),
        _ => Err(
            "usage: skiff-wasm hash | compile | run --cwasm FILE --blake3 HEX [--memory BYTES] [--root PATH] [--dir PATH:ro|rw]... -- ARGV... | serve --socket PATH [--idle-timeout SECONDS]"
                .to_string(),
        ),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("skiff-wasm: {e}");
            ExitCode::from(EXIT_USAGE)
        }
    }
}

/// The one engine configuration: `compile` and `run` must agree, or the
/// compiled module is refused.
fn engine() -> Result<Engine, String> {
    let mut config = Config::new();
    // `skiff stop` (SIGTERM) and SIGINT interrupt a running module.
    config.epoch_interruption(true);
    Engine::new(&config).map_err(|e| format!("starting the engine: {e}"))
}

fn hash() -> Result<(), String> {
    let engine = engine()?;
    let mut h = std::collections::hash_map::DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut h);
    // Built into the key too: a different runner build may lay out
    // compiled code differently even where the engine's hash agrees.
    env!("CARGO_PKG_VERSION").hash(&mut h);
    println!("{:016x}", h.finish());
    Ok(())
}

fn compile() -> Result<(), String> {
    let mut module = Vec::new();
    std::io::stdin()
        .read_to_end(&mut module)
        .map_err(|e| format!("reading the module: {e}"))?;
    if !module.starts_with(b"\0asm") {
        return Err("not a WebAssembly module (no \\0asm header)".into());
    }
    let engine = engine()?;
    let compiled = if is_component(&module) {
        engine.precompile_component(&module)
    } else {
        engine.precompile_module(&module)
    }
    .map_err(|e| format!("{e:#}"))?;
    std::io::stdout()
        .write_all(&compiled)
        .and_then(|()| std::io::stdout().flush())
        .map_err(|e| format!("writing the compiled module: {e}"))
}

/// Whether `wasm` is a component (WASI preview 2) rather than a core
/// module: its header's version and layer say so.
fn is_component(wasm: &[u8]) -> bool {
    wasm.get(4..8) == Some(&[0x0d, 0x00, 0x01, 0x00][..])
}

/// What `run` is told.
struct RunArgs {
    cwasm: String,
    blake3: String,
    memory: Option<usize>,
    /// Preopened read-only as `/`: the image's tree.
    root: Option<String>,
    /// (path, writable): directories preopened at the same path.
    dirs: Vec<(String, bool)>,
    argv: Vec<String>,
}

fn parse_run(args: &[String]) -> Result<RunArgs, String> {
    let mut out = RunArgs {
        cwasm: String::new(),
        blake3: String::new(),
        memory: None,
        root: None,
        dirs: Vec::new(),
        argv: Vec::new(),
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = || it.next().cloned().ok_or(format!("{a} needs a value"));
        match a.as_str() {
            "--cwasm" => out.cwasm = value()?,
            "--blake3" => out.blake3 = value()?,
            "--root" => out.root = Some(value()?),
            "--memory" => {
                let v = value()?;
                out.memory = Some(v.parse().map_err(|_| format!("--memory {v}: not a size"))?);
            }
            "--dir" => {
                let v = value()?;
                let (path, mode) = v
                    .rsplit_once(':')
                    .ok_or(format!("--dir {v}: want PATH:ro or PATH:rw"))?;
                let writable = match mode {
                    "ro" => false,
                    "rw" => true,
                    _ => return Err(format!("--dir {v}: want PATH:ro or PATH:rw")),
                };
                out.dirs.push((path.to_string(), writable));
            }
            "--" => {
                out.argv = it.cloned().collect();
                break;
            }
            other => return Err(format!("unknown argument {other}")),
        }
    }
    if out.cwasm.is_empty() || out.blake3.is_empty() || out.argv.is_empty() {
        return Err("run needs --cwasm, --blake3 and -- ARGV".into());
    }
    Ok(out)
}

/// A core module's store data: the WASI context and the memory limit.
struct State {
    wasi: WasiP1Ctx,
    limits: StoreLimits,
}

impl State {
    /// A core module's store, its memory limited; the caller sets how the
    /// epoch deadline acts (a trap, or a yield in the pool).
    fn store(engine: &Engine, wasi: &mut WasiCtxBuilder, limits: StoreLimits) -> Store<State> {
        let mut store = Store::new(
            engine,
            State {
                wasi: wasi.build_p1(),
                limits,
            },
        );
        store.limiter(|s| &mut s.limits);
        store
    }
}

/// A WASI command's entry point.
fn start_export(
    instance: &wasmtime::Instance,
    store: &mut Store<State>,
) -> Result<wasmtime::TypedFunc<(), ()>, (u8, String)> {
    instance
        .get_typed_func::<(), ()>(store, "_start")
        .map_err(|_| {
            (
                EXIT_CANNOT_RUN,
                "the module exports no `_start` function (a WASI command)".to_string(),
            )
        })
}

/// A component's store data: WASI preview 2's context and resources, and
/// the memory limit.
struct ComponentState {
    ctx: WasiCtx,
    table: ResourceTable,
    limits: StoreLimits,
}

impl ComponentState {
    /// A component's store, as [`State::store`].
    fn store(
        engine: &Engine,
        wasi: &mut WasiCtxBuilder,
        limits: StoreLimits,
    ) -> Store<ComponentState> {
        let mut store = Store::new(
            engine,
            ComponentState {
                ctx: wasi.build(),
                table: ResourceTable::new(),
                limits,
            },
        );
        store.limiter(|s| &mut s.limits);
        store
    }
}

impl WasiView for ComponentState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.ctx,
            table: &mut self.table,
        }
    }
}

fn run(args: &[String]) -> ExitCode {
    let args = match parse_run(args) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("skiff-wasm: {e}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let name = args.argv[0].clone();
    match run_module(args) {
        Ok(code) => ExitCode::from(code),
        Err((code, e)) => {
            eprintln!("skiff-wasm: {name}: {e}");
            ExitCode::from(code)
        }
    }
}

/// The signal that interrupted the module, if one did.
static INTERRUPTED_BY: AtomicI32 = AtomicI32::new(0);

/// Turns SIGTERM and SIGINT into an epoch tick, which traps the running
/// module at its next check. Blocked on every thread first, then taken by
/// one thread with `sigwait`, so no handler runs in wasm code.
fn interrupt_on_signals(engine: &Engine) -> Result<(), String> {
    // SAFETY: an empty set, filled with two valid signals; the mask is
    // this thread's, set before any other thread starts, so all inherit it.
    let set = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGINT);
        if libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) != 0 {
            return Err("blocking SIGTERM and SIGINT".into());
        }
        set
    };
    let engine = engine.clone();
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || loop {
            let mut signal = 0;
            // SAFETY: `set` is a valid, initialized signal set.
            if unsafe { libc::sigwait(&set, &mut signal) } == 0 {
                INTERRUPTED_BY.store(signal, Ordering::SeqCst);
                engine.increment_epoch();
            }
        })
        .map(|_| ())
        .map_err(|e| format!("starting the signal thread: {e}"))
}

fn run_module(args: RunArgs) -> Result<u8, (u8, String)> {
    let usage = |e: String| (EXIT_USAGE, e);
    let engine = engine().map_err(usage)?;
    interrupt_on_signals(&engine).map_err(usage)?;
    let compiled =
        std::fs::read(&args.cwasm).map_err(|e| usage(format!("reading {}: {e}", args.cwasm)))?;
    // Only what skiff compiled, unchanged since: deserializing trusts its
    // input to be this engine's own output.
    if blake3::hash(&compiled).to_hex().as_str() != args.blake3 {
        return Err(usage(format!(
            "{} is not the compiled module skiff recorded (its digest differs)",
            args.cwasm
        )));
    }
    let mut wasi = WasiCtxBuilder::new();
    // The container's environment is the spec's; the host's never reaches it.
    let env: Vec<(String, String)> = std::env::vars().collect();
    wasi.args(&args.argv)
        .envs(&env)
        .inherit_stdio()
        .allow_blocking_current_thread(true);
    if let Some(root) = &args.root {
        wasi.preopened_dir(root, "/", FsPerms::ReadOnly)
            .map_err(|e| usage(format!("opening the image's tree {root}: {e:#}")))?;
    }
    for (path, writable) in &args.dirs {
        let perms = if *writable {
            FsPerms::ReadWrite
        } else {
            FsPerms::ReadOnly
        };
        wasi.preopened_dir(path, path, perms)
            .map_err(|e| usage(format!("opening {path}: {e:#}")))?;
    }
    let mut limits = StoreLimitsBuilder::new().trap_on_grow_failure(true);
    if let Some(bytes) = args.memory {
        limits = limits.memory_size(bytes);
    }
    let limits = limits.build();
    let ended = match Engine::detect_precompiled(&compiled) {
        Some(Precompiled::Component) => run_component(&engine, &compiled, wasi, limits)?,
        _ => run_core_module(&engine, &compiled, wasi, limits)?,
    };
    match ended {
        Ok(code) => Ok(code),
        Err(e) => match exit_of(e, args.memory) {
            (code, message) if message.is_empty() => Ok(code),
            failed => Err(failed),
        },
    }
}

/// How a module's run ended: its exit code, or the error that ended it.
type Ended = Result<u8, wasmtime::Error>;

fn run_core_module(
    engine: &Engine,
    compiled: &[u8],
    mut wasi: WasiCtxBuilder,
    limits: StoreLimits,
) -> Result<Ended, (u8, String)> {
    // SAFETY: the bytes are what `compile` wrote with this engine's
    // configuration, checked against the digest skiff recorded then.
    let module = unsafe { Module::deserialize(engine, compiled) }.map_err(|e| {
        (
            EXIT_CANNOT_RUN,
            format!("loading the compiled module: {e:#}"),
        )
    })?;
    let mut store = State::store(engine, &mut wasi, limits);
    store.set_epoch_deadline(1);
    store.epoch_deadline_trap();
    let mut linker: Linker<State> = Linker::new(engine);
    wasmtime_wasi::p1::add_to_linker_sync(&mut linker, |s: &mut State| &mut s.wasi)
        .map_err(|e| (EXIT_USAGE, format!("{e:#}")))?;
    let instance = linker
        .instantiate(&mut store, &module)
        .map_err(|e| (EXIT_CANNOT_RUN, format!("{e:#}")))?;
    let start = start_export(&instance, &mut store)?;
    Ok(start.call(&mut store, ()).map(|()| 0))
}

/// A WASI preview 2 command: a component exporting `wasi:cli/run`.
fn run_component(
    engine: &Engine,
    compiled: &[u8],
    mut wasi: WasiCtxBuilder,
    limits: StoreLimits,
) -> Result<Ended, (u8, String)> {
    // SAFETY: as for a core module: `compile` wrote these bytes with this
    // engine's configuration, and their digest is the one skiff recorded.
    let component = unsafe { Component::deserialize(engine, compiled) }.map_err(|e| {
        (
            EXIT_CANNOT_RUN,
            format!("loading the compiled component: {e:#}"),
        )
    })?;
    let mut store = ComponentState::store(engine, &mut wasi, limits);
    store.set_epoch_deadline(1);
    store.epoch_deadline_trap();
    let mut linker = wasmtime::component::Linker::<ComponentState>::new(engine);
    wasmtime_wasi::p2::add_to_linker_sync(&mut linker)
        .map_err(|e| (EXIT_USAGE, format!("{e:#}")))?;
    let command =
        wasmtime_wasi::p2::bindings::sync::Command::instantiate(&mut store, &component, &linker)
            .map_err(|e| (EXIT_CANNOT_RUN, format!("{e:#}")))?;
    // `run` returning its error result is exit code 1, as wasmtime's CLI
    // reports it.
    Ok(command
        .wasi_cli_run()
        .call_run(&mut store)
        .map(|result| u8::from(result.is_err())))
}

/// The exit code and message for what ended a run early.
fn exit_of(e: wasmtime::Error, memory: Option<usize>) -> (u8, String) {
    if let Some(exit) = e.downcast_ref::<I32Exit>() {
        // An exit is not a failure to report: its code is the answer.
        return (exit.0 as u8, String::new());
    }
    if e.downcast_ref::<Trap>() == Some(&Trap::Interrupt) {
        let signal = INTERRUPTED_BY.load(Ordering::SeqCst);
        return (128 + signal as u8, format!("stopped by signal {signal}"));
    }
    let message = format!("{e:#}");
    if message.contains("forcing trap when growing memory") {
        let limit = memory.unwrap_or_default();
        return (
            EXIT_TRAP,
            format!(
                "its memory would grow past {limit} bytes, the module's share of --memory (the engine keeps 16 MiB of it)"
            ),
        );
    }
    (EXIT_TRAP, format!("trapped: {message}"))
}
