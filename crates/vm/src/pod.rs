//! A CRI pod in one VM: the pod's sandbox (pause) container boots the
//! guest with its share directory as the 9p device [`proto::POD_SHARE_TAG`],
//! and each later container of the pod is a [`PodMember`]: its supervisor
//! binds the container's root and mounts into `SHARE/ID/` on the host and
//! asks the sandbox's agent, through the sandbox supervisor's exec socket,
//! for a new container there (docs/agent.md, `new_container`). microvm has
//! no hotplug, so one share made at boot carries every later container.

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use oci_spec::runtime::{LinuxNamespaceType, Spec};
use rustix::mount::MountFlags;
use skiff_agent_protocol as proto;
use skiff_sandbox::seccomp_filter::CompiledFilter;
use skiff_sandbox::{ExecProcess, Exit, Prepare, Sandbox, SandboxError, SignalHandle, Stats};

use crate::exec::VmExec;
use crate::streams::{wire, Wired};

/// A pod's app container, run in its sandbox's VM.
pub struct PodMember {
    /// `SHARE/ID`, where its root and mounts are bound.
    dir: PathBuf,
    /// The sandbox supervisor's exec socket.
    socket: PathBuf,
    request: proto::Start,
    /// The streams, until the start.
    wired: Option<Wired>,
    console: Option<OwnedFd>,
    running: Option<VmExec>,
    /// The running process's signals, once it runs.
    signals: Arc<Mutex<Option<SignalHandle>>>,
}

impl PodMember {
    pub(crate) fn prepare(
        c: Prepare<'_>,
        sandbox: &Path,
        share: &Path,
        name: &str,
        filter_cache: &Path,
    ) -> Result<Self, SandboxError> {
        let socket = sandbox.join("exec.sock");
        if !share.is_dir() || !socket.exists() {
            return Err(SandboxError::Setup(format!(
                "the pod's sandbox ({}) is not a running VM pod: its sandbox container must run in the vm kind, and before its containers",
                sandbox.display()
            )));
        }
        let dir = share.join(name);
        std::fs::create_dir(&dir)
            .map_err(|e| crate::sandbox::io(format!("creating {}", dir.display()), e))?;
        let made = Self::request(c.spec, c.bundle, &dir, name, filter_cache)
            .and_then(|request| Ok((request, wire(c.stdio)?)));
        match made {
            Ok((request, (stdio, console, relay))) => Ok(PodMember {
                dir,
                socket,
                request,
                wired: Some((stdio, None, relay)),
                console,
                running: None,
                signals: Arc::default(),
            }),
            Err(e) => {
                let _ = skiff_sandbox::rootfs::remove_dir_detaching_mounts(&dir);
                Err(e)
            }
        }
    }

    /// Binds the container's root and mounts into `dir` and says so in
    /// the agent's request for it.
    fn request(
        spec: &Spec,
        bundle: &Path,
        dir: &Path,
        name: &str,
        filter_cache: &Path,
    ) -> Result<proto::Start, SandboxError> {
        let root = spec
            .root()
            .as_ref()
            .ok_or_else(|| SandboxError::Invalid("the runtime spec has no root".into()))?;
        let root_path = if root.path().is_relative() {
            bundle.join(root.path())
        } else {
            root.path().clone()
        };
        bind(&root_path, &dir.join("rootfs"), true, false)?;
        let mut mounts = Vec::new();
        let mut pod_shm = false;
        for (n, m) in bind_mounts(spec).enumerate() {
            if m.destination == "/dev/shm" {
                // The pod's, in the guest: the sandbox's /dev/shm.
                pod_shm = true;
                continue;
            }
            let meta = std::fs::metadata(&m.source).map_err(|e| {
                SandboxError::Invalid(format!(
                    "the mount {}:{}: {e}",
                    m.source.display(),
                    m.destination
                ))
            })?;
            if !meta.is_dir() && !meta.is_file() {
                return Err(SandboxError::Unsupported(format!(
                    "the mount {}:{}: a VM pod shares directories and regular files only",
                    m.source.display(),
                    m.destination
                )));
            }
            let relative = format!("{name}/mounts/{n}");
            bind(
                &m.source,
                &dir.join(format!("mounts/{n}")),
                meta.is_dir(),
                m.read_only,
            )?;
            mounts.push(proto::PodMount {
                source: relative,
                destination: m.destination,
                read_only: m.read_only,
            });
        }
        let seccomp = match spec.linux().as_ref().and_then(|l| l.seccomp().as_ref()) {
            Some(policy) => Some(CompiledFilter::cached(policy, filter_cache)?),
            None => None,
        };
        let mut request = crate::sandbox::start_request(spec, seccomp.as_ref())?;
        request.new_container = Some(proto::NewContainer {
            name: name.to_string(),
            root: format!("{name}/rootfs"),
            read_only_root: root.readonly().unwrap_or(false),
            mounts,
            pod_shm,
            share_pid: joins_pid_namespace(spec),
        });
        Ok(request)
    }
}

