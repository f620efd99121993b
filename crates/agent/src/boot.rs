//! From the kernel's hand-over to a ready root and an open host channel:
//! the guest's own mounts, its drivers, the image's block device under a
//! writable overlay, loopback, and the agent's virtio-serial port.

use std::ffi::{CString, OsStr};
use std::fs::File;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::io::AsRawFd;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::NEWROOT;

const ROOT_DEVICE: &str = "/dev/vda";

/// Mounts what the guest and the container's root need; the open port.
pub(crate) fn boot() -> Result<File, String> {
    leave_initramfs()?;
    let nosuid_nodev_noexec = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
    mount("proc", "/proc", "proc", nosuid_nodev_noexec, "")?;
    mount("sysfs", "/sys", "sysfs", nosuid_nodev_noexec, "")?;
    mount("devtmpfs", "/dev", "devtmpfs", libc::MS_NOSUID, "mode=0755")?;
    // Where the agent makes the container's cgroup.
    mount(
        "cgroup2",
        "/sys/fs/cgroup",
        "cgroup2",
        nosuid_nodev_noexec,
        "",
    )?;
    load_modules("/modules")?;
    match root_kind()? {
        RootKind::Block => {
            wait_for(
                ROOT_DEVICE,
                Duration::from_secs(10),
                "the image's block device",
            )?;
            mount(ROOT_DEVICE, "/rootfs", "erofs", libc::MS_RDONLY, "")?;
            mount("tmpfs", "/overlay", "tmpfs", 0, "mode=0755")?;
            for d in ["/overlay/upper", "/overlay/work"] {
                std::fs::create_dir(d).map_err(|e| format!("creating {d}: {e}"))?;
            }
            mount(
                "overlay",
                NEWROOT,
                "overlay",
                0,
                "lowerdir=/rootfs,upperdir=/overlay/upper,workdir=/overlay/work",
            )?;
        }
        // The host's directory is the root itself: writes go to it, as
        // to a runc container's root.
        // A read-only one is made so once the container's mount points
        // and files are in it (`seal_root`), as runc makes its root.
        RootKind::Directory { .. } => {
            load_modules("/modules/9p")?;
            mount(
                ROOT_TAG,
                NEWROOT,
                "9p",
                0,
                "trans=virtio,version=9p2000.L,msize=262144,cache=loose,access=client",
            )?;
        }
    }
    furnish_root(NEWROOT)?;
    loopback_up();
    let port = find_port(Duration::from_secs(10))?;
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_CLOEXEC)
        .open(&port)
        .map_err(|e| format!("opening the agent port {port}: {e}"))
}

/// What Docker gives every container in its root (`root`, a directory
/// of the guest): `/proc`, a read-only
/// `/sys`, and a `/dev` of its own with Docker's default devices.
pub(crate) fn furnish_root(root: &str) -> Result<(), String> {
    let nosuid_nodev_noexec = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
    let inside = [
        ("proc", "proc", "proc", nosuid_nodev_noexec, ""),
        (
            "sysfs",
            "sys",
            "sysfs",
            nosuid_nodev_noexec | libc::MS_RDONLY,
            "",
        ),
        (
            "tmpfs",
            "dev",
            "tmpfs",
            libc::MS_NOSUID | libc::MS_NOEXEC,
            "mode=0755,size=65536k",
        ),
        (
            "devpts",
            "dev/pts",
            "devpts",
            libc::MS_NOSUID | libc::MS_NOEXEC,
            "newinstance,ptmxmode=0666,mode=0620,gid=5",
        ),
        (
            "shm",
            "dev/shm",
            "tmpfs",
            nosuid_nodev_noexec,
            "mode=1777,size=65536k",
        ),
    ];
    // Their mount points are made where the image has none (a pause
    // image is one binary), as runc makes them.
    for (src, dir, fs, flags, data) in inside {
        mount(src, &format!("{root}/{dir}"), fs, flags, data)?;
    }
    container_devices(root)
}

/// Where the agent's own root is assembled before it replaces the
/// initramfs.
const AGENT_ROOT: &str = "/agent-root";

