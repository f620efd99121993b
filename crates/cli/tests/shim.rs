//! `containerd-shim-skiff-v2` under a real containerd (Debian's 1.6):
//! `ctr run --runtime io.containerd.skiff.v2` with output, exit codes,
//! exec, a terminal, metrics, ps, pause and resume, kill, the task
//! events, root-only state; and a shim killed with -9 while its container
//! runs. The CRI pod lifecycle on the shim is in `cri.rs`.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::containerd::{Containerd, PulledNode};
use common::oci::unique;

const RUNTIME: &str = "io.containerd.skiff.v2";

fn text(o: &Output) -> String {
    format!(
        "status {:?}\nstdout: {}\nstderr: {}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

type Node = PulledNode;

fn node() -> Node {
    PulledNode::start()
}

/// The task's line in `ctr task ls` (ID, PID, STATUS), if it is listed.
fn task_line(c: &Containerd, id: &str) -> Option<String> {
    let o = c.ctr(&["task", "ls"]);
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .find(|l| l.split_whitespace().next() == Some(id))
        .map(str::to_owned)
}

/// `ctr run --rm` on skiff's shim: `flags`, then the task `id` running
/// `command`.
fn run_rm(n: &Node, flags: &[&str], id: &str, command: &[&str]) -> Output {
    let mut args = vec![
        "run",
        "--rm",
        "--runtime",
        RUNTIME,
        "--snapshotter",
        "skiff",
    ];
    args.extend_from_slice(flags);
    args.extend_from_slice(&[n.image.as_str(), id]);
    args.extend_from_slice(command);
    n.containerd.ctr(&args)
}

/// `sleep 1000` as task `id`, detached, on skiff's shim; its init's pid.
fn run_detached(n: &Node, id: &str) -> i32 {
    let c = &n.containerd;
    c.ctr_ok(&[
        "run",
        "-d",
        "--runtime",
        RUNTIME,
        "--snapshotter",
        "skiff",
        &n.image,
        id,
        "sleep",
        "1000",
    ]);
    let line = task_line(c, id).expect("the task is listed");
    assert!(line.contains("RUNNING"), "{line}");
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// `ctr run --rm -t` of `sh -c script` as task `id` on `runtime`, under
/// a terminal of its own (ctr needs one: script).
fn ctr_run_in_a_terminal(n: &Node, runtime: &str, id: &str, script: &str) -> Output {
    let command = format!(
        "ctr -a {} run --rm -t --runtime {runtime} --snapshotter skiff {} {id} sh -c '{script}'",
        n.containerd.socket().display(),
        n.image
    );
    Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// `ctr run --rm` of `command` as task `id` on `runtime`, in the
/// background, once the task runs.
fn spawn_ctr_run(n: &Node, runtime: &str, id: &str, command: &[&str]) -> std::process::Child {
    let c = &n.containerd;
    let socket = c.socket().display().to_string();
    let child = Command::new("ctr")
        .args(["-a", &socket, "run", "--rm", "--runtime", runtime])
        .args(["--snapshotter", "skiff", &n.image, id])
        .args(command)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_until("the task runs", || {
        task_line(c, id).is_some_and(|l| l.contains("RUNNING"))
    });
    child
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The pids of running shims serving container or pod `id`.
fn shims_for(id: &str) -> Vec<i32> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<String> = cmdline
            .split(|&b| b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        let is_shim = args
            .first()
            .is_some_and(|a| a.ends_with("containerd-shim-skiff-v2"));
        let serves = args.windows(2).any(|w| w[0] == "-id" && w[1] == id);
        if is_shim && serves && !args.iter().any(|a| a == "delete") {
            out.push(pid);
        }
    }
    out
}

/// Whether `pid` is a live process (not gone, not a zombie).
fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit_once(") ").map(|(_, rest)| !rest.starts_with('Z')))
        .unwrap_or(false)
}

fn mounted_under(dir: &str) -> bool {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .any(|l| {
            l.split_whitespace()
                .nth(4)
                .is_some_and(|m| m.starts_with(dir))
        })
}

/// The container's cgroup directories that still exist.
fn cgroups_left(id: &str) -> Vec<PathBuf> {
    let mut left = Vec::new();
    for base in [
        "/sys/fs/cgroup/unified",
        "/sys/fs/cgroup/memory",
        "/sys/fs/cgroup/pids",
        "/sys/fs/cgroup",
    ] {
        let dir = Path::new(base).join("default").join(id);
        if dir.exists() {
            left.push(dir);
        }
    }
    left
}

#[test]
fn ctr_runs_tasks_on_skiffs_shim() {
    let n = node();
    let c = &n.containerd;
    let mut events = Command::new("ctr")
        .arg("-a")
        .arg(c.socket())
        .arg("events")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();

    // Output through containerd's FIFOs, and the exit code.
    let id = unique("shimrun");
    let o = run_rm(
        &n,
        &[],
        &id,
        &[
            "sh",
            "-c",
            "echo out-on-skiff; echo err-on-skiff >&2; exit 4",
        ],
    );
    assert_eq!(o.status.code(), Some(4), "{}\n{}", text(&o), c.log());
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        "out-on-skiff\n",
        "{}",
        text(&o)
    );
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("err-on-skiff"),
        "{}",
        text(&o)
    );
    assert!(task_line(c, &id).is_none());

    // The sandbox kind is the annotation's: a kind the runtime does not
    // have is refused by name, before anything is made.
    let id = unique("shimkind");
    let o = run_rm(
        &n,
        &["--annotation", "io.skiff.sandbox=warp"],
        &id,
        &["true"],
    );
    assert!(!o.status.success(), "{}", text(&o));
    let said = String::from_utf8_lossy(&o.stderr);
    assert!(
        said.contains("\"warp\"") && said.contains("namespace"),
        "{}",
        text(&o)
    );
    let _ = c.ctr(&["container", "delete", &id]);
    let id = unique("shimns");
    let o = run_rm(
        &n,
        &["--annotation", "io.skiff.sandbox=namespace"],
        &id,
        &["true"],
    );
    assert!(o.status.success(), "{}", text(&o));

    // A runtime handler pins a kind: the type io.containerd.skiff-KIND.v2
    // runs containerd-shim-skiff-KIND-v2, a link to the shim.
    let shim = Path::new(&common::skiff_bin()).with_file_name("containerd-shim-skiff-v2");
    for kind in ["namespace", "warp"] {
        let link = shim.with_file_name(format!("containerd-shim-skiff-{kind}-v2"));
        match std::os::unix::fs::symlink(&shim, &link) {
            Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => panic!("{e}"),
            _ => {}
        }
    }
    let pinned = |runtime: &str, flags: &[&str], id: &str| {
        let mut args = vec![
            "run",
            "--rm",
            "--runtime",
            runtime,
            "--snapshotter",
            "skiff",
        ];
        args.extend_from_slice(flags);
        args.extend_from_slice(&[n.image.as_str(), id, "true"]);
        let o = c.ctr(&args);
        let _ = c.ctr(&["container", "delete", id]);
        o
    };
    let o = pinned("io.containerd.skiff-namespace.v2", &[], &unique("pinned"));
    assert!(o.status.success(), "{}\n{}", text(&o), c.log());
    let o = pinned(
        "io.containerd.skiff-namespace.v2",
        &["--annotation", "io.skiff.sandbox=warp"],
        &unique("override"),
    );
    assert!(!o.status.success(), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("runtime handler"),
        "{}",
        text(&o)
    );
    let o = pinned("io.containerd.skiff-warp.v2", &[], &unique("warp"));
    assert!(!o.status.success(), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("\"warp\""),
        "{}",
        text(&o)
    );

    // A terminal: the process gets a pty (ctr itself needs one: script).
    let o = ctr_run_in_a_terminal(
        &n,
        RUNTIME,
        &unique("shimtty"),
        "test -t 0 && test -t 1 && echo tty-ok; stty size",
    );
    let shown = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success() && shown.contains("tty-ok"),
        "{}\n{}",
        text(&o),
        c.log()
    );

    // A task that keeps running: exec, ps, metrics, pause, resume, kill.
    let id = unique("shimtask");
    let init = run_detached(&n, &id);
    assert!(alive(init));
    let shims = shims_for(&id);
    assert_eq!(shims.len(), 1, "one shim serves the task: {shims:?}");

    let e = c.ctr(&[
        "task",
        "exec",
        "--exec-id",
        "e1",
        &id,
        "sh",
        "-c",
        "echo exec-ok; cat /proc/1/cmdline; exit 6",
    ]);
    assert_eq!(e.status.code(), Some(6), "{}", text(&e));
    let shown = String::from_utf8_lossy(&e.stdout);
    assert!(shown.starts_with("exec-ok\nsleep"), "{}", text(&e));
    // stdin reaches an exec, and its end (CloseIO) ends the process.
    let mut piped = Command::new("ctr")
        .arg("-a")
        .arg(c.socket())
        .args([
            "task",
            "exec",
            "--exec-id",
            "e2",
            &id,
            "sh",
            "-c",
            "tr a-z A-Z",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut stdin = piped.stdin.take().unwrap();
        stdin.write_all(b"through stdin\n").unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while piped.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = piped.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let o = piped.wait_with_output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        "THROUGH STDIN\n",
        "the end of stdin did not reach the exec: {}",
        text(&o)
    );
    // A command that does not exist is a failed exec, not a hang.
    let bad = c.ctr(&["task", "exec", "--exec-id", "e3", &id, "/no/such/command"]);
    assert!(!bad.status.success(), "{}", text(&bad));

    let ps = c.ctr_ok(&["task", "ps", &id]);
    assert!(ps.contains(&init.to_string()), "{ps}");
    let metrics = c.ctr_ok(&["task", "metrics", &id]);
    assert!(
        metrics.contains("memory") && metrics.contains("pids"),
        "{metrics}"
    );

    c.ctr_ok(&["task", "pause", &id]);
    assert!(task_line(c, &id).unwrap().contains("PAUSED"));
    c.ctr_ok(&["task", "resume", &id]);
    assert!(task_line(c, &id).unwrap().contains("RUNNING"));

    // What the shim keeps on the host is root's alone.
    let root = Path::new("/run/skiff-shim/default");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(root).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700, "{}", root.display());
    let address = std::fs::read_to_string(
        c.dir
            .path()
            .join("state/io.containerd.runtime.v2.task/default")
            .join(&id)
            .join("address"),
    )
    .unwrap();
    let socket = address.trim().trim_start_matches("unix://");
    let probe = Command::new("setpriv")
        .args(["--reuid", "65534", "--regid", "65534", "--clear-groups"])
        .args(["/usr/bin/python3", "-c"])
        .arg(format!(
            "import socket,sys\ns=socket.socket(socket.AF_UNIX)\ntry:\n  s.connect({socket:?})\nexcept PermissionError:\n  sys.exit(0)\nsys.exit(1)"
        ))
        .output()
        .unwrap();
    assert!(
        probe.status.success(),
        "nobody reached the shim's socket: {}",
        text(&probe)
    );

    c.ctr_ok(&["task", "kill", "-s", "KILL", &id]);
    wait_until("the task to stop", || {
        task_line(c, &id).is_some_and(|l| l.contains("STOPPED"))
    });
    c.ctr_ok(&["task", "delete", &id]);
    c.ctr_ok(&["container", "delete", &id]);
    assert!(cgroups_left(&id).is_empty(), "{:?}", cgroups_left(&id));
    assert!(!root.join(&id).exists());
    wait_until("the shim to exit", || shims_for(&id).is_empty());

    // The shim published the task events containerd relays.
    let _ = events.kill();
    let out = events.wait_with_output().unwrap();
    let seen = String::from_utf8_lossy(&out.stdout);
    for topic in [
        "/tasks/create",
        "/tasks/start",
        "/tasks/exec-added",
        "/tasks/exec-started",
        "/tasks/paused",
        "/tasks/resumed",
        "/tasks/exit",
        "/tasks/delete",
    ] {
        assert!(seen.contains(topic), "no {topic} event:\n{seen}");
    }
}

