//! The container's init process, from its clone to its `exec`: mounts,
//! `/dev`, `pivot_root`, masked and read-only paths, then (once told to
//! start) its streams, user, capabilities, `no_new_privs`, seccomp, exec.
//!
//! [`Plan`] is everything the init needs, worked out from the spec before
//! the clone, so a bad spec fails in the parent. The child reports to the
//! parent over a `SOCK_SEQPACKET` socket (see [`Message`]); a successful
//! exec closes it.

use std::ffi::{CStr, CString};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use oci_spec::runtime::{LinuxNamespaceType, Spec};

use crate::seccomp_filter::CompiledFilter;
use crate::SandboxError;

/// What the init sends its parent; one message per packet.
pub(crate) mod message {
    /// Set-up done; waiting for the start byte.
    pub const READY: u8 = b'R';
    /// The pty master rides along (SCM_RIGHTS).
    pub const CONSOLE: u8 = b'T';
    /// A failure: the next byte is a [`super::Failure`] kind, then the text.
    pub const ERROR: u8 = b'E';
    /// Parent to child: the ID maps are written.
    pub const MAPPED: u8 = b'M';
    /// Parent to child: run the command.
    pub const START: u8 = b'S';
}

/// Why the init gave up: the kinds map to Docker's exit codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    Setup = 0,
    NotFound = 1,
    NotExecutable = 2,
}

impl FailureKind {
    pub(crate) fn from_byte(b: u8) -> Self {
        match b {
            1 => FailureKind::NotFound,
            2 => FailureKind::NotExecutable,
            _ => FailureKind::Setup,
        }
    }
}

struct Failure {
    kind: FailureKind,
    message: String,
}

type Step<T = ()> = Result<T, Failure>;

fn fail(message: String) -> Failure {
    Failure {
        kind: FailureKind::Setup,
        message,
    }
}

/// `what: strerror(errno)` as a failure.
fn os(what: impl std::fmt::Display) -> Failure {
    fail(format!("{what}: {}", std::io::Error::last_os_error()))
}

fn check(rc: libc::c_int, what: impl std::fmt::Display) -> Step {
    if rc < 0 {
        Err(os(what))
    } else {
        Ok(())
    }
}

/// One entry of `mounts`, with its options split into flags and data.
pub(crate) struct MountPlan {
    destination: String,
    typ: String,
    source: String,
    flags: libc::c_ulong,
    /// MS_PRIVATE, MS_SLAVE... applied after the mount.
    propagation: libc::c_ulong,
    data: String,
}

impl MountPlan {
    fn is_bind(&self) -> bool {
        self.flags & libc::MS_BIND != 0
    }
}

/// Capability sets as bit masks (bit N = capability N).
#[derive(Default, Clone, Copy)]
pub(crate) struct CapSets {
    bounding: u64,
    effective: u64,
    permitted: u64,
    inheritable: u64,
    ambient: u64,
}

/// Everything the init does, decided before the clone.
pub(crate) struct Plan {
    /// The parent enters it before the clone, so the init starts there
    /// (see [`prepare_rootfs`]).
    pub(crate) rootfs: PathBuf,
    readonly_root: bool,
    hostname: Option<String>,
    mounts: Vec<MountPlan>,
    masked: Vec<String>,
    readonly: Vec<String>,
    pub(crate) user_namespace: bool,
    cgroup_namespace: bool,
    /// `controllers` of each v1 hierarchy, for a v1 `/sys/fs/cgroup`.
    v1_hierarchies: Vec<String>,
    pub(crate) terminal: bool,
    args: Vec<CString>,
    env: Vec<CString>,
    path: String,
    cwd: CString,
    uid: u32,
    gid: u32,
    additional_gids: Vec<libc::gid_t>,
    caps: CapSets,
    last_cap: u32,
    no_new_privs: bool,
    seccomp: Option<Arc<CompiledFilter>>,
    rlimits: Vec<Rlimit>,
}

/// One `process.rlimits` entry, for setrlimit(2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Rlimit {
    resource: libc::__rlimit_resource_t,
    soft: u64,
    hard: u64,
}

const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

