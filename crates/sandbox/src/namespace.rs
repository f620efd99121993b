//! The namespace sandbox (runc class): one container's lifecycle in Linux
//! namespaces and a cgroup: create (cgroup, clone, set-up), start, wait,
//! signal, delete, behind the [`Sandbox`] trait. The init's side is
//! [`crate::init`].
//!
//! skiff used youki's libcontainer for this until its start time became
//! the floor: libcontainer's intermediate process moves itself into the
//! cgroup by pid (the kernel's global migration lock, an RCU grace period
//! of 8-16 ms when idle) and reads `/proc/self/mountinfo` a dozen times
//! per start. Here the init is cloned straight into its namespaces and
//! cgroup (see [`crate::cgroups`]): one process, no migration.
//!
//! Callers must create containers while single-threaded: the init is a
//! clone that runs Rust code before it execs.

use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use oci_spec::runtime::{Linux, LinuxIdMapping, LinuxNamespaceType};

use crate::cgroups::Cgroup;
use crate::device_filter::{self, DeviceRule};
use crate::init::channel::{await_ready, failure, receive, tell};
use crate::init::{self, message, InitStdio, Plan};
use crate::kind::{
    ExecProcess, ExecStart, ImageFacts, Lifecycle, Prepare, Running, Sandbox, SandboxKind,
    SignalHandle, Stats, Stdio,
};
use crate::process::{signal, wait, Exit};
use crate::relay::{Pipes, Relay};
use crate::seccomp_filter::CompiledFilter;
use crate::SandboxError;

/// The namespace kind: its compiled-filter cache.
pub struct NamespaceKind {
    filter_cache: PathBuf,
}

impl NamespaceKind {
    /// Compiled seccomp filters are kept in `filter_cache` (see
    /// [`crate::seccomp_filter`]).
    /// Where its compiled seccomp filters are kept.
    pub fn filter_cache(&self) -> &Path {
        &self.filter_cache
    }

    pub fn new(filter_cache: &Path) -> Self {
        NamespaceKind {
            filter_cache: filter_cache.to_path_buf(),
        }
    }
}

impl SandboxKind for NamespaceKind {
    fn name(&self) -> &'static str {
        "namespace"
    }

    /// Linux images; an image that names no OS is taken for one.
    fn can_handle(&self, image: &ImageFacts) -> bool {
        (image.os.is_empty() || image.os == "linux") && !image.asks_for_wasm()
    }

    fn prepare(&self, container: Prepare<'_>) -> Result<Box<dyn Sandbox>, SandboxError> {
        Ok(Box::new(NamespaceSandbox::create(
            container,
            &self.filter_cache,
        )?))
    }

    fn exec(
        &self,
        container: Running<'_>,
        start: ExecStart<'_>,
    ) -> Result<Box<dyn ExecProcess>, SandboxError> {
        Ok(Box::new(NamespaceExec::start(
            container,
            start,
            &self.filter_cache,
        )?))
    }

    fn remove_leftovers(&self, cgroups_path: &str) -> Result<(), SandboxError> {
        crate::cgroups::remove(cgroups_path)
    }

    fn stats(&self, cgroups_path: &str) -> Result<Stats, SandboxError> {
        Ok(crate::cgroups::stats(cgroups_path))
    }
}

/// A process exec'd into a running namespace container.
pub struct NamespaceExec {
    pid: i32,
    console: Option<OwnedFd>,
    relay: Option<Relay>,
}

/// The namespaces a process joins to enter a container, the user one
/// first (it gives the rights to join the others) and the mount one last.
const JOIN_ORDER: &[(&str, libc::c_int)] = &[
    ("user", libc::CLONE_NEWUSER),
    ("ipc", libc::CLONE_NEWIPC),
    ("uts", libc::CLONE_NEWUTS),
    ("net", libc::CLONE_NEWNET),
    ("pid", libc::CLONE_NEWPID),
    ("cgroup", libc::CLONE_NEWCGROUP),
    ("mnt", libc::CLONE_NEWNS),
];

