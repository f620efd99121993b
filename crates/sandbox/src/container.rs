//! One container's lifecycle on youki's `libcontainer`: create from a
//! bundle, start, wait, signal, delete.
//!
//! libcontainer clones its helper processes with raw `clone3`, which runs no
//! `atfork` handlers: callers must create containers while single-threaded.

use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};

use libcontainer::container::builder::ContainerBuilder;
use libcontainer::container::Container;
use libcontainer::syscall::syscall::SyscallType;
use libcontainer::workload::{Executor, ExecutorError, ExecutorValidationError};
use oci_spec::runtime::{Linux, LinuxIdMapping, LinuxNamespaceType, Spec};
use rustix::process::{Pid, Signal, WaitOptions};
use std::sync::Arc;

use crate::device_filter::{self, DeviceRule};
use crate::seccomp_filter::CompiledFilter;
use crate::userns::UserNamespace;
use crate::SandboxError;

/// How the container's standard streams are wired.
pub enum Stdio {
    /// Give the container these three descriptors.
    Files {
        stdin: OwnedFd,
        stdout: OwnedFd,
        stderr: OwnedFd,
    },
    /// A new pseudo-terminal; its master side is returned by [`Sandbox::create`].
    Terminal,
}

/// A created (not yet started) or running container.
pub struct Sandbox {
    container: Container,
    pid: i32,
    console: Option<OwnedFd>,
}

/// How a container's init process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Code(i32),
    Signal(i32),
}

impl Exit {
    /// The shell convention: the code, or 128 + the signal.
    pub fn code(self) -> i32 {
        match self {
            Exit::Code(c) => c,
            Exit::Signal(s) => 128 + s,
        }
    }
}

impl Sandbox {
    /// Creates the container from the bundle (`BUNDLE/config.json`), with
    /// libcontainer's state under `runtime_root/ID`. The init process waits
    /// for [`Sandbox::start`].
    ///
    /// The seccomp policy is compiled here, or taken from `filter_cache`
    /// (see [`crate::seccomp_filter`]), and loaded by our executor just
    /// before the command; libcontainer gets `BUNDLE/runtime/config.json`,
    /// the same spec without `linux.seccomp`.
    pub fn create(
        id: &str,
        bundle: &Path,
        runtime_root: &Path,
        filter_cache: &Path,
        stdio: Stdio,
    ) -> Result<Self, SandboxError> {
        std::fs::create_dir_all(runtime_root)
            .map_err(|e| SandboxError::io(format!("creating {}", runtime_root.display()), e))?;
        let prepared = runtime_bundle(bundle, filter_cache)?;
        let mut builder = ContainerBuilder::new(id.to_string(), SyscallType::default())
            .with_root_path(runtime_root)
            .map_err(SandboxError::runtime("setting the runtime state directory"))?
            .with_executor(SeccompExecutor {
                filter: prepared.filter,
            });
        let mut console_listener = None;
        match stdio {
            Stdio::Files {
                stdin,
                stdout,
                stderr,
            } => {
                builder = builder
                    .with_stdin(stdin)
                    .with_stdout(stdout)
                    .with_stderr(stderr);
            }
            Stdio::Terminal => {
                let path = console_socket_path(bundle);
                let _ = std::fs::remove_file(&path);
                let listener = UnixListener::bind(&path).map_err(|e| {
                    SandboxError::io(format!("binding console socket {}", path.display()), e)
                })?;
                builder = builder.with_console_socket(Some(&path));
                console_listener = Some((listener, path));
            }
        }
        let container = builder
            .as_init(&prepared.dir)
            .with_systemd(false)
            .with_detach(true)
            .build()
            .map_err(SandboxError::runtime("creating the container"))?;
        // The container's processes now hold the namespace themselves.
        drop(prepared.userns);
        let pid = container
            .pid()
            .ok_or_else(|| SandboxError::Runtime("the container has no init process".into()))?
            .as_raw();
        if let Some((rules, cgroup)) = &prepared.v2_devices {
            // Before start: the init has not run the command yet.
            if let Err(e) = device_filter::attach(rules, cgroup) {
                let _ = signal(pid, libc::SIGKILL);
                let _ = wait(pid);
                return Err(e);
            }
        }
        let console = match console_listener {
            Some((listener, path)) => {
                let master = receive_console(&listener);
                let _ = std::fs::remove_file(&path);
                Some(master?)
            }
            None => None,
        };
        Ok(Sandbox {
            container,
            pid,
            console,
        })
    }

