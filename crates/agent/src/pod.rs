//! A pod's app containers, beside the first (its sandbox's): each one's
//! root and mounts are what the host bound into the pod share, assembled
//! under `/containers/NAME` in the guest, outside every other root.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use skiff_agent_protocol::{self as proto, FailReason, POD_SHARE_DIR, POD_SHARE_TAG};

use crate::spawn::{bind_into, make_container_cgroup, NINE_P};
use crate::{Agent, NEWROOT};

type Failure = (FailReason, String);

/// Where the pod's containers' roots are assembled.
const CONTAINERS: &str = "/containers";

/// Whether the pod share is mounted yet (at the first app container).
static SHARE_MOUNTED: Mutex<bool> = Mutex::new(false);

fn invalid(m: impl Into<String>) -> Failure {
    (FailReason::Invalid, m.into())
}

fn setup(m: impl Into<String>) -> Failure {
    (FailReason::Setup, m.into())
}

/// A name that is one path component and one cgroup's name.
pub(crate) fn check_name(name: &str) -> Result<(), Failure> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(invalid(format!("{name:?} is not a container's name")))
    }
}

pub(crate) fn root_of(name: &str) -> PathBuf {
    Path::new(CONTAINERS).join(name)
}

pub(crate) fn cgroup_of(name: &str) -> String {
    format!("/sys/fs/cgroup/pod-{name}")
}

/// `relative` in the pod share, refusing a way out of it (`..`, a
/// symlink).
fn in_share(relative: &str) -> Result<PathBuf, Failure> {
    if relative.is_empty() || relative.starts_with('/') || relative.split('/').any(|c| c == "..") {
        return Err(invalid(format!(
            "{relative:?} is not a path inside the pod share"
        )));
    }
    let path = Path::new(POD_SHARE_DIR).join(relative);
    let real = path
        .canonicalize()
        .map_err(|e| setup(format!("finding {relative} in the pod share: {e}")))?;
    if !real.starts_with(POD_SHARE_DIR) || real == Path::new(POD_SHARE_DIR) {
        return Err(invalid(format!("{relative:?} leads out of the pod share")));
    }
    Ok(real)
}

fn mount_share() -> Result<(), Failure> {
    let mut mounted = SHARE_MOUNTED.lock().unwrap_or_else(|p| p.into_inner());
    if *mounted {
        return Ok(());
    }
    crate::boot::load_modules("/modules/9p").map_err(setup)?;
    // As a directory root is: the roots in it keep their setuid files.
    crate::boot::mount(
        POD_SHARE_TAG,
        POD_SHARE_DIR,
        "9p",
        0,
        &format!("{NINE_P},cache=loose"),
    )
    .map_err(|e| setup(format!("{e}: was the VM booted as a pod's sandbox?")))?;
    *mounted = true;
    Ok(())
}

/// Assembles `new`'s root and its cgroup with `limits` (a read-only root
/// is sealed later, once its working directory is made); on an error the
/// caller removes what was made.
pub(crate) fn prepare(
    new: &proto::NewContainer,
    limits: &proto::CgroupLimits,
) -> Result<(), Failure> {
    mount_share()?;
    let source = in_share(&new.root)?;
    if !source.is_dir() {
        return Err(invalid(format!("the root {} is not a directory", new.root)));
    }
    let root = root_of(&new.name);
    std::fs::create_dir_all(&root).map_err(|e| setup(format!("making {}: {e}", root.display())))?;
    let (from, to) = (source.to_string_lossy(), root.to_string_lossy());
    crate::boot::mount(&from, &to, "", libc::MS_BIND | libc::MS_REC, "").map_err(setup)?;
    crate::boot::furnish_root(&to).map_err(setup)?;
    if new.pod_shm {
        bind_into(
            &root,
            &Path::new(NEWROOT).join("dev/shm"),
            "/dev/shm",
            false,
        )?;
    }
    for m in &new.mounts {
        bind_into(&root, &in_share(&m.source)?, &m.destination, m.read_only)?;
    }
    make_container_cgroup(&cgroup_of(&new.name), limits)
}

/// Ends what is left of container `name` and removes its root and cgroup
/// (after its first process's end, or a failed start).
pub(crate) fn remove(agent: &Agent, name: &str) {
    agent
        .containers
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .remove(name);
    let cgroup = cgroup_of(name);
    let _ = std::fs::write(format!("{cgroup}/cgroup.kill"), "1");
    let root = root_of(name);
    if let Ok(c) = std::ffi::CString::new(root.to_string_lossy().as_bytes()) {
        // SAFETY: a NUL-terminated path; detaches the root's whole tree.
        unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
    }
    let _ = std::fs::remove_dir(&root);
    // The killed take a moment to leave it.
    for _ in 0..50 {
        match std::fs::remove_dir(&cgroup) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                std::thread::sleep(Duration::from_millis(20))
            }
            _ => break,
        }
    }
}
