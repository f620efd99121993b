//! Where the guest's kernel, modules and agent are.

use std::path::{Path, PathBuf};

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

/// Whether `path` is an ELF executable with no program interpreter
/// (`PT_INTERP`), so it runs without a dynamic loader. Read by hand: only
/// the program headers' types are needed, not an ELF crate.
fn is_static_executable(path: &Path) -> bool {
    let Ok(bytes) = read_head(path, 64 * 1024) else {
        return false;
    };
    let u16_at = |o: usize| {
        bytes
            .get(o..o + 2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]))
    };
    let u32_at = |o: usize| {
        bytes
            .get(o..o + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    let u64_at = |o: usize| {
        bytes
            .get(o..o + 8)
            .and_then(|b| b.try_into().ok())
            .map(u64::from_le_bytes)
    };
    // ELF64, little-endian.
    if bytes.get(..6) != Some(&[0x7f, b'E', b'L', b'F', 2, 1][..]) {
        return false;
    }
    let (Some(phoff), Some(phentsize), Some(phnum)) = (u64_at(32), u16_at(54), u16_at(56)) else {
        return false;
    };
    const PT_INTERP: u32 = 3;
    (0..phnum as usize).all(|i| {
        let at = phoff as usize + i * phentsize as usize;
        u32_at(at).is_some_and(|t| t != PT_INTERP)
    })
}

fn read_head(path: &Path, max: u64) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let mut head = Vec::new();
    std::fs::File::open(path)?
        .take(max)
        .read_to_end(&mut head)?;
    Ok(head)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_executable_without_an_interpreter_is_static() {
        let d = tempfile::tempdir().unwrap();
        let text = d.path().join("text");
        std::fs::write(&text, b"#!/bin/sh\n").unwrap();
        assert!(!is_static_executable(&text));
        // This test's own binary is dynamically linked.
        assert!(!is_static_executable(&std::env::current_exe().unwrap()));
        // A minimal ELF64 header with one PT_LOAD program header.
        let mut elf = vec![0u8; 64 + 56];
        elf[..6].copy_from_slice(&[0x7f, b'E', b'L', b'F', 2, 1]);
        elf[32..40].copy_from_slice(&64u64.to_le_bytes());
        elf[54..56].copy_from_slice(&56u16.to_le_bytes());
        elf[56..58].copy_from_slice(&1u16.to_le_bytes());
        elf[64..68].copy_from_slice(&1u32.to_le_bytes());
        let static_one = d.path().join("static");
        std::fs::write(&static_one, &elf).unwrap();
        assert!(is_static_executable(&static_one));
        elf[64..68].copy_from_slice(&3u32.to_le_bytes());
        std::fs::write(&static_one, &elf).unwrap();
        assert!(!is_static_executable(&static_one));
    }
}
