//! The container's root: an overlayfs with the image's read-only tree as
//! its lower layer and a per-container writable upper layer, so the image
//! itself is never written.

use std::path::{Path, PathBuf};

use rustix::mount::{MountFlags, UnmountFlags};

use crate::SandboxError;

/// The directories of one container's overlay: the writable layer under
/// its state dir, the mount point under its volatile one.
pub struct OverlayDirs {
    pub upper: PathBuf,
    pub work: PathBuf,
    pub merged: PathBuf,
    /// A bounded layer: its size, its filesystem image and where that is
    /// mounted (holding upper and work); see [`crate::layer_fs`].
    pub bounded: Option<BoundedLayer>,
}

pub struct BoundedLayer {
    pub size: u64,
    pub image: PathBuf,
    pub mountpoint: PathBuf,
}

impl OverlayDirs {
    /// `layer_size` bounds the writable layer (`None`: it lives on the
    /// filesystem of `container_dir`, unbounded).
    pub fn new(container_dir: &Path, scratch_dir: &Path, layer_size: Option<u64>) -> Self {
        let bounded = layer_size.map(|size| BoundedLayer {
            size,
            image: container_dir.join("layer.img"),
            mountpoint: container_dir.join("layer"),
        });
        let base = bounded
            .as_ref()
            .map_or(container_dir, |b| b.mountpoint.as_path());
        OverlayDirs {
            upper: base.join("upper"),
            work: base.join("work"),
            merged: scratch_dir.join("rootfs"),
            bounded,
        }
    }
}

/// Mounts `lowers` (read-only, the first on top) under a fresh upper layer
/// at `dirs.merged`.
/// With `root_owner` (a user namespace's host ID for container root), the
/// container's `/` belongs to it, as the image's tree then does.
pub fn mount_overlay(
    lowers: &[&Path],
    dirs: &OverlayDirs,
    root_owner: Option<u32>,
) -> Result<(), SandboxError> {
    if let Some(b) = &dirs.bounded {
        crate::layer_fs::create(&b.image, &b.mountpoint, b.size)?;
    }
    for d in [&dirs.upper, &dirs.work, &dirs.merged] {
        std::fs::create_dir_all(d)
            .map_err(|e| SandboxError::io(format!("creating {}", d.display()), e))?;
    }
    if let Some(id) = root_owner {
        // The merged root takes the upper directory's owner.
        let (uid, gid) = (rustix::fs::Uid::from_raw(id), rustix::fs::Gid::from_raw(id));
        rustix::fs::chown(&dirs.upper, Some(uid), Some(gid))
            .map_err(|e| SandboxError::io(format!("chown {}", dirs.upper.display()), e.into()))?;
    }
    let layer = |path: &Path| -> Result<String, SandboxError> {
        match path.to_str().filter(|s| !s.contains([',', ':', '\\'])) {
            Some(s) => Ok(s.to_string()),
            None => Err(SandboxError::Invalid(format!(
                "{} cannot be an overlayfs layer (it must be UTF-8 without ',', ':' or '\\'); choose another --root",
                path.display()
            ))),
        }
    };
    let lowerdir = lowers
        .iter()
        .map(|p| layer(p))
        .collect::<Result<Vec<_>, _>>()?
        .join(":");
    let mut data = format!("lowerdir={lowerdir},");
    for (key, path) in [("upperdir", &dirs.upper), ("workdir", &dirs.work)] {
        data.push_str(&format!("{key}={},", layer(path)?));
    }
    // The lower layer is FUSE, which cannot encode file handles: no index.
    // volatile: no sync of the upper filesystem at unmount (40 ms of every
    // container's teardown here). An upper layer is mounted once and never
    // again, so there is no later mount to see a layer a crash left torn.
    data.push_str("index=off,volatile");
    let data = std::ffi::CString::new(data)
        .map_err(|_| SandboxError::Invalid("an overlay path contains a NUL byte".into()))?;
    rustix::mount::mount(
        "overlay",
        &dirs.merged,
        "overlay",
        MountFlags::empty(),
        Some(data.as_c_str()),
    )
    .map_err(|e| {
        SandboxError::io(
            format!("mounting the overlay root at {}", dirs.merged.display()),
            e.into(),
        )
    })
}

/// Unmounts the overlay (lazily, so a straggler cannot pin it), then a
/// bounded layer's filesystem; not mounted is fine.
pub fn unmount_overlay(dirs: &OverlayDirs) -> Result<(), SandboxError> {
    match rustix::mount::unmount(&dirs.merged, UnmountFlags::DETACH) {
        Ok(()) | Err(rustix::io::Errno::INVAL) | Err(rustix::io::Errno::NOENT) => {}
        Err(e) => {
            return Err(SandboxError::io(
                format!("unmounting {}", dirs.merged.display()),
                e.into(),
            ))
        }
    }
    match &dirs.bounded {
        Some(b) => crate::layer_fs::unmount(&b.mountpoint),
        None => Ok(()),
    }
}

/// Parses `-v SRC:DST[:ro|rw]`. SRC must exist on the host; DST must be
/// absolute and may not climb with `..`. (Symlinks inside the image on the
/// way to DST are resolved within the container's root by the runtime.)
pub fn parse_volume(spec: &str) -> Result<crate::Volume, SandboxError> {
    parse_volume_with(spec, false)
}

