//! Where the guest's kernel, modules and agent are.

use std::path::{Path, PathBuf};

use skiff_sandbox::elf::is_static_executable;

use crate::{Result, VmError};

/// The agent's path under the cache, as `make agent` leaves it.
pub const AGENT_IN_CACHE: &str = "agent-target/skiff-agent";

#[derive(Debug, Clone)]
pub struct GuestAssets {
    /// The uncompressed kernel, booted through its PVH entry.
    pub kernel: PathBuf,
    /// `*.ko` and `order`, the order the agent loads them in.
    pub modules: PathBuf,
    /// The static agent binary, the guest's PID 1.
    pub agent: PathBuf,
}

impl GuestAssets {
    /// Finds the assets under `cache` (`~/.cache/skiff`):
    /// - the kernel in `$SKIFF_VM_KERNEL`, else the newest minimal build
    ///   (`vm/linux-minimal-*`, from vm/minimal-kernel.sh), else Debian's
    ///   newest (`vm/linux-image-*`, from vm/guest-kernel.sh);
    /// - the agent in `$SKIFF_AGENT`, else beside the running binary, else
    ///   [`AGENT_IN_CACHE`].
    pub fn find(cache: &Path) -> Result<Self> {
        let kernel_dir = match std::env::var_os("SKIFF_VM_KERNEL") {
            Some(d) => PathBuf::from(d),
            None => newest_kernel(&cache.join("vm"), "linux-minimal-")
                .or_else(|| newest_kernel(&cache.join("vm"), "linux-image-"))
                .ok_or_else(|| {
                    VmError(format!(
                        "no guest kernel under {}: run vm/minimal-kernel.sh or vm/guest-kernel.sh (make agent does both), or set SKIFF_VM_KERNEL",
                        cache.join("vm").display()
                    ))
                })?,
        };
        let kernel = kernel_dir.join("vmlinux");
        let modules = kernel_dir.join("modules");
        if !kernel.is_file() || !modules.join("order").is_file() {
            return Err(VmError(format!(
                "{} holds no vmlinux and modules/order: run vm/guest-kernel.sh again",
                kernel_dir.display()
            )));
        }
        let beside = std::env::current_exe()
            .ok()
            .and_then(|e| e.parent().map(|d| d.join("skiff-agent")));
        // A workspace build leaves a dynamically linked skiff-agent beside
        // skiff; the initramfs has no libc, so only a static one will do.
        let agent = std::env::var_os("SKIFF_AGENT")
            .map(PathBuf::from)
            .or_else(|| beside.filter(|p| is_static_executable(p)))
            .unwrap_or_else(|| cache.join(AGENT_IN_CACHE));
        if !agent.is_file() {
            return Err(VmError(format!(
                "no guest agent at {}: run `make agent`, or set SKIFF_AGENT",
                agent.display()
            )));
        }
        if !is_static_executable(&agent) {
            return Err(VmError(format!(
                "the guest agent {} is not a static executable, and the guest has no libc: build it with `make agent`",
                agent.display()
            )));
        }
        Ok(GuestAssets {
            kernel,
            modules,
            agent,
        })
    }
}

/// The newest kernel directory under `dir` whose name starts with `prefix`.
fn newest_kernel(dir: &Path, prefix: &str) -> Option<PathBuf> {
    let mut found: Vec<(std::time::SystemTime, PathBuf)> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with(prefix))
        .filter(|e| e.path().join("vmlinux").is_file())
        .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
        .collect();
    found.sort();
    found.pop().map(|(_, p)| p)
}
