//! Starting a process inside the container's root, in the guest: its
//! namespaces, root, user, capabilities, no_new_privs and seccomp filter,
//! applied in the child between fork and exec.
//!
//! Written on fork and raw syscalls rather than `std::process::Command`:
//! PID 1 reaps every child on a thread of its own, and `Command` waits for
//! a child whose exec failed itself (it panics when that child is already
//! reaped, and a panic in PID 1 is a kernel panic).

use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use skiff_agent_protocol::{self as proto, FailReason, Kind, FIRST_PROCESS};

use crate::{Agent, Container, Process, NEWROOT};

const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// The highest capability number the guest kernel (6.1) knows.
const CAP_LAST_CAP: u32 = 40;
const MAX_FILTER_BYTES: usize = 4096 * 8;

/// What the child does, every allocation made before the fork.
struct ChildPlan {
    /// The candidates for the executable, in `PATH` order (one if the
    /// command names a path).
    candidates: Vec<CString>,
    /// NULL-terminated pointers into `_strings`.
    argv: Vec<*const libc::c_char>,
    envp: Vec<*const libc::c_char>,
    _strings: Vec<CString>,
    cwd: CString,
    hostname: Option<CString>,
    uid: u32,
    gid: u32,
    groups: Vec<libc::gid_t>,
    capabilities: Option<u64>,
    no_new_privileges: bool,
    seccomp: Option<(Vec<u8>, u64)>,
    /// Namespaces to join, in order (mount last).
    join: Vec<OwnedFd>,
    /// Namespaces to make (`CLONE_NEW*`) after those are joined; a new
    /// mount namespace gets a `/proc` and cgroup mount of its own.
    unshare: libc::c_int,
    /// The container's root, and its `/proc` and cgroup mount points.
    root: CString,
    proc_dir: CString,
    cgroup_dir: CString,
    /// The container cgroup's `cgroup.procs`, opened for writing: the
    /// child moves itself in before it makes or joins namespaces.
    cgroup_procs: OwnedFd,
}

/// The steps the child reports a failure of.
#[repr(u32)]
#[derive(Clone, Copy)]
enum Step {
    Stdio = 1,
    Namespaces,
    Hostname,
    Root,
    Cwd,
    Capabilities,
    User,
    NoNewPrivileges,
    Seccomp,
    Exec,
    Cgroup,
}

const STEP_NAMES: [&str; 12] = [
    "",
    "setting up its stdio",
    "entering its namespaces",
    "setting its hostname",
    "entering its root",
    "entering its working directory",
    "dropping capabilities",
    "switching to its user",
    "setting no_new_privs",
    "loading its seccomp filter",
    "running it",
    "entering the container's cgroup",
];

/// Starts process `id` as `start` says; reports Started or Failed.
pub(crate) fn start(agent: &Arc<Agent>, id: u32, start: proto::Start) {
    if let Err((reason, message)) = try_start(agent, id, &start) {
        agent.fail(id, reason, message);
    }
}

type Failure = (FailReason, String);

fn invalid(m: impl Into<String>) -> Failure {
    (FailReason::Invalid, m.into())
}

fn setup(m: impl Into<String>) -> Failure {
    (FailReason::Setup, m.into())
}

/// Where a process runs, settled before its plan.
struct Placement {
    /// Its container's name ("" for the first).
    container: String,
    root: PathBuf,
    cgroup: String,
    join: Vec<OwnedFd>,
    unshare: libc::c_int,
    pid: PidNamespace,
    /// It is a pod container's first process.
    leads: bool,
}

/// The pid namespace a process is born in.
pub(crate) enum PidNamespace {
    /// A new one, of which it is PID 1.
    New,
    /// That of another process (its `ns/pid`, opened).
    Join(OwnedFd),
}