impl Plan {
    /// Reads what the init needs from `spec`; relative paths are taken
    /// from `bundle`.
    pub(crate) fn new(
        spec: &Spec,
        bundle: &Path,
        seccomp: Option<Arc<CompiledFilter>>,
    ) -> Result<Self, SandboxError> {
        let bad = |what: &str| SandboxError::Config(format!("the runtime spec {what}"));
        let root = spec.root().as_ref().ok_or_else(|| bad("has no root"))?;
        let rootfs = if root.path().is_relative() {
            bundle.join(root.path())
        } else {
            root.path().clone()
        };
        let process = spec
            .process()
            .as_ref()
            .ok_or_else(|| bad("has no process"))?;
        let args = process.args().clone().unwrap_or_default();
        if args.is_empty() {
            return Err(bad("has no command (process.args)"));
        }
        let cstr = |s: &str| CString::new(s).map_err(|_| bad("contains a NUL byte"));
        let env: Vec<String> = process.env().clone().unwrap_or_default();
        let path = env
            .iter()
            .find_map(|e| e.strip_prefix("PATH="))
            .unwrap_or(DEFAULT_PATH)
            .to_string();
        let linux = spec
            .linux()
            .as_ref()
            .ok_or_else(|| bad("has no linux section"))?;
        let mut user_namespace = false;
        let mut cgroup_namespace = false;
        for ns in linux.namespaces().iter().flatten() {
            if ns.path().is_some() {
                return Err(bad(
                    "joins an existing namespace, which skiff's runtime does not do",
                ));
            }
            match ns.typ() {
                LinuxNamespaceType::User => user_namespace = true,
                LinuxNamespaceType::Cgroup => cgroup_namespace = true,
                _ => {}
            }
        }
        let mut mounts = Vec::new();
        for m in spec.mounts().iter().flatten() {
            mounts.push(mount_plan(
                m.destination().to_string_lossy().into_owned(),
                m.typ().clone().unwrap_or_default(),
                m.source()
                    .as_ref()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_default(),
                m.options().iter().flatten().map(String::as_str),
            ));
        }
        let caps = process
            .capabilities()
            .as_ref()
            .map(|c| CapSets {
                bounding: cap_mask(c.bounding()),
                effective: cap_mask(c.effective()),
                permitted: cap_mask(c.permitted()),
                inheritable: cap_mask(c.inheritable()),
                ambient: cap_mask(c.ambient()),
            })
            .unwrap_or_default();
        let last_cap = std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(40);
        let user = process.user();
        let check_id =
            |id: u32, what: &str| crate::user::check_id(id, &format!("the runtime spec's {what}"));
        check_id(user.uid(), "process.user.uid")?;
        check_id(user.gid(), "process.user.gid")?;
        for g in user.additional_gids().iter().flatten() {
            check_id(*g, "process.user.additionalGids entry")?;
        }
        let rlimits = process
            .rlimits()
            .iter()
            .flatten()
            .map(|r| {
                let typ = serde_json::to_value(r.typ())
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_default();
                let resource = crate::rlimits::resource_number(&typ)
                    .ok_or_else(|| bad(&format!("has an unknown rlimit {typ:?}")))?;
                if r.soft() > r.hard() {
                    return Err(bad(&format!(
                        "sets {typ} with a soft limit above its hard limit"
                    )));
                }
                Ok(Rlimit {
                    resource,
                    soft: r.soft(),
                    hard: r.hard(),
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let uses_v1_cgroupfs =
            mounts.iter().any(|m| m.typ == "cgroup") && !crate::device_filter::unified_host();
        Ok(Plan {
            rootfs,
            readonly_root: root.readonly().unwrap_or(false),
            hostname: spec.hostname().clone(),
            mounts,
            masked: linux.masked_paths().clone().unwrap_or_default(),
            readonly: linux.readonly_paths().clone().unwrap_or_default(),
            user_namespace,
            cgroup_namespace,
            v1_hierarchies: if uses_v1_cgroupfs {
                crate::cgroups::v1_controller_sets()?
            } else {
                Vec::new()
            },
            terminal: process.terminal().unwrap_or(false),
            args: args.iter().map(|a| cstr(a)).collect::<Result<_, _>>()?,
            env: env.iter().map(|e| cstr(e)).collect::<Result<_, _>>()?,
            path,
            cwd: cstr(&process.cwd().to_string_lossy())?,
            uid: user.uid(),
            gid: user.gid(),
            additional_gids: user.additional_gids().clone().unwrap_or_default(),
            caps,
            last_cap,
            no_new_privs: process.no_new_privileges().unwrap_or(false),
            seccomp,
            rlimits,
        })
    }
}

fn cap_mask(set: &Option<oci_spec::runtime::Capabilities>) -> u64 {
    set.iter()
        .flatten()
        .filter_map(|c| {
            let name = serde_json::to_value(c).ok()?;
            let name = name.as_str()?.strip_prefix("CAP_")?.to_string();
            crate::spec::capability_number(&name)
        })
        .fold(0, |m, bit| m | (1u64 << bit))
}

/// Splits mount options the way runc reads them: flags, propagation, and
/// the rest as filesystem data.
fn mount_plan<'a>(
    destination: String,
    typ: String,
    source: String,
    options: impl Iterator<Item = &'a str>,
) -> MountPlan {
    let mut flags: libc::c_ulong = 0;
    let mut propagation: libc::c_ulong = 0;
    let mut data = Vec::new();
    for o in options {
        match o {
            "ro" => flags |= libc::MS_RDONLY,
            "rw" => flags &= !libc::MS_RDONLY,
            "nosuid" => flags |= libc::MS_NOSUID,
            "nodev" => flags |= libc::MS_NODEV,
            "noexec" => flags |= libc::MS_NOEXEC,
            "relatime" => flags |= libc::MS_RELATIME,
            "strictatime" => flags |= libc::MS_STRICTATIME,
            "noatime" => flags |= libc::MS_NOATIME,
            "nodiratime" => flags |= libc::MS_NODIRATIME,
            "sync" => flags |= libc::MS_SYNCHRONOUS,
            "bind" => flags |= libc::MS_BIND,
            "rbind" => flags |= libc::MS_BIND | libc::MS_REC,
            "private" => propagation = libc::MS_PRIVATE,
            "rprivate" => propagation = libc::MS_PRIVATE | libc::MS_REC,
            "slave" => propagation = libc::MS_SLAVE,
            "rslave" => propagation = libc::MS_SLAVE | libc::MS_REC,
            "shared" => propagation = libc::MS_SHARED,
            "rshared" => propagation = libc::MS_SHARED | libc::MS_REC,
            other => data.push(other),
        }
    }
    if typ == "bind" {
        flags |= libc::MS_BIND;
    }
    MountPlan {
        destination,
        typ,
        source,
        flags,
        propagation,
        data: data.join(","),
    }
}

/// The standard streams the init gets.
pub(crate) enum InitStdio {
    Files([RawFd; 3]),
    Terminal,
}

/// The init's whole life after the clone. Never returns: it execs the
/// command or exits, having told the parent why.
pub(crate) fn run(plan: &Plan, sock: BorrowedFd<'_>, parent_end: RawFd, stdio: &InitStdio) -> ! {
    // The parent's end of the socket came along in the clone; closed, a
    // parent that dies shows as end-of-file here.
    // SAFETY: closing a descriptor this process owns and never uses.
    unsafe { libc::close(parent_end) };
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        setup_and_exec(plan, sock, stdio)
    }));
    let failure = match outcome {
        Ok(Ok(never)) => match never {},
        Ok(Err(f)) => f,
        // Never unwind into the parent's copied frames.
        Err(_) => fail("the container's init panicked".into()),
    };
    let mut packet = vec![message::ERROR, failure.kind as u8];
    packet.extend_from_slice(failure.message.as_bytes());
    // SAFETY: send(2) of a local buffer on our socket; then _exit, which
    // runs nothing of the parent's copied state.
    unsafe {
        libc::send(
            sock.as_raw_fd(),
            packet.as_ptr().cast(),
            packet.len(),
            libc::MSG_NOSIGNAL,
        );
        libc::_exit(1)
    }
}

