//! Mounting a [`SkiffFs`] with the options skiff uses.

use std::path::Path;

use fuser::{Config, MountOption, Session, SessionACL};

use crate::fuse::SkiffFs;

#[derive(Debug, Clone, Copy)]
pub struct MountOptions {
    /// FUSE request threads; reads waiting on the network block only theirs.
    pub threads: usize,
    /// Honour setuid bits (only for private mounts, such as a container's).
    pub suid: bool,
    /// Let device nodes be opened (only for private mounts).
    pub dev: bool,
}

impl Default for MountOptions {
    fn default() -> Self {
        Self {
            threads: 16,
            suid: false,
            dev: false,
        }
    }
}

/// Mounts `fs` read-only at `mountpoint`. The returned session serves
/// requests when run, and unmounts when dropped.
pub fn mount(
    fs: SkiffFs,
    mountpoint: &Path,
    opts: MountOptions,
    source: &str,
) -> std::io::Result<Session<SkiffFs>> {
    let mut config = Config::default();
    config.mount_options = vec![
        MountOption::RO,
        MountOption::FSName(source.to_string()),
        MountOption::Subtype("skiff".into()),
        MountOption::DefaultPermissions,
        if opts.suid {
            MountOption::Suid
        } else {
            MountOption::NoSuid
        },
        if opts.dev {
            MountOption::Dev
        } else {
            MountOption::NoDev
        },
    ];
    // Containers run as other users than the daemon.
    config.acl = SessionACL::All;
    config.n_threads = Some(opts.threads.max(1));
    config.clone_fd = true;
    Session::new(fs, mountpoint, &config)
}

/// Ends a session's mount from another thread (a signal, an idle timer):
/// detaches it, so files still open keep working until closed, and tells
/// the session its mount is gone. Without that, the session would unmount
/// again when it ends and log "Failed to umount filesystem".
#[derive(Clone)]
pub struct Unmounter {
    mountpoint: std::path::PathBuf,
    session: std::sync::Arc<std::sync::Mutex<fuser::SessionUnmounter>>,
}

impl Unmounter {
    pub fn new(session: &mut Session<SkiffFs>, mountpoint: &Path) -> Self {
        Self {
            mountpoint: mountpoint.to_path_buf(),
            session: std::sync::Arc::new(std::sync::Mutex::new(session.unmount_callable())),
        }
    }

    pub fn unmount(&self) -> std::io::Result<()> {
        rustix::mount::unmount(&self.mountpoint, rustix::mount::UnmountFlags::DETACH)?;
        // Already detached: this only takes the mount from the session,
        // whose own unmount now fails harmlessly, unlogged.
        if let Ok(mut s) = self.session.lock() {
            let _ = s.unmount();
        }
        Ok(())
    }
}
