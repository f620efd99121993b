//! Mounting the rootfs containerd hands a task (`type`, `source`,
//! `options` as in fstab), in the single-threaded helper.
//!
//! Written here rather than taken from containerd-shim: its
//! `mount_rootfs` forks and waits for the child through the shim's
//! SIGCHLD monitor, which a helper does not run (it waited for ever).

use std::ffi::CString;
use std::path::{Path, PathBuf};

use crate::helper::RootfsMount;

/// fstab options that are mount flags, with whether they set or clear.
const FLAGS: &[(&str, bool, libc::c_ulong)] = &[
    ("ro", true, libc::MS_RDONLY),
    ("rw", false, libc::MS_RDONLY),
    ("nosuid", true, libc::MS_NOSUID),
    ("suid", false, libc::MS_NOSUID),
    ("nodev", true, libc::MS_NODEV),
    ("dev", false, libc::MS_NODEV),
    ("noexec", true, libc::MS_NOEXEC),
    ("exec", false, libc::MS_NOEXEC),
    ("sync", true, libc::MS_SYNCHRONOUS),
    ("async", false, libc::MS_SYNCHRONOUS),
    ("noatime", true, libc::MS_NOATIME),
    ("atime", false, libc::MS_NOATIME),
    ("nodiratime", true, libc::MS_NODIRATIME),
    ("relatime", true, libc::MS_RELATIME),
    ("strictatime", true, libc::MS_STRICTATIME),
    ("bind", true, libc::MS_BIND),
    ("rbind", true, libc::MS_BIND | libc::MS_REC),
    ("remount", true, libc::MS_REMOUNT),
    ("defaults", false, 0),
];

/// The kernel takes at most a page of mount data; containerd's own
/// shims shorten long overlay `lowerdir` lists the same way, by
/// mounting from their common directory with relative paths.
const MAX_DATA: usize = 4096 - 512;

pub fn mount(m: &RootfsMount, target: &Path) -> Result<(), String> {
    let mut flags: libc::c_ulong = 0;
    let mut data = Vec::new();
    for option in &m.options {
        match FLAGS.iter().find(|(name, _, _)| name == option) {
            Some((_, true, f)) => flags |= f,
            Some((_, false, f)) => flags &= !f,
            None => data.push(option.clone()),
        }
    }
    let mut cwd: Option<PathBuf> = None;
    if m.fs_type == "overlay" && data.join(",").len() > MAX_DATA {
        let (dir, shortened) = shorten_lowerdirs(&data)?;
        cwd = Some(dir);
        data = shortened;
    }
    let text = data.join(",");
    if text.len() > MAX_DATA + 512 {
        return Err(format!(
            "the rootfs mount's options are {} bytes, more than the kernel takes (a page)",
            text.len()
        ));
    }
    let c = |s: &str| CString::new(s).map_err(|_| format!("a NUL byte in the mount of {s:?}"));
    let source = c(&m.source)?;
    let fs_type = c(&m.fs_type)?;
    let target_c = c(&target.to_string_lossy())?;
    let data_c = c(&text)?;
    let back = match &cwd {
        Some(dir) => {
            let here =
                std::env::current_dir().map_err(|e| format!("the working directory: {e}"))?;
            std::env::set_current_dir(dir)
                .map_err(|e| format!("entering {}: {e}", dir.display()))?;
            Some(here)
        }
        None => None,
    };
    let bind_ro = flags & libc::MS_BIND != 0 && flags & libc::MS_RDONLY != 0;
    // SAFETY: mount(2) with NUL-terminated strings that outlive the call.
    let rc = unsafe {
        libc::mount(
            source.as_ptr(),
            target_c.as_ptr(),
            fs_type.as_ptr(),
            flags,
            data_c.as_ptr().cast(),
        )
    };
    let error = std::io::Error::last_os_error();
    if let Some(here) = back {
        let _ = std::env::set_current_dir(here);
    }
    if rc != 0 {
        return Err(error.to_string());
    }
    if bind_ro {
        // A bind mount ignores MS_RDONLY until remounted.
        // SAFETY: as above; null source and type are allowed for a remount.
        let rc = unsafe {
            libc::mount(
                std::ptr::null(),
                target_c.as_ptr(),
                std::ptr::null(),
                libc::MS_REMOUNT | libc::MS_BIND | libc::MS_RDONLY,
                std::ptr::null(),
            )
        };
        if rc != 0 {
            return Err(format!(
                "making the bind mount read-only: {}",
                std::io::Error::last_os_error()
            ));
        }
    }
    Ok(())
}

/// `lowerdir=` with its paths relative to their common directory, and
/// that directory.
fn shorten_lowerdirs(data: &[String]) -> Result<(PathBuf, Vec<String>), String> {
    let too_long = || "the overlay's lowerdir list is too long to mount".to_string();
    let lower = data
        .iter()
        .find_map(|o| o.strip_prefix("lowerdir="))
        .ok_or_else(too_long)?;
    let dirs: Vec<&Path> = lower.split(':').map(Path::new).collect();
    let mut common = dirs[0].parent().ok_or_else(too_long)?.to_path_buf();
    while !dirs.iter().all(|d| d.starts_with(&common)) {
        common = common.parent().ok_or_else(too_long)?.to_path_buf();
    }
    let relative: Vec<String> = dirs
        .iter()
        .map(|d| {
            d.strip_prefix(&common)
                .map(|r| r.to_string_lossy().into_owned())
        })
        .collect::<Result<_, _>>()
        .map_err(|_| too_long())?;
    let out = data
        .iter()
        .map(|o| {
            if o.starts_with("lowerdir=") {
                format!("lowerdir={}", relative.join(":"))
            } else {
                o.clone()
            }
        })
        .collect();
    Ok((common, out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_lowerdirs_become_relative_to_their_common_directory() {
        let data = vec![
            "index=off".to_string(),
            "lowerdir=/var/lib/c/snapshots/12/fs:/var/lib/c/snapshots/3/fs".to_string(),
        ];
        let (dir, out) = shorten_lowerdirs(&data).unwrap();
        assert_eq!(dir, Path::new("/var/lib/c/snapshots"));
        assert_eq!(out[1], "lowerdir=12/fs:3/fs");
        assert_eq!(out[0], "index=off");
    }
}
