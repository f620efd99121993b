//! Builds the exec stub (`stub/exec_stub.c`, see `init.rs`) into a tiny
//! static executable that the crate embeds. A C compiler is already
//! needed to link Rust on Linux. On targets other than x86-64 Linux an
//! empty stub is embedded and the init execs the command directly.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    let out =
        PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR")).join("exec_stub");
    let source = "stub/exec_stub.c";
    println!("cargo:rerun-if-changed={source}");
    println!("cargo:rerun-if-env-changed=CC");
    let arch = std::env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default();
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    if arch != "x86_64" || os != "linux" {
        std::fs::write(&out, b"").expect("writing the empty exec stub");
        return;
    }
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let status = Command::new(&cc)
        .args([
            "-static",
            "-nostdlib",
            "-ffreestanding",
            "-fno-builtin",
            "-fno-stack-protector",
            "-fno-pie",
            "-no-pie",
            "-Os",
            "-fno-asynchronous-unwind-tables",
            "-Wl,--build-id=none",
            "-s",
            "-o",
        ])
        .arg(&out)
        .arg(source)
        .status()
        .unwrap_or_else(|e| panic!("running the C compiler {cc:?} for {source}: {e}; install gcc"));
    assert!(status.success(), "{cc} failed to build {source}");
}
