//! The container's root: the overlay bound on itself, the spec's mounts
//! resolved inside it, `pivot_root`.

use super::devices::make_devices;
use super::plan::{MountPlan, Plan};
use super::sys::{fail, fd_path, mount, openat2_retrying, os, remount, Step};
use std::os::fd::{AsRawFd, OwnedFd};

/// The root, bind-mounted on itself (pivot_root needs a mount point), with
/// the spec's mounts and `/dev` in it. Returns a descriptor of it.
///
/// The init starts in the root: the parent enters it before the clone, and
/// the new mount namespace keeps the working directory, translated to its
/// own copy of the mount. So the init never walks the path to the root,
/// whose parents are root-only (0700): under a user namespace it could not.
pub(crate) fn prepare_rootfs(plan: &Plan) -> Step<OwnedFd> {
    use rustix::mount::{MoveMountFlags, OpenTreeFlags};
    // Nothing mounted in here propagates back to the host, unless the
    // spec's rootfsPropagation asks for it (rslave by default).
    mount(None, "/", None, plan.rootfs_propagation, None)?;
    let shown = plan.rootfs.display();
    let root = rustix::mount::open_tree(
        rustix::fs::CWD,
        ".",
        OpenTreeFlags::OPEN_TREE_CLONE
            | OpenTreeFlags::OPEN_TREE_CLOEXEC
            | OpenTreeFlags::AT_RECURSIVE,
    )
    .map_err(|e| fail(format!("cloning the root {shown}: {e}")))?;
    // Attached over the original: the clone's descriptor is the new mount.
    rustix::mount::move_mount(
        &root,
        "",
        rustix::fs::CWD,
        ".",
        MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH,
    )
    .map_err(|e| fail(format!("mounting the root {shown}: {e}")))?;
    let mut devices_made = false;
    for m in &plan.mounts {
        mount_one(&root, m, plan)?;
        // The nodes go in as soon as /dev is there, before any later mount
        // (a volume) could cover or redirect it.
        if m.destination == "/dev" && !m.is_bind() {
            make_devices(&root, plan.user_namespace)?;
            devices_made = true;
        }
    }
    // A bind-mounted /dev is the user's; runc leaves it alone too.
    if !devices_made
        && !plan
            .mounts
            .iter()
            .any(|m| m.is_bind() && m.destination == "/dev")
    {
        make_devices(&root, plan.user_namespace)?;
    }
    write_etc_files(&root, plan)?;
    super::devices::make_spec_devices(&root, plan)?;
    Ok(root)
}

/// Binds each of the plan's `/etc` files over the container's own: written
/// on its `/dev` tmpfs (skiff's, so this works in a user namespace and
/// under a read-only root), bound in, then unlinked there. Never written
/// into the image or the container's layer. A file a mount of the spec
/// (a volume) already provides is the user's, and left alone.
fn write_etc_files(root: &OwnedFd, plan: &Plan) -> Step {
    use std::io::Write;
    if plan.etc_files.is_empty() {
        return Ok(());
    }
    let dev = resolve_in_root_strict(root, "/dev")?;
    for (name, text) in &plan.etc_files {
        let destination = format!("/etc/{name}");
        if plan.mounts.iter().any(|m| m.destination == destination) {
            continue;
        }
        let staged = format!(".skiff-etc-{name}");
        let file = rustix::fs::openat(
            &dev,
            staged.as_str(),
            rustix::fs::OFlags::WRONLY
                | rustix::fs::OFlags::CREATE
                | rustix::fs::OFlags::EXCL
                | rustix::fs::OFlags::NOFOLLOW
                | rustix::fs::OFlags::CLOEXEC,
            rustix::fs::Mode::from_raw_mode(0o644),
        )
        .map_err(|e| fail(format!("writing {destination} for the container: {e}")))?;
        std::fs::File::from(file)
            .write_all(text)
            .map_err(|e| fail(format!("writing {destination} for the container: {e}")))?;
        let source = rustix::fs::openat(
            &dev,
            staged.as_str(),
            rustix::fs::OFlags::PATH | rustix::fs::OFlags::NOFOLLOW | rustix::fs::OFlags::CLOEXEC,
            rustix::fs::Mode::empty(),
        )
        .map_err(|e| fail(format!("reopening {destination} for the container: {e}")))?;
        let bound = bind_mount(
            root,
            &MountPlan {
                destination: destination.clone(),
                typ: "bind".into(),
                source: fd_path(&source),
                // The clone keeps the /dev tmpfs's nosuid; the file is a
                // 0644 regular file, so nodev and noexec would add nothing
                // but a mount_setattr per file to every start.
                flags: libc::MS_BIND,
                propagation: 0,
                data: String::new(),
            },
        );
        let _ = rustix::fs::unlinkat(&dev, staged.as_str(), rustix::fs::AtFlags::empty());
        bound?;
    }
    Ok(())
}