/// The first process makes the first container; a `new_container` makes
/// a pod's; any other joins the container it names.
fn place(agent: &Agent, id: u32, start: &proto::Start) -> Result<Placement, Failure> {
    let leader_pid = |name: &str| -> Result<i32, Failure> {
        let leader = agent
            .containers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
            .map(|c| c.leader);
        let procs = agent.processes.lock().unwrap_or_else(|p| p.into_inner());
        leader
            .and_then(|l| procs.get(&l))
            .filter(|p| p.reaped.is_none())
            .map(|p| p.pid)
            .ok_or_else(|| {
                invalid(if name.is_empty() {
                    "the container's first process is not running".to_string()
                } else {
                    format!("container {name:?} is not running")
                })
            })
    };
    {
        let procs = agent.processes.lock().unwrap_or_else(|p| p.into_inner());
        if procs.contains_key(&id) {
            return Err(invalid(format!("process {id} exists already")));
        }
    }
    if id == FIRST_PROCESS {
        if start.container.is_some() || start.new_container.is_some() {
            return Err(invalid(
                "process 0 starts the first container: it names no container",
            ));
        }
        return Ok(Placement {
            container: String::new(),
            root: PathBuf::from(NEWROOT),
            cgroup: CONTAINER_CGROUP.into(),
            join: Vec::new(),
            unshare: libc::CLONE_NEWNS
                | libc::CLONE_NEWUTS
                | libc::CLONE_NEWIPC
                | libc::CLONE_NEWCGROUP,
            pid: PidNamespace::New,
            leads: false,
        });
    }
    if let Some(new) = &start.new_container {
        if start.container.is_some() || !start.shares.is_empty() {
            return Err(invalid(
                "a new container names no container and shares no directories",
            ));
        }
        crate::pod::check_name(&new.name)?;
        if agent
            .containers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(&new.name)
        {
            return Err(invalid(format!("container {:?} exists already", new.name)));
        }
        let first = leader_pid("")?;
        return Ok(Placement {
            container: new.name.clone(),
            root: crate::pod::root_of(&new.name),
            cgroup: crate::pod::cgroup_of(&new.name),
            join: namespaces_of(first, &["uts", "ipc"])?,
            unshare: libc::CLONE_NEWNS | libc::CLONE_NEWCGROUP,
            pid: if new.share_pid {
                PidNamespace::Join(namespace_of(first, "pid")?)
            } else {
                PidNamespace::New
            },
            leads: true,
        });
    }
    let name = start.container.clone().unwrap_or_default();
    let leader = leader_pid(&name)?;
    let (root, cgroup) = {
        let containers = agent.containers.lock().unwrap_or_else(|p| p.into_inner());
        let c = containers
            .get(&name)
            .ok_or_else(|| invalid(format!("container {name:?} is not running")))?;
        (c.root.clone(), c.cgroup.clone())
    };
    Ok(Placement {
        container: name,
        root,
        cgroup,
        join: namespaces_of(leader, &["uts", "ipc", "cgroup", "mnt"])?,
        unshare: 0,
        pid: PidNamespace::Join(namespace_of(leader, "pid")?),
        leads: false,
    })
}

/// Started is sent before the process can be reported exited.
fn try_start(agent: &Arc<Agent>, id: u32, start: &proto::Start) -> Result<(), Failure> {
    let placement = place(agent, id, start)?;
    let root = placement.root.clone();
    if id == FIRST_PROCESS {
        for f in &start.files {
            write_root_file(&root, f)?;
        }
        if !start.shares.is_empty() {
            crate::boot::load_modules("/modules/9p").map_err(setup)?;
        }
        for share in &start.shares {
            mount_share(&root, share)?;
        }
        make_container_cgroup(CONTAINER_CGROUP, &start.cgroup)?;
    }
    if let Some(new) = &start.new_container {
        let made = crate::pod::prepare(new, &start.cgroup).and_then(|()| {
            start
                .files
                .iter()
                .try_for_each(|f| write_root_file(&root, f))
        });
        if let Err(e) = made {
            crate::pod::remove(agent, &new.name);
            return Err(e);
        }
    }
    if id == FIRST_PROCESS || placement.leads {
        agent
            .containers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(
                placement.container.clone(),
                Container {
                    root: root.clone(),
                    cgroup: placement.cgroup.clone(),
                    leader: id,
                },
            );
    }
    let result = run_placed(agent, id, start, placement);
    if result.is_err() && start.new_container.is_some() {
        crate::pod::remove(agent, start.new_container.as_ref().map_or("", |n| &n.name));
    }
    result
}

