//! `skiff-oci`, the runc-compatible runtime command, driven the way
//! Podman's conmon and containerd's runc shim drive runc: the lifecycle,
//! exec, pid files, the console socket, hooks with their state, the
//! bundle's config honoured field by field, and bad configs.

mod common;

use std::os::unix::net::UnixListener;
use std::path::Path;
use std::time::Duration;

use common::oci::{bundle, config, unique, Oci};
use serde_json::{json, Value};

#[test]
fn lifecycle_follows_the_runtime_spec() {
    let oci = Oci::new();
    let id = unique("life");
    let work = oci.dir.path();
    let marker = work.join("ran");
    std::fs::write(&marker, "").unwrap();
    std::fs::remove_file(&marker).unwrap();
    let mut c = config(
        &id,
        &[
            "sh",
            "-c",
            "echo started > /mnt/ran; echo out; exec sleep 1000",
        ],
    );
    c["mounts"].as_array_mut().unwrap().push(json!({
        "destination": "/mnt", "type": "bind", "source": work, "options": ["rbind", "rw"]
    }));
    let b = bundle(work, "b", &c);
    let out = work.join("out");
    let pid_file = work.join("pid");
    oci.create(&b, &id, &out, &["--pid-file", pid_file.to_str().unwrap()]);

    let state = oci.state(&id);
    assert_eq!(state["status"], "created");
    assert_eq!(state["ociVersion"], "1.1.0");
    assert_eq!(state["bundle"], b.canonicalize().unwrap().to_str().unwrap());
    let pid = state["pid"].as_i64().unwrap();
    assert!(pid > 0);
    assert_eq!(
        std::fs::read_to_string(&pid_file).unwrap(),
        pid.to_string(),
        "the pid file holds the init's pid"
    );
    // Created: the process has not run.
    std::thread::sleep(Duration::from_millis(300));
    assert!(!marker.exists(), "the process ran before start");
    assert!(oci.ok(&["list"]).contains(&id));

    oci.ok(&["start", &id]);
    assert_eq!(oci.status(&id), "running");
    let (_, e) = oci.fails(&["start", &id]);
    assert!(e.contains("already running"), "{e}");
    wait_for(|| marker.exists());
    let (_, e) = oci.fails(&["delete", &id]);
    assert!(e.contains("not stopped"), "{e}");

    oci.ok(&["kill", &id, "KILL"]);
    oci.wait_stopped(&id);
    assert_eq!(oci.state(&id)["pid"], 0);
    assert!(std::fs::read_to_string(&out).unwrap().contains("out"));
    oci.ok(&["delete", &id]);
    let (code, e) = oci.fails(&["state", &id]);
    assert_eq!(code, 1);
    assert!(e.contains("does not exist"), "{e}");
    // runc's --force on a container that is gone is not an error.
    oci.ok(&["delete", "--force", &id]);
    assert!(
        !Path::new("/sys/fs/cgroup/pids/skiff-oci-test")
            .join(&id)
            .exists(),
        "the cgroup is removed"
    );
}