#[test]
fn a_shim_killed_with_9_leaves_nothing_behind() {
    let n = node();
    let c = &n.containerd;
    let id = unique("shimkill");
    let init = run_detached(&n, &id);
    let shims = shims_for(&id);
    assert_eq!(shims.len(), 1, "{shims:?}");
    let bundle = c
        .dir
        .path()
        .join("state/io.containerd.runtime.v2.task/default")
        .join(&id);
    let rootfs = bundle.join("rootfs").display().to_string();
    assert!(mounted_under(&rootfs));

    // SAFETY: kill(2) on the shim's pid, read just above.
    assert_eq!(unsafe { libc::kill(shims[0], libc::SIGKILL) }, 0);

    // containerd sees the task gone, and the shim's `delete` cleaned up.
    wait_until("containerd to see the task gone", || {
        task_line(c, &id).is_none_or(|l| l.contains("STOPPED"))
    });
    wait_until("the container's init to die", || !alive(init));
    wait_until("the rootfs to be unmounted", || !mounted_under(&rootfs));
    assert!(cgroups_left(&id).is_empty(), "{:?}", cgroups_left(&id));
    assert!(!Path::new("/run/skiff-shim/default").join(&id).exists());
    let _ = c.ctr(&["task", "delete", &id]);
    c.ctr_ok(&["container", "delete", &id]);
    assert!(shims_for(&id).is_empty());
    // The node still runs tasks on the shim afterwards.
    let again = unique("shimafter");
    let o = run_rm(&n, &[], &again, &["true"]);
    assert!(o.status.success(), "{}\n{}", text(&o), c.log());
}