fn run_placed(
    agent: &Arc<Agent>,
    id: u32,
    start: &proto::Start,
    placement: Placement,
) -> Result<(), Failure> {
    let Placement {
        container: _,
        root,
        cgroup,
        join,
        unshare,
        pid: pid_namespace,
        leads,
    } = placement;
    let cgroup_procs = std::fs::OpenOptions::new()
        .write(true)
        .open(format!("{cgroup}/cgroup.procs"))
        .map_err(|e| setup(format!("opening the container's cgroup: {e}")))?;
    let plan = plan(start, &root, join, unshare, cgroup_procs.into())?;
    let read_only = match &start.new_container {
        Some(new) => new.read_only_root,
        None => id == FIRST_PROCESS && crate::boot::root_is_read_only(),
    };
    if read_only {
        crate::boot::seal_root(&root.to_string_lossy()).map_err(setup)?;
    }

    let cloexec = |what: &str| -> Result<(OwnedFd, OwnedFd), Failure> {
        let mut fds = [0; 2];
        // SAFETY: pipe2 writes two fds into our array.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
            return Err(setup(format!(
                "making {what}: {}",
                std::io::Error::last_os_error()
            )));
        }
        // SAFETY: both fds are new and ours.
        Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
    };
    // The child's ends (given as 0, 1, 2) and ours.
    let (child_fds, ours): ([OwnedFd; 3], Ours) = match start.terminal {
        Some(size) => {
            let (master, slave) = open_pty(&root, size)?;
            let dup = |fd: &OwnedFd| {
                fd.try_clone()
                    .map_err(|e| setup(format!("duplicating the terminal: {e}")))
            };
            (
                [dup(&slave)?, dup(&slave)?, slave],
                Ours::Terminal(Arc::new(master)),
            )
        }
        None => {
            let (in_r, in_w) = cloexec("the stdin pipe")?;
            let (out_r, out_w) = cloexec("the stdout pipe")?;
            let (err_r, err_w) = cloexec("the stderr pipe")?;
            ([in_r, out_w, err_w], Ours::Pipes(in_w, out_r, err_r))
        }
    };
    let (report_r, report_w) = cloexec("the exec report pipe")?;

    let (outputs_tx, outputs_rx) = std::sync::mpsc::channel();
    let (stdin_tx, stdin_rx) = crate::stdin_channel();
    // Held until the process is listed, so the reaper finds it.
    let mut procs = agent.processes.lock().unwrap_or_else(|p| p.into_inner());
    let fds = child_fds.each_ref().map(|f| f.as_raw_fd());
    let pid = agent
        .forker
        .fork(&plan, fds, report_w.as_raw_fd(), pid_namespace)
        .map_err(|e| setup(format!("starting the process: {e}")))?;
    let (terminal, streams) = match &ours {
        Ours::Terminal(m) => (Some(m.clone()), 1),
        Ours::Pipes(..) => (None, 2),
    };
    procs.insert(
        id,
        Process {
            pid,
            started: false,
            reaped: None,
            stdin: Some(stdin_tx),
            terminal,
            outputs: Some(outputs_rx),
            streams,
            leads: leads
                .then(|| start.new_container.as_ref().map(|n| n.name.clone()))
                .flatten(),
        },
    );
    drop(procs);
    drop(child_fds);
    drop(report_w);

    // The child's report: nothing if its exec succeeded (the pipe closed
    // on exec), else the step and errno.
    let mut report = [0u8; 8];
    let mut got = 0;
    while got < report.len() {
        // SAFETY: reads into our array, within its length.
        let n = unsafe {
            libc::read(
                report_r.as_raw_fd(),
                report[got..].as_mut_ptr().cast(),
                report.len() - got,
            )
        };
        if n < 0 && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
            continue;
        }
        if n <= 0 {
            break;
        }
        got += n as usize;
    }
    if got == report.len() {
        let mut procs = agent.processes.lock().unwrap_or_else(|p| p.into_inner());
        procs.remove(&id);
        let step = u32::from_ne_bytes(report[..4].try_into().expect("4 bytes")) as usize;
        let errno = i32::from_ne_bytes(report[4..].try_into().expect("4 bytes"));
        return Err(child_failure(start, step, errno));
    }

    match ours {
        Ours::Terminal(master) => {
            let dup = |fd: &OwnedFd| {
                fd.try_clone()
                    .map_err(|e| setup(format!("duplicating the terminal: {e}")))
            };
            crate::relay_output(agent.clone(), id, Kind::Stdout, dup(&master)?, outputs_tx);
            crate::relay_input(dup(&master)?, stdin_rx);
        }
        Ours::Pipes(in_w, out_r, err_r) => {
            crate::relay_output(agent.clone(), id, Kind::Stdout, out_r, outputs_tx.clone());
            crate::relay_output(agent.clone(), id, Kind::Stderr, err_r, outputs_tx);
            crate::relay_input(in_w, stdin_rx);
        }
    }
    agent.send_body(Kind::Started, id, &proto::Started { pid });
    let mut procs = agent.processes.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(p) = procs.get_mut(&id) {
        p.started = true;
        // It ended before it was marked started: the reaper left its
        // report to us.
        if let Some(status) = p.reaped {
            let outputs = p.outputs.take();
            let streams = p.streams;
            let leads = p.leads.take();
            drop(procs);
            crate::finish(agent.clone(), id, status, outputs, streams, leads);
        }
    }
    Ok(())
}

/// The one thread that forks the containers' processes. Before each fork
/// it sets the pid namespace its children are born in: a new one (the
/// first process of which is its PID 1), or a container's. A thread in
/// that state can make no threads, so it makes none.
pub(crate) struct Forker {
    jobs: std::sync::Mutex<std::sync::mpsc::Sender<ForkJob>>,
}

struct ForkJob {
    plan: *const ChildPlan,
    stdio: [RawFd; 3],
    report: RawFd,
    pid: PidNamespace,
    reply: std::sync::mpsc::SyncSender<std::io::Result<i32>>,
}

// SAFETY: the plan's pointers are read only by the forker while the
// sender waits for its reply, so what they point to outlives the use.
unsafe impl Send for ForkJob {}

