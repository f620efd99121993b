//! `skiff run --sandbox vm` (issue 18): each container in a QEMU guest of
//! its own (microvm; TCG on this host), skiff's minimal kernel (Debian's
//! generic one in one test), skiff's agent as PID 1 speaking
//! docs/agent.md over virtio-serial, and the image served by a shared
//! `--nbd` daemon as a lazy, verified EROFS block device. `make agent`
//! builds the agent and the kernels; every test here shares them and the
//! initramfs built from them. Each boot takes seconds
//! under TCG, so each test asks several things of one boot.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::containers::{code, err, layout, out};
use common::Skiff;

/// `skiff run --rm --sandbox vm OPTS IMAGE ARGS...`.
fn run_vm(skiff: &Skiff, opts: &[&str], image: &str, args: &[&str]) -> std::process::Output {
    let mut a = vec!["run", "--rm", "--sandbox", "vm"];
    a.extend_from_slice(opts);
    a.push(image);
    a.extend_from_slice(args);
    skiff.run(&a)
}

/// The value after `key=` on a line of `text`.
fn field<'a>(text: &'a str, key: &str) -> &'a str {
    text.lines()
        .find_map(|l| l.trim_end_matches('\r').strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("no {key}= in:\n{text}"))
}

/// Nothing of a VM is left on the host: no QEMU (its command line names
/// the root), no agent socket, no container.
fn assert_nothing_left(skiff: &Skiff) {
    let root = skiff.root.path().to_str().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let o = Command::new("pgrep")
            .args(["-f", &format!("qemu-system.*{root}")])
            .output()
            .unwrap();
        if o.stdout.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "QEMU is left running: {}",
            out(&o)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let containers = skiff.root.path().join("containers");
    let left: Vec<PathBuf> = std::fs::read_dir(&containers)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "containers left: {left:?}");
    let ps = skiff.json(&["ps", "-a"]);
    assert_eq!(ps.as_array().map(Vec::len), Some(0), "{ps:#}");
}