#[test]
fn run_exec_pause_update_and_ps() {
    let oci = Oci::new();
    let work = oci.dir.path();
    // Foreground run: the process's exit code.
    let id = unique("run");
    let b = bundle(work, "run", &config(&id, &["sh", "-c", "exit 7"]));
    let out = oci
        .cmd(&["run", "--bundle", b.to_str().unwrap(), &id])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(7));
    assert!(oci.fails(&["state", &id]).1.contains("does not exist"));

    let id = unique("exec");
    let b = bundle(work, "exec", &config(&id, &["sleep", "1000"]));
    oci.create(&b, &id, &work.join("out"), &[]);
    oci.ok(&["start", &id]);
    let exec = oci
        .cmd(&[
            "exec",
            "-e",
            "X=42",
            "--cwd",
            "/tmp",
            &id,
            "sh",
            "-c",
            "echo $X $(pwd) $(hostname); exit 3",
        ])
        .output()
        .unwrap();
    assert_eq!(exec.status.code(), Some(3));
    assert_eq!(
        String::from_utf8_lossy(&exec.stdout).trim(),
        "42 /tmp oci-test"
    );
    // --process, as containerd and conmon pass it, detached, with a pid file.
    let process = work.join("process.json");
    std::fs::write(
        &process,
        json!({"user": {"uid": 1000, "gid": 1000}, "args": ["sleep", "1000"], "cwd": "/", "env": ["PATH=/bin"]}).to_string(),
    )
    .unwrap();
    let pid_file = work.join("exec.pid");
    // Detached, its streams must not be the caller's pipes: they stay open.
    let status = oci
        .cmd(&[
            "exec",
            "--process",
            process.to_str().unwrap(),
            "--detach",
            "--pid-file",
            pid_file.to_str().unwrap(),
            &id,
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    let exec_pid: i32 = std::fs::read_to_string(&pid_file).unwrap().parse().unwrap();
    let status = std::fs::read_to_string(format!("/proc/{exec_pid}/status")).unwrap();
    assert!(
        status
            .lines()
            .any(|l| l.starts_with("Uid:") && l.contains("1000")),
        "{status}"
    );
    let pids: Vec<i32> = serde_json::from_str(&oci.ok(&["ps", "--format", "json", &id])).unwrap();
    assert!(pids.contains(&exec_pid), "{pids:?}");
    assert!(pids.contains(&(oci.state(&id)["pid"].as_i64().unwrap() as i32)));
    assert_eq!(pids.len(), 2);

    // pause / resume: the freezer.
    oci.ok(&["pause", &id]);
    assert_eq!(oci.status(&id), "paused");
    let (_, e) = oci.fails(&["exec", &id, "true"]);
    assert!(e.contains("paused"), "{e}");
    let st = std::fs::read_to_string(format!("/proc/{exec_pid}/stat")).unwrap();
    assert!(st.contains(") D ") || st.contains(") S "), "{st}");
    oci.ok(&["resume", &id]);
    assert_eq!(oci.status(&id), "running");

    // update: a new memory limit, from a resources JSON on stdin.
    let mut child = oci
        .cmd(&["update", "--resources", "-", &id])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(br#"{"memory": {"limit": 67108864}, "pids": {"limit": 50}}"#)
        .unwrap();
    assert!(child.wait().unwrap().success());
    let limit = cgroup_file(&id, "memory", "memory.limit_in_bytes", "memory.max");
    assert_eq!(limit.trim(), "67108864");
    let pids_max = cgroup_file(&id, "pids", "pids.max", "pids.max");
    assert_eq!(pids_max.trim(), "50");

    // kill --all reaches the exec'd process too.
    oci.ok(&["kill", "--all", &id, "9"]);
    oci.wait_stopped(&id);
    wait_for(|| !Path::new(&format!("/proc/{exec_pid}")).exists() || zombie(exec_pid));
    oci.ok(&["delete", &id]);
}

fn zombie(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| s.contains(") Z "))
}

fn cgroup_file(id: &str, controller: &str, v1: &str, v2: &str) -> String {
    let v1 = Path::new("/sys/fs/cgroup")
        .join(controller)
        .join("skiff-oci-test")
        .join(id)
        .join(v1);
    std::fs::read_to_string(&v1).unwrap_or_else(|_| {
        std::fs::read_to_string(Path::new("/sys/fs/cgroup/skiff-oci-test").join(id).join(v2))
            .unwrap()
    })
}

fn wait_for(mut f: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !f() {
        assert!(std::time::Instant::now() < deadline, "timed out");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Receives one descriptor from a console socket, as conmon does.
fn receive_fd(listener: &UnixListener) -> std::os::fd::OwnedFd {
    use rustix::net::{RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags};
    let (conn, _) = listener.accept().unwrap();
    let mut space = [std::mem::MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut anc = RecvAncillaryBuffer::new(&mut space);
    let mut buf = [0u8; 256];
    rustix::net::recvmsg(
        &conn,
        &mut [std::io::IoSliceMut::new(&mut buf)],
        &mut anc,
        RecvFlags::empty(),
    )
    .unwrap();
    for m in anc.drain() {
        if let RecvAncillaryMessage::ScmRights(mut fds) = m {
            return fds.next().unwrap();
        }
    }
    panic!("no descriptor came over the console socket");
}

fn read_pty(master: std::os::fd::OwnedFd, until: &str) -> String {
    let mut f = std::fs::File::from(master);
    let mut got = String::new();
    let mut buf = [0u8; 4096];
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !got.contains(until) && std::time::Instant::now() < deadline {
        use std::io::Read;
        match f.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => got.push_str(&String::from_utf8_lossy(&buf[..n])),
        }
    }
    got
}

#[test]
fn the_console_socket_receives_the_pty() {
    let oci = Oci::new();
    let work = oci.dir.path();
    let id = unique("tty");
    let mut c = config(
        &id,
        &[
            "sh",
            "-c",
            "test -t 0 && stty size && echo tty-ok; sleep 1000",
        ],
    );
    c["process"]["terminal"] = json!(true);
    c["process"]["consoleSize"] = json!({"height": 33, "width": 111});
    let b = bundle(work, "b", &c);
    let sock = work.join("console.sock");
    let listener = UnixListener::bind(&sock).unwrap();
    let (code, e) = oci.fails(&["create", "--bundle", b.to_str().unwrap(), &id]);
    assert_eq!(code, 1);
    assert!(e.contains("--console-socket"), "{e}");
    let sock_arg = sock.to_str().unwrap().to_string();
    let creating = {
        let oci_bin = oci.bin.clone();
        let root = oci.root.clone();
        let b = b.clone();
        let id = id.clone();
        std::thread::spawn(move || {
            std::process::Command::new(oci_bin)
                .arg("--root")
                .arg(root)
                .args([
                    "create",
                    "--bundle",
                    b.to_str().unwrap(),
                    "--console-socket",
                    &sock_arg,
                    &id,
                ])
                .stdin(std::process::Stdio::null())
                .status()
                .unwrap()
        })
    };
    let master = receive_fd(&listener);
    assert!(creating.join().unwrap().success());
    oci.ok(&["start", &id]);
    let got = read_pty(master, "tty-ok");
    assert!(got.contains("33 111"), "{got:?}");
    assert!(got.contains("tty-ok"), "{got:?}");

    // exec -t with its own console socket.
    let listener2 = UnixListener::bind(work.join("exec.sock")).unwrap();
    let exec_sock = work.join("exec.sock").to_str().unwrap().to_string();
    oci.ok(&[
        "exec",
        "-t",
        "-d",
        "--console-socket",
        &exec_sock,
        &id,
        "sh",
        "-c",
        "test -t 1 && echo exec-tty; sleep 5",
    ]);
    let got = read_pty(receive_fd(&listener2), "exec-tty");
    assert!(got.contains("exec-tty"), "{got:?}");
    oci.ok(&["delete", "--force", &id]);
}

#[test]
fn hooks_run_in_order_with_their_state() {
    let oci = Oci::new();
    let work = oci.dir.path().to_path_buf();
    let hooks = work.join("hooks");
    std::fs::create_dir(&hooks).unwrap();
    let id = unique("hooks");
    let mut c = config(&id, &["sh", "-c", "echo main > /mnt/main.out"]);
    c["mounts"].as_array_mut().unwrap().push(json!({
        "destination": "/mnt", "type": "bind", "source": hooks, "options": ["rbind", "rw"]
    }));
    // Host-side hooks write to the hooks directory by its host path; the
    // startContainer hook runs inside the container, where it is /mnt.
    let host_hook = |name: &str| {
        json!({"path": "/bin/sh", "args": ["sh", "-c", format!(
            "cat > {0}/{name}.json; readlink /proc/self/ns/mnt > {0}/{name}.ns; echo $HOOK_ENV > {0}/{name}.env",
            hooks.display())], "env": ["HOOK_ENV=from-spec"]})
    };
    c["hooks"] = json!({
        "prestart": [host_hook("prestart")],
        "createRuntime": [host_hook("createRuntime")],
        "createContainer": [host_hook("createContainer")],
        "startContainer": [{"path": "/bin/sh", "args": ["sh", "-c", "cat > /mnt/startContainer.json; test -e /mnt/main.out || echo before-main > /mnt/startContainer.order"]}],
        "poststart": [host_hook("poststart")],
        "poststop": [host_hook("poststop")],
    });
    let b = bundle(&work, "b", &c);
    oci.create(&b, &id, &work.join("out"), &[]);
    let pid = oci.state(&id)["pid"].as_i64().unwrap();
    for name in ["prestart", "createRuntime", "createContainer"] {
        assert!(
            hooks.join(format!("{name}.json")).exists(),
            "{name} ran at create"
        );
    }
    assert!(!hooks.join("startContainer.json").exists());
    oci.ok(&["start", &id]);
    oci.wait_stopped(&id);
    oci.ok(&["delete", &id]);

    let state = |name: &str| -> Value {
        serde_json::from_slice(&std::fs::read(hooks.join(format!("{name}.json"))).unwrap()).unwrap()
    };
    for (name, status) in [
        ("prestart", "creating"),
        ("createRuntime", "creating"),
        ("createContainer", "created"),
        ("startContainer", "created"),
        ("poststart", "running"),
        ("poststop", "stopped"),
    ] {
        let s = state(name);
        assert_eq!(s["id"], id.as_str(), "{name}");
        assert_eq!(s["status"], status, "{name}: {s}");
        assert_eq!(s["ociVersion"], "1.1.0");
        if name != "poststop" {
            assert_eq!(s["pid"], pid, "{name}");
        }
    }
    let host_ns = std::fs::read_link("/proc/self/ns/mnt").unwrap();
    let ns = |name: &str| std::fs::read_to_string(hooks.join(format!("{name}.ns"))).unwrap();
    assert_eq!(
        ns("createRuntime").trim(),
        host_ns.to_str().unwrap(),
        "createRuntime runs in the runtime's namespace"
    );
    assert_ne!(
        ns("createContainer").trim(),
        host_ns.to_str().unwrap(),
        "createContainer runs in the container's"
    );
    assert_eq!(
        std::fs::read_to_string(hooks.join("poststart.env"))
            .unwrap()
            .trim(),
        "from-spec"
    );
    assert!(
        hooks.join("startContainer.order").exists(),
        "startContainer ran before the process"
    );

    // A failing createRuntime hook fails create, naming it; nothing is left.
    let id2 = unique("badhook");
    let mut c = config(&id2, &["true"]);
    c["hooks"] = json!({"createRuntime": [{"path": "/bin/sh", "args": ["sh", "-c", "echo no-way >&2; exit 4"]}]});
    let b = bundle(&work, "bad", &c);
    let (code, e) = oci.fails(&["create", "--bundle", b.to_str().unwrap(), &id2]);
    assert_eq!(code, 1);
    assert!(
        e.contains("createRuntime hook /bin/sh") && e.contains("no-way"),
        "{e}"
    );
    assert!(oci.fails(&["state", &id2]).1.contains("does not exist"));
}

#[test]
fn the_config_is_honoured_field_by_field() {
    let oci = Oci::new();
    let work = oci.dir.path().to_path_buf();
    let id = unique("honour");
    let script = "\
        echo hostname=$(hostname); \
        echo shmmni=$(cat /proc/sys/kernel/shmmni); \
        echo port=$(cat /proc/sys/net/ipv4/ip_unprivileged_port_start); \
        echo nofile=$(ulimit -n); \
        echo oom=$(cat /proc/self/oom_score_adj); \
        echo uid=$(id -u) gid=$(id -g); \
        ls -ln /dev/mydev | awk '{print \"dev=\" $1 \",\" $3 \",\" $5 $6}'; \
        touch /rootfile 2>/dev/null && echo root=rw || echo root=ro; \
        test -s /proc/kcore && echo kcore=visible || echo kcore=masked; \
        echo x > /proc/sys/kernel/domainname 2>/dev/null && echo procsys=rw || echo procsys=ro; \
        mkdir /tmp/denied 2>/dev/null && echo mkdir=allowed || echo mkdir=denied; \
        grep CapBnd /proc/self/status";
    let mut c = config(&id, &["sh", "-c", script]);
    c["process"]["user"] = json!({"uid": 1000, "gid": 1000});
    c["process"]["oomScoreAdj"] = json!(345);
    c["process"]["rlimits"] = json!([{"type": "RLIMIT_NOFILE", "hard": 321, "soft": 321}]);
    c["process"]["capabilities"] =
        json!({"bounding": ["CAP_KILL"], "effective": ["CAP_KILL"], "permitted": ["CAP_KILL"]});
    c["hostname"] = json!("honoured");
    c["linux"]["sysctl"] =
        json!({"kernel.shmmni": "1234", "net.ipv4.ip_unprivileged_port_start": "99"});
    c["linux"]["devices"] = json!([{"path": "/dev/mydev", "type": "c", "major": 1, "minor": 3, "fileMode": 0o640, "uid": 1000, "gid": 1000}]);
    c["linux"]["seccomp"] = json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO"}]
    });
    let b = bundle(&work, "b", &c);
    let out = work.join("out");
    oci.create(&b, &id, &out, &[]);
    oci.ok(&["start", &id]);
    oci.wait_stopped(&id);
    oci.ok(&["delete", &id]);
    let got = std::fs::read_to_string(&out).unwrap();
    for want in [
        "hostname=honoured",
        "shmmni=1234",
        "port=99",
        "nofile=321",
        "oom=345",
        "uid=1000 gid=1000",
        "dev=crw-r-----,1000,1,3",
        "root=ro",
        "kcore=masked",
        "procsys=ro",
        "mkdir=denied",
        "CapBnd:\t0000000000000020", // a non-root exec keeps no effective caps, as under runc
    ] {
        assert!(got.contains(want), "missing {want:?} in:\n{got}");
    }
    // The host's values did not change.
    assert_ne!(
        std::fs::read_to_string("/proc/sys/kernel/shmmni")
            .unwrap()
            .trim(),
        "1234"
    );
}

#[test]
fn namespaces_named_by_path_are_joined() {
    let oci = Oci::new();
    let work = oci.dir.path().to_path_buf();
    let first = unique("pod");
    let b = bundle(&work, "first", &config(&first, &["sleep", "1000"]));
    oci.create(&b, &first, &work.join("out1"), &[]);
    oci.ok(&["start", &first]);
    let pid = oci.state(&first)["pid"].as_i64().unwrap();
    let second = unique("member");
    let mut c = config(&second, &["sh", "-c", "readlink /proc/self/ns/net /proc/self/ns/ipc /proc/self/ns/uts /proc/self/ns/pid; hostname"]);
    c["linux"]["namespaces"] = json!([
        {"type": "pid"}, {"type": "mount"},
        {"type": "network", "path": format!("/proc/{pid}/ns/net")},
        {"type": "ipc", "path": format!("/proc/{pid}/ns/ipc")},
        {"type": "uts", "path": format!("/proc/{pid}/ns/uts")},
    ]);
    c.as_object_mut().unwrap().remove("hostname");
    let b = bundle(&work, "second", &c);
    let out = work.join("out2");
    oci.create(&b, &second, &out, &[]);
    oci.ok(&["start", &second]);
    oci.wait_stopped(&second);
    let got = std::fs::read_to_string(&out).unwrap();
    for ns in ["net", "ipc", "uts"] {
        let theirs = std::fs::read_link(format!("/proc/{pid}/ns/{ns}")).unwrap();
        assert!(
            got.contains(theirs.to_str().unwrap()),
            "{ns} not shared:\n{got}"
        );
    }
    let their_pid_ns = std::fs::read_link(format!("/proc/{pid}/ns/pid")).unwrap();
    assert!(
        !got.contains(their_pid_ns.to_str().unwrap()),
        "a new pid namespace was asked for"
    );
    assert!(
        got.contains("oci-test"),
        "the joined UTS namespace's hostname: {got}"
    );
    oci.ok(&["delete", &second]);
    oci.ok(&["delete", "--force", &first]);
}

#[test]
fn bad_configs_and_flags_are_clear_errors() {
    let oci = Oci::new();
    let work = oci.dir.path().to_path_buf();
    let id = unique("bad");
    let mut c = config(&id, &["true"]);
    c["process"]["user"]["uid"] = json!("root");
    let b = bundle(&work, "malformed", &c);
    let (code, e) = oci.fails(&["create", "--bundle", b.to_str().unwrap(), &id]);
    assert_eq!(code, 1);
    assert!(
        e.contains("process.user.uid") && e.contains("config.json"),
        "{e}"
    );

    let mut c = config(&id, &["true"]);
    c["process"]["apparmorProfile"] = json!("docker-default");
    let b = bundle(&work, "apparmor", &c);
    let (_, e) = oci.fails(&["create", "--bundle", b.to_str().unwrap(), &id]);
    assert!(e.contains("process.apparmorProfile"), "{e}");

    let mut c = config(&id, &["true"]);
    c["linux"]["sysctl"] = json!({"vm.swappiness": "1"});
    let b = bundle(&work, "sysctl", &c);
    let (_, e) = oci.fails(&["create", "--bundle", b.to_str().unwrap(), &id]);
    assert!(
        e.contains("vm.swappiness") && e.contains("not namespaced"),
        "{e}"
    );

    let b = bundle(&work, "ok", &config(&id, &["true"]));
    let (_, e) = oci.fails(&[
        "--systemd-cgroup",
        "create",
        "--bundle",
        b.to_str().unwrap(),
        &id,
    ]);
    assert!(
        e.contains("--systemd-cgroup") && e.contains("cgroupfs"),
        "{e}"
    );
    let (_, e) = oci.fails(&["create", "--bundle", b.to_str().unwrap(), "../escape"]);
    assert!(e.contains("invalid container ID"), "{e}");
    // A JSON log gets the error as one object per line (containerd reads it).
    let log = work.join("log.json");
    let mut c = config(&id, &["true"]);
    c["linux"]["cgroupsPath"] = json!("system.slice:skiff:x");
    let b = bundle(&work, "slice", &c);
    oci.fails(&[
        "--log",
        log.to_str().unwrap(),
        "--log-format",
        "json",
        "create",
        "--bundle",
        b.to_str().unwrap(),
        &id,
    ]);
    let line: Value = serde_json::from_str(
        std::fs::read_to_string(&log)
            .unwrap()
            .lines()
            .last()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(line["level"], "error");
    assert!(line["msg"].as_str().unwrap().contains("systemd"), "{line}");
    assert!(
        oci.ok(&["list", "-q"]).trim().is_empty(),
        "nothing was left"
    );
}

#[test]
fn features_version_and_a_root_only_state_dir() {
    let oci = Oci::new();
    let f: Value = serde_json::from_str(&oci.ok(&["features"])).unwrap();
    assert_eq!(f["ociVersionMax"], "1.1.0");
    assert!(f["hooks"]
        .as_array()
        .unwrap()
        .contains(&json!("createContainer")));
    assert_eq!(f["linux"]["cgroup"]["systemd"], false);
    assert!(f["linux"]["namespaces"]
        .as_array()
        .unwrap()
        .contains(&json!("user")));
    let v = oci.ok(&["--version"]);
    assert!(
        v.starts_with("skiff-oci version ") && v.contains("spec: 1.1.0"),
        "{v}"
    );

    let id = unique("private");
    let b = bundle(oci.dir.path(), "b", &config(&id, &["sleep", "100"]));
    oci.create(&b, &id, &oci.dir.path().join("out"), &[]);
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&oci.root).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o700);
    // As an unprivileged user the state and the start FIFO are out of reach.
    std::fs::set_permissions(oci.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let fifo = oci.root.join(&id).join("exec.fifo");
    let out = std::process::Command::new("setpriv")
        .args([
            "--reuid",
            "65534",
            "--regid",
            "65534",
            "--clear-groups",
            "sh",
            "-c",
        ])
        .arg(format!(
            "cat {0}/state.json; echo > {1}; ls {0}",
            oci.root.join(&id).display(),
            fifo.display()
        ))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(err.matches("Permission denied").count(), 3, "{err}");
    assert_eq!(oci.status(&id), "created");
    oci.ok(&["delete", &id]);
}