impl Forker {
    pub(crate) fn start() -> Forker {
        let (tx, rx) = std::sync::mpsc::channel::<ForkJob>();
        // The agent's own: a new pid namespace is made only from there
        // (unshare refuses once the children's namespace was changed).
        let own = std::fs::File::open("/proc/self/ns/pid").map(OwnedFd::from);
        std::thread::spawn(move || {
            for job in rx {
                let result = match &own {
                    Ok(own) => Self::run(own, &job),
                    Err(e) => Err(std::io::Error::new(
                        e.kind(),
                        format!("opening the agent's pid namespace: {e}"),
                    )),
                };
                let _ = job.reply.send(result);
            }
        });
        Forker {
            jobs: std::sync::Mutex::new(tx),
        }
    }

    fn run(own: &OwnedFd, job: &ForkJob) -> std::io::Result<i32> {
        // SAFETY: setns and unshare with fds we hold and flags; they
        // change only which pid namespace this thread's children are
        // born in.
        let set = unsafe {
            match &job.pid {
                PidNamespace::New => {
                    libc::setns(own.as_raw_fd(), libc::CLONE_NEWPID) == 0
                        && libc::unshare(libc::CLONE_NEWPID) == 0
                }
                PidNamespace::Join(ns) => libc::setns(ns.as_raw_fd(), libc::CLONE_NEWPID) == 0,
            }
        };
        if !set {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: the child runs only async-signal-safe syscalls on memory
        // the parent prepared (see `child`), then execs or exits.
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            return Err(std::io::Error::last_os_error());
        }
        if pid == 0 {
            // SAFETY: in the child, between fork and exec; the plan is alive
            // (its owner waits for our reply).
            unsafe { child(&*job.plan, job.stdio, job.report) }
        }
        Ok(pid)
    }

    fn fork(
        &self,
        plan: &ChildPlan,
        stdio: [RawFd; 3],
        report: RawFd,
        pid: PidNamespace,
    ) -> std::io::Result<i32> {
        let (reply, answer) = std::sync::mpsc::sync_channel(1);
        let job = ForkJob {
            plan,
            stdio,
            report,
            pid,
            reply,
        };
        let sent = self
            .jobs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .send(job);
        if sent.is_err() {
            return Err(std::io::Error::other("the forker thread is gone"));
        }
        answer
            .recv()
            .unwrap_or_else(|_| Err(std::io::Error::other("the forker thread is gone")))
    }
}

/// Our ends of the process's streams.
enum Ours {
    Terminal(Arc<OwnedFd>),
    /// stdin's writing end, stdout's and stderr's reading ends.
    Pipes(OwnedFd, OwnedFd, OwnedFd),
}

fn child_failure(start: &proto::Start, step: usize, errno: i32) -> Failure {
    let err = std::io::Error::from_raw_os_error(errno);
    let what = STEP_NAMES.get(step).copied().unwrap_or("starting it");
    let cmd = &start.args[0];
    if step == Step::Exec as usize {
        return match errno {
            libc::ENOENT | libc::ENOTDIR => (
                FailReason::NotFound,
                if cmd.contains('/') {
                    format!("{cmd:?}: no such file in the image")
                } else {
                    format!("executable file {cmd:?} not found in $PATH")
                },
            ),
            libc::EACCES | libc::ENOEXEC | libc::EISDIR | libc::EPERM => (
                FailReason::NotExecutable,
                format!("{cmd:?} cannot be run: {err}"),
            ),
            _ => setup(format!("running {cmd:?}: {err}")),
        };
    }
    setup(format!("{what} for {cmd:?}: {err}"))
}