#[test]
fn a_command_runs_in_a_guest_of_its_own_confined_as_docker_confines_it() {
    let skiff = Skiff::new();
    let script = "echo image=$(cat /etc/debian_version); \
         echo kernel=$(uname -r); \
         echo cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2); \
         echo processes=$(ls -d /proc/[0-9]* | wc -l); \
         echo root=$(awk '$2 == \"/\" {print $3}' /proc/mounts); \
         echo devices=$(ls /dev | tr '\\n' ' '); \
         echo capbnd=$(awk '/^CapBnd/ {print $2}' /proc/self/status); \
         echo seccomp=$(awk '/^Seccomp:/ {print $2}' /proc/self/status); \
         unshare -U true 2>/dev/null && echo userns=allowed || echo userns=denied; \
         echo hostname=$(hostname); \
         echo hosts=$(grep -c \"$(hostname)\" /etc/hosts); \
         echo x > /usr/written && echo writable=yes; \
         echo cgroup=$(cat /proc/self/cgroup); \
         echo limits=$(cat /sys/fs/cgroup/memory.max /sys/fs/cgroup/cpu.max /sys/fs/cgroup/pids.max); \
         mkdir /sys/fs/cgroup/x 2>/dev/null && echo cgroupfs=writable || echo cgroupfs=read-only; \
         echo memtotal=$(awk '/MemTotal/ {print $2}' /proc/meminfo); \
         echo vcpus=$(nproc); \
         echo own=$(ls -A / | tr '\\n' ' '); \
         python3 -c 'import os; os.makedirs(\"/tmp/jail\"); fd = os.open(\"/\", os.O_RDONLY); \
           os.chroot(\"/tmp/jail\"); os.fchdir(fd); [os.chdir(\"..\") for _ in range(64)]; \
           os.chroot(\".\"); print(\"escaped=\" + \" \".join(os.listdir(\"/\")))'; \
         (for i in $(seq 30); do sleep 5 & done) 2>/tmp/forks; \
         echo refused=$(grep -c 'Cannot fork' /tmp/forks); \
         exit 3";
    // Limits: the container's cgroup in the guest holds them.
    let limits = ["--memory", "64m", "--cpus", "0.5", "--pids-limit", "20"];
    let o = run_vm(&skiff, &limits, layout(), &["sh", "-c", script]);
    let text = out(&o);
    assert_eq!(code(&o), 3, "{text}{}", err(&o));

    let unpacked = tempfile::tempdir().unwrap();
    skiff.ok(&["unpack", "-q", layout(), unpacked.path().to_str().unwrap()]);
    let version = std::fs::read_to_string(unpacked.path().join("etc/debian_version")).unwrap();
    assert_eq!(field(&text, "image"), version.trim());
    // Its own kernel, its own CPU, its own processes and devices.
    let host_kernel =
        String::from_utf8(Command::new("uname").arg("-r").output().unwrap().stdout).unwrap();
    let kernel = field(&text, "kernel");
    assert_ne!(kernel, host_kernel.trim(), "it ran on the host's kernel");
    // skiff's minimal kernel is the default.
    let minimal = std::fs::read_to_string(guest_kernel("linux-minimal-").join("release")).unwrap();
    assert_eq!(kernel, minimal.trim());
    let host_cpu = std::fs::read_to_string("/proc/cpuinfo").unwrap();
    let host_cpu = host_cpu
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .unwrap()
        .trim_start_matches([' ', '\t', ':']);
    assert_ne!(field(&text, "cpu").trim(), host_cpu.trim(), "{text}");
    let processes: u32 = field(&text, "processes").parse().unwrap();
    assert!(processes < 10, "the guest shows {processes} processes");
    assert_eq!(field(&text, "root"), "overlay");
    let devices = field(&text, "devices");
    for d in ["null", "zero", "urandom", "tty", "pts", "shm"] {
        assert!(devices.split(' ').any(|x| x == d), "no /dev/{d}: {devices}");
    }
    for hidden in ["vda", "vport0p1", "ttyS0", "mem", "kmsg"] {
        assert!(
            !devices.split(' ').any(|x| x == hidden),
            "the guest's /dev/{hidden} is visible: {devices}"
        );
    }
    // Docker's capabilities and seccomp policy, inside the guest too.
    assert_eq!(field(&text, "capbnd"), "00000000a80425fb");
    assert_eq!(field(&text, "seccomp"), "2", "no seccomp filter: {text}");
    assert_eq!(field(&text, "userns"), "denied");
    assert!(!field(&text, "hostname").is_empty());
    assert_eq!(field(&text, "hosts"), "1", "{text}");
    assert_eq!(field(&text, "writable"), "yes");
    // The classic chroot escape (CAP_SYS_CHROOT is Docker's) finds the
    // container's root, never the guest's tree around it.
    let sorted = |key: &str| {
        let mut names: Vec<&str> = field(&text, key).split_whitespace().collect();
        names.sort_unstable();
        names
    };
    assert!(sorted("own").contains(&"usr"), "{text}");
    assert_eq!(sorted("escaped"), sorted("own"), "{text}");
    // Its own cgroup (namespace), read-only, with the run's limits; the
    // guest is larger than --memory, and --cpus 0.5 is one vCPU at half.
    assert_eq!(field(&text, "cgroup"), "0::/");
    assert_eq!(field(&text, "limits"), "67108864 50000 100000 20");
    assert_eq!(field(&text, "cgroupfs"), "read-only");
    let memtotal: u64 = field(&text, "memtotal").parse().unwrap();
    assert!(memtotal > 64 * 1024, "the guest has {memtotal} kB");
    assert_eq!(field(&text, "vcpus"), "1");
    assert_eq!(
        field(&text, "refused"),
        "1",
        "pids.max did not hold: {text}"
    );
    assert_nothing_left(&skiff);
}