/// One bind mount of the spec.
struct BindMount {
    source: PathBuf,
    destination: String,
    read_only: bool,
}

fn bind_mounts(spec: &Spec) -> impl Iterator<Item = BindMount> + '_ {
    spec.mounts().iter().flatten().filter_map(|m| {
        let options = m.options().clone().unwrap_or_default();
        let is_bind = m.typ().as_deref() == Some("bind")
            || options.iter().any(|o| o == "bind" || o == "rbind");
        is_bind.then(|| BindMount {
            source: m.source().clone().unwrap_or_default(),
            destination: m.destination().to_string_lossy().into_owned(),
            read_only: options.iter().any(|o| o == "ro"),
        })
    })
}

/// The CRI's "share the pod's processes": the spec names the pid
/// namespace to join.
fn joins_pid_namespace(spec: &Spec) -> bool {
    spec.linux()
        .as_ref()
        .and_then(|l| l.namespaces().as_ref())
        .into_iter()
        .flatten()
        .any(|n| n.typ() == LinuxNamespaceType::Pid && n.path().is_some())
}

/// Binds `source` at `target` (made as a directory or an empty file),
/// read-only on the host too if asked.
fn bind(
    source: &Path,
    target: &Path,
    directory: bool,
    read_only: bool,
) -> Result<(), SandboxError> {
    let made = if directory {
        std::fs::create_dir_all(target)
    } else {
        target
            .parent()
            .map_or(Ok(()), std::fs::create_dir_all)
            .and_then(|()| std::fs::File::create(target).map(drop))
    };
    made.map_err(|e| crate::sandbox::io(format!("creating {}", target.display()), e))?;
    let failed = |e: rustix::io::Errno| {
        crate::sandbox::io(
            format!("binding {} at {}", source.display(), target.display()),
            e.into(),
        )
    };
    rustix::mount::mount_bind_recursive(source, target).map_err(failed)?;
    if read_only {
        rustix::mount::mount_remount(target, MountFlags::BIND | MountFlags::RDONLY, "")
            .map_err(failed)?;
    }
    Ok(())
}

impl Sandbox for PodMember {
    /// Its supervisor's: the process itself is in the pod's guest.
    fn pid(&self) -> i32 {
        std::process::id() as i32
    }

    fn take_console(&mut self) -> Option<OwnedFd> {
        self.console.take()
    }

    fn start(&mut self) -> Result<(), SandboxError> {
        let wired = self.wired.take().ok_or_else(|| {
            SandboxError::Invalid("the pod container's process was started already".into())
        })?;
        let exec = VmExec::begin(&self.socket, self.request.clone(), wired)?;
        *self.signals.lock().unwrap_or_else(|p| p.into_inner()) = Some(exec.signal_handle());
        self.running = Some(exec);
        Ok(())
    }

    fn signal(&self, signal: i32) -> Result<(), SandboxError> {
        (self.signal_handle())(signal)
    }

    /// To the agent, SIGKILL too: the pod's VM runs on. Before the start
    /// there is no process to signal.
    fn signal_handle(&self) -> SignalHandle {
        let signals = self.signals.clone();
        Arc::new(move |signal| {
            let handle = signals.lock().unwrap_or_else(|p| p.into_inner()).clone();
            match handle {
                Some(h) => h(signal),
                None => Ok(()),
            }
        })
    }

    fn wait(&mut self) -> Result<Exit, SandboxError> {
        match &mut self.running {
            Some(exec) => exec.wait(),
            None => Ok(Exit::Signal(libc::SIGKILL)),
        }
    }

    fn finish_output(&mut self) {
        if let Some(exec) = &mut self.running {
            exec.finish_output();
        }
    }

    fn oom_killed(&self) -> bool {
        false
    }

    /// Its cgroup's in the pod's guest (the pod's VM is the sandbox
    /// container's footprint on the host).
    fn stats(&self) -> Result<Stats, SandboxError> {
        let name = self.request.new_container.as_ref().map(|n| n.name.as_str());
        crate::exec::guest_stats(&self.socket, name)
    }

    fn delete(&mut self) -> Result<(), SandboxError> {
        if let Some(exec) = &mut self.running {
            exec.finish_output();
        }
        skiff_sandbox::rootfs::remove_dir_detaching_mounts(&self.dir)
            .map_err(|e| crate::sandbox::io(format!("removing {}", self.dir.display()), e))
    }
}