/// Whether a QEMU process runs whose command line names `needle`.
fn qemu_running(needle: &str) -> bool {
    let o = Command::new("pgrep")
        .args(["-f", &format!("qemu-system.*{needle}")])
        .output()
        .unwrap();
    !o.stdout.is_empty()
}

#[test]
fn the_skiff_vm_handler_runs_each_task_in_a_guest_of_its_own() {
    let n = node();
    let c = &n.containerd;
    // The runtime type io.containerd.skiff-vm.v2 runs
    // containerd-shim-skiff-vm-v2, a link to the shim.
    common::containerd::link_shim_for_kind("vm");
    let vm = "io.containerd.skiff-vm.v2";
    let ctr_run = |flags: &[&str], id: &str, command: &[&str]| {
        let mut args = vec!["run", "--runtime", vm, "--snapshotter", "skiff"];
        args.extend_from_slice(flags);
        args.extend_from_slice(&[n.image.as_str(), id]);
        args.extend_from_slice(command);
        c.ctr(&args)
    };

    // Output and exit code, from the guest's own kernel; a write reaches
    // the container's snapshot.
    let id = unique("vmtask");
    let o = ctr_run(
        &["--rm"],
        &id,
        &[
            "sh",
            "-c",
            "echo kernel=$(uname -r); echo root=$(awk '$2 == \"/\" {print $3}' /proc/mounts); exit 3",
        ],
    );
    let shown = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(3), "{}\n{}", text(&o), c.log());
    let host_kernel =
        String::from_utf8(Command::new("uname").arg("-r").output().unwrap().stdout).unwrap();
    assert!(shown.contains("kernel=6.1."), "{}", text(&o));
    assert!(
        !shown.contains(&format!("kernel={}", host_kernel.trim())),
        "{}",
        text(&o)
    );
    assert!(shown.contains("root=9p"), "{}", text(&o));
    assert!(!qemu_running(&id), "the guest outlived its task");

    // A terminal: the guest's pty reaches ctr through the console socket.
    let o = ctr_run_in_a_terminal(
        &n,
        vm,
        &unique("vmtty"),
        "test -t 0 && test -t 1 && echo tty-ok",
    );
    assert!(
        o.status.success() && String::from_utf8_lossy(&o.stdout).contains("tty-ok"),
        "{}\n{}",
        text(&o),
        c.log()
    );

    // A task that keeps running: exec into it, then kill it; its ctr run
    // returns the trap's exit code.
    let id = unique("vmlong");
    let mut run = spawn_ctr_run(
        &n,
        vm,
        &id,
        &[
            "sh",
            "-c",
            "trap 'exit 7' TERM; echo up > /tmp/up; while :; do sleep 0.1; done",
        ],
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    let e = loop {
        let e = c.ctr(&[
            "task",
            "exec",
            "--exec-id",
            "e1",
            &id,
            "sh",
            "-c",
            "cat /tmp/up && echo exec=$(uname -r) && exit 6",
        ]);
        if e.status.code() == Some(6) || Instant::now() > deadline {
            break e;
        }
        std::thread::sleep(Duration::from_millis(300));
    };
    assert_eq!(e.status.code(), Some(6), "{}\n{}", text(&e), c.log());
    let shown = String::from_utf8_lossy(&e.stdout);
    assert!(shown.starts_with("up\nexec=6.1."), "{}", text(&e));
    c.ctr_ok(&["task", "kill", &id]);
    let status = run.wait().unwrap();
    assert_eq!(status.code(), Some(7), "{}", c.log());
    wait_until("the guest is gone", || !qemu_running(&id));
    assert!(task_line(c, &id).is_none());

    // The guest's supervisor (the task's pid) killed with -9: its QEMU
    // goes with it, the task ends with 137, and nothing is left. Its
    // control and exec sockets are root's alone.
    let id = unique("vmkill");
    let mut run = spawn_ctr_run(&n, vm, &id, &["sleep", "1000"]);
    let sockets: Vec<PathBuf> = std::fs::read_dir("/run/skiff-shim")
        .unwrap()
        .flatten()
        .map(|ns| ns.path().join(&id))
        .filter(|d| d.is_dir())
        .flat_map(|d| [d.join("control.sock"), d.join("exec.sock")])
        .collect();
    assert_eq!(sockets.len(), 2, "{sockets:?}");
    for sock in &sockets {
        let o = Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", "/usr/bin/python3", "-c"])
            .arg(format!(
                "import socket\ns=socket.socket(socket.AF_UNIX)\ntry:\n  s.connect({:?}); print('connected')\nexcept PermissionError: print('denied')",
                sock.display().to_string()
            ))
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&o.stdout),
            "denied\n",
            "{}",
            sock.display()
        );
    }
    let supervisor: i32 = task_line(c, &id)
        .unwrap()
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    // SAFETY: kill with integer arguments.
    unsafe { libc::kill(supervisor, libc::SIGKILL) };
    let status = run.wait().unwrap();
    assert_eq!(status.code(), Some(137), "{}", c.log());
    wait_until("the guest is gone", || !qemu_running(&id));
    let cgroups: Vec<PathBuf> = std::fs::read_dir("/sys/fs/cgroup")
        .unwrap()
        .flatten()
        .flat_map(|h| {
            std::fs::read_dir(h.path())
                .into_iter()
                .flatten()
                .flatten()
                .map(|e| e.path())
                .collect::<Vec<_>>()
        })
        .filter(|p| {
            p.is_dir()
                && std::fs::read_dir(p).is_ok_and(|d| {
                    d.flatten()
                        .any(|e| e.file_name().to_string_lossy().contains(&id))
                })
        })
        .collect();
    assert!(cgroups.is_empty(), "cgroups left: {cgroups:?}");
}