impl NamespaceExec {
    fn start(
        container: Running<'_>,
        start: ExecStart<'_>,
        filter_cache: &Path,
    ) -> Result<Self, SandboxError> {
        let mut spec = container.spec.clone();
        spec.set_process(Some(start.process.clone()));
        let linux = spec
            .linux()
            .as_ref()
            .ok_or_else(|| SandboxError::Invalid("the runtime spec has no linux section".into()))?;
        let filter = match linux.seccomp() {
            Some(policy) => Some(Arc::new(CompiledFilter::cached(policy, filter_cache)?)),
            None => None,
        };
        let mut plan = Plan::new(&spec, container.bundle, filter)?;
        plan.detached = start.detached;
        let cgroups_path = linux
            .cgroups_path()
            .as_ref()
            .map(|p| p.to_string_lossy().into_owned())
            .ok_or_else(|| {
                SandboxError::Invalid("the runtime spec needs linux.cgroupsPath".into())
            })?;
        let target = init::join::Target {
            namespaces: namespaces_of(container.pid)?,
            cgroup_files: crate::cgroups::join_files(&cgroups_path)?,
        };
        single_threaded()?;
        use rustix::net::{AddressFamily, SocketFlags, SocketType};
        let (parent_end, child_end) = rustix::net::socketpair(
            AddressFamily::UNIX,
            SocketType::SEQPACKET,
            SocketFlags::CLOEXEC,
            None,
        )
        .map_err(|e| SandboxError::io("making the exec's channel".into(), e.into()))?;
        let (init_stdio, pipes, _keep) = stdio_for_child(start.stdio)?;
        // SAFETY: fork of this single-threaded process; the child runs
        // `join::run`, which never returns.
        let helper = unsafe { libc::fork() };
        if helper < 0 {
            return Err(SandboxError::io(
                "forking to enter the container".into(),
                std::io::Error::last_os_error(),
            ));
        }
        if helper == 0 {
            use std::os::fd::AsRawFd;
            init::join::run(
                &plan,
                &target,
                child_end.as_fd(),
                parent_end.as_raw_fd(),
                &init_stdio,
            );
        }
        drop(child_end);
        let joined = wait(helper);
        let mut pid = None;
        let mut console = None;
        loop {
            match receive(&parent_end)? {
                Some((message::PID, body, _)) if body.len() == 4 => {
                    pid = Some(i32::from_ne_bytes([body[0], body[1], body[2], body[3]]));
                }
                Some((message::CONSOLE, _, fd)) => console = fd,
                Some((tag, body, _)) => {
                    if let Some(p) = pid {
                        let _ = wait(p);
                    }
                    return Err(failure(tag, &body));
                }
                // The process exec'd its command (or died: its exit tells).
                None => break,
            }
        }
        let Some(pid) = pid else {
            return Err(SandboxError::Setup(format!(
                "entering the container failed ({:?})",
                joined
            )));
        };
        let relay = match pipes.map(Pipes::start).transpose() {
            Ok(r) => r,
            Err(e) => {
                let _ = signal(pid, libc::SIGKILL);
                let _ = wait(pid);
                return Err(e);
            }
        };
        Ok(NamespaceExec {
            pid,
            console,
            relay,
        })
    }
}

impl ExecProcess for NamespaceExec {
    fn pid(&self) -> i32 {
        self.pid
    }

    fn take_console(&mut self) -> Option<OwnedFd> {
        self.console.take()
    }

    fn signal_handle(&self) -> SignalHandle {
        let pid = self.pid;
        std::sync::Arc::new(move |sig| signal(pid, sig))
    }

    fn wait(&mut self) -> Result<Exit, SandboxError> {
        wait(self.pid)
    }

    fn finish_output(&mut self) {
        if let Some(r) = self.relay.take() {
            r.finish();
        }
    }
}

/// The namespaces of `pid` that this process is not in already, opened,
/// in [`JOIN_ORDER`].
fn namespaces_of(pid: i32) -> Result<Vec<(OwnedFd, libc::c_int)>, SandboxError> {
    let mut out = Vec::new();
    for (name, typ) in JOIN_ORDER {
        let theirs = format!("/proc/{pid}/ns/{name}");
        let fd = rustix::fs::open(
            theirs.as_str(),
            rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::CLOEXEC,
            rustix::fs::Mode::empty(),
        )
        .map_err(|e| {
            SandboxError::io(
                format!("opening {theirs} (is the container running?)"),
                e.into(),
            )
        })?;
        let ours = rustix::fs::stat(format!("/proc/self/ns/{name}").as_str())
            .map_err(|e| SandboxError::io(format!("reading /proc/self/ns/{name}"), e.into()))?;
        let st = rustix::fs::fstat(&fd)
            .map_err(|e| SandboxError::io(format!("reading {theirs}"), e.into()))?;
        if (st.st_dev, st.st_ino) != (ours.st_dev, ours.st_ino) {
            out.push((fd, *typ));
        }
    }
    Ok(out)
}