pub(crate) fn mount_one(root: &OwnedFd, m: &MountPlan, plan: &Plan) -> Step {
    if m.is_bind() {
        return bind_mount(root, m);
    }
    // A kernel filesystem goes on a real directory: if an image symlink
    // could move /proc or /sys elsewhere, the masked paths would then name
    // nothing and protect nothing.
    let target = resolve_in_root_strict(root, &m.destination)?;
    let at = fd_path(&target);
    if m.typ == "cgroup" {
        mount_cgroupfs(root, &target, m, plan)?;
    } else {
        mount(Some(&m.source), &at, Some(&m.typ), m.flags, Some(&m.data))?;
    }
    if m.propagation != 0 {
        // The descriptor still names the directory under the new mount; a
        // fresh walk reaches the mount.
        let mounted = resolve_in_root_strict(root, &m.destination)?;
        mount(None, &fd_path(&mounted), None, m.propagation, None)?;
    }
    Ok(())
}

/// `mount_attr` for mount_setattr(2) (linux/mount.h).
#[repr(C)]
pub(crate) struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

pub(crate) const MOUNT_ATTR_RDONLY: u64 = 0x1;

pub(crate) const MOUNT_ATTR_NOSUID: u64 = 0x2;

pub(crate) const MOUNT_ATTR_NODEV: u64 = 0x4;

pub(crate) const MOUNT_ATTR_NOEXEC: u64 = 0x8;

/// A bind mount (`-v`): the source tree is cloned, its flags set on every
/// mount in it (so `ro` holds for submounts too, as in Docker 25+), then
/// attached at the destination, which symlinks in the image may move but
/// only within the root.
pub(crate) fn bind_mount(root: &OwnedFd, m: &MountPlan) -> Step {
    use rustix::mount::{MoveMountFlags, OpenTreeFlags};
    let is_dir = std::fs::metadata(&m.source)
        .map_err(|e| fail(format!("bind mount source {}: {e}", m.source)))?
        .is_dir();
    let target = resolve_in_root(
        root,
        &m.destination,
        if is_dir { Create::Dir } else { Create::File },
    )?;
    refuse_redirect_into_kernel_fs(root, &target, &m.destination)?;
    let mut open = OpenTreeFlags::OPEN_TREE_CLONE | OpenTreeFlags::OPEN_TREE_CLOEXEC;
    if m.flags & libc::MS_REC != 0 {
        open |= OpenTreeFlags::AT_RECURSIVE;
    }
    let tree = rustix::mount::open_tree(rustix::fs::CWD, m.source.as_str(), open)
        .map_err(|e| fail(format!("cloning the mount of {}: {e}", m.source)))?;
    let mut set = 0;
    for (ms, attr) in [
        (libc::MS_RDONLY, MOUNT_ATTR_RDONLY),
        (libc::MS_NOSUID, MOUNT_ATTR_NOSUID),
        (libc::MS_NODEV, MOUNT_ATTR_NODEV),
        (libc::MS_NOEXEC, MOUNT_ATTR_NOEXEC),
    ] {
        if m.flags & ms != 0 {
            set |= attr;
        }
    }
    let propagation = m.propagation & !libc::MS_REC;
    if set != 0 || propagation != 0 {
        let attr = MountAttr {
            attr_set: set,
            attr_clr: 0,
            propagation,
            userns_fd: 0,
        };
        let empty = c"";
        // SAFETY: mount_setattr reads `attr`, alive here; the path is an
        // empty C string naming the descriptor itself.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_mount_setattr,
                tree.as_raw_fd(),
                empty.as_ptr(),
                libc::AT_EMPTY_PATH | libc::AT_RECURSIVE,
                &attr as *const MountAttr,
                std::mem::size_of::<MountAttr>(),
            )
        };
        if rc < 0 {
            return Err(os(format!("setting the flags of the bind of {}", m.source)));
        }
    }
    rustix::mount::move_mount(
        &tree,
        "",
        &target,
        "",
        MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH | MoveMountFlags::MOVE_MOUNT_T_EMPTY_PATH,
    )
    .map_err(|e| fail(format!("attaching {} at {}: {e}", m.source, m.destination)))
}