fn plan(
    start: &proto::Start,
    root: &Path,
    join: Vec<OwnedFd>,
    unshare: libc::c_int,
    cgroup_procs: OwnedFd,
) -> Result<ChildPlan, Failure> {
    let c = |s: &str, what: &str| {
        CString::new(s).map_err(|_| invalid(format!("{what} holds a NUL byte")))
    };
    let Some(cmd) = start.args.first().filter(|a| !a.is_empty()) else {
        return Err(invalid("no command to run"));
    };
    let path = start
        .env
        .iter()
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or(DEFAULT_PATH);
    let candidates = if cmd.contains('/') {
        vec![c(cmd, "the command")?]
    } else {
        path.split(':')
            .filter(|d| !d.is_empty())
            .map(|d| c(&format!("{}/{cmd}", d.trim_end_matches('/')), "PATH"))
            .collect::<Result<_, _>>()?
    };
    let cwd = if start.cwd.is_empty() {
        "/"
    } else {
        &start.cwd
    };
    if !cwd.starts_with('/') {
        return Err(invalid(format!(
            "the working directory {cwd:?} is not absolute"
        )));
    }
    // Docker makes a missing working directory.
    let in_root = inside(root, cwd)?;
    if !in_root.exists() {
        std::fs::create_dir_all(&in_root)
            .map_err(|e| setup(format!("making the working directory {cwd}: {e}")))?;
    }
    let seccomp = match &start.seccomp {
        Some(f) => {
            let program = proto::from_hex(&f.program)
                .filter(|p| !p.is_empty() && p.len() % 8 == 0 && p.len() <= MAX_FILTER_BYTES)
                .ok_or_else(|| invalid("the seccomp program is not whole BPF instructions"))?;
            Some((program, f.flags))
        }
        None => None,
    };
    let args: Vec<CString> = start
        .args
        .iter()
        .map(|a| c(a, "an argument"))
        .collect::<Result<_, _>>()?;
    let env: Vec<CString> = start
        .env
        .iter()
        .map(|e| c(e, "an environment variable"))
        .collect::<Result<_, _>>()?;
    let pointers = |v: &[CString]| {
        v.iter()
            .map(|s| s.as_ptr())
            .chain(std::iter::once(std::ptr::null()))
            .collect::<Vec<_>>()
    };
    // The CStrings' buffers stay where they are when the Vec moves.
    let (argv, envp) = (pointers(&args), pointers(&env));
    Ok(ChildPlan {
        candidates,
        argv,
        envp,
        _strings: args.into_iter().chain(env).collect(),
        cwd: c(cwd, "the working directory")?,
        hostname: match &start.hostname {
            Some(h) => Some(c(h, "the hostname")?),
            None => None,
        },
        uid: start.uid,
        gid: start.gid,
        groups: start.additional_gids.clone(),
        capabilities: start.capabilities,
        no_new_privileges: start.no_new_privileges,
        seccomp,
        join,
        unshare,
        root: path_c(root)?,
        proc_dir: path_c(&root.join("proc"))?,
        cgroup_dir: path_c(&root.join("sys/fs/cgroup"))?,
        cgroup_procs,
    })
}

fn path_c(path: &Path) -> Result<CString, Failure> {
    use std::os::unix::ffi::OsStrExt;
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| invalid(format!("{} holds a NUL byte", path.display())))
}

/// The container's cgroup in the guest's (v2) hierarchy; the agent stays
/// in the root cgroup, outside every limit.
const CONTAINER_CGROUP: &str = "/sys/fs/cgroup/container";

/// Makes the container's cgroup with `limits`, enabling in the root the
/// controllers its stats and its limits need.
pub(crate) fn make_container_cgroup(
    dir: &str,
    limits: &proto::CgroupLimits,
) -> Result<(), Failure> {
    let write = |dir: &str, file: &str, value: String| {
        std::fs::write(format!("{dir}/{file}"), &value)
            .map_err(|e| setup(format!("writing {value:?} to the cgroup's {file}: {e}")))
    };
    let mut settings: Vec<(&str, &str, String)> = Vec::new();
    if let Some(m) = limits.memory_max {
        settings.push(("memory", "memory.max", m.to_string()));
    }
    // The guest has no swap device; a kernel without swap accounting has
    // no file to write.
    if let Some(s) = limits.swap_max {
        if std::path::Path::new("/sys/fs/cgroup/memory.swap.max").exists()
            || std::path::Path::new(&format!("{dir}/memory.swap.max")).exists()
        {
            settings.push(("memory", "memory.swap.max", s.to_string()));
        }
    }
    if let Some(c) = limits.cpu_max {
        if c.period == 0 {
            return Err(invalid("a CPU quota's period is zero"));
        }
        settings.push(("cpu", "cpu.max", format!("{} {}", c.quota, c.period)));
    }
    if let Some(p) = limits.pids_max {
        settings.push(("pids", "pids.max", p.to_string()));
    }
    // Memory and pids are counted for every container (its stats), the
    // CPU controller is enabled only for a quota (cpu.stat counts without).
    let mut controllers: Vec<&str> = ["memory", "pids"]
        .into_iter()
        .chain(settings.iter().map(|(c, _, _)| *c))
        .collect();
    controllers.sort_unstable();
    controllers.dedup();
    for c in controllers {
        write("/sys/fs/cgroup", "cgroup.subtree_control", format!("+{c}"))?;
    }
    match std::fs::create_dir(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(setup(format!("making the container's cgroup: {e}"))),
    }
    for (_, file, value) in settings {
        write(dir, file, value)?;
    }
    Ok(())
}

/// `path` (absolute, in the container) under `root`, refusing `..`.
pub(crate) fn inside(root: &Path, path: &str) -> Result<PathBuf, Failure> {
    if path.split('/').any(|c| c == "..") {
        return Err(invalid(format!("{path:?} climbs out with \"..\"")));
    }
    Ok(root.join(path.trim_start_matches('/')))
}