/// A created (not yet started) or running container.
pub struct NamespaceSandbox {
    pid: i32,
    /// The init's channel: it reports set-up, takes the start byte, and
    /// closes at exec.
    channel: OwnedFd,
    console: Option<OwnedFd>,
    relay: Option<Relay>,
    cgroups_path: String,
    /// A network namespace of its own, whose loopback start brings up.
    own_network: bool,
}

/// `clone3`'s argument block (linux/sched.h, version 2 with `cgroup`).
#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

impl NamespaceSandbox {
    /// Creates the container from `spec` (a relative root is taken from
    /// `bundle`): its cgroup, then its init, which sets up the root and
    /// waits for [`Sandbox::start`].
    ///
    /// The seccomp policy is compiled here, or taken from `filter_cache`
    /// (see [`crate::seccomp_filter`]), and loaded by the init right
    /// before the command.
    pub fn create(container: Prepare<'_>, filter_cache: &Path) -> Result<Self, SandboxError> {
        let Prepare {
            id,
            spec,
            bundle,
            stdio,
            lifecycle,
            block_device: _,
            pod: _,
        } = container;
        let linux = spec
            .linux()
            .as_ref()
            .ok_or_else(|| SandboxError::Invalid("the runtime spec has no linux section".into()))?;
        let filter = match linux.seccomp() {
            Some(policy) => Some(Arc::new(CompiledFilter::cached(policy, filter_cache)?)),
            None => None,
        };
        let mut plan = Plan::new(spec, bundle, filter)?;
        // Kept open until the init has it.
        let _start_fifo = match lifecycle {
            Lifecycle::Supervised => None,
            Lifecycle::Detached {
                start_fifo,
                no_pivot,
            } => {
                use std::os::fd::AsRawFd;
                plan.start_fifo = Some(start_fifo.as_raw_fd());
                plan.detached = true;
                plan.no_pivot = no_pivot;
                Some(start_fifo)
            }
        };
        let oom_score_adj = spec.process().as_ref().and_then(|p| p.oom_score_adj());
        let own_network = linux
            .namespaces()
            .iter()
            .flatten()
            .any(|n| n.typ() == LinuxNamespaceType::Network && n.path().is_none());
        let cgroups_path = linux.cgroups_path().clone().ok_or_else(|| {
            SandboxError::Invalid("the runtime spec needs linux.cgroupsPath".into())
        })?;
        let cgroups_path = cgroups_path.to_string_lossy().into_owned();
        let v2_devices = device_filter::unified_host().then(|| device_rules(linux));
        single_threaded()?;
        let cgroup = Cgroup::create(&cgroups_path, linux.resources().as_ref())?;
        let made = spawn(&plan, linux, &cgroup, stdio);
        let (pid, channel, relay) = match made {
            Ok(m) => m,
            Err(e) => {
                cgroup.remove();
                return Err(e);
            }
        };
        let abandon = |e: SandboxError| {
            let _ = signal(pid, libc::SIGKILL);
            let _ = wait(pid);
            cgroup.remove();
            e
        };
        if let Err(e) = cgroup.limit_pids(linux.resources().as_ref()) {
            return Err(abandon(e));
        }
        if let Some(adj) = oom_score_adj {
            let path = format!("/proc/{pid}/oom_score_adj");
            if let Err(e) = std::fs::write(&path, adj.to_string()) {
                return Err(abandon(SandboxError::io(
                    format!("setting process.oomScoreAdj {adj} ({path})"),
                    e,
                )));
            }
        }
        let mut run_runtime_hooks = || -> Result<Vec<u8>, SandboxError> {
            use crate::hooks::{self, HookKind};
            let state = hooks::State::new(id, spec, bundle, "creating", pid).to_json();
            hooks::run(HookKind::Prestart, &HookKind::Prestart.of(spec), &state)?;
            hooks::run(
                HookKind::CreateRuntime,
                &HookKind::CreateRuntime.of(spec),
                &state,
            )?;
            Ok(hooks::State::new(id, spec, bundle, "created", pid).to_json())
        };
        let console = match await_ready(&channel, plan.terminal, &mut run_runtime_hooks) {
            Ok(c) => c,
            Err(e) => return Err(abandon(e)),
        };
        if let (Some(rules), Cgroup::V2(dir)) = (&v2_devices, &cgroup) {
            // Before start: the init has not run the command yet.
            if let Err(e) = device_filter::attach(rules, dir) {
                return Err(abandon(e));
            }
        }
        Ok(NamespaceSandbox {
            pid,
            channel,
            console,
            relay,
            cgroups_path,
            own_network,
        })
    }
}