/// The container paths the kernel's filesystems hold.
pub(crate) const KERNEL_FS_DIRS: &[&str] = &["/dev", "/proc", "/sys"];

/// A bind mount may land in `/dev`, `/proc` or `/sys` only if its
/// destination says so: an image symlink (`/data -> /dev`) that redirects
/// it there would have the volume cover the container's devices, or bind
/// the host directory where skiff then makes device nodes.
pub(crate) fn refuse_redirect_into_kernel_fs(
    root: &OwnedFd,
    target: &OwnedFd,
    destination: &str,
) -> Step {
    let within = |p: &str, dir: &str| p == dir || p.starts_with(&format!("{dir}/"));
    let path_of = |fd: &OwnedFd| {
        std::fs::read_link(fd_path(fd))
            .map_err(|e| fail(format!("reading where {destination} resolved to: {e}")))
    };
    let (root_path, target_path) = (path_of(root)?, path_of(target)?);
    let resolved = match target_path.strip_prefix(&root_path) {
        Ok(rel) => format!("/{}", rel.display()),
        Err(_) => {
            return Err(fail(format!(
                "{destination} resolved outside the container's root"
            )))
        }
    };
    let literal = format!("/{}", destination.trim_matches('/'));
    for dir in KERNEL_FS_DIRS {
        if within(&resolved, dir) && !within(&literal, dir) {
            return Err(fail(format!(
                "the volume destination {destination} resolves to {resolved} through a symlink in the image; refusing to mount a volume into {dir}"
            )));
        }
    }
    Ok(())
}