    /// The init process, as the host sees it.
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// The pty master, under [`Stdio::Terminal`].
    pub fn take_console(&mut self) -> Option<OwnedFd> {
        self.console.take()
    }

    /// Lets the init process exec the container's command.
    pub fn start(&mut self) -> Result<(), SandboxError> {
        self.container
            .start()
            .map_err(SandboxError::runtime("starting the container"))
    }
}

/// What [`runtime_bundle`] prepared for libcontainer.
struct RuntimeBundle {
    /// Holds the spec libcontainer reads.
    dir: PathBuf,
    filter: Option<Arc<CompiledFilter>>,
    /// Keeps the user namespace alive until the container has joined it.
    userns: Option<UserNamespace>,
    /// On a cgroup v2 host: the device rules and the container's cgroup
    /// directory, for [`device_filter::attach`].
    v2_devices: Option<(Vec<DeviceRule>, PathBuf)>,
}

/// Writes the spec libcontainer runs: without the seccomp policy, whose
/// filter is compiled (or found) here, and with a user namespace to join
/// instead of one to create (see [`crate::userns`]).
fn runtime_bundle(bundle: &Path, filter_cache: &Path) -> Result<RuntimeBundle, SandboxError> {
    let mut spec = Spec::load(bundle.join("config.json"))
        .map_err(SandboxError::runtime("reading the container's config.json"))?;
    if let Some(mut root) = spec.root().clone() {
        if root.path().is_relative() {
            root.set_path(bundle.join(root.path()));
            spec.set_root(Some(root));
        }
    }
    let mut filter = None;
    let mut userns = None;
    let mut v2_devices = None;
    if let Some(mut linux) = spec.linux().clone() {
        if device_filter::unified_host() {
            v2_devices = Some(v2_device_rules(&linux)?);
        }
        if let Some(policy) = linux.seccomp() {
            filter = Some(Arc::new(CompiledFilter::cached(policy, filter_cache)?));
            linux.set_seccomp(None);
        }
        userns = prepare_user_namespace(&mut linux)?;
        spec.set_linux(Some(linux));
    }
    let dir = bundle.join("runtime");
    std::fs::create_dir_all(&dir)
        .map_err(|e| SandboxError::io(format!("creating {}", dir.display()), e))?;
    spec.save(dir.join("config.json"))
        .map_err(SandboxError::runtime("writing the runtime's config.json"))?;
    Ok(RuntimeBundle {
        dir,
        filter,
        userns,
        v2_devices,
    })
}

/// The spec's device rules and the v2 cgroup they guard.
fn v2_device_rules(linux: &Linux) -> Result<(Vec<DeviceRule>, PathBuf), SandboxError> {
    let Some(path) = linux.cgroups_path() else {
        return Err(SandboxError::Config(
            "on a cgroup v2 host the spec needs linux.cgroupsPath, for the device rules".into(),
        ));
    };
    let rules = linux
        .resources()
        .as_ref()
        .and_then(|r| r.devices().as_ref())
        .into_iter()
        .flatten()
        .filter_map(DeviceRule::from_spec)
        .collect();
    let rel = path.strip_prefix("/").unwrap_or(path);
    Ok((rules, Path::new("/sys/fs/cgroup").join(rel)))
}

/// If the spec asks for a new user namespace, makes it with the spec's ID
/// maps and points the spec at it.
fn prepare_user_namespace(linux: &mut Linux) -> Result<Option<UserNamespace>, SandboxError> {
    let Some(mut namespaces) = linux.namespaces().clone() else {
        return Ok(None);
    };
    let Some(ns) = namespaces
        .iter_mut()
        .find(|ns| ns.typ() == LinuxNamespaceType::User && ns.path().is_none())
    else {
        return Ok(None);
    };
    let render = |m: &Option<Vec<LinuxIdMapping>>| -> String {
        m.iter()
            .flatten()
            .map(|m| format!("{} {} {}\n", m.container_id(), m.host_id(), m.size()))
            .collect()
    };
    let (uids, gids) = (render(linux.uid_mappings()), render(linux.gid_mappings()));
    if uids.is_empty() || gids.is_empty() {
        return Err(SandboxError::Config(
            "a user namespace needs uidMappings and gidMappings".into(),
        ));
    }
    let holder = UserNamespace::create(&uids, &gids)?;
    ns.set_path(Some(holder.path()));
    linux.set_namespaces(Some(namespaces));
    Ok(Some(holder))
}