/// The newest cached guest kernel whose directory starts with `prefix`
/// (`make agent` builds or fetches them), as skiff picks it.
fn guest_kernel(prefix: &str) -> PathBuf {
    let cache = std::env::var_os("SKIFF_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(&std::env::var("HOME").unwrap()).join(".cache/skiff"));
    let mut found: Vec<(std::time::SystemTime, PathBuf)> = std::fs::read_dir(cache.join("vm"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(prefix))
        .map(|e| (e.metadata().unwrap().modified().unwrap(), e.path()))
        .collect();
    found.sort();
    found.pop().expect("no such guest kernel: run make agent").1
}

/// Debian's generic kernel, the fallback, boots the same agent: it loads
/// its drivers as modules (9p's too, for a volume).
#[test]
fn debians_generic_kernel_runs_the_same_guest() {
    let skiff = Skiff::new();
    let shared = tempfile::tempdir().unwrap();
    std::fs::write(shared.path().join("note"), "over 9p\n").unwrap();
    let volume = format!("{}:/data", shared.path().display());
    let o = skiff
        .cmd()
        .env("SKIFF_VM_KERNEL", guest_kernel("linux-image-"))
        .args(["run", "--rm", "--sandbox", "vm", "-v", &volume, layout()])
        .args(["sh", "-c", "uname -r; cat /data/note; exit 5"])
        .output()
        .unwrap();
    let text = out(&o);
    assert_eq!(code(&o), 5, "{text}{}", err(&o));
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].ends_with("-amd64"), "not Debian's kernel: {text}");
    assert_eq!(lines[1], "over 9p");
    assert_nothing_left(&skiff);
}