/// `/sys/fs/cgroup` as the container sees it: the v2 hierarchy, or on v1 a
/// tmpfs of hierarchies. Under the cgroup namespace each shows the
/// container's own cgroup as its root.
pub(crate) fn mount_cgroupfs(root: &OwnedFd, target: &OwnedFd, m: &MountPlan, plan: &Plan) -> Step {
    let at = fd_path(target);
    let ro = m.flags & libc::MS_RDONLY;
    let flags = m.flags & !libc::MS_RDONLY;
    if plan.v1_hierarchies.is_empty() {
        return mount(Some("cgroup2"), &at, Some("cgroup2"), m.flags, None);
    }
    mount(Some("tmpfs"), &at, Some("tmpfs"), flags, Some("mode=755"))?;
    // The descriptor still names the directory under the tmpfs; a fresh
    // walk crosses into the tmpfs.
    let dir = resolve_in_root_strict(root, &m.destination)?;
    for controllers in &plan.v1_hierarchies {
        rustix::fs::mkdirat(
            &dir,
            controllers.as_str(),
            rustix::fs::Mode::from_raw_mode(0o755),
        )
        .map_err(|e| fail(format!("creating /sys/fs/cgroup/{controllers}: {e}")))?;
        let sub = format!("{}/{controllers}", fd_path(&dir));
        mount(
            Some("cgroup"),
            &sub,
            Some("cgroup"),
            flags | ro,
            Some(controllers),
        )?;
        if controllers.contains(',') {
            for c in controllers.split(',') {
                let _ = rustix::fs::symlinkat(controllers.as_str(), &dir, c);
            }
        }
    }
    if ro != 0 {
        remount(&fd_path(&dir), libc::MS_RDONLY)?;
    }
    Ok(())
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Create {
    Dir,
    File,
}

/// Opens `path` inside the root as the container would resolve it (`..`
/// and symlinks cannot leave the root), creating what is missing: parent
/// directories, and the last component as `create` says.
pub(crate) fn resolve_in_root(root: &OwnedFd, path: &str, create: Create) -> Step<OwnedFd> {
    use rustix::fs::{Mode, OFlags, ResolveFlags};
    let how = ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS;
    let open =
        |p: &str| openat2_retrying(root, p, OFlags::PATH | OFlags::CLOEXEC, Mode::empty(), how);
    let rel = path.trim_start_matches('/');
    if rel.is_empty() {
        return open(".").map_err(|e| fail(format!("opening the root: {e}")));
    }
    match open(rel) {
        Ok(fd) => return Ok(fd),
        Err(rustix::io::Errno::NOENT) => {}
        Err(e) => return Err(fail(format!("resolving {path} in the container: {e}"))),
    }
    let parts: Vec<&str> = rel.split('/').filter(|c| !c.is_empty()).collect();
    let mut dir = open(".").map_err(|e| fail(format!("opening the root: {e}")))?;
    for (i, part) in parts.iter().enumerate() {
        let last = i + 1 == parts.len();
        let prefix = parts[..=i].join("/");
        match open(&prefix) {
            Ok(fd) => {
                dir = fd;
                continue;
            }
            Err(rustix::io::Errno::NOENT) => {}
            Err(e) => return Err(fail(format!("resolving /{prefix} in the container: {e}"))),
        }
        // `dir` was resolved inside the root and `part` is one plain name,
        // so what is created lands inside too.
        let made = if last && create == Create::File {
            rustix::fs::openat(
                &dir,
                *part,
                OFlags::CREATE | OFlags::EXCL | OFlags::WRONLY | OFlags::CLOEXEC | OFlags::NOFOLLOW,
                Mode::from_raw_mode(0o644),
            )
            .map(drop)
        } else {
            rustix::fs::mkdirat(&dir, *part, Mode::from_raw_mode(0o755))
        };
        match made {
            Ok(()) | Err(rustix::io::Errno::EXIST) => {}
            Err(e) => return Err(fail(format!("creating /{prefix} in the container: {e}"))),
        }
        dir = open(&prefix).map_err(|e| fail(format!("resolving /{prefix}: {e}")))?;
    }
    Ok(dir)
}

/// Like [`resolve_in_root`] for a directory, but no component may be a
/// symlink: what is found or made is exactly `path` under the root.
pub(crate) fn resolve_in_root_strict(root: &OwnedFd, path: &str) -> Step<OwnedFd> {
    use rustix::fs::{Mode, OFlags, ResolveFlags};
    // Creates what is missing (symlinks resolved inside the root), then
    // checks the whole path holds no symlink at all.
    drop(resolve_in_root(root, path, Create::Dir)?);
    let rel = path.trim_start_matches('/');
    openat2_retrying(
        root,
        if rel.is_empty() { "." } else { rel },
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
        ResolveFlags::IN_ROOT | ResolveFlags::NO_SYMLINKS,
    )
    .map_err(|e| match e {
        rustix::io::Errno::LOOP => fail(format!(
            "the image has a symlink on the way to {path}, where a kernel filesystem is mounted; refusing it"
        )),
        e => fail(format!("{path} in the image: {e}")),
    })
}

/// `--no-pivot`: the root moved over `/` and chrooted into, for a root
/// pivot_root refuses (on a ramdisk). The old root stays reachable to a
/// process that escapes the chroot, which is why it is not the default.
pub(crate) fn enter_rootfs_without_pivot(root: &OwnedFd) -> Step {
    rustix::process::fchdir(root).map_err(|e| fail(format!("entering the root: {e}")))?;
    mount(Some("."), "/", None, libc::MS_MOVE, None)?;
    rustix::process::chroot(".").map_err(|e| fail(format!("chroot: {e}")))?;
    rustix::process::chdir("/").map_err(|e| fail(format!("chdir /: {e}")))
}

/// pivot_root into the prepared root, then drops the old root.
pub(crate) fn enter_rootfs(root: &OwnedFd) -> Step {
    rustix::process::fchdir(root).map_err(|e| fail(format!("entering the root: {e}")))?;
    // pivot_root(".", "."): the old root ends up stacked under the new one
    // at "/", and is detached right after; no directory is needed for it.
    rustix::process::pivot_root(".", ".").map_err(|e| fail(format!("pivot_root: {e}")))?;
    mount(None, ".", None, libc::MS_SLAVE | libc::MS_REC, None)?;
    rustix::mount::unmount(".", rustix::mount::UnmountFlags::DETACH)
        .map_err(|e| fail(format!("detaching the host's root: {e}")))?;
    rustix::process::chdir("/").map_err(|e| fail(format!("chdir /: {e}")))
}