fn setup_and_exec(
    plan: &Plan,
    sock: BorrowedFd<'_>,
    stdio: &InitStdio,
) -> Step<std::convert::Infallible> {
    // Until it runs the command, the init dies with its parent.
    // SAFETY: prctl with integer arguments.
    check(
        unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) },
        "setting the parent-death signal",
    )?;
    if plan.user_namespace {
        expect(sock, message::MAPPED)?;
        // Become the namespace's root (host root is not mapped in it).
        // SAFETY: plain set*id syscalls; this process is single-threaded.
        check(
            unsafe { libc::setresgid(0, 0, 0) },
            "setresgid(0) in the user namespace",
        )?;
        check(
            unsafe { libc::setresuid(0, 0, 0) },
            "setresuid(0) in the user namespace",
        )?;
        // Changing credentials cleared the parent-death signal.
        // SAFETY: prctl with integer arguments.
        check(
            unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) },
            "setting the parent-death signal",
        )?;
    }
    // SAFETY: umask cannot fail; devices get exact modes.
    unsafe { libc::umask(0) };
    if plan.cgroup_namespace {
        // Here, not at the clone: the namespace's root is the cgroup the
        // process is in when it unshares, and on v2 the clone put it there.
        // SAFETY: unshare with a flag constant.
        check(
            unsafe { libc::unshare(libc::CLONE_NEWCGROUP) },
            "creating the cgroup namespace",
        )?;
    }
    let root = prepare_rootfs(plan)?;
    let console = if plan.terminal {
        Some(make_console(&root, sock)?)
    } else {
        None
    };
    enter_rootfs(&root)?;
    check_kernel_filesystems(plan)?;
    for p in &plan.masked {
        mask(p)?;
    }
    for p in &plan.readonly {
        read_only(p)?;
    }
    make_cwd(&plan.cwd)?;
    if let Some(h) = &plan.hostname {
        // SAFETY: the pointer and length describe `h`.
        check(
            unsafe { libc::sethostname(h.as_ptr().cast(), h.len()) },
            format!("setting the hostname {h:?}"),
        )?;
    }
    if plan.readonly_root {
        remount("/", libc::MS_RDONLY)?;
    }
    send(sock, &[message::READY])?;
    expect(sock, message::START)?;

    // SAFETY: prctl with integer arguments; umask cannot fail.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, 0);
        libc::umask(0o022);
    }
    reset_signals()?;
    // As root, before the user switch: raising a hard limit may need
    // CAP_SYS_RESOURCE, which the switch drops.
    set_rlimits(&plan.rlimits)?;
    let stub = sealed_stub()?;
    set_stdio(stdio, console.as_ref())?;
    // Everything else closes at exec; the socket stays usable until then.
    // SAFETY: close_range only sets flags on our own descriptors.
    check(
        unsafe {
            libc::syscall(
                libc::SYS_close_range,
                3,
                libc::c_uint::MAX,
                libc::CLOSE_RANGE_CLOEXEC,
            ) as libc::c_int
        },
        "marking inherited descriptors close-on-exec",
    )?;
    // As root first (runc's order), again as the user if root could not.
    // SAFETY: chdir with a NUL-terminated path.
    let entered = unsafe { libc::chdir(plan.cwd.as_ptr()) } == 0;
    if !plan.no_new_privs {
        // Without no_new_privs, loading a filter needs CAP_SYS_ADMIN, which
        // the user switch may drop.
        load_seccomp(plan)?;
    }
    switch_user(plan)?;
    // SAFETY: as above.
    if !entered && unsafe { libc::chdir(plan.cwd.as_ptr()) } < 0 {
        return Err(os(format!("entering the working directory {:?}", plan.cwd)));
    }
    if plan.no_new_privs {
        // SAFETY: prctl with integer arguments.
        check(
            unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) },
            "setting no_new_privs",
        )?;
        load_seccomp(plan)?;
    }
    exec(plan, stub.as_ref())
}