#[test]
fn env_workdir_user_stdin_volumes_and_a_missing_command() {
    use std::os::unix::fs::PermissionsExt;
    let skiff = Skiff::new();
    // Two host directories: one shared read-only (the VM's default), one
    // read-write; the container's user (1000) may read and write them.
    let shared = tempfile::tempdir().unwrap();
    let (ro, rw) = (shared.path().join("ro"), shared.path().join("rw"));
    for d in [&ro, &rw] {
        std::fs::create_dir(d).unwrap();
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o777)).unwrap();
    }
    std::fs::set_permissions(shared.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(ro.join("note"), "from the host\n").unwrap();
    let ro_volume = format!("{}:/data", ro.display());
    let rw_volume = format!("{}:/out:rw", rw.display());
    // Two single files of one directory, one read-only, one read-write:
    // each is bound alone (its directory's other files stay out).
    let (conf, log) = (
        shared.path().join("app.conf"),
        shared.path().join("app.log"),
    );
    std::fs::write(&conf, "conf from the host\n").unwrap();
    std::fs::write(&log, "").unwrap();
    for f in [&conf, &log] {
        std::fs::set_permissions(f, std::fs::Permissions::from_mode(0o666)).unwrap();
    }
    let conf_volume = format!("{}:/etc/app.conf:ro", conf.display());
    let log_volume = format!("{}:/var/log/app.log:rw", log.display());
    let mut child = skiff
        .cmd()
        .args([
            "run",
            "--rm",
            "--sandbox",
            "vm",
            "-i",
            "-e",
            "GREETING=hello there",
            "-w",
            "/srv/work",
            "-u",
            "1000:1000",
            "-v",
            &ro_volume,
            "-v",
            &rw_volume,
            "-v",
            &conf_volume,
            "-v",
            &log_volume,
            layout(),
            "sh",
            "-c",
            "echo greeting=$GREETING; echo pwd=$(pwd); echo uid=$(id -u) gid=$(id -g); \
             echo note=$(cat /data/note); \
             touch /data/new 2>/dev/null && echo ro=writable || echo ro=refused; \
             echo from-guest > /out/made && echo rw=written; \
             echo conf=$(cat /etc/app.conf); \
             echo x >> /etc/app.conf 2>/dev/null && echo confwrite=allowed || echo confwrite=refused; \
             echo appended >> /var/log/app.log && echo log=written; \
             echo copies=$(find / -path /proc -prune -o -path /sys -prune -o -name 'app.*' -print | sort | tr '\\n' ' '); \
             read line; echo stdin=$line; cat >/dev/null; echo eof=seen",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"from the host\nmore\n")
        .unwrap();
    let o = child.wait_with_output().unwrap();
    let text = out(&o);
    assert_eq!(code(&o), 0, "{text}{}", err(&o));
    assert_eq!(field(&text, "greeting"), "hello there");
    assert_eq!(field(&text, "pwd"), "/srv/work");
    assert_eq!(field(&text, "uid"), "1000 gid=1000");
    assert_eq!(field(&text, "stdin"), "from the host");
    // Volumes: read-only unless :rw, enforced by the hypervisor.
    assert_eq!(field(&text, "note"), "from the host");
    assert_eq!(field(&text, "ro"), "refused");
    assert!(!ro.join("new").exists());
    assert_eq!(field(&text, "rw"), "written");
    assert_eq!(
        std::fs::read_to_string(rw.join("made")).unwrap(),
        "from-guest\n"
    );
    assert_eq!(field(&text, "conf"), "conf from the host");
    assert_eq!(field(&text, "confwrite"), "refused");
    assert_eq!(
        std::fs::read_to_string(&conf).unwrap(),
        "conf from the host\n"
    );
    assert_eq!(field(&text, "log"), "written");
    assert_eq!(std::fs::read_to_string(&log).unwrap(), "appended\n");
    // The files' directory is nowhere in the container: only the two
    // files are.
    assert_eq!(
        field(&text, "copies").trim(),
        "/etc/app.conf /var/log/app.log",
        "{text}"
    );
    assert_eq!(
        field(&text, "eof"),
        "seen",
        "stdin's end did not reach the guest"
    );

    // --memory is the guest's: a process that outgrows it is killed by the
    // guest kernel's OOM killer, and skiff says so, as for a namespace
    // container.
    let o = run_vm(
        &skiff,
        &["--memory", "128m"],
        layout(),
        &[
            "python3",
            "-c",
            "a = []\nfor _ in range(100): a.append(bytearray(10 << 20))\nprint('survived')",
        ],
    );
    assert_eq!(code(&o), 137, "{}{}", out(&o), err(&o));
    assert!(err(&o).contains("OOM killer"), "{}", err(&o));

    // A command that does not exist: 127, as in the namespace sandbox.
    let o = run_vm(&skiff, &[], layout(), &["no-such-command"]);
    assert_eq!(code(&o), 127, "{}", err(&o));
    assert!(err(&o).contains("no-such-command"), "{}", err(&o));
    assert_nothing_left(&skiff);
}

#[test]
fn a_terminal_under_t_and_a_detached_container_that_stops() {
    // Its sockets' paths are longer than a unix socket address holds.
    let skiff = Skiff::with_deep_root();
    let o = run_vm(
        &skiff,
        &["-t"],
        layout(),
        &[
            "sh",
            "-c",
            "tty; test -t 0 && test -t 1 && echo both-tty; stty size",
        ],
    );
    assert_eq!(code(&o), 0, "{}", err(&o));
    let text = out(&o).replace('\r', "");
    assert!(text.starts_with("/dev/pts/0\nboth-tty\n"), "{text:?}");

    // -d, logs and stop: the stop signal reaches the process in the guest.
    let id = run_detached_vm(
        &skiff,
        &["--name", "guest"],
        "echo started; trap 'echo stopping; exit 3' TERM; while :; do sleep 0.1; done",
    );
    let id = id.as_str();
    // What the running VM exposes on the host is root's alone: its exec and
    // control sockets, the image's block device, the guest's console.
    let cdir = skiff.root.path().join("containers").join(
        std::fs::read_dir(skiff.root.path().join("containers"))
            .unwrap()
            .flatten()
            .next()
            .unwrap()
            .file_name(),
    );
    let block = block_socket(&skiff);
    for sock in [cdir.join("exec.sock"), cdir.join("control.sock"), block] {
        assert!(sock.exists(), "{} is missing", sock.display());
        assert!(
            !unprivileged_connects(&sock),
            "nobody reached {}",
            sock.display()
        );
    }
    assert!(
        !cdir.join("agent.sock").exists(),
        "the agent socket outlived QEMU's connect"
    );
    let o = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "cat"])
        .arg(cdir.join("console.log"))
        .output()
        .unwrap();
    assert!(!o.status.success(), "nobody read the guest's console");

    // skiff exec: a second process in the same guest, in its namespaces
    // (it sees the first one's file), as another user, with its own exit.
    let o = skiff.run(&[
        "exec",
        "-u",
        "1000",
        "-e",
        "WHO=exec",
        id,
        "sh",
        "-c",
        "echo who=$WHO uid=$(id -u); echo kernel=$(uname -r); \
         echo seen=$(ls /proc | grep -c '^[0-9]'); echo cgroup=$(cat /proc/self/cgroup); \
         grep -qx $$ /sys/fs/cgroup/cgroup.procs && echo member=yes; exit 4",
    ]);
    let text = out(&o);
    assert_eq!(code(&o), 4, "{text}{}", err(&o));
    assert_eq!(field(&text, "who"), "exec uid=1000");
    // In the container's cgroup and cgroup namespace.
    assert_eq!(field(&text, "cgroup"), "0::/");
    assert_eq!(field(&text, "member"), "yes");
    assert!(field(&text, "kernel").starts_with("6.1."), "{text}");
    let seen: u32 = field(&text, "seen").parse().unwrap();
    assert!(
        seen < 10,
        "the exec sees {seen} processes: not the container's pid namespace"
    );
    // Its stdin, and a command that does not exist.
    let mut child = skiff
        .cmd()
        .args(["exec", "-i", id, "cat"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"through exec\n")
        .unwrap();
    let o = child.wait_with_output().unwrap();
    assert_eq!(out(&o), "through exec\n");
    let o = skiff.run(&["exec", id, "no-such-command"]);
    assert_eq!(code(&o), 127, "{}", err(&o));
    skiff.ok(&["stop", "-t", "20", id]);
    let logs = skiff.ok(&["logs", id]);
    assert!(logs.contains("stopping"), "{logs}");
    let ps = skiff.json(&["ps", "-a"]);
    let c = &ps.as_array().unwrap()[0];
    assert_eq!(c["exit_code"], 3, "{ps:#}");
    skiff.ok(&["rm", id]);
    assert_nothing_left(&skiff);
}

