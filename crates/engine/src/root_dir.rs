//! The node's state directory (`--root`) and who may enter it.
//!
//! Everything skiff keeps there is the host root's alone: container roots
//! and their writable layers, image mounts, the chunk cache (image
//! contents, private images included), daemon sockets, logs. An image's
//! setuid binary or device node reached from the host by another user
//! would make that user root, so each of skiff's directories under ROOT is
//! owner-only (0700), made so when created and set so when an older skiff
//! left it open. ROOT itself is made 0700 when skiff creates it; a ROOT the
//! user made is left as it is.

use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::error::{EngineError, IoContext, Result};

/// skiff's directories under ROOT (mount records, sockets, logs, the
/// cache, staging, container state, image mounts, seccomp filters).
const PRIVATE_DIRS: &[&str] = &[
    "containers",
    "images",
    "cache",
    "logs",
    "mounts",
    "run",
    "seccomp",
    "store",
    "tmp",
];

/// Makes ROOT and its directories owner-only. A ROOT this user cannot
/// create or change (another user's, say) is left alone: the command then
/// fails where it needs it, with its own message.
pub fn prepare(root: &Path) -> Result<()> {
    match std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(root)
    {
        Ok(()) => {}
        Err(e) if quiet_failure(&e) => return Ok(()),
        Err(e) => {
            return Err(EngineError::io(
                format!("creating --root {}", root.display()),
                e,
            ))
        }
    }
    for name in PRIVATE_DIRS {
        let dir = root.join(name);
        make_private(&dir).ctx(|| {
            format!(
                "making {} owner-only (it holds container roots and image mounts; fix its owner, or choose another --root)",
                dir.display()
            )
        })?;
    }
    Ok(())
}

/// Creates `dir` 0700, or sets an existing one to 0700.
pub fn make_private(dir: &Path) -> std::io::Result<()> {
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) if quiet_failure(&e) => return Ok(()),
        Err(e) => return Err(e),
    }
    let meta = std::fs::metadata(dir)?;
    if meta.permissions().mode() & 0o077 != 0 {
        match std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)) {
            Err(e) if quiet_failure(&e) => {}
            r => r?,
        }
    }
    Ok(())
}

/// Failures that mean "not ours to prepare" rather than "broken".
fn quiet_failure(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EACCES | libc::EPERM | libc::EROFS)
    )
}

/// Volatile state on a tmpfs: `/run/skiff/TAG`, where TAG names the root
/// (so separate roots never share it). Mount points do not survive a
/// reboot, so they belong there; and on this project's build machines,
/// whose ext4 has no journal, every inode created costs a scan past
/// recently deleted ones (`recently_deleted`).
pub fn run_dir(root: &Path) -> PathBuf {
    let root = std::fs::canonicalize(root)
        .or_else(|_| std::path::absolute(root))
        .unwrap_or_else(|_| root.to_path_buf());
    let tag = blake3::hash(root.as_os_str().as_encoded_bytes()).to_hex();
    Path::new(RUN_BASE).join(&tag[..12])
}

/// The tmpfs [`run_dir`]s live on.
const RUN_BASE: &str = "/run/skiff";

/// One container's volatile directory, holding the overlay's mount point
/// (`rootfs`).
pub fn scratch_dir(root: &Path, id: &str) -> PathBuf {
    run_dir(root).join(id)
}

/// Makes [`run_dir`], first mounting a tmpfs at `/run/skiff` if it is not
/// on one already (systemd hosts have /run on tmpfs; others may not). A
/// tmpfs that cannot be mounted leaves the state on disk, which works.
///
/// Root-only all the way down (0700): container roots are mounted here,
/// and honour setuid bits and device nodes. The container's init never
/// walks this path (it starts inside its root), so a user namespace's
/// root needs no way through.
pub fn prepare_run_dir(root: &Path) -> Result<PathBuf> {
    let base = Path::new(RUN_BASE);
    make_private(base).ctx(|| format!("creating {}", base.display()))?;
    if !on_tmpfs(base) {
        // Two skiffs racing here would stack two mounts; a lock keeps it one.
        let lock =
            std::fs::File::create("/run/skiff.lock").ctx(|| "creating /run/skiff.lock".into())?;
        rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockExclusive)
            .map_err(|e| EngineError::io("locking /run/skiff.lock", e.into()))?;
        if !on_tmpfs(base) {
            let flags = rustix::mount::MountFlags::NOSUID
                | rustix::mount::MountFlags::NODEV
                | rustix::mount::MountFlags::NOEXEC;
            if let Err(e) =
                rustix::mount::mount("skiff-run", base, "tmpfs", flags, c"mode=0700,size=64m")
            {
                tracing::warn!(
                    "mounting a tmpfs at {}: {e}; keeping container state on disk",
                    base.display()
                );
            }
        }
    }
    // An older skiff left it searchable by all (0711).
    make_private(base).ctx(|| format!("setting the mode of {}", base.display()))?;
    let dir = run_dir(root);
    make_private(&dir).ctx(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

fn on_tmpfs(path: &Path) -> bool {
    const TMPFS_MAGIC: i64 = 0x0102_1994;
    const RAMFS_MAGIC: i64 = 0x8584_58f6;
    rustix::fs::statfs(path).is_ok_and(|s| matches!(s.f_type, TMPFS_MAGIC | RAMFS_MAGIC))
}

/// Compiled seccomp filters, shared by all containers (see
/// `skiff_sandbox::seccomp_filter`).
pub fn seccomp_cache(root: &Path) -> PathBuf {
    root.join("seccomp")
}