impl Sandbox for NamespaceSandbox {
    fn pid(&self) -> i32 {
        self.pid
    }

    fn take_console(&mut self) -> Option<OwnedFd> {
        self.console.take()
    }

    /// Brings up `lo` in a network namespace of its own, then lets the
    /// init run the command; returns once it has (its channel closes at
    /// exec) or with why it could not.
    fn start(&mut self) -> Result<(), SandboxError> {
        if self.own_network {
            loopback_up(self.pid)?;
        }
        tell(&self.channel, message::START, "starting the container")?;
        match receive(&self.channel)? {
            None => Ok(()),
            Some((tag, body, _)) => Err(failure(tag, &body)),
        }
    }

    fn signal(&self, sig: i32) -> Result<(), SandboxError> {
        signal(self.pid, sig)
    }

    fn signal_handle(&self) -> SignalHandle {
        let pid = self.pid;
        std::sync::Arc::new(move |sig| signal(pid, sig))
    }

    fn wait(&mut self) -> Result<Exit, SandboxError> {
        wait(self.pid)
    }

    fn finish_output(&mut self) {
        if let Some(r) = self.relay.take() {
            r.finish();
        }
    }

    fn oom_killed(&self) -> bool {
        oom_killed(&self.cgroups_path)
    }

    fn stats(&self) -> Result<Stats, SandboxError> {
        Ok(crate::cgroups::stats(&self.cgroups_path))
    }

    fn delete(&mut self) -> Result<(), SandboxError> {
        crate::cgroups::remove(&self.cgroups_path)
    }
}

fn device_rules(linux: &Linux) -> Vec<DeviceRule> {
    linux
        .resources()
        .as_ref()
        .and_then(|r| r.devices().as_ref())
        .into_iter()
        .flatten()
        .filter_map(DeviceRule::from_spec)
        .collect()
}

/// The clone needs a single-threaded process (the child runs Rust code, and
/// on v1 only the calling thread is placed in the cgroup).
fn single_threaded() -> Result<(), SandboxError> {
    let status = std::fs::read_to_string("/proc/self/status")
        .map_err(|e| SandboxError::io("reading /proc/self/status".into(), e))?;
    let threads = status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|n| n.trim().parse::<u32>().ok());
    if threads != Some(1) {
        return Err(SandboxError::Setup(format!(
            "containers must be created from a single-threaded process (this one has {threads:?} threads)"
        )));
    }
    Ok(())
}

/// The streams a child gets (raw descriptors it inherits), the pipes to
/// copy once it runs, and what must stay open until it is made.
fn stdio_for_child(stdio: Stdio) -> Result<(InitStdio, Option<Pipes>, Vec<OwnedFd>), SandboxError> {
    Ok(match stdio {
        Stdio::Files {
            stdin,
            stdout,
            stderr,
        } => {
            use std::os::fd::AsRawFd;
            let fds = [stdin.as_raw_fd(), stdout.as_raw_fd(), stderr.as_raw_fd()];
            (InitStdio::Files(fds), None, vec![stdin, stdout, stderr])
        }
        Stdio::Relay {
            stdin,
            stdout,
            stderr,
            tap,
        } => {
            let p = Pipes::new(stdin, stdout, stderr)?.with_tap(tap);
            let fds = p.child_fds();
            (InitStdio::Files(fds), Some(p), Vec::new())
        }
        Stdio::Terminal => (InitStdio::Terminal, None, Vec::new()),
    })
}