/// `skiff run -d --sandbox vm OPTS IMAGE sh -c script`, once `script` has
/// said "started"; the container's ID.
fn run_detached_vm(skiff: &Skiff, opts: &[&str], script: &str) -> String {
    let mut args = vec!["run", "-d", "--sandbox", "vm"];
    args.extend_from_slice(opts);
    args.extend_from_slice(&[layout(), "sh", "-c", script]);
    let id = skiff.ok(&args).trim().to_string();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !skiff.ok(&["logs", &id]).contains("started") {
        assert!(Instant::now() < deadline, "the guest never started");
        std::thread::sleep(Duration::from_millis(200));
    }
    id
}

/// The image's shared block device (its NBD daemon's socket).
fn block_socket(skiff: &Skiff) -> PathBuf {
    std::fs::read_dir(skiff.root.path().join("images"))
        .unwrap()
        .flatten()
        .map(|e| e.path().join("block.sock"))
        .find(|p| p.exists())
        .expect("no block device daemon")
}

/// Whether an unprivileged user (nobody) can connect to the socket at
/// `path`: the sockets a VM exposes on the host are root's alone.
fn unprivileged_connects(path: &Path) -> bool {
    let o = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "/usr/bin/python3", "-c"])
        .arg(format!(
            // Through the directory's fd: the path may be longer than a
            // socket address holds.
            "import os,socket,sys\ns=socket.socket(socket.AF_UNIX)\ntry:\n  d=os.open({:?}, os.O_PATH)\n  s.connect('/proc/self/fd/%d/{}' % d)\nexcept PermissionError:\n  print('denied'); sys.exit(0)\nprint('connected')",
            path.parent().unwrap().display().to_string(),
            path.file_name().unwrap().to_string_lossy()
        ))
        .output()
        .unwrap();
    let said = out(&o);
    assert!(
        said == "denied\n" || said == "connected\n",
        "{said}{}",
        err(&o)
    );
    said == "connected\n"
}

/// A static program built from C, for a guest's `/init`.
fn static_program(dir: &Path, name: &str, source: &str) -> PathBuf {
    let c = dir.join(format!("{name}.c"));
    std::fs::write(&c, source).unwrap();
    let bin = dir.join(name);
    let o = Command::new("gcc")
        .args(["-static", "-O1", "-o"])
        .arg(&bin)
        .arg(&c)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", err(&o));
    bin
}