/// Moves the agent onto a tmpfs of its own, as `switch_root` does, and
/// frees the archive's files. A container's process must `pivot_root`
/// into its root, since `chroot` alone is escaped by a process holding
/// `CAP_SYS_CHROOT` (Docker's default set) and would reach the guest's
/// tree: its devices, its sysfs, a pod's other containers. The kernel
/// refuses `pivot_root` in a namespace whose root is the initramfs
/// itself; a tmpfs mounted over it is not.
fn leave_initramfs() -> Result<(), String> {
    mount("tmpfs", AGENT_ROOT, "tmpfs", libc::MS_NOSUID, "mode=0755")?;
    copy_tree(
        Path::new("/modules"),
        &Path::new(AGENT_ROOT).join("modules"),
    )?;
    for d in ["dev", "proc", "sys", "rootfs", "overlay", "newroot"] {
        let dir = Path::new(AGENT_ROOT).join(d);
        std::fs::create_dir(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    }
    let agent_root = Path::new(AGENT_ROOT);
    for entry in std::fs::read_dir("/").map_err(|e| format!("reading the initramfs: {e}"))? {
        let path = entry
            .map_err(|e| format!("reading the initramfs: {e}"))?
            .path();
        if path == agent_root {
            continue;
        }
        // What stays is only memory; the kernel opened /dev/console for
        // our stdio already.
        let _ = if path.is_dir() && !path.is_symlink() {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        };
    }
    std::env::set_current_dir(AGENT_ROOT).map_err(|e| format!("entering {AGENT_ROOT}: {e}"))?;
    mount(".", "/", "", libc::MS_MOVE, "")?;
    // SAFETY: NUL-terminated literals; this is PID 1 before any thread.
    if unsafe { libc::chroot(c".".as_ptr()) } != 0 || unsafe { libc::chdir(c"/".as_ptr()) } != 0 {
        return Err(format!(
            "entering the agent's root: {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}

/// Copies the regular files and directories under `from` to `to`.
fn copy_tree(from: &Path, to: &Path) -> Result<(), String> {
    std::fs::create_dir_all(to).map_err(|e| format!("creating {}: {e}", to.display()))?;
    let entries = match std::fs::read_dir(from) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(format!("reading {}: {e}", from.display())),
    };
    for entry in entries {
        let entry = entry.map_err(|e| format!("reading {}: {e}", from.display()))?;
        let (src, dst) = (entry.path(), to.join(entry.file_name()));
        if src.is_dir() {
            copy_tree(&src, &dst)?;
        } else {
            std::fs::copy(&src, &dst).map_err(|e| format!("copying {}: {e}", src.display()))?;
        }
    }
    Ok(())
}

/// The 9p tag the host shares a directory root under.
const ROOT_TAG: &str = "rootfs";

enum RootKind {
    /// The image's EROFS block device, under an overlay in guest memory.
    Block,
    /// A host directory over 9p (`skiff_root=9p`, `:ro` if read-only).
    Directory { read_only: bool },
}

/// Whether the host asked for a read-only root.
pub(crate) fn root_is_read_only() -> bool {
    matches!(root_kind(), Ok(RootKind::Directory { read_only: true }))
}

/// Makes the container's root `root` read-only, for its processes: its
/// mount, not the filesystem, so the mounts on it are as they were.
pub(crate) fn seal_root(root: &str) -> Result<(), String> {
    mount(
        "",
        root,
        "",
        libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY,
        "",
    )
}

/// What the host said the root is, on the kernel's command line.
fn root_kind() -> Result<RootKind, String> {
    let cmdline = std::fs::read_to_string("/proc/cmdline")
        .map_err(|e| format!("reading /proc/cmdline: {e}"))?;
    let given = cmdline
        .split_whitespace()
        .find_map(|a| a.strip_prefix("skiff_root="));
    match given {
        None => Ok(RootKind::Block),
        Some("9p") => Ok(RootKind::Directory { read_only: false }),
        Some("9p:ro") => Ok(RootKind::Directory { read_only: true }),
        Some(other) => Err(format!("skiff_root={other} is not a root this agent knows")),
    }
}

/// The container's `/dev`: Docker's default devices and links, never the
/// guest's own (its block device, the agent port).
fn container_devices(root: &str) -> Result<(), String> {
    const DEVICES: [(&str, u32, u32); 6] = [
        ("null", 1, 3),
        ("zero", 1, 5),
        ("full", 1, 7),
        ("random", 1, 8),
        ("urandom", 1, 9),
        ("tty", 5, 0),
    ];
    for (name, major, minor) in DEVICES {
        let path = format!("{root}/dev/{name}");
        let c_path = CString::new(path.clone()).expect("no NUL");
        // SAFETY: a NUL-terminated path and plain integers.
        let rc = unsafe {
            libc::mknod(
                c_path.as_ptr(),
                libc::S_IFCHR | 0o666,
                libc::makedev(major, minor),
            )
        };
        if rc != 0 {
            return Err(format!(
                "making /dev/{name} in the container: {}",
                std::io::Error::last_os_error()
            ));
        }
        // The umask took some bits.
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666));
    }
    for (link, to) in [
        ("ptmx", "pts/ptmx"),
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        std::os::unix::fs::symlink(to, format!("{root}/dev/{link}"))
            .map_err(|e| format!("linking /dev/{link} in the container: {e}"))?;
    }
    Ok(())
}

/// The virtio-serial port the host named [`skiff_agent_protocol::PORT_NAME`];
/// there is no udev to make `/dev/virtio-ports/NAME`.
fn find_port(limit: Duration) -> Result<String, String> {
    let deadline = Instant::now() + limit;
    loop {
        if let Ok(entries) = std::fs::read_dir("/sys/class/virtio-ports") {
            for e in entries.flatten() {
                let name = std::fs::read_to_string(e.path().join("name")).unwrap_or_default();
                if name.trim() == skiff_agent_protocol::PORT_NAME {
                    let dev = format!("/dev/{}", e.file_name().to_string_lossy());
                    wait_for(&dev, Duration::from_secs(5), "the agent port")?;
                    return Ok(dev);
                }
            }
        }
        if Instant::now() > deadline {
            return Err(format!(
                "no virtio-serial port named {} within {limit:?}: is the agent channel attached?",
                skiff_agent_protocol::PORT_NAME
            ));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// `lo` up: the container's network is loopback alone (`--network none`).
fn loopback_up() {
    // SAFETY: a plain socket call; the fd is closed below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return;
    }
    // SAFETY: ifreq is plain data; all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (i, b) in b"lo".iter().enumerate() {
        req.ifr_name[i] = *b as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS/SIOCSIFFLAGS read and write the ifreq we own.
    unsafe {
        if libc::ioctl(fd, libc::SIOCGIFFLAGS, &mut req) == 0 {
            req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
            libc::ioctl(fd, libc::SIOCSIFFLAGS, &req);
        }
        libc::close(fd);
    }
}

pub(crate) fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

pub(crate) fn mount(
    src: &str,
    target: &str,
    fstype: &str,
    flags: libc::c_ulong,
    data: &str,
) -> Result<(), String> {
    let _ = std::fs::create_dir_all(target);
    let c = |s: &str| CString::new(s).map_err(|_| format!("{s:?} holds a NUL"));
    let (s, t, f, d) = (c(src)?, c(target)?, c(fstype)?, c(data)?);
    // SAFETY: every pointer is a NUL-terminated string that outlives the call.
    let rc = unsafe { libc::mount(s.as_ptr(), t.as_ptr(), f.as_ptr(), flags, d.as_ptr().cast()) };
    if rc != 0 {
        return Err(format!(
            "mounting {src} ({fstype}) at {target}: {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}

/// Loads `DIR/NAME` for each NAME listed in `DIR/order`, in that order.
pub(crate) fn load_modules(dir: &str) -> Result<(), String> {
    let order = match std::fs::read_to_string(format!("{dir}/order")) {
        Ok(o) => o,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(format!("reading {dir}/order: {e}")),
    };
    for name in order.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let path = format!("{dir}/{name}");
        let f = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_CLOEXEC)
            .open(&path)
            .map_err(|e| format!("opening {path}: {e}"))?;
        // SAFETY: the fd is open for the call; the parameter string is a
        // valid empty C string.
        let rc = unsafe { libc::syscall(libc::SYS_finit_module, f.as_raw_fd(), c"".as_ptr(), 0) };
        if rc != 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EEXIST) {
                return Err(format!(
                    "loading {}: {e}",
                    OsStr::new(name).as_bytes().escape_ascii()
                ));
            }
        }
    }
    Ok(())
}

fn wait_for(path: &str, limit: Duration, what: &str) -> Result<(), String> {
    let deadline = Instant::now() + limit;
    while !Path::new(path).exists() {
        if Instant::now() > deadline {
            return Err(format!(
                "{path} ({what}) did not appear within {limit:?}: is it attached?"
            ));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(())
}

pub(crate) fn power_off() -> ! {
    // SAFETY: sync and reboot take no pointers; PID 1 may power off.
    unsafe {
        libc::sync();
        libc::reboot(libc::RB_POWER_OFF);
    }
    loop {
        std::thread::sleep(Duration::from_secs(1));
    }
}