/// One of the files skiff writes into the container (`/etc/hosts`...):
/// never through a symlink, which could point anywhere in the guest.
fn write_root_file(root: &Path, f: &proto::RootFile) -> Result<(), Failure> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if !f.path.starts_with('/') {
        return Err(invalid(format!("{:?} is not an absolute path", f.path)));
    }
    let target = inside(root, &f.path)?;
    let parent = target.parent().unwrap_or(root);
    let real = parent
        .canonicalize()
        .map_err(|e| setup(format!("finding {}: {e}", parent.display())))?;
    if !real.starts_with(root) {
        return Err(invalid(format!(
            "{}'s directory leads out of the image",
            f.path
        )));
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o644)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(real.join(target.file_name().unwrap_or_default()))
        .map_err(|e| setup(format!("writing {}: {e}", f.path)))?;
    file.write_all(f.contents.as_bytes())
        .map_err(|e| setup(format!("writing {}: {e}", f.path)))
}

/// 9p's options for the host's directories: a share is read-only on the
/// host too if it is here.
pub(crate) const NINE_P: &str = "trans=virtio,version=9p2000.L,msize=262144,access=client";

/// A host directory the hypervisor shares (9p over virtio), mounted where
/// the container sees it; the mount point is made inside the root, never
/// through a symlink out of it. A read-only share is also refused writes
/// by the hypervisor.
fn mount_share(root: &Path, share: &proto::SharedDir) -> Result<(), Failure> {
    if !share.destination.starts_with('/') {
        return Err(invalid(format!(
            "{:?} is not an absolute path",
            share.destination
        )));
    }
    if share.tag.is_empty() || !share.tag.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(invalid(format!("{:?} is not a share's tag", share.tag)));
    }
    if let Some(file) = &share.file {
        return bind_shared_file(root, share, file);
    }
    let real = mount_point(root, &share.destination, true)?;
    let flags =
        libc::MS_NOSUID | libc::MS_NODEV | if share.read_only { libc::MS_RDONLY } else { 0 };
    crate::boot::mount(&share.tag, &real.to_string_lossy(), "9p", flags, NINE_P).map_err(setup)
}

/// Where the agent mounts the directories that single files come from,
/// outside the container's root.
const FILE_SHARES: &str = "/shares";

/// A single host file (`-v FILE:DEST`, a runtime's `/etc/hosts`): its
/// directory's 9p device is mounted outside the root once, and the file
/// alone is bound at its destination.
fn bind_shared_file(root: &Path, share: &proto::SharedDir, file: &str) -> Result<(), Failure> {
    if file.is_empty() || file.contains('/') || file == "." || file == ".." {
        return Err(invalid(format!("{file:?} is not a file's name")));
    }
    let source_dir = format!("{FILE_SHARES}/{}", share.tag);
    if !Path::new(&source_dir).join(file).exists() {
        std::fs::create_dir_all(&source_dir)
            .map_err(|e| setup(format!("making {source_dir}: {e}")))?;
        let flags = libc::MS_NOSUID
            | libc::MS_NODEV
            | libc::MS_NOEXEC
            | if share.read_only { libc::MS_RDONLY } else { 0 };
        crate::boot::mount(&share.tag, &source_dir, "9p", flags, NINE_P).map_err(setup)?;
    }
    bind_into(
        root,
        Path::new(&format!("{source_dir}/{file}")),
        &share.destination,
        share.read_only,
    )
}

/// `destination`'s mount point in `root`, made a directory (or an empty
/// file) if missing, never through a symlink out of the root, and never
/// the root itself.
fn mount_point(root: &Path, destination: &str, directory: bool) -> Result<PathBuf, Failure> {
    if !destination.starts_with('/') {
        return Err(invalid(format!("{destination:?} is not an absolute path")));
    }
    let target = inside(root, destination)?;
    let out = || {
        invalid(format!(
            "the mount's destination {destination} leads out of the image"
        ))
    };
    if directory {
        std::fs::create_dir_all(&target)
            .map_err(|e| setup(format!("making the mount point {destination}: {e}")))?;
        let real = target
            .canonicalize()
            .map_err(|e| setup(format!("finding {destination}: {e}")))?;
        if !real.starts_with(root) || real == root {
            return Err(out());
        }
        return Ok(real);
    }
    let parent = target.parent().unwrap_or(root);
    std::fs::create_dir_all(parent)
        .map_err(|e| setup(format!("making the directory of {destination}: {e}")))?;
    let real_parent = parent
        .canonicalize()
        .map_err(|e| setup(format!("finding {}: {e}", parent.display())))?;
    if !real_parent.starts_with(root) {
        return Err(out());
    }
    let real = real_parent.join(target.file_name().unwrap_or_default());
    match std::fs::symlink_metadata(&real) {
        Ok(m) if m.file_type().is_symlink() || m.is_dir() => Err(invalid(format!(
            "the mount's destination {destination} is a {} in the image, not a file",
            if m.is_dir() { "directory" } else { "symlink" }
        ))),
        Ok(_) => Ok(real),
        Err(_) => {
            std::fs::File::create(&real)
                .map_err(|e| setup(format!("making the mount point {destination}: {e}")))?;
            Ok(real)
        }
    }
}