#[test]
fn a_guest_panic_a_silent_agent_and_a_killed_qemu_fail_clearly_and_leave_nothing() {
    let work = tempfile::tempdir().unwrap();
    let skiff = Skiff::new();

    // A dynamically linked agent cannot be the guest's init: said before a
    // boot, by a detached run too (its supervisor's error reaches the
    // starter).
    for detach in [&[][..], &["-d"][..]] {
        let mut args = vec!["run", "--rm", "--sandbox", "vm"];
        args.extend_from_slice(detach);
        args.extend_from_slice(&[layout(), "true"]);
        let o = skiff
            .cmd()
            .env("SKIFF_AGENT", "/bin/true")
            .args(&args)
            .output()
            .unwrap();
        assert_eq!(code(&o), 125, "{}", err(&o));
        assert!(
            err(&o).contains("/bin/true is not a static executable"),
            "{}",
            err(&o)
        );
    }
    assert_nothing_left(&skiff);

    // An init that exits: the guest kernel panics, and QEMU exits.
    let exits = static_program(work.path(), "exits", "int main(void) { return 0; }\n");
    let started = Instant::now();
    let o = skiff
        .cmd()
        .env("SKIFF_AGENT", &exits)
        .args(["run", "--rm", "--sandbox", "vm", layout(), "true"])
        .output()
        .unwrap();
    assert_eq!(code(&o), 125, "{}", err(&o));
    assert!(err(&o).contains("panicked"), "{}", err(&o));
    assert!(started.elapsed() < Duration::from_secs(60));
    assert_nothing_left(&skiff);

    // An agent that never answers: a clear error once the boot timeout
    // passes, and the VM is gone.
    let silent = static_program(
        work.path(),
        "silent",
        "#include <unistd.h>\nint main(void) { for (;;) pause(); }\n",
    );
    let o = skiff
        .cmd()
        .env("SKIFF_AGENT", &silent)
        .env("SKIFF_VM_BOOT_TIMEOUT", "10")
        .args(["run", "--rm", "--sandbox", "vm", layout(), "true"])
        .output()
        .unwrap();
    assert_eq!(code(&o), 125, "{}", err(&o));
    assert!(err(&o).contains("within 10s"), "{}", err(&o));
    assert_nothing_left(&skiff);

    // QEMU killed with -9 while the container runs: the run ends with an
    // error naming it, and the container is cleaned up.
    let run = skiff
        .cmd()
        .args([
            "run",
            "--rm",
            "--sandbox",
            "vm",
            layout(),
            "sh",
            "-c",
            "echo up; sleep 600",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let root = skiff.root.path().to_str().unwrap().to_string();
    let deadline = Instant::now() + Duration::from_secs(90);
    let qemu = loop {
        let ps = skiff.json(&["ps"]);
        let running = ps.as_array().and_then(|a| a.first()).cloned();
        if let Some(pid) = running
            .filter(|c| c["status"] == "running")
            .and_then(|c| c["pid"].as_i64())
        {
            break pid;
        }
        assert!(Instant::now() < deadline, "the guest never ran: {ps:#}");
        std::thread::sleep(Duration::from_millis(200));
    };
    let cmdline = std::fs::read(format!("/proc/{qemu}/cmdline")).unwrap();
    assert!(
        String::from_utf8_lossy(&cmdline).contains("qemu-system"),
        "the container's pid is not its VM"
    );
    // SAFETY: kill with integer arguments.
    unsafe { libc::kill(qemu as i32, libc::SIGKILL) };
    let o = run.wait_with_output().unwrap();
    assert_eq!(code(&o), 125, "{}", err(&o));
    assert!(err(&o).contains("the VM ended"), "{}", err(&o));
    assert!(!root.is_empty());
    assert_nothing_left(&skiff);

    // The supervisor of a detached VM killed with -9: its QEMU dies with
    // it (parent-death signal), and the next command records the exit.
    let id = skiff.ok(&[
        "run",
        "-d",
        "--sandbox",
        "vm",
        layout(),
        "sh",
        "-c",
        "sleep 600",
    ]);
    let id = id.trim().to_string();
    let qemu = skiff.json(&["ps"])[0]["pid"].as_i64().unwrap() as i32;
    let o = Command::new("pgrep")
        .args(["-f", &format!("supervise {id}")])
        .output()
        .unwrap();
    let supervisor: i32 = out(&o).lines().next().unwrap().trim().parse().unwrap();
    // SAFETY: kill with integer arguments.
    unsafe { libc::kill(supervisor, libc::SIGKILL) };
    let deadline = Instant::now() + Duration::from_secs(10);
    while Path::new(&format!("/proc/{qemu}")).exists() {
        let zombie = std::fs::read_to_string(format!("/proc/{qemu}/stat"))
            .map(|s| s.contains(") Z "))
            .unwrap_or(true);
        if zombie {
            break;
        }
        assert!(Instant::now() < deadline, "QEMU outlived its supervisor");
        std::thread::sleep(Duration::from_millis(100));
    }
    let ps = skiff.json(&["ps", "-a"]);
    assert_eq!(ps[0]["status"], "exited", "{ps:#}");
    skiff.ok(&["rm", &id]);
    assert_nothing_left(&skiff);
}

#[test]
fn a_tampered_chunk_fails_that_file_in_the_guest_and_every_other_file_reads() {
    let work = tempfile::tempdir().unwrap();
    let skiff = Skiff::new();
    // The files of the image and their digests, as unpacked before the
    // damage.
    let unpacked = work.path().join("unpacked");
    skiff.ok(&["unpack", "-q", layout(), unpacked.to_str().unwrap()]);
    // One byte in the middle of the first data blob; `skiff check` names
    // the files of the chunk it falls in.
    let image = common::containers::tampered_layout_copy(work.path());
    let report = skiff.run(&["check", &image, "--json"]);
    assert_eq!(code(&report), 3, "{}", err(&report));
    let report: serde_json::Value = serde_json::from_slice(&report.stdout).unwrap();
    let bad: Vec<String> = report["bad_chunks"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|c| c["files"].as_array().unwrap().clone())
        .map(|f| f.as_str().unwrap().trim_start_matches('/').to_string())
        .collect();
    let victim = bad
        .iter()
        .find(|f| unpacked.join(f).is_file())
        .unwrap_or_else(|| panic!("no regular file in the bad chunk: {report:#}"))
        .clone();

    let others = [
        "usr/bin/dash",
        "usr/bin/ls",
        "etc/passwd",
        "usr/lib/os-release",
    ];
    for f in others {
        assert!(!bad.iter().any(|b| b == f), "{f} shares the damaged chunk");
    }
    let script = format!(
        "cat /{victim} > /dev/null 2>/tmp/err; echo victim=$?:$(cat /tmp/err); \
         for f in {}; do echo sum=$f:$(sha256sum < /$f | cut -d' ' -f1); done",
        others.join(" ")
    );
    let o = run_vm(&skiff, &[], &image, &["sh", "-c", &script]);
    let text = out(&o);
    assert_eq!(code(&o), 0, "{text}{}", err(&o));
    let victim_line = field(&text, "victim");
    assert!(
        victim_line.starts_with("1:") && victim_line.contains("Input/output error"),
        "{text}"
    );
    for f in others {
        let want = common::containers::sha256_hex(&std::fs::read(unpacked.join(f)).unwrap());
        assert!(
            text.contains(&format!("sum={f}:{want}")),
            "{f} read wrong in the guest:\n{text}"
        );
    }
    let sock = block_socket(&skiff);
    let stats = skiff.json(&["stats", sock.to_str().unwrap()]);
    assert!(
        stats["metrics"]["verify_failures"].as_u64().unwrap() > 0,
        "{stats:#}"
    );
    assert_nothing_left(&skiff);
}

/// The pid of the daemon serving the image's block device, from its mount
/// record.
fn block_daemon_pid(skiff: &Skiff) -> i32 {
    std::fs::read_dir(skiff.root.path().join("mounts"))
        .unwrap()
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
        .map(|e| {
            serde_json::from_slice::<serde_json::Value>(&std::fs::read(e.path()).unwrap()).unwrap()
        })
        .find(|r| {
            r["mountpoint"]
                .as_str()
                .is_some_and(|m| m.ends_with("/block.sock"))
        })
        .and_then(|r| r["pid"].as_i64())
        .expect("no block device daemon is recorded") as i32
}

#[test]
fn a_block_daemon_killed_with_9_is_started_again_and_its_guests_read_on() {
    let skiff = Skiff::new();
    let id = run_detached_vm(&skiff, &[], "echo started; sleep 600");
    let id = id.as_str();
    // The guest reads most of /usr, which it has not read yet; the block
    // daemon is killed while it does. Its reads wait for the one the
    // supervisor starts in its place (a read that failed would change the
    // digest).
    let files = "find usr -type f | LC_ALL=C sort | xargs cat | sha256sum";
    let reader = skiff
        .cmd()
        .args(["exec", "-w", "/", id, "sh", "-c", files])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let first = block_daemon_pid(&skiff);
    std::thread::sleep(Duration::from_millis(1500));
    // SAFETY: kill with integer arguments.
    unsafe { libc::kill(first, libc::SIGKILL) };
    let o = reader.wait_with_output().unwrap();
    assert_eq!(code(&o), 0, "{}", err(&o));
    let tree = block_socket(&skiff).with_file_name("tree");
    let host = Command::new("sh")
        .args(["-c", files])
        .current_dir(&tree)
        .output()
        .unwrap();
    assert!(host.status.success(), "{}", err(&host));
    assert_eq!(
        out(&o),
        out(&host),
        "the guest read other bytes: {}",
        err(&o)
    );
    assert!(out(&host).len() > 64);
    let second = block_daemon_pid(&skiff);
    assert_ne!(first, second, "no new block daemon was started");
    skiff.ok(&["rm", "-f", id]);

    // With no VM running, the next run finds the dead daemon's record and
    // starts one in its place.
    // SAFETY: kill with integer arguments.
    unsafe { libc::kill(second, libc::SIGKILL) };
    let o = run_vm(&skiff, &[], layout(), &["cat", "/etc/debian_version"]);
    assert_eq!(code(&o), 0, "{}", err(&o));
    assert!(out(&o).starts_with("12"), "{}", out(&o));
    assert_ne!(block_daemon_pid(&skiff), second);
    assert_nothing_left(&skiff);
}

/// Whether process `pid` is running (not gone, not a zombie).
fn running(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        s.rsplit_once(") ")
            .is_some_and(|(_, rest)| !rest.starts_with('Z'))
    })
}