/// libcontainer's default executor, plus loading our compiled seccomp filter
/// right before exec, where libcontainer would have loaded its own.
#[derive(Clone)]
struct SeccompExecutor {
    filter: Option<Arc<CompiledFilter>>,
}

impl Executor for SeccompExecutor {
    fn exec(&self, spec: &Spec) -> Result<(), ExecutorError> {
        if let Some(filter) = &self.filter {
            filter
                .load()
                .map_err(|e| ExecutorError::Other(format!("loading the seccomp filter: {e}")))?;
        }
        libcontainer::workload::default::get_executor().exec(spec)
    }

    fn validate(&self, spec: &Spec) -> Result<(), ExecutorValidationError> {
        libcontainer::workload::default::get_executor().validate(spec)
    }
}

/// Waits for a child process (the container's init is ours: libcontainer
/// clones it with CLONE_PARENT).
pub fn wait(pid: i32) -> Result<Exit, SandboxError> {
    let p =
        Pid::from_raw(pid).ok_or_else(|| SandboxError::Runtime(format!("invalid pid {pid}")))?;
    loop {
        match rustix::process::waitpid(Some(p), WaitOptions::empty()) {
            Ok(Some((_, status))) => {
                if let Some(code) = status.exit_status() {
                    return Ok(Exit::Code(code));
                }
                if let Some(sig) = status.terminating_signal() {
                    return Ok(Exit::Signal(sig));
                }
            }
            Ok(None) => {}
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(SandboxError::io(format!("waiting for pid {pid}"), e.into())),
        }
    }
}

/// Sends a signal to one process; a process that is already gone is fine.
pub fn signal(pid: i32, sig: i32) -> Result<(), SandboxError> {
    let (Some(p), Some(s)) = (Pid::from_raw(pid), Signal::from_named_raw(sig)) else {
        return Err(SandboxError::Runtime(format!(
            "cannot send signal {sig} to pid {pid}"
        )));
    };
    match rustix::process::kill_process(p, s) {
        Ok(()) | Err(rustix::io::Errno::SRCH) => Ok(()),
        Err(e) => Err(SandboxError::io(format!("signalling pid {pid}"), e.into())),
    }
}

/// Kills whatever is left of the container and removes its cgroup and
/// runtime state. A container libcontainer never recorded is fine.
pub fn delete(id: &str, runtime_root: &Path) -> Result<(), SandboxError> {
    let dir = runtime_root.join(id);
    if !dir.join("state.json").exists() {
        let _ = std::fs::remove_dir_all(&dir);
        return Ok(());
    }
    let mut c = Container::load(dir.clone())
        .map_err(SandboxError::runtime("loading the container state"))?;
    c.delete(true)
        .map_err(SandboxError::runtime("deleting the container"))?;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

fn console_socket_path(bundle: &Path) -> PathBuf {
    bundle.join("console.sock")
}

fn receive_console(listener: &UnixListener) -> Result<OwnedFd, SandboxError> {
    use rustix::net::{RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags};
    let (stream, _) = listener
        .accept()
        .map_err(|e| SandboxError::io("accepting the console socket".into(), e))?;
    let mut space = [std::mem::MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut ancillary = RecvAncillaryBuffer::new(&mut space);
    let mut buf = [0u8; 4096];
    rustix::net::recvmsg(
        stream.as_fd(),
        &mut [std::io::IoSliceMut::new(&mut buf)],
        &mut ancillary,
        RecvFlags::CMSG_CLOEXEC,
    )
    .map_err(|e| SandboxError::io("receiving the pty".into(), e.into()))?;
    for msg in ancillary.drain() {
        if let RecvAncillaryMessage::ScmRights(mut fds) = msg {
            if let Some(fd) = fds.next() {
                return Ok(fd);
            }
        }
    }
    Err(SandboxError::Runtime(
        "the container did not send its pty".into(),
    ))
}

/// Whether the kernel OOM-killed a process in the cgroup (v1 `memory`
/// controller, or v2). Read before the cgroup is deleted.
pub fn oom_killed(cgroups_path: &str) -> bool {
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
pub fn loopback_up(pid: i32) -> Result<(), SandboxError> {
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
    .map_err(|_| SandboxError::Runtime("the loopback thread panicked".into()))?
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