/// Clones the init into its namespaces (and cgroup); writes its ID maps
/// under a user namespace. Returns its pid, the parent's channel end, and
/// the copies of its streams under [`Stdio::Relay`].
fn spawn(
    plan: &Plan,
    linux: &Linux,
    cgroup: &Cgroup,
    stdio: Stdio,
) -> Result<(i32, OwnedFd, Option<Relay>), SandboxError> {
    use rustix::net::{AddressFamily, SocketFlags, SocketType};
    let (parent_end, child_end) = rustix::net::socketpair(
        AddressFamily::UNIX,
        SocketType::SEQPACKET,
        SocketFlags::CLOEXEC,
        None,
    )
    .map_err(|e| SandboxError::io("making the init's channel".into(), e.into()))?;
    let flags = plan.clone_flags;
    let into = cgroup.v2_fd()?;
    let mut args = CloneArgs {
        flags,
        exit_signal: libc::SIGCHLD as u64,
        ..Default::default()
    };
    if let Some(fd) = &into {
        args.flags |= CLONE_INTO_CGROUP;
        args.cgroup = std::os::fd::AsRawFd::as_raw_fd(fd) as u64;
    }
    let (init_stdio, pipes, _keep) = stdio_for_child(stdio)?;
    // The init starts in the root (see `init::prepare_rootfs`): the new
    // mount namespace translates the working directory into its own copy.
    let cwd = rustix::fs::open(
        ".",
        rustix::fs::OFlags::PATH | rustix::fs::OFlags::DIRECTORY | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )
    .map_err(|e| SandboxError::io("opening skiff's working directory".into(), e.into()))?;
    rustix::process::chdir(&plan.rootfs).map_err(|e| {
        SandboxError::io(
            format!("entering the container's root {}", plan.rootfs.display()),
            e.into(),
        )
    })?;
    // A pid namespace named by path is joined for the child alone
    // (pid_for_children), and left right after the clone.
    let own_pid_ns = match &plan.pid_join {
        None => None,
        Some(theirs) => {
            let ours = rustix::fs::open(
                "/proc/self/ns/pid",
                rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::CLOEXEC,
                rustix::fs::Mode::empty(),
            )
            .map_err(|e| SandboxError::io("opening /proc/self/ns/pid".into(), e.into()))?;
            set_pid_ns(theirs, "joining the pid namespace the spec names")?;
            Some(ours)
        }
    };
    let pid = cgroup.born_inside(|| {
        // SAFETY: clone3 with a fully initialised argument block. The child
        // continues on a copy of this (single-threaded) process and never
        // returns from `init::run`.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_clone3,
                &args as *const CloneArgs,
                std::mem::size_of::<CloneArgs>(),
            )
        };
        if rc == 0 {
            use std::os::fd::AsRawFd;
            init::run(plan, child_end.as_fd(), parent_end.as_raw_fd(), &init_stdio);
        }
        if rc < 0 {
            return Err(SandboxError::io(
                "creating the container's init (clone3)".into(),
                std::io::Error::last_os_error(),
            ));
        }
        Ok(rc as i32)
    });
    let back = rustix::process::fchdir(&cwd);
    if let Some(ours) = &own_pid_ns {
        set_pid_ns(ours, "returning to skiff's pid namespace")?;
    }
    let pid = pid?;
    drop(child_end);
    if let Err(e) = back {
        let _ = signal(pid, libc::SIGKILL);
        let _ = wait(pid);
        return Err(SandboxError::io(
            "returning to skiff's working directory".into(),
            e.into(),
        ));
    }
    if plan.user_namespace {
        if let Err(e) = write_id_maps(pid, linux) {
            let _ = signal(pid, libc::SIGKILL);
            let _ = wait(pid);
            return Err(e);
        }
        let _ = tell(
            &parent_end,
            message::MAPPED,
            "telling the init its ID maps are written",
        );
    }
    let relay = match pipes.map(Pipes::start).transpose() {
        Ok(r) => r,
        Err(e) => {
            let _ = signal(pid, libc::SIGKILL);
            let _ = wait(pid);
            return Err(e);
        }
    };
    Ok((pid, parent_end, relay))
}