/// The image's block daemon stays while a VM has it open, however quiet,
/// and stops once none has for the idle timeout, leaving no socket or
/// record; the next VM starts another.
#[test]
fn an_idle_block_daemon_stops_and_the_next_vm_starts_another() {
    let skiff = Skiff::new();
    let with_idle = |args: &[&str]| skiff.ok_with_env(&[("SKIFF_IMAGE_IDLE_TIMEOUT", "2")], args);
    let script = "echo started; sleep 600";
    let id = with_idle(&["run", "-d", "--sandbox", "vm", layout(), "sh", "-c", script]);
    let id = id.trim();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !skiff.ok(&["logs", id]).contains("started") {
        assert!(Instant::now() < deadline, "the guest never started");
        std::thread::sleep(Duration::from_millis(200));
    }
    let daemon = block_daemon_pid(&skiff);
    let socket = block_socket(&skiff);
    std::thread::sleep(Duration::from_secs(6));
    assert!(running(daemon), "the block device of a running VM stopped");
    let o = skiff.run(&["exec", id, "cat", "/etc/debian_version"]);
    assert_eq!(code(&o), 0, "{}", err(&o));
    skiff.ok(&["rm", "-f", id]);
    let deadline = Instant::now() + Duration::from_secs(30);
    while running(daemon) {
        assert!(
            Instant::now() < deadline,
            "the block daemon stayed with no VM"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(!socket.exists(), "its socket is left");
    let o = skiff
        .cmd()
        .env("SKIFF_IMAGE_IDLE_TIMEOUT", "2")
        .args([
            "run",
            "--rm",
            "--sandbox",
            "vm",
            layout(),
            "cat",
            "/etc/debian_version",
        ])
        .output()
        .unwrap();
    assert_eq!(code(&o), 0, "{}", err(&o));
    assert!(out(&o).starts_with("12"), "{}", out(&o));
    assert_nothing_left(&skiff);
}