/// Binds `from` (a file or directory of the guest) at `destination` in
/// `root`, read-only if asked.
pub(crate) fn bind_into(
    root: &Path,
    from: &Path,
    destination: &str,
    read_only: bool,
) -> Result<(), Failure> {
    let is_dir = std::fs::metadata(from)
        .map_err(|e| setup(format!("finding {}: {e}", from.display())))?
        .is_dir();
    let to = mount_point(root, destination, is_dir)?;
    let (from, to) = (from.to_string_lossy(), to.to_string_lossy());
    crate::boot::mount(&from, &to, "", libc::MS_BIND | libc::MS_REC, "").map_err(setup)?;
    if read_only {
        crate::boot::mount(
            "",
            &to,
            "",
            libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY,
            "",
        )
        .map_err(setup)?;
    }
    Ok(())
}

/// Namespace `ns` of `pid`, opened.
fn namespace_of(pid: i32, ns: &str) -> Result<OwnedFd, Failure> {
    std::fs::File::open(format!("/proc/{pid}/ns/{ns}"))
        .map(OwnedFd::from)
        .map_err(|e| setup(format!("opening the container's {ns} namespace: {e}")))
}

/// The namespaces `names` of `pid`, opened, in the order given (a mount
/// namespace goes last).
fn namespaces_of(pid: i32, names: &[&str]) -> Result<Vec<OwnedFd>, Failure> {
    names.iter().map(|ns| namespace_of(pid, ns)).collect()
}

/// A terminal of the container's own devpts instance, so that it sees
/// its side as `/dev/pts/N`: the master from that instance's `ptmx`, the
/// slave by TIOCGPTPEER (no path to look up).
fn open_pty(root: &Path, size: proto::TerminalSize) -> Result<(OwnedFd, OwnedFd), Failure> {
    use std::os::unix::fs::OpenOptionsExt;
    let err = |what: &str, e: std::io::Error| setup(format!("{what}: {e}"));
    let master: OwnedFd = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOCTTY | libc::O_CLOEXEC)
        .open(root.join("dev/pts/ptmx"))
        .map_err(|e| err("opening the container's terminal", e))?
        .into();
    let unlock: libc::c_int = 0;
    // SAFETY: TIOCSPTLCK reads the int we own.
    if unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSPTLCK, &unlock) } != 0 {
        return Err(err(
            "unlocking the terminal",
            std::io::Error::last_os_error(),
        ));
    }
    // SAFETY: TIOCGPTPEER takes open flags and returns a new fd.
    let slave = unsafe {
        libc::ioctl(
            master.as_raw_fd(),
            libc::TIOCGPTPEER,
            libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
        )
    };
    if slave < 0 {
        return Err(err(
            "opening the terminal's other side",
            std::io::Error::last_os_error(),
        ));
    }
    // SAFETY: the fd is new and ours.
    let slave = unsafe { OwnedFd::from_raw_fd(slave) };
    resize(&master, size.rows, size.cols);
    Ok((master, slave))
}

pub(crate) fn resize(master: &OwnedFd, rows: u16, cols: u16) {
    let ws = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads the winsize we own.
    unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &ws) };
}