fn set_rlimits(limits: &[Rlimit]) -> Step {
    for r in limits {
        let limit = libc::rlimit {
            rlim_cur: r.soft,
            rlim_max: r.hard,
        };
        // SAFETY: setrlimit reads the struct, alive here.
        check(
            unsafe { libc::setrlimit(r.resource, &limit) },
            format!(
                "setting {} to {}:{}",
                crate::rlimits::resource_name(r.resource),
                r.soft,
                r.hard
            ),
        )?;
    }
    Ok(())
}

fn load_seccomp(plan: &Plan) -> Step {
    match &plan.seccomp {
        Some(filter) => filter
            .load()
            .map_err(|e| fail(format!("loading the seccomp filter: {e}"))),
        None => Ok(()),
    }
}

fn send(sock: BorrowedFd<'_>, bytes: &[u8]) -> Step {
    rustix::net::send(sock, bytes, rustix::net::SendFlags::NOSIGNAL)
        .map(|_| ())
        .map_err(|e| fail(format!("reporting to skiff: {e}")))
}

fn expect(sock: BorrowedFd<'_>, want: u8) -> Step {
    let mut b = [0u8; 1];
    loop {
        match rustix::net::recv(sock, &mut b, rustix::net::RecvFlags::empty()) {
            Ok((1, _)) if b[0] == want => return Ok(()),
            Ok(_) => return Err(fail("skiff went away before the container started".into())),
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(fail(format!("waiting for skiff: {e}"))),
        }
    }
}

fn cpath(p: &str) -> Step<CString> {
    CString::new(p).map_err(|_| fail(format!("{p:?} contains a NUL byte")))
}

/// `mount(2)` with owned strings; `None` passes NULL.
fn mount(
    source: Option<&str>,
    target: &str,
    fstype: Option<&str>,
    flags: libc::c_ulong,
    data: Option<&str>,
) -> Step {
    let (s, t, f, d) = (
        source.map(cpath).transpose()?,
        cpath(target)?,
        fstype.map(cpath).transpose()?,
        data.filter(|d| !d.is_empty()).map(cpath).transpose()?,
    );
    let ptr = |c: &Option<CString>| c.as_ref().map_or(std::ptr::null(), |c| c.as_ptr());
    // SAFETY: every pointer is NULL or a NUL-terminated string alive here.
    let rc = unsafe { libc::mount(ptr(&s), t.as_ptr(), ptr(&f), flags, ptr(&d).cast()) };
    if rc < 0 {
        return Err(os(format!(
            "mounting {} ({}) on {target}",
            source.unwrap_or("-"),
            fstype.unwrap_or("-")
        )));
    }
    Ok(())
}

/// `/proc/self/fd/N`: mounting there mounts on what the descriptor names.
fn fd_path(fd: &OwnedFd) -> String {
    format!("/proc/self/fd/{}", fd.as_raw_fd())
}

/// Mount flags the kernel keeps locked on a mount (in a user namespace a
/// remount may not clear them), as statvfs reports them.
fn kept_flags(path: &str) -> Step<libc::c_ulong> {
    let c = cpath(path)?;
    // SAFETY: statvfs fills the zeroed struct; the path is NUL-terminated.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } < 0 {
        return Err(os(format!("statvfs {path}")));
    }
    let mut flags = 0;
    for (st_flag, ms_flag) in [
        (libc::ST_NOSUID, libc::MS_NOSUID),
        (libc::ST_NODEV, libc::MS_NODEV),
        (libc::ST_NOEXEC, libc::MS_NOEXEC),
        (libc::ST_NOATIME, libc::MS_NOATIME),
        (libc::ST_NODIRATIME, libc::MS_NODIRATIME),
        (libc::ST_RELATIME, libc::MS_RELATIME),
        (libc::ST_RDONLY, libc::MS_RDONLY),
    ] {
        if st.f_flag & st_flag != 0 {
            flags |= ms_flag;
        }
    }
    // No atime flag reads as relatime on a remount; keep strictatime.
    if st.f_flag & (libc::ST_NOATIME | libc::ST_RELATIME) == 0 {
        flags |= libc::MS_STRICTATIME;
    }
    Ok(flags)
}

/// Remounts the bind mount at `path` with `flags` added.
fn remount(path: &str, flags: libc::c_ulong) -> Step {
    let kept = kept_flags(path)?;
    mount(
        None,
        path,
        None,
        libc::MS_BIND | libc::MS_REMOUNT | kept | flags,
        None,
    )
}

/// The root, bind-mounted on itself (pivot_root needs a mount point), with
/// the spec's mounts and `/dev` in it. Returns a descriptor of it.
///
/// The init starts in the root: the parent enters it before the clone, and
/// the new mount namespace keeps the working directory, translated to its
/// own copy of the mount. So the init never walks the path to the root,
/// whose parents are root-only (0700): under a user namespace it could not.
fn prepare_rootfs(plan: &Plan) -> Step<OwnedFd> {
    use rustix::mount::{MoveMountFlags, OpenTreeFlags};
    // Nothing mounted in here propagates back to the host.
    mount(None, "/", None, libc::MS_REC | libc::MS_SLAVE, None)?;
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
    Ok(root)
}