fn set_pid_ns(ns: &OwnedFd, what: &str) -> Result<(), SandboxError> {
    use std::os::fd::AsRawFd;
    // SAFETY: setns on a namespace descriptor this process holds.
    if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWPID) } < 0 {
        return Err(SandboxError::io(
            what.into(),
            std::io::Error::last_os_error(),
        ));
    }
    Ok(())
}

fn write_id_maps(pid: i32, linux: &Linux) -> Result<(), SandboxError> {
    let render = |m: &Option<Vec<LinuxIdMapping>>| -> String {
        m.iter()
            .flatten()
            .map(|m| format!("{} {} {}\n", m.container_id(), m.host_id(), m.size()))
            .collect()
    };
    let (uids, gids) = (render(linux.uid_mappings()), render(linux.gid_mappings()));
    if uids.is_empty() || gids.is_empty() {
        return Err(SandboxError::Invalid(
            "a user namespace needs uidMappings and gidMappings".into(),
        ));
    }
    for (file, map) in [("uid_map", uids), ("gid_map", gids)] {
        let path = format!("/proc/{pid}/{file}");
        std::fs::write(&path, map).map_err(|e| SandboxError::io(format!("writing {path}"), e))?;
    }
    Ok(())
}

/// Whether the kernel OOM-killed a process in the cgroup (v1 `memory`
/// controller, or v2). Read before the cgroup is deleted.
fn oom_killed(cgroups_path: &str) -> bool {
    let rel = cgroups_path.trim_start_matches('/');
    let candidates = [
        (
            PathBuf::from("/sys/fs/cgroup/memory")
                .join(rel)
                .join("memory.oom_control"),
            "oom_kill ",
        ),
        (
            PathBuf::from("/sys/fs/cgroup")
                .join(rel)
                .join("memory.events"),
            "oom_kill ",
        ),
    ];
    candidates.iter().any(|(path, key)| {
        std::fs::read_to_string(path).is_ok_and(|s| {
            s.lines().any(|l| {
                l.strip_prefix(key)
                    .and_then(|n| n.trim().parse::<u64>().ok())
                    .is_some_and(|n| n > 0)
            })
        })
    })
}

/// Brings up `lo` in the network namespace of `pid`, as Docker does for
/// `--network none`. Runs on a short-lived thread, since `setns` moves only
/// the calling thread.
fn loopback_up(pid: i32) -> Result<(), SandboxError> {
    let ns = std::fs::File::open(format!("/proc/{pid}/ns/net"))
        .map_err(|e| SandboxError::io(format!("opening the network namespace of {pid}"), e))?;
    std::thread::spawn(move || -> Result<(), SandboxError> {
        rustix::thread::move_into_link_name_space(
            ns.as_fd(),
            Some(rustix::thread::LinkNameSpaceType::Network),
        )
        .map_err(|e| SandboxError::io("entering the network namespace".into(), e.into()))?;
        set_interface_up("lo")
    })
    .join()
    .map_err(|_| SandboxError::Setup("the loopback thread panicked".into()))?
}

fn set_interface_up(name: &str) -> Result<(), SandboxError> {
    let err =
        |what: &str| SandboxError::io(format!("{what} {name}"), std::io::Error::last_os_error());
    // SAFETY: a plain socket(2) call; the descriptor is owned and closed below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(err("opening a socket to configure"));
    }
    // SAFETY: fd was just returned by socket(2) and nothing else owns it.
    let sock = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    // SAFETY: ifreq is plain old data; zero is a valid value for every field.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(name.bytes()) {
        *dst = src as libc::c_char;
    }
    let raw = std::os::fd::AsRawFd::as_raw_fd(&sock);
    // SAFETY: SIOCGIFFLAGS reads the flags of the named interface into req,
    // which lives for the duration of the call.
    if unsafe { libc::ioctl(raw, libc::SIOCGIFFLAGS, &mut req) } < 0 {
        return Err(err("reading the flags of"));
    }
    // SAFETY: the union's flags member is the one SIOCGIFFLAGS filled in.
    unsafe {
        req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
    }
    // SAFETY: as above; SIOCSIFFLAGS reads req.
    if unsafe { libc::ioctl(raw, libc::SIOCSIFFLAGS, &req) } < 0 {
        return Err(err("bringing up"));
    }
    Ok(())
}