/// The child's side of the fork. Only async-signal-safe calls: the parent
/// has other threads, whose locks may be held at the fork.
///
/// # Safety
/// Call only in a child just forked, with `plan` and the fds prepared by
/// the parent.
unsafe fn child(plan: &ChildPlan, stdio: [RawFd; 3], report: RawFd) -> ! {
    let fail = |step: Step| -> ! {
        let errno = *libc::__errno_location();
        let mut msg = [0u8; 8];
        msg[..4].copy_from_slice(&(step as u32).to_ne_bytes());
        msg[4..].copy_from_slice(&errno.to_ne_bytes());
        libc::write(report, msg.as_ptr().cast(), msg.len());
        libc::_exit(127)
    };
    libc::setsid();
    for (to, &from) in stdio.iter().enumerate() {
        if libc::dup2(from, to as RawFd) < 0 {
            fail(Step::Stdio);
        }
    }
    if libc::isatty(0) == 1 && libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
        fail(Step::Stdio);
    }
    // Into the container's cgroup before a cgroup namespace is made (its
    // root is where the process is) or joined.
    if libc::write(plan.cgroup_procs.as_raw_fd(), c"0".as_ptr().cast(), 1) != 1 {
        fail(Step::Cgroup);
    }
    for ns in &plan.join {
        if libc::setns(ns.as_raw_fd(), 0) < 0 {
            fail(Step::Namespaces);
        }
    }
    if plan.unshare != 0 && libc::unshare(plan.unshare) < 0 {
        fail(Step::Namespaces);
    }
    if plan.unshare & libc::CLONE_NEWNS != 0 {
        // A first process of its pid namespace: its /proc shows that
        // namespace, in a mount namespace of its own.
        if libc::mount(
            std::ptr::null(),
            c"/".as_ptr(),
            std::ptr::null(),
            libc::MS_REC | libc::MS_PRIVATE,
            std::ptr::null(),
        ) < 0
        {
            fail(Step::Namespaces);
        }
        let proc_fs = c"proc";
        libc::umount2(plan.proc_dir.as_ptr(), libc::MNT_DETACH);
        if libc::mount(
            proc_fs.as_ptr(),
            plan.proc_dir.as_ptr(),
            proc_fs.as_ptr(),
            libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
            std::ptr::null(),
        ) < 0
        {
            fail(Step::Namespaces);
        }
        // Its cgroup, read-only and seen from the namespace's root, as
        // Docker mounts it on v2.
        let cgroup_fs = c"cgroup2";
        if libc::mount(
            cgroup_fs.as_ptr(),
            plan.cgroup_dir.as_ptr(),
            cgroup_fs.as_ptr(),
            libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC | libc::MS_RDONLY,
            std::ptr::null(),
        ) < 0
        {
            fail(Step::Cgroup);
        }
    }
    if plan.unshare & libc::CLONE_NEWUTS != 0 {
        if let Some(h) = &plan.hostname {
            if libc::sethostname(h.as_ptr(), h.as_bytes().len()) < 0 {
                fail(Step::Hostname);
            }
        }
    }
    // A new mount namespace pivots into the root and lets go of the
    // guest's tree, as runc does: a chroot alone is escaped with
    // CAP_SYS_CHROOT. A process that joined the container's mount
    // namespace is in that root already (setns lands on its top mount).
    if plan.unshare & libc::CLONE_NEWNS != 0 {
        let dot = c".";
        if libc::chdir(plan.root.as_ptr()) < 0
            || libc::syscall(libc::SYS_pivot_root, dot.as_ptr(), dot.as_ptr()) < 0
            || libc::umount2(dot.as_ptr(), libc::MNT_DETACH) < 0
        {
            fail(Step::Root);
        }
    }
    if libc::chdir(c"/".as_ptr()) < 0 {
        fail(Step::Root);
    }
    if libc::chdir(plan.cwd.as_ptr()) < 0 {
        fail(Step::Cwd);
    }
    // Without no_new_privs, loading a filter needs CAP_SYS_ADMIN: load it
    // while the process still has it (runc's order); Docker's profile
    // allows the calls that follow. With no_new_privs, as late as can be.
    let load_seccomp = || {
        if let Some((program, flags)) = &plan.seccomp {
            let prog = libc::sock_fprog {
                len: (program.len() / 8) as libc::c_ushort,
                filter: program.as_ptr() as *mut libc::sock_filter,
            };
            if libc::syscall(libc::SYS_seccomp, 1 as libc::c_ulong, *flags, &prog) < 0 {
                fail(Step::Seccomp);
            }
        }
    };
    if !plan.no_new_privileges {
        load_seccomp();
    }
    if let Some(keep) = plan.capabilities {
        for cap in 0..=CAP_LAST_CAP {
            if keep & (1 << cap) == 0
                && libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) < 0
                && *libc::__errno_location() != libc::EINVAL
            {
                fail(Step::Capabilities);
            }
        }
    }
    if libc::setgroups(plan.groups.len(), plan.groups.as_ptr()) < 0
        || libc::setgid(plan.gid) < 0
        || libc::setuid(plan.uid) < 0
    {
        fail(Step::User);
    }
    // A process that stays root keeps only its capabilities; any other
    // user lost them all at setuid.
    if let (Some(keep), 0) = (plan.capabilities, plan.uid) {
        let header = CapHeader {
            version: LINUX_CAPABILITY_VERSION_3,
            pid: 0,
        };
        let low = keep as u32;
        let high = (keep >> 32) as u32;
        let data = [
            CapData {
                effective: low,
                permitted: low,
                inheritable: low,
            },
            CapData {
                effective: high,
                permitted: high,
                inheritable: high,
            },
        ];
        if libc::syscall(libc::SYS_capset, &header, data.as_ptr()) < 0 {
            fail(Step::Capabilities);
        }
    }
    if plan.no_new_privileges && libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0 {
        fail(Step::NoNewPrivileges);
    }
    if plan.no_new_privileges {
        load_seccomp();
    }
    // execvp's rule: try each candidate; one found but not runnable is
    // the error if none runs.
    let mut denied = false;
    for exe in &plan.candidates {
        libc::execve(exe.as_ptr(), plan.argv.as_ptr(), plan.envp.as_ptr());
        match *libc::__errno_location() {
            libc::ENOENT | libc::ENOTDIR => {}
            libc::EACCES => denied = true,
            _ => fail(Step::Exec),
        }
    }
    *libc::__errno_location() = if denied { libc::EACCES } else { libc::ENOENT };
    fail(Step::Exec)
}

const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}

#[repr(C)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}
