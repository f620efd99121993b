//! Mounting a [`SkiffFs`] with the options skiff uses.

use std::path::Path;

use fuser::{Config, Session, SessionACL};

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
/// requests when run; the [`Unmounter`] takes the mount off its path.
///
/// The mount call is made here, not by fuser: a fuser session unmounts its
/// mount *path* when it ends, and by then the path may hold a newer
/// daemon's mount (this one having been taken off it while a container's
/// mount namespace kept it alive). A session made from the device fd never
/// unmounts anything; the [`Unmounter`] unmounts only its own mount.
pub fn mount(
    fs: SkiffFs,
    mountpoint: &Path,
    opts: MountOptions,
    source: &str,
) -> std::io::Result<(Session<SkiffFs>, Unmounter)> {
    use rustix::mount::MountFlags;
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::MetadataExt;

    // The path the kernel shows in mountinfo: symlinks resolved.
    let mountpoint = std::fs::canonicalize(mountpoint)?;
    let root_mode = std::fs::metadata(&mountpoint)?.mode();
    let device = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/fuse")?;
    let data = format!(
        "fd={},rootmode={:o},user_id={},group_id={},default_permissions,allow_other",
        device.as_raw_fd(),
        root_mode,
        rustix::process::getuid().as_raw(),
        rustix::process::getgid().as_raw(),
    );
    let mut flags = MountFlags::RDONLY;
    if !opts.suid {
        flags |= MountFlags::NOSUID;
    }
    if !opts.dev {
        flags |= MountFlags::NODEV;
    }
    let data = std::ffi::CString::new(data).map_err(std::io::Error::other)?;
    rustix::mount::mount(source, &mountpoint, "fuse.skiff", flags, data.as_c_str())?;
    let unmounter = match device_at(&mountpoint) {
        Some(dev) => Unmounter {
            mountpoint: mountpoint.clone(),
            device: dev,
        },
        None => {
            let _ = rustix::mount::unmount(&mountpoint, rustix::mount::UnmountFlags::DETACH);
            return Err(std::io::Error::other(format!(
                "{} is not in this process's mount table after mounting it",
                mountpoint.display()
            )));
        }
    };
    let mut config = Config::default();
    config.n_threads = Some(opts.threads.max(1));
    config.clone_fd = true;
    // Containers run as other users than the daemon.
    match Session::from_fd(fs, device.into(), SessionACL::All, config) {
        Ok(session) => Ok((session, unmounter)),
        Err(e) => {
            let _ = unmounter.unmount();
            Err(e)
        }
    }
}

/// Takes this process's mount off its path, from any thread (a signal, an
/// idle timer): detaches it, so files still open keep working until
/// closed. A path that now holds another mount is left alone.
#[derive(Clone)]
pub struct Unmounter {
    mountpoint: std::path::PathBuf,
    /// The FUSE connection's device ("major:minor" in mountinfo).
    device: String,
}

impl Unmounter {
    /// Detaches the mount if it is still the one on top at its path;
    /// returns whether it was.
    pub fn unmount(&self) -> std::io::Result<bool> {
        if device_at(&self.mountpoint).as_deref() != Some(self.device.as_str()) {
            tracing::info!(
                mountpoint = %self.mountpoint.display(),
                "this mount is no longer at its path; leaving the path alone"
            );
            return Ok(false);
        }
        rustix::mount::unmount(&self.mountpoint, rustix::mount::UnmountFlags::DETACH)?;
        Ok(true)
    }
}

/// The device ("major:minor") of the mount on top at `path`, from
/// `/proc/self/mountinfo`, where later lines are mounted over earlier ones.
/// Read from the table rather than by `stat`, which a FUSE mount whose
/// session is not running yet would never answer.
fn device_at(path: &Path) -> Option<String> {
    let table = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let wanted = path.as_os_str().as_encoded_bytes();
    table.lines().rev().find_map(|line| {
        let mut fields = line.split(' ');
        let device = fields.nth(2)?;
        let point = fields.nth(1)?;
        (unescape_mountinfo(point) == wanted).then(|| device.to_string())
    })
}

/// mountinfo writes space, tab, newline and backslash as `\ooo`.
fn unescape_mountinfo(field: &str) -> Vec<u8> {
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let octal = b
            .get(i + 1..i + 4)
            .filter(|d| d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match (b[i], octal) {
            (b'\\', Some(d)) => {
                out.push((d[0] - b'0') * 64 + (d[1] - b'0') * 8 + (d[2] - b'0'));
                i += 4;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_escapes_are_undone() {
        assert_eq!(unescape_mountinfo(r"/tmp/a\040b\134c"), b"/tmp/a b\\c");
        assert_eq!(unescape_mountinfo(r"/x\9"), b"/x\\9");
    }

    #[test]
    fn the_root_mount_has_a_device() {
        assert!(device_at(Path::new("/")).is_some());
        assert!(device_at(Path::new("/surely/not/a/mount/point")).is_none());
    }
}