/// As [`parse_volume`], with `read_only` when no mode is given (a VM
/// shares volumes read-only unless told `rw`).
pub fn parse_volume_with(
    spec: &str,
    read_only_default: bool,
) -> Result<crate::Volume, SandboxError> {
    let default_mode = if read_only_default { "ro" } else { "rw" };
    let bad = |why: &str| {
        SandboxError::Invalid(format!(
            "-v {spec:?}: {why}; the form is SRC:DST[:ro|rw], e.g. -v /srv/data:/data:ro"
        ))
    };
    let parts: Vec<&str> = spec.split(':').collect();
    let (src, dst, mode) = match parts.as_slice() {
        [s, d] => (*s, *d, default_mode),
        [s, d, m] => (*s, *d, *m),
        _ => return Err(bad("expected two or three ':'-separated fields")),
    };
    let read_only = match mode {
        "ro" => true,
        "rw" => false,
        _ => return Err(bad("the mode must be ro or rw")),
    };
    if !dst.starts_with('/') {
        return Err(bad("DST must be an absolute path in the container"));
    }
    if dst.trim_end_matches('/').is_empty() {
        return Err(bad("DST cannot be the container's root"));
    }
    if Path::new(dst)
        .components()
        .any(|c| matches!(c, std::path::Component::ParentDir))
    {
        return Err(bad("DST may not contain '..'"));
    }
    if let Some(kernel) = kernel_destination(dst) {
        return Err(bad(&format!(
            "DST is {kernel}, which the container's kernel filesystems hold; bind a single device or socket under /dev (such as /dev/log) instead"
        )));
    }
    let source = std::fs::canonicalize(src)
        .map_err(|e| bad(&format!("SRC {src:?} does not exist on the host ({e})")))?;
    Ok(crate::Volume {
        source,
        destination: dst.to_string(),
        read_only,
    })
}

/// Where a volume may not go: `/dev` itself and its kernel mounts, and
/// anything in `/proc` or `/sys`. A single node under `/dev` (`/dev/log`)
/// is fine: `/dev` is the container's own tmpfs, made before volumes.
fn kernel_destination(dst: &str) -> Option<String> {
    let normal: Vec<&str> = dst
        .split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .collect();
    match normal.as_slice() {
        ["dev"] => Some("/dev".into()),
        ["dev", "pts" | "shm" | "mqueue", ..] => Some(format!("/dev/{}", normal[1])),
        ["proc" | "sys", ..] => Some(format!("/{}", normal.join("/"))),
        _ => None,
    }
}

/// The mount points at or under `dir` (which must be canonical), deepest
/// first, from `/proc/self/mountinfo`.
pub fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    use std::os::unix::ffi::OsStringExt;
    let table = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut points: Vec<PathBuf> = table
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|field| PathBuf::from(std::ffi::OsString::from_vec(unescape_octal(field))))
        .filter(|p| p.starts_with(dir))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    points.dedup();
    points
}

/// mountinfo's `\ooo` escapes (space, tab, newline, backslash) undone.
fn unescape_octal(field: &str) -> Vec<u8> {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let code = bytes
            .get(i + 1..i + 4)
            .filter(|_| bytes[i] == b'\\')
            .and_then(|d| std::str::from_utf8(d).ok())
            .and_then(|d| u8::from_str_radix(d, 8).ok());
        match code {
            Some(b) => {
                out.push(b);
                i += 4;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    out
}

/// Removes `dir` whole, after detaching every mount under it: a removal
/// must never reach into a filesystem bound there (a pod's share holds
/// its containers' roots). A mount that stays is an error, and nothing
/// is removed.
pub fn remove_dir_detaching_mounts(dir: &Path) -> std::io::Result<()> {
    let dir = match dir.canonicalize() {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    for point in mounts_under(&dir) {
        let _ = rustix::mount::unmount(&point, UnmountFlags::DETACH);
    }
    if let Some(left) = mounts_under(&dir).first() {
        return Err(std::io::Error::other(format!(
            "{} is still mounted; not removing {}",
            left.display(),
            dir.display()
        )));
    }
    std::fs::remove_dir_all(&dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn volumes_parse_and_reject_climbing() {
        let v = parse_volume("/tmp:/data:ro").unwrap();
        assert_eq!(v.destination, "/data");
        assert!(v.read_only);
        assert!(!parse_volume("/tmp:/data").unwrap().read_only);
        assert_eq!(
            parse_volume("/dev/null:/dev/log").unwrap().destination,
            "/dev/log"
        );
        assert!(parse_volume("/tmp:/devices").is_ok());
        for bad in [
            "/tmp:/a/../../etc",
            "/tmp:relative",
            "/tmp:/d:rx",
            "/tmp:/",
            "/nonexistent-skiff-src:/d",
            "/tmp",
            "/tmp:/dev",
            "/tmp:/dev/",
            "/tmp:/dev/shm",
            "/tmp:/dev/pts/x",
            "/tmp:/proc",
            "/tmp:/proc/sys/kernel",
            "/tmp:/sys/fs/cgroup",
            "/tmp:/./sys",
        ] {
            assert!(parse_volume(bad).is_err(), "{bad} should be rejected");
        }
    }

    #[test]
    fn a_removal_never_reaches_into_a_bound_directory() {
        let source = tempfile::tempdir().unwrap();
        std::fs::write(source.path().join("kept"), "data").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let point = dir.path().join("share/member/rootfs");
        std::fs::create_dir_all(&point).unwrap();
        rustix::mount::mount_bind(source.path(), &point).unwrap();
        assert_eq!(
            mounts_under(&dir.path().canonicalize().unwrap()),
            vec![point.canonicalize().unwrap()]
        );
        remove_dir_detaching_mounts(dir.path()).unwrap();
        assert!(!dir.path().exists());
        assert_eq!(
            std::fs::read_to_string(source.path().join("kept")).unwrap(),
            "data"
        );
        assert_eq!(unescape_octal(r"/a\040b\134c"), b"/a b\\c");
    }
}
