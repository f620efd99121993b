//! Reading just enough of an ELF file: whether a helper binary (the VM's
//! guest agent, the Wasm runner) can run in a root with no libc.

use std::path::Path;

/// Whether `path` is an ELF executable with no program interpreter
/// (`PT_INTERP`), so it runs without a dynamic loader. Read by hand: only
/// the program headers' types are needed, not an ELF crate.
pub fn is_static_executable(path: &Path) -> bool {
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
