//! `containerd-shim-skiff-v2`: containerd's shim v2 for the runtime type
//! `io.containerd.skiff.v2`, serving task API v2 (containerd 1.6) over
//! ttrpc. It runs every container of a pod in skiff's sandboxes through
//! the engine's OCI runtime; containerd-shim does the v2 bootstrap
//! (`start`, `delete`, the socket, the logger, the SIGCHLD reaper).
//!
//! The binary is built from the `skiff` package (its
//! `src/bin/containerd-shim-skiff-v2.rs` calls [`main`]), so the tests
//! and `cargo build` get it beside `skiff`; it links this crate and the
//! engine, not the `skiff` command.

mod helper;
mod io;
mod metrics;
mod mount;
mod reaper;
mod service;
mod task;

const RUNTIME_ID: &str = "io.containerd.skiff.v2";

const HELP: &str = "\
containerd-shim-skiff-v2: containerd's shim v2 for skiff's sandboxes

containerd starts it (runtime_type = \"io.containerd.skiff.v2\"); it is not
run by hand. containerd calls it as:

  containerd-shim-skiff-v2 -namespace NS -id ID -address SOCK [-publish-binary BIN] start
  containerd-shim-skiff-v2 -namespace NS -id ID -address SOCK delete

The sandbox kind (namespace, the default) is the runtime handler's when it
is run as containerd-shim-skiff-KIND-v2 (runtime type
io.containerd.skiff-KIND.v2), else the spec annotation io.skiff.sandbox; a
pod's containers share its kind and one shim. Container state is kept
under /run/skiff-shim/NAMESPACE (root only). See docs/kubernetes.md.

Options:
  -h, --help       this text
  -v, --version    the version
";

/// The shim's whole life.
pub fn main() {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    match args.get(1).and_then(|a| a.to_str()) {
        Some(helper::ARG) => std::process::exit(helper::main(&args[2..])),
        // A VM container's supervisor, or a detached exec's relay, which
        // the helper started (see the engine's oci_runtime::supervised).
        Some(skiff_engine::oci_runtime::SUPERVISOR_ARG) => {
            std::process::exit(skiff_engine::oci_runtime::supervisor_main(&args[2..]))
        }
        // The Wasm pool's keeper, started by the first pooled module.
        Some(skiff_engine::WASM_POOL_KEEPER_ARG) => {
            std::process::exit(skiff_engine::wasm_pool_keeper_main(&args[2..]))
        }
        Some("-h" | "--help" | "help") => {
            print!("{HELP}");
            return;
        }
        Some("-v" | "--version" | "-version") => {
            println!(
                "containerd-shim-skiff-v2 {} (runtime {RUNTIME_ID}, task API v2)",
                env!("CARGO_PKG_VERSION")
            );
            return;
        }
        _ => {}
    }
    // What the shim makes on the host (its ttrpc socket above all) is
    // root's alone; containers set their own umask before they exec.
    // SAFETY: umask cannot fail.
    unsafe { libc::umask(0o077) };
    // ttrpc gives every connection (containerd makes one per task) its
    // own threads, and glibc would give them arenas of their own that keep
    // freed memory: with 20 pooled Wasm tasks, 285 KiB of PSS a task
    // unbounded, 174 KiB bounded (bench/wasm.py).
    skiff_engine::bound_heap();
    containerd_shim::run::<service::Service>(RUNTIME_ID, None);
}