fn mount_one(root: &OwnedFd, m: &MountPlan, plan: &Plan) -> Step {
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
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

const MOUNT_ATTR_RDONLY: u64 = 0x1;
const MOUNT_ATTR_NOSUID: u64 = 0x2;
const MOUNT_ATTR_NODEV: u64 = 0x4;
const MOUNT_ATTR_NOEXEC: u64 = 0x8;

/// A bind mount (`-v`): the source tree is cloned, its flags set on every
/// mount in it (so `ro` holds for submounts too, as in Docker 25+), then
/// attached at the destination, which symlinks in the image may move but
/// only within the root.
fn bind_mount(root: &OwnedFd, m: &MountPlan) -> Step {
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
const KERNEL_FS_DIRS: &[&str] = &["/dev", "/proc", "/sys"];

/// A bind mount may land in `/dev`, `/proc` or `/sys` only if its
/// destination says so: an image symlink (`/data -> /dev`) that redirects
/// it there would have the volume cover the container's devices, or bind
/// the host directory where skiff then makes device nodes.
fn refuse_redirect_into_kernel_fs(root: &OwnedFd, target: &OwnedFd, destination: &str) -> Step {
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
fn mount_cgroupfs(root: &OwnedFd, target: &OwnedFd, m: &MountPlan, plan: &Plan) -> Step {
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
enum Create {
    Dir,
    File,
}

/// Opens `path` inside the root as the container would resolve it (`..`
/// and symlinks cannot leave the root), creating what is missing: parent
/// directories, and the last component as `create` says.
fn resolve_in_root(root: &OwnedFd, path: &str, create: Create) -> Step<OwnedFd> {
    use rustix::fs::{Mode, OFlags, ResolveFlags};
    let how = ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS;
    let open =
        |p: &str| rustix::fs::openat2(root, p, OFlags::PATH | OFlags::CLOEXEC, Mode::empty(), how);
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
fn resolve_in_root_strict(root: &OwnedFd, path: &str) -> Step<OwnedFd> {
    use rustix::fs::{Mode, OFlags, ResolveFlags};
    // Creates what is missing (symlinks resolved inside the root), then
    // checks the whole path holds no symlink at all.
    drop(resolve_in_root(root, path, Create::Dir)?);
    let rel = path.trim_start_matches('/');
    rustix::fs::openat2(
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

/// The device nodes Docker gives every container, made in the `/dev`
/// tmpfs; in a user namespace (where mknod is not allowed) the host's are
/// bind-mounted instead. Then the usual links.
fn make_devices(root: &OwnedFd, user_namespace: bool) -> Step {
    use rustix::fs::{Mode, OFlags};
    let dev = resolve_in_root(root, "/dev", Create::Dir)?;
    for (name, major, minor) in [
        ("null", 1, 3),
        ("zero", 1, 5),
        ("full", 1, 7),
        ("random", 1, 8),
        ("urandom", 1, 9),
        ("tty", 5, 0),
    ] {
        if user_namespace {
            match rustix::fs::openat(
                &dev,
                name,
                OFlags::CREATE | OFlags::WRONLY | OFlags::CLOEXEC | OFlags::NOFOLLOW,
                Mode::from_raw_mode(0o666),
            ) {
                Ok(_) => {}
                Err(e) => return Err(fail(format!("creating /dev/{name}: {e}"))),
            }
            let node = rustix::fs::openat(
                &dev,
                name,
                OFlags::PATH | OFlags::CLOEXEC | OFlags::NOFOLLOW,
                Mode::empty(),
            )
            .map_err(|e| fail(format!("opening /dev/{name}: {e}")))?;
            mount(
                Some(&format!("/dev/{name}")),
                &fd_path(&node),
                None,
                libc::MS_BIND,
                None,
            )?;
        } else {
            match rustix::fs::mknodat(
                &dev,
                name,
                rustix::fs::FileType::CharacterDevice,
                Mode::from_raw_mode(0o666),
                rustix::fs::makedev(major, minor),
            ) {
                Ok(()) | Err(rustix::io::Errno::EXIST) => {}
                Err(e) => return Err(fail(format!("creating /dev/{name}: {e}"))),
            }
        }
    }
    for (name, target) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
        ("ptmx", "pts/ptmx"),
        ("core", "/proc/kcore"),
    ] {
        match rustix::fs::symlinkat(target, &dev, name) {
            Ok(()) | Err(rustix::io::Errno::EXIST) => {}
            Err(e) => return Err(fail(format!("linking /dev/{name}: {e}"))),
        }
    }
    Ok(())
}

/// A pty from the container's own devpts: the master goes to the parent,
/// the slave is kept (and bound over `/dev/console`).
fn make_console(root: &OwnedFd, sock: BorrowedFd<'_>) -> Step<OwnedFd> {
    use rustix::fs::{Mode, OFlags};
    let ptmx = resolve_in_root(root, "/dev/pts/ptmx", Create::Dir)?;
    let master = rustix::fs::open(
        fd_path(&ptmx),
        OFlags::RDWR | OFlags::NOCTTY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| fail(format!("opening the container's /dev/pts/ptmx: {e}")))?;
    rustix::pty::unlockpt(&master).map_err(|e| fail(format!("unlocking the pty: {e}")))?;
    // The peer, opened from the master itself: no path to race on.
    let slave = rustix::pty::ioctl_tiocgptpeer(
        &master,
        rustix::pty::OpenptFlags::RDWR | rustix::pty::OpenptFlags::NOCTTY,
    )
    .map_err(|e| fail(format!("opening the pty's terminal side: {e}")))?;
    let console = resolve_in_root(root, "/dev/console", Create::File)?;
    mount(
        Some(&fd_path(&slave)),
        &fd_path(&console),
        None,
        libc::MS_BIND,
        None,
    )?;
    send_fd(sock, master.as_fd())?;
    Ok(slave)
}

fn send_fd(sock: BorrowedFd<'_>, fd: BorrowedFd<'_>) -> Step {
    use rustix::net::{SendAncillaryBuffer, SendAncillaryMessage, SendFlags};
    let fds = [fd];
    let mut space = [std::mem::MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut ancillary = SendAncillaryBuffer::new(&mut space);
    ancillary.push(SendAncillaryMessage::ScmRights(&fds));
    rustix::net::sendmsg(
        sock,
        &[std::io::IoSlice::new(&[message::CONSOLE])],
        &mut ancillary,
        SendFlags::NOSIGNAL,
    )
    .map(drop)
    .map_err(|e| fail(format!("handing the pty to skiff: {e}")))
}

/// pivot_root into the prepared root, then drops the old root.
fn enter_rootfs(root: &OwnedFd) -> Step {
    rustix::process::fchdir(root).map_err(|e| fail(format!("entering the root: {e}")))?;
    // pivot_root(".", "."): the old root ends up stacked under the new one
    // at "/", and is detached right after; no directory is needed for it.
    rustix::process::pivot_root(".", ".").map_err(|e| fail(format!("pivot_root: {e}")))?;
    mount(None, ".", None, libc::MS_SLAVE | libc::MS_REC, None)?;
    rustix::mount::unmount(".", rustix::mount::UnmountFlags::DETACH)
        .map_err(|e| fail(format!("detaching the host's root: {e}")))?;
    rustix::process::chdir("/").map_err(|e| fail(format!("chdir /: {e}")))
}

/// Opens a path after pivot_root with no symlink on the way: a masked
/// path must be exactly where the kernel put it. `None` if it does not
/// exist (`/proc/scsi` on a kernel without SCSI).
fn open_exact(path: &str) -> Step<Option<OwnedFd>> {
    use rustix::fs::{Mode, OFlags, ResolveFlags};
    match rustix::fs::openat2(
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
fn check_kernel_filesystems(plan: &Plan) -> Step {
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
fn mask(path: &str) -> Step {
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
fn read_only(path: &str) -> Step {
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
fn make_cwd(cwd: &CStr) -> Step {
    use std::os::unix::ffi::OsStrExt;
    let path = Path::new(std::ffi::OsStr::from_bytes(cwd.to_bytes()));
    if path.is_dir() {
        return Ok(());
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

fn reset_signals() -> Step {
    // The kernel's sigaction, used raw: glibc refuses the two real-time
    // signals it reserves, and those may be ignored too.
    #[repr(C)]
    struct KernelSigaction {
        handler: usize,
        flags: libc::c_ulong,
        restorer: usize,
        mask: u64,
    }
    let dfl = KernelSigaction {
        handler: libc::SIG_DFL,
        flags: 0,
        restorer: 0,
        mask: 0,
    };
    for sig in 1..=64 {
        if sig == libc::SIGKILL || sig == libc::SIGSTOP {
            continue;
        }
        // SAFETY: rt_sigaction reads `dfl`, alive here; 8 is the kernel's
        // sigset size.
        unsafe {
            libc::syscall(
                libc::SYS_rt_sigaction,
                sig,
                &dfl as *const KernelSigaction,
                std::ptr::null_mut::<KernelSigaction>(),
                8usize,
            )
        };
    }
    let none: u64 = 0;
    // SAFETY: rt_sigprocmask reads one 8-byte set.
    check(
        unsafe {
            libc::syscall(
                libc::SYS_rt_sigprocmask,
                libc::SIG_SETMASK,
                &none as *const u64,
                std::ptr::null_mut::<u64>(),
                8usize,
            ) as libc::c_int
        },
        "unblocking signals",
    )
}

fn set_stdio(stdio: &InitStdio, console: Option<&OwnedFd>) -> Step {
    // A session of its own, with or without a pty: a container must never
    // share skiff's controlling terminal (TIOCSTI could type into the
    // user's shell).
    rustix::process::setsid().map_err(|e| fail(format!("setsid: {e}")))?;
    let fds: [RawFd; 3] = match (stdio, console) {
        (_, Some(tty)) => {
            rustix::process::ioctl_tiocsctty(tty)
                .map_err(|e| fail(format!("making the pty the controlling terminal: {e}")))?;
            let t = tty.as_raw_fd();
            [t, t, t]
        }
        (InitStdio::Files(fds), None) => *fds,
        (InitStdio::Terminal, None) => return Err(fail("no pty was made".into())),
    };
    for (target, fd) in fds.iter().enumerate() {
        // SAFETY: dup2 between descriptors this process owns.
        check(
            unsafe { libc::dup2(*fd, target as RawFd) },
            format!("setting up stream {target}"),
        )?;
    }
    Ok(())
}

/// Drops to the spec's user with its capabilities, as runc orders it: the
/// bounding set first, then IDs with capabilities kept, then the sets.
fn switch_user(plan: &Plan) -> Step {
    let caps = plan.caps;
    for cap in 0..=plan.last_cap.min(63) {
        if caps.bounding & (1u64 << cap) == 0 {
            // SAFETY: prctl with integer arguments.
            check(
                unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) },
                format!("dropping capability {cap} from the bounding set"),
            )?;
        }
    }
    // SAFETY: prctl and set*id calls with plain integers and a slice that
    // outlives the call; single-threaded, so glibc's set*id broadcast is moot.
    unsafe {
        check(
            libc::prctl(libc::PR_SET_KEEPCAPS, 1, 0, 0, 0),
            "keeping capabilities across the user switch",
        )?;
        check(
            libc::setgroups(plan.additional_gids.len(), plan.additional_gids.as_ptr()),
            "setting supplementary groups",
        )?;
        check(
            libc::setresgid(plan.gid, plan.gid, plan.gid),
            format!("switching to group {}", plan.gid),
        )?;
        check(
            libc::setresuid(plan.uid, plan.uid, plan.uid),
            format!("switching to user {}", plan.uid),
        )?;
        check(
            libc::prctl(libc::PR_SET_KEEPCAPS, 0, 0, 0, 0),
            "clearing keep-capabilities",
        )?;
    }
    #[repr(C)]
    struct Header {
        version: u32,
        pid: libc::c_int,
    }
    #[repr(C)]
    #[derive(Clone, Copy)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    const VERSION_3: u32 = 0x2008_0522;
    let half = |m: u64, hi: bool| if hi { (m >> 32) as u32 } else { m as u32 };
    let data: [Data; 2] = [false, true].map(|hi| Data {
        effective: half(caps.effective, hi),
        permitted: half(caps.permitted, hi),
        inheritable: half(caps.inheritable, hi),
    });
    let header = Header {
        version: VERSION_3,
        pid: 0,
    };
    // SAFETY: capset reads the header and two data words, all alive here.
    check(
        unsafe {
            libc::syscall(libc::SYS_capset, &header as *const Header, data.as_ptr()) as libc::c_int
        },
        "setting capabilities",
    )?;
    // SAFETY: prctl with integer arguments.
    unsafe {
        check(
            libc::prctl(
                libc::PR_CAP_AMBIENT,
                libc::PR_CAP_AMBIENT_CLEAR_ALL,
                0,
                0,
                0,
            ),
            "clearing ambient capabilities",
        )?;
        for cap in 0..=plan.last_cap.min(63) {
            if caps.ambient & (1u64 << cap) != 0 {
                check(
                    libc::prctl(
                        libc::PR_CAP_AMBIENT,
                        libc::PR_CAP_AMBIENT_RAISE,
                        cap as libc::c_ulong,
                        0,
                        0,
                    ),
                    format!("raising ambient capability {cap}"),
                )?;
            }
        }
    }
    Ok(())
}

/// execvpe with the container's PATH; failures in Docker's terms.
/// The exec stub (stub/exec_stub.c, built by build.rs); empty where none
/// is built.
static EXEC_STUB: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/exec_stub"));

/// The stub's first argument, which it insists on.
const STUB_MARKER: &CStr = c"skiff-exec-stub";

/// The exec stub in a sealed memfd, made while the init may still do so.
///
/// Why: while the kernel execs the command it resolves a script's
/// interpreter, and a container whose command is `#!/proc/self/exe` would
/// get the init's own executable: the skiff binary on the host
/// (CVE-2019-5736). Exec'd from here, the init's executable is instead this
/// sealed copy, which nothing can write, and which refuses to run as an
/// interpreter. `None` where no stub was built.
fn sealed_stub() -> Step<Option<OwnedFd>> {
    use rustix::fs::{MemfdFlags, SealFlags};
    if EXEC_STUB.is_empty() {
        return Ok(None);
    }
    let fd = rustix::fs::memfd_create(
        "skiff-exec-stub",
        MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING,
    )
    .map_err(|e| fail(format!("creating the exec stub: {e}")))?;
    let mut written = 0;
    while written < EXEC_STUB.len() {
        written += rustix::io::write(&fd, &EXEC_STUB[written..])
            .map_err(|e| fail(format!("writing the exec stub: {e}")))?;
    }
    rustix::fs::fcntl_add_seals(
        &fd,
        SealFlags::SEAL | SealFlags::SHRINK | SealFlags::GROW | SealFlags::WRITE,
    )
    .map_err(|e| fail(format!("sealing the exec stub: {e}")))?;
    Ok(Some(fd))
}

/// The command's path, found as execvp would (along the container's PATH
/// unless it has a '/'), checked as the user it runs as; failures in
/// Docker's terms.
fn find_command(plan: &Plan) -> Step<CString> {
    let name = plan.args[0].to_string_lossy().into_owned();
    let candidates: Vec<CString> = if name.contains('/') {
        vec![plan.args[0].clone()]
    } else {
        plan.path
            .split(':')
            .map(|d| if d.is_empty() { "." } else { d })
            .filter_map(|d| CString::new(format!("{d}/{name}")).ok())
            .collect()
    };
    let mut denied = false;
    for c in candidates {
        match rustix::fs::stat(c.as_c_str()) {
            Ok(st) => {
                let regular = rustix::fs::FileType::from_raw_mode(st.st_mode)
                    == rustix::fs::FileType::RegularFile;
                let runnable =
                    rustix::fs::access(c.as_c_str(), rustix::fs::Access::EXEC_OK).is_ok();
                if regular && runnable {
                    return Ok(c);
                }
                denied = true;
            }
            Err(rustix::io::Errno::NOENT | rustix::io::Errno::NOTDIR) => {}
            Err(rustix::io::Errno::ACCESS) => denied = true,
            Err(e) => return Err(fail(format!("looking for {name:?}: {e}"))),
        }
    }
    Err(if denied {
        Failure {
            kind: FailureKind::NotExecutable,
            message: format!("{name:?} is not executable (permission denied)"),
        }
    } else if name.contains('/') {
        Failure {
            kind: FailureKind::NotFound,
            message: format!("{name:?}: no such file or directory in the image"),
        }
    } else {
        Failure {
            kind: FailureKind::NotFound,
            message: format!(
                "executable file {name:?} not found in $PATH ({})",
                plan.path
            ),
        }
    })
}

/// Execs the command, through the stub when there is one.
fn exec(plan: &Plan, stub: Option<&OwnedFd>) -> Step<std::convert::Infallible> {
    let path = find_command(plan)?;
    let mut argv: Vec<*const libc::c_char> = plan.args.iter().map(|a| a.as_ptr()).collect();
    argv.push(std::ptr::null());
    let mut envp: Vec<*const libc::c_char> = plan.env.iter().map(|e| e.as_ptr()).collect();
    envp.push(std::ptr::null());
    if let Some(stub) = stub {
        let mut stub_argv = vec![STUB_MARKER.as_ptr(), path.as_ptr()];
        stub_argv.extend_from_slice(&argv);
        // SAFETY: the descriptor, argv and envp are valid and NUL-terminated;
        // execveat only returns on failure.
        unsafe {
            libc::syscall(
                libc::SYS_execveat,
                stub.as_raw_fd(),
                c"".as_ptr(),
                stub_argv.as_ptr(),
                envp.as_ptr(),
                libc::AT_EMPTY_PATH,
            )
        };
        let e = std::io::Error::last_os_error();
        // Only a host that forbids executing memfds (vm.memfd_noexec=2)
        // lands here; the command still runs, without the stub.
        if !matches!(e.raw_os_error(), Some(libc::EACCES | libc::EPERM)) {
            return Err(fail(format!("running the exec stub: {e}")));
        }
    }
    // SAFETY: as above; execve only returns on failure.
    unsafe { libc::execve(path.as_ptr(), argv.as_ptr(), envp.as_ptr()) };
    Err(Failure {
        kind: FailureKind::NotExecutable,
        message: format!(
            "cannot run {:?}: {}",
            plan.args[0],
            std::io::Error::last_os_error()
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_options_split_into_flags_propagation_and_data() {
        let m = mount_plan(
            "/dev".into(),
            "tmpfs".into(),
            "tmpfs".into(),
            ["nosuid", "strictatime", "mode=755", "size=65536k"].into_iter(),
        );
        assert_eq!(m.flags, libc::MS_NOSUID | libc::MS_STRICTATIME);
        assert_eq!(m.data, "mode=755,size=65536k");
        let v = mount_plan(
            "/data".into(),
            "bind".into(),
            "/srv".into(),
            ["rbind", "rprivate", "ro"].into_iter(),
        );
        assert!(v.is_bind());
        assert_eq!(v.flags, libc::MS_BIND | libc::MS_REC | libc::MS_RDONLY);
        assert_eq!(v.propagation, libc::MS_PRIVATE | libc::MS_REC);
        assert!(v.data.is_empty());
    }

    fn spec_with(process: serde_json::Value) -> Spec {
        serde_json::from_value(serde_json::json!({
            "ociVersion": "1.0.2",
            "root": {"path": "/r"},
            "process": process,
            "linux": {"namespaces": [{"type": "pid"}, {"type": "mount"}]},
        }))
        .unwrap()
    }

    /// A config.json is checked as `-u` is: -1 would keep the init root.
    #[test]
    fn ids_above_2_31_in_a_spec_are_refused() {
        for user in [
            serde_json::json!({"uid": 4294967295u32, "gid": 0}),
            serde_json::json!({"uid": 0, "gid": 4294967295u32}),
            serde_json::json!({"uid": 0, "gid": 0, "additionalGids": [2147483648u32]}),
        ] {
            let spec = spec_with(serde_json::json!({"user": user, "args": ["sh"], "cwd": "/"}));
            let e = Plan::new(&spec, Path::new("/"), None)
                .err()
                .expect("accepted");
            assert!(e.to_string().contains("out of range"), "{e}");
        }
        let ok = spec_with(
            serde_json::json!({"user": {"uid": 2147483647u32, "gid": 5}, "args": ["sh"], "cwd": "/"}),
        );
        assert!(Plan::new(&ok, Path::new("/"), None).is_ok());
    }

    #[test]
    fn rlimits_are_read_from_the_spec() {
        let spec = spec_with(serde_json::json!({
            "user": {"uid": 0, "gid": 0}, "args": ["sh"], "cwd": "/",
            "rlimits": [{"type": "RLIMIT_NOFILE", "soft": 10, "hard": 20}],
        }));
        let plan = Plan::new(&spec, Path::new("/"), None).unwrap();
        assert_eq!(
            plan.rlimits,
            [Rlimit {
                resource: libc::RLIMIT_NOFILE,
                soft: 10,
                hard: 20
            }]
        );
        let bad = spec_with(serde_json::json!({
            "user": {"uid": 0, "gid": 0}, "args": ["sh"], "cwd": "/",
            "rlimits": [{"type": "RLIMIT_NOFILE", "soft": 30, "hard": 20}],
        }));
        assert!(Plan::new(&bad, Path::new("/"), None).is_err());
    }
}
