//! `skiff exec`: a command in a running container, in all its namespaces
//! and its cgroup, with its capabilities, seccomp policy and user.

mod common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use common::containers::{code, err, layout, out};
use common::Skiff;

#[test]
fn exec_enters_the_running_container() {
    let skiff = Skiff::new();
    let id = skiff.ok(&[
        "run",
        "-d",
        "--name",
        "box",
        "--hostname",
        "boxhost",
        layout(),
        "sh",
        "-c",
        "echo ready; exec sleep 300",
    ]);
    let id = id.trim().to_string();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !skiff.ok(&["logs", "box"]).contains("ready") {
        assert!(Instant::now() < deadline, "the container never started");
        std::thread::sleep(Duration::from_millis(100));
    }
    let probe = "tr '\\0' ' ' < /proc/1/cmdline; echo; hostname; \
                 grep CapEff /proc/self/status; grep CapEff /proc/1/status; \
                 id -u; pwd; echo \"$FOO\"; echo $$; \
                 grep -c skiff /proc/self/cgroup || true";
    let o = skiff.run(&[
        "exec", "-e", "FOO=bar", "-w", "/tmp", "box", "sh", "-c", probe,
    ]);
    assert_eq!(code(&o), 0, "{}", err(&o));
    let text = out(&o);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines[0], "sleep 300 ",
        "not the container's pid namespace: {text}"
    );
    assert_eq!(lines[1], "boxhost", "{text}");
    assert_eq!(
        lines[2], lines[3],
        "other capabilities than the container's: {text}"
    );
    assert_eq!(&lines[4..7], ["0", "/tmp", "bar"], "{text}");
    let pid: u32 = lines[7].parse().unwrap();
    assert!(
        pid > 1 && pid < 1000,
        "pid {pid} in the container's namespace"
    );
    // The cgroup namespace shows the container's cgroup as its root.
    assert_eq!(lines[8], "0", "the host's cgroup paths are visible: {text}");

    // Its seccomp policy holds: no new user namespace.
    let o = skiff.run(&["exec", "box", "unshare", "-U", "true"]);
    assert_ne!(code(&o), 0, "unshare ran: {}", out(&o));
    // Users by name, from the container's own files.
    let o = skiff.run(&["exec", "-u", "nobody", "box", "id", "-un"]);
    assert_eq!(out(&o), "nobody\n", "{}", err(&o));
    // Exit codes, and Docker's for skiff's own failures.
    assert_eq!(code(&skiff.run(&["exec", "box", "sh", "-c", "exit 5"])), 5);
    assert_eq!(code(&skiff.run(&["exec", "box", "no-such-command"])), 127);
    // stdin with -i.
    let mut child = skiff
        .cmd()
        .args(["exec", "-i", "box", "wc", "-c"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), b"twelve bytes").unwrap();
    let o = child.wait_with_output().unwrap();
    assert_eq!(out(&o).trim(), "12");

    skiff.ok(&["stop", "-t", "1", "box"]);
    let o = skiff.run(&["exec", "box", "true"]);
    assert_eq!(code(&o), 125);
    assert!(err(&o).contains("not running"), "{}", err(&o));
    skiff.ok(&["rm", &id]);
}
