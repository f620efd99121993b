//! What is hidden or read-only once inside the root: `/proc` and `/sys`
//! checked to be the kernel's, then masked and read-only paths.

use super::plan::Plan;
use super::sys::{fail, fd_path, mount, remount, Step};
use std::ffi::CStr;
use std::os::fd::OwnedFd;
use std::path::Path;

/// Opens a path after pivot_root with no symlink on the way: a masked
/// path must be exactly where the kernel put it. `None` if it does not
/// exist (`/proc/scsi` on a kernel without SCSI).
pub(crate) fn open_exact(path: &str) -> Step<Option<OwnedFd>> {
    use rustix::fs::{Mode, OFlags, ResolveFlags};
    match super::sys::openat2_retrying(
        rustix::fs::CWD,
        path,
        OFlags::PATH | OFlags::CLOEXEC | OFlags::NOFOLLOW,
        Mode::empty(),
        ResolveFlags::NO_SYMLINKS,
    ) {
        Ok(fd) => Ok(Some(fd)),
        Err(rustix::io::Errno::NOENT) => Ok(None),
        Err(e) => Err(fail(format!("opening {path} to protect it: {e}"))),
    }
}

/// `/proc` and `/sys` must be the kernel's before their paths are masked:
/// otherwise "not found" would not mean there is nothing to hide.
pub(crate) fn check_kernel_filesystems(plan: &Plan) -> Step {
    const PROC_SUPER_MAGIC: i64 = 0x9fa0;
    const SYSFS_MAGIC: i64 = 0x6265_6572;
    for (dest, magic, name) in [
        ("/proc", PROC_SUPER_MAGIC, "proc"),
        ("/sys", SYSFS_MAGIC, "sysfs"),
    ] {
        let expected = plan
            .mounts
            .iter()
            .any(|m| m.destination == dest && (m.typ == name || (m.is_bind() && m.source == dest)));
        if !expected {
            continue;
        }
        let fs = rustix::fs::statfs(dest).map_err(|e| fail(format!("statfs {dest}: {e}")))?;
        if fs.f_type != magic {
            return Err(fail(format!(
                "{dest} in the container is not {name} (something was mounted over it); refusing to run with its masked paths unprotected"
            )));
        }
    }
    Ok(())
}

/// Hides a path: `/dev/null` over a file, an empty read-only tmpfs over a
/// directory. A path that does not exist is fine.
pub(crate) fn mask(path: &str) -> Step {
    let Some(fd) = open_exact(path)? else {
        return Ok(());
    };
    let is_dir = rustix::fs::fstat(&fd)
        .map(|st| {
            rustix::fs::FileType::from_raw_mode(st.st_mode) == rustix::fs::FileType::Directory
        })
        .map_err(|e| fail(format!("stat {path}: {e}")))?;
    if is_dir {
        mount(
            Some("tmpfs"),
            &fd_path(&fd),
            Some("tmpfs"),
            libc::MS_RDONLY,
            None,
        )
    } else {
        mount(Some("/dev/null"), &fd_path(&fd), None, libc::MS_BIND, None)
    }
}

/// Makes a path read-only with a bind mount of itself. Missing is fine.
pub(crate) fn read_only(path: &str) -> Step {
    let Some(fd) = open_exact(path)? else {
        return Ok(());
    };
    let at = fd_path(&fd);
    mount(Some(&at), &at, None, libc::MS_BIND | libc::MS_REC, None)?;
    // A fresh walk reaches the new bind mount (the descriptor is under it).
    let Some(bound) = open_exact(path)? else {
        return Err(fail(format!("{path} vanished while being made read-only")));
    };
    remount(&fd_path(&bound), libc::MS_RDONLY)
}

/// Docker creates a missing working directory (owned by root).
pub(crate) fn make_cwd(cwd: &CStr) -> Step {
    use std::os::unix::ffi::OsStrExt;
    let path = Path::new(std::ffi::OsStr::from_bytes(cwd.to_bytes()));
    if path.is_dir() {
        return Ok(());
    }
    // Something that is not a directory (`-w /etc/passwd`): mkdir would
    // say "File exists", which names the wrong problem.
    if let Some(not_dir) = path
        .ancestors()
        .find(|p| p.symlink_metadata().is_ok() && !p.is_dir())
    {
        return Err(fail(format!(
            "the working directory {}: {} is not a directory in the image",
            path.display(),
            not_dir.display()
        )));
    }
    std::os::unix::fs::DirBuilderExt::mode(std::fs::DirBuilder::new().recursive(true), 0o755)
        .create(path)
        .map_err(|e| {
            fail(format!(
                "creating the working directory {}: {e}",
                path.display()
            ))
        })
}
