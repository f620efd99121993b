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
use std::path::Path;

use anyhow::{Context, Result};

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
        Err(e) => return Err(e).with_context(|| format!("creating --root {}", root.display())),
    }
    for name in PRIVATE_DIRS {
        let dir = root.join(name);
        make_private(&dir).with_context(|| {
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
