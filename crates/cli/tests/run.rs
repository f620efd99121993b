//! `skiff run` on the real Debian image: the command runs from the lazily
//! mounted image in a sandbox, and the sandbox denies, from inside the
//! container, what Docker's defaults deny.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::containers::{code, err, layout, out, run};
use common::registry::Registry;
use common::{debian_image, sh, Skiff};

#[test]
fn runs_lazily_from_a_registry_and_shares_the_cache() {
    let reg = Registry::start();
    reg.push_layout(
        &format!("oci:{}:full", debian_image().display()),
        "src/debian:full",
    );
    let skiff = Skiff::new();
    let image = reg.reference("skiff/debian:full");
    skiff.ok(&["convert", "-q", &reg.reference("src/debian:full"), &image]);

    let o = skiff.run(&["run", "--rm", &image, "python3", "-c", "print(6 * 7)"]);
    assert_eq!(code(&o), 0, "{}", err(&o));
    assert_eq!(out(&o), "42\n");

    // Only what python read was fetched: far less than the image.
    let stats: serde_json::Value =
        serde_json::from_str(&skiff.ok(&["cache", "stats", "--json"])).unwrap();
    let cached = stats["bytes"].as_u64().unwrap();
    let image_bytes = skiff.json(&["inspect", &image])["blob_bytes"]
        .as_u64()
        .unwrap();
    assert!(
        cached > 0 && cached < image_bytes / 2,
        "cached {cached} of {image_bytes}"
    );

    // Two containers of one image at once: one image mount, one cache.
    let a = skiff.ok(&["run", "-d", "--name", "one", &image, "sleep", "30"]);
    let b = skiff.ok(&["run", "-d", "--name", "two", &image, "sleep", "30"]);
    let cached: serde_json::Value =
        serde_json::from_str(&skiff.ok(&["cache", "stats", "--json"])).unwrap();
    let cached = cached["bytes"].as_u64().unwrap();
    assert_ne!(a.trim(), b.trim());
    let ps = skiff.ok(&["ps"]);
    assert!(ps.contains("one") && ps.contains("two"), "{ps}");
    let images = std::fs::read_dir(skiff.root.path().join("images"))
        .unwrap()
        .count();
    assert_eq!(images, 1, "both containers use one image mount");
    let o = skiff.run(&["run", "--rm", &image, "python3", "-c", "print(1)"]);
    assert_eq!(out(&o), "1\n");
    let again: serde_json::Value =
        serde_json::from_str(&skiff.ok(&["cache", "stats", "--json"])).unwrap();
    assert_eq!(
        again["bytes"].as_u64().unwrap(),
        cached,
        "a warm run fetches nothing new"
    );
    skiff.ok(&["stop", "-t", "1", "one", "two"]);
    let ps = skiff.ok(&["ps", "-a"]);
    assert!(ps.matches("Exited (137)").count() == 2, "{ps}");

    // A recorded run, on this warm node (so passthrough must not hide
    // reads from the trace), becomes an image that prefetches it.
    let trace = skiff.root.path().join("python.trace");
    let o = skiff.run(&[
        "run",
        "--rm",
        "--record-trace",
        trace.to_str().unwrap(),
        &image,
        "python3",
        "-c",
        "print(1)",
    ]);
    assert_eq!(out(&o), "1\n", "{}", err(&o));
    let recorded = std::fs::read_to_string(&trace).unwrap();
    assert!(
        recorded
            .lines()
            .any(|l| l.starts_with("/usr/bin/python3.11\t")),
        "{recorded}"
    );
    // The recording mount is gone with the container.
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let ours = mountinfo
        .lines()
        .filter(|l| l.contains(skiff.root.path().to_str().unwrap()) && l.contains("fuse"))
        .count();
    assert_eq!(ours, 1, "only the shared image mount remains:\n{mountinfo}");
    let traced = reg.reference("skiff/debian:traced");
    skiff.convert_with_trace(&reg.reference("src/debian:full"), &traced, &trace);
    let prefetch = skiff.json(&["inspect", &traced])["prefetch_chunks"]
        .as_u64()
        .unwrap();
    assert!(prefetch > 0);
    let fresh = Skiff::new();
    let o = fresh.run(&["run", "--rm", &traced, "python3", "-c", "print(2)"]);
    assert_eq!(out(&o), "2\n", "{}", err(&o));
    let o = skiff.run(&["run", "-d", "--record-trace", "x", &image, "true"]);
    assert_ne!(code(&o), 0);
    assert!(err(&o).contains("foreground"), "{}", err(&o));
}

/// `skiff -vv run ... 2>&1 | head`: stderr's reader goes away mid-run. The
/// run still ends with the command's code and removes its container.
#[test]
fn a_closed_stderr_does_not_abort_the_run() {
    let skiff = Skiff::new();
    let mut child = skiff
        .cmd()
        .args([
            "-vv",
            "run",
            "--rm",
            layout(),
            "sh",
            "-c",
            "sleep 0.5; exit 7",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Close the read end before skiff logs anything.
    drop(child.stderr.take());
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(7), "{status:?}");
    let containers = skiff.root.path().join("containers");
    let left: Vec<_> = std::fs::read_dir(&containers)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "--rm left {left:?}");
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mounts.contains(containers.to_str().unwrap()),
        "an overlay is still mounted under {}",
        containers.display()
    );
}

#[test]
fn exit_codes() {
    let skiff = Skiff::new();
    assert_eq!(code(&run(&skiff, &[], &["sh", "-c", "exit 7"])), 7);
    assert_eq!(code(&run(&skiff, &[], &["true"])), 0);
    let o = run(&skiff, &[], &["no-such-command"]);
    assert_eq!(code(&o), 127, "{}", err(&o));
    assert!(err(&o).contains("no-such-command"), "{}", err(&o));
    let o = run(&skiff, &[], &["/etc"]);
    assert_eq!(code(&o), 126, "{}", err(&o));

    // SIGKILL after the grace period: 137.
    let id = skiff.ok(&["run", "-d", layout(), "sleep", "60"]);
    let id = id.trim();
    skiff.ok(&["stop", "-t", "1", id]);
    let rec = ps_record(&skiff, id);
    assert_eq!(rec["exit_code"], 137, "{rec}");

    // An init that passes SIGTERM to its child and exits with its status: 143.
    let id = skiff.ok(&[
        "run",
        "-d",
        layout(),
        "sh",
        "-c",
        "sleep 60 & child=$!; trap 'kill -TERM $child' TERM; wait $child; wait $child; exit $?",
    ]);
    let id = id.trim();
    std::thread::sleep(Duration::from_millis(300));
    skiff.ok(&["stop", "-t", "20", id]);
    assert_eq!(ps_record(&skiff, id)["exit_code"], 143);

    // `skiff run` itself failing (a bad image) is 125.
    let o = skiff.run(&["run", "--rm", "oci:/nonexistent-skiff-layout:x", "true"]);
    assert_eq!(code(&o), 125, "{}", err(&o));
}

/// Ignored signals survive exec, and skiff ignores SIGPIPE (as Rust does):
/// the command must start with none ignored or blocked, or `yes | head`
/// in the container would never end by SIGPIPE.
#[test]
fn signals_start_at_their_defaults() {
    let skiff = Skiff::new();
    let o = run(
        &skiff,
        &[],
        &["grep", "-E", "^Sig(Ign|Blk)", "/proc/self/status"],
    );
    assert_eq!(code(&o), 0, "{}", err(&o));
    assert_eq!(
        out(&o),
        "SigBlk:\t0000000000000000\nSigIgn:\t0000000000000000\n"
    );
}

/// Each option reaches the process: hostname, capability set, a seccomp
/// profile file, and the cgroup limits (read inside, where the cgroup
/// namespace shows the container's own cgroup, and the pids limit enforced).
#[test]
fn options_reach_the_process() {
    let skiff = Skiff::new();
    let script = "cg() { for f in \"$@\"; do if [ -r \"$f\" ]; then cat \"$f\"; return; fi; done; echo missing; }; \
                  hostname; grep CapEff /proc/self/status; \
                  cg /sys/fs/cgroup/memory/memory.limit_in_bytes /sys/fs/cgroup/memory.max; \
                  cg /sys/fs/cgroup/cpu/cpu.cfs_quota_us /sys/fs/cgroup/cpu.max; \
                  cg /sys/fs/cgroup/pids/pids.max /sys/fs/cgroup/pids.max; \
                  (for i in $(seq 40); do sleep 5 & done) 2>/dev/null; \
                  cg /sys/fs/cgroup/pids/pids.current /sys/fs/cgroup/pids.current";
    let o = run(
        &skiff,
        &[
            "--hostname",
            "box",
            "--cap-drop",
            "ALL",
            "--cap-add",
            "KILL",
            "--memory",
            "128M",
            "--cpus",
            "0.5",
            "--pids-limit",
            "20",
        ],
        &["sh", "-c", script],
    );
    assert_eq!(code(&o), 0, "{}", err(&o));
    let text = out(&o);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "box", "{text}");
    // CAP_KILL is bit 5.
    assert_eq!(lines[1], "CapEff:\t0000000000000020", "{text}");
    assert_eq!(lines[2], "134217728", "{text}");
    assert!(lines[3].starts_with("50000"), "{text}");
    assert_eq!(lines[4], "20", "{text}");
    let current: u32 = lines[5].parse().unwrap_or(0);
    assert!(
        (10..=20).contains(&current),
        "40 sleeps against a limit of 20 left {current} tasks: {text}"
    );

    // A seccomp profile from a file (Docker's format): mkdir fails, the
    // rest runs.
    let profile = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        profile.path(),
        r#"{"defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO"}]}"#,
    )
    .unwrap();
    let opt = format!("seccomp={}", profile.path().display());
    let o = run(
        &skiff,
        &["--security-opt", &opt],
        &["sh", "-c", "echo before; mkdir /made 2>&1 || echo refused"],
    );
    assert_eq!(code(&o), 0, "{}", err(&o));
    let text = out(&o);
    assert!(text.starts_with("before\n"), "{text}");
    assert!(
        text.contains("Operation not permitted") && text.ends_with("refused\n"),
        "{text}"
    );
}

/// An image whose /proc is a symlink (here through a link that the /dev
/// tmpfs later hides) would get procfs mounted where the link points, and
/// every masked /proc path would then be "not found" and left unprotected:
/// a writable /proc/sys and /proc/sysrq-trigger. The runtime refuses it.
#[test]
fn a_symlinked_proc_in_the_image_is_refused() {
    use common::layers::{write_image, LayerBlob, Tar};
    let skiff = Skiff::new();
    let work = tempfile::tempdir().unwrap();
    let tar = Tar::new()
        .dir("hidden")
        .dir("dev")
        .dir("sys")
        .symlink("dev/p", "/hidden")
        .symlink("proc", "dev/p")
        .finish();
    write_image(
        &work.path().join("src"),
        "h",
        &[LayerBlob::gzip(&tar)],
        ("linux", "amd64"),
    );
    let src = format!("oci:{}:h", work.path().join("src").display());
    let dst = format!("oci:{}:h", work.path().join("out").display());
    skiff.ok(&["convert", "-q", &src, &dst]);
    let o = skiff.run(&["run", "--rm", &dst, "/x"]);
    assert_eq!(code(&o), 125, "{}", err(&o));
    assert!(
        err(&o).contains("symlink on the way to /proc"),
        "{}",
        err(&o)
    );
}

/// Signals sent to `skiff run` reach the container; Ctrl-C twice kills an
/// init that ignores it (a pid namespace's init gets no default actions).
#[test]
fn signals_reach_the_container() {
    use std::io::{BufRead, BufReader};
    let skiff = Skiff::new();
    let start = |script: &str| {
        let mut child = skiff
            .cmd()
            .args(["run", "--rm", layout(), "sh", "-c", script])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        assert_eq!(lines.next().unwrap().unwrap(), "ready");
        (child, lines)
    };
    let signal = |child: &std::process::Child, sig: i32| {
        // SAFETY: kill(2) on our own child's pid.
        assert_eq!(unsafe { libc::kill(child.id() as i32, sig) }, 0);
    };

    let (mut child, mut lines) =
        start("trap 'echo got-term; exit 3' TERM; echo ready; while :; do sleep 0.1; done");
    signal(&child, libc::SIGTERM);
    assert_eq!(lines.next().unwrap().unwrap(), "got-term");
    assert_eq!(child.wait().unwrap().code(), Some(3));

    let (mut child, _lines) = start("echo ready; exec sleep 60");
    let began = Instant::now();
    // Past the exec: sleep, as the init, has no SIGINT handler.
    std::thread::sleep(Duration::from_millis(500));
    signal(&child, libc::SIGINT);
    std::thread::sleep(Duration::from_millis(300));
    assert!(child.try_wait().unwrap().is_none(), "one Ctrl-C ended it");
    signal(&child, libc::SIGINT);
    assert_eq!(child.wait().unwrap().code(), Some(137));
    assert!(
        began.elapsed() < Duration::from_secs(30),
        "the container outlived two Ctrl-C"
    );
}

/// CVE-2019-5736's entry: a command that is a script whose interpreter is
/// `/proc/self/exe`. At the init's exec that names the init's executable;
/// it must not be the skiff binary on the host (which the container could
/// then run, and try to open for writing). Ordinary scripts still run.
#[test]
fn the_host_binary_is_out_of_reach() {
    let skiff = Skiff::new();
    let dir = tempfile::tempdir().unwrap();
    let script = |name: &str, text: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        let mut perms = std::fs::metadata(&p).unwrap().permissions();
        std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
        std::fs::set_permissions(&p, perms).unwrap();
    };
    script("evil.sh", "#!/proc/self/exe\n");
    script("ok.sh", "#!/bin/sh\necho ok \"$@\"\n");
    let vol = format!("{}:/x:ro", dir.path().display());
    let o = run(&skiff, &["-v", &vol], &["/x/evil.sh", "--version"]);
    assert_eq!(code(&o), 126, "{}{}", out(&o), err(&o));
    assert!(err(&o).contains("refusing"), "{}", err(&o));
    assert!(
        !out(&o).contains("skiff") && !err(&o).contains("Usage"),
        "{}{}",
        out(&o),
        err(&o)
    );
    let o = run(&skiff, &["-v", &vol], &["/x/ok.sh", "a b"]);
    assert_eq!(code(&o), 0, "{}", err(&o));
    assert_eq!(out(&o), "ok a b\n");
}

fn ps_record(skiff: &Skiff, id: &str) -> serde_json::Value {
    let all: serde_json::Value = serde_json::from_str(&skiff.ok(&["ps", "-a", "--json"])).unwrap();
    all.as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"].as_str().unwrap().starts_with(id))
        .unwrap_or_else(|| panic!("{id} not in {all}"))
        .clone()
}

#[test]
fn env_workdir_user_and_stdin() {
    let skiff = Skiff::new();
    let envfile = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(envfile.path(), "# comment\nFROM_FILE=yes\n").unwrap();
    let o = run(
        &skiff,
        &[
            "-e",
            "GREETING=hello world",
            "--env-file",
            envfile.path().to_str().unwrap(),
            "-w",
            "/usr/share",
            "-u",
            "nobody",
        ],
        &[
            "sh",
            "-c",
            "echo \"$GREETING|$FROM_FILE|$HOME|$PATH\"; pwd; id -u; id -g",
        ],
    );
    assert_eq!(code(&o), 0, "{}", err(&o));
    let text = out(&o);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines,
        [
            "hello world|yes|/nonexistent|/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "/usr/share",
            "65534",
            "65534"
        ]
    );
    let o = run(&skiff, &["-u", "1234:99"], &["sh", "-c", "id -u; id -g"]);
    assert_eq!(out(&o), "1234\n99\n");
    let (c, e) = skiff.fails(&["run", "--rm", "-u", "ghost", layout(), "true"]);
    assert_eq!(c, 125);
    assert!(e.contains("ghost") && e.contains("/etc/passwd"), "{e}");

    // stdin is piped under -i, and closed without it.
    let mut child = skiff
        .cmd()
        .args([
            "run",
            "--rm",
            "-i",
            layout(),
            "sh",
            "-c",
            "tr a-z A-Z; echo end",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"piped text\n")
        .unwrap();
    let o = child.wait_with_output().unwrap();
    assert_eq!(out(&o), "PIPED TEXT\nend\n");
    let mut child = skiff
        .cmd()
        .args(["run", "--rm", layout(), "sh", "-c", "cat; echo end"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let _keep_open = child.stdin.take();
    let o = child.wait_with_output().unwrap();
    assert_eq!(out(&o), "end\n");
}

#[test]
fn tty_under_t() {
    let skiff = Skiff::new();
    let o = run(
        &skiff,
        &["-t"],
        &[
            "sh",
            "-c",
            "tty; test -t 0 && test -t 1 && echo both-tty; echo $TERM",
        ],
    );
    assert_eq!(code(&o), 0, "{}", err(&o));
    let text = out(&o).replace('\r', "");
    assert_eq!(text, "/dev/pts/0\nboth-tty\nxterm\n");
    let o = run(&skiff, &[], &["sh", "-c", "test -t 1 || echo no-tty"]);
    assert_eq!(out(&o), "no-tty\n");

    // Run from a terminal without -t, the container must not share it as
    // its controlling terminal (TIOCSTI could type into the user's shell):
    // field 7 of /proc/self/stat, tty_nr, is 0. `script` gives skiff one.
    let cmd = format!(
        "{} run --rm {} sh -c 'echo tty_nr=$(cut -d\" \" -f7 /proc/self/stat)'",
        env!("CARGO_BIN_EXE_skiff"),
        layout()
    );
    let o = Command::new("script")
        .args(["-qec", &cmd, "/dev/null"])
        .env("SKIFF_ROOT", skiff.root.path())
        .env_remove("SKIFF_LOG")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let text = out(&o).replace('\r', "");
    assert!(text.contains("tty_nr=0\n"), "{text}{}", err(&o));
}

#[test]
fn detached_logs_stop_and_rm() {
    let skiff = Skiff::with_deep_root();
    let id = skiff.ok(&[
        "run",
        "-d",
        "--name",
        "ticker",
        layout(),
        "sh",
        "-c",
        "echo started; echo to-stderr >&2; trap 'echo stopping; exit 3' TERM; while :; do sleep 0.1; done",
    ]);
    assert_eq!(id.trim().len(), 64, "{id}");
    let deadline = Instant::now() + Duration::from_secs(20);
    // `logs` prints the container's stderr on its own stderr.
    while !err(&skiff.run(&["logs", "ticker"])).contains("to-stderr") {
        assert!(Instant::now() < deadline, "no output in the log");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(skiff.ok(&["ps"]).contains("ticker"));
    // Its record and spec hold its environment: owner-only.
    let cdir = skiff.root.path().join("containers").join(id.trim());
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&cdir).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o700, "{}", cdir.display());
    let (c, e) = skiff.fails(&["rm", "ticker"]);
    assert_eq!(c, 1);
    assert!(e.contains("is running"), "{e}");
    let (_, e) = skiff.fails(&["run", "--name", "ticker", layout(), "true"]);
    assert!(e.contains("exists"), "{e}");
    skiff.ok(&["stop", "ticker"]);
    let logs = skiff.run(&["logs", "ticker"]);
    assert_eq!(out(&logs), "started\nstopping\n");
    assert_eq!(err(&logs), "to-stderr\n");
    assert!(!skiff.ok(&["ps"]).contains("ticker"));
    let rec = ps_record(&skiff, id.trim());
    assert_eq!(rec["status"], "exited");
    assert_eq!(rec["exit_code"], 3);
    // The state is on disk: a fresh skiff process reads it.
    assert!(skiff.ok(&["ps", "-a"]).contains("Exited (3)"));
    skiff.ok(&["rm", "ticker"]);
    assert!(!skiff.ok(&["ps", "-a"]).contains("ticker"));
    assert!(!skiff
        .root
        .path()
        .join("containers")
        .join(id.trim())
        .exists());
}

#[test]
fn volumes_read_only_and_read_write() {
    let skiff = Skiff::new();
    let host = tempfile::tempdir().unwrap();
    std::fs::write(host.path().join("in.txt"), "from host").unwrap();
    let rw = format!("{}:/data", host.path().display());
    let ro = format!("{}:/ro:ro", host.path().display());
    let o = run(
        &skiff,
        &["-v", &rw, "-v", &ro],
        &["sh", "-c", "cat /data/in.txt; echo; echo written > /data/out.txt; echo x > /ro/fail.txt || echo ro-denied"],
    );
    assert_eq!(code(&o), 0, "{}", err(&o));
    assert_eq!(out(&o), "from host\nro-denied\n");
    assert_eq!(
        std::fs::read_to_string(host.path().join("out.txt")).unwrap(),
        "written\n"
    );
    assert!(!host.path().join("fail.txt").exists());

    // `ro` holds for mounts below the source too (as in Docker 25+), and a
    // source that is neither file nor directory (a device) binds as such.
    let sub = host.path().join("sub");
    std::fs::create_dir(&sub).unwrap();
    sh(Command::new("mount")
        .args(["-t", "tmpfs", "tmpfs"])
        .arg(&sub));
    let o = run(
        &skiff,
        &["-v", &ro, "-v", "/dev/null:/mnt/null"],
        &[
            "sh",
            "-c",
            "echo x > /ro/sub/fail.txt || echo sub-ro-denied; test -c /mnt/null && echo device",
        ],
    );
    let _ = Command::new("umount").arg(&sub).status();
    assert_eq!(code(&o), 0, "{}", err(&o));
    assert_eq!(out(&o), "sub-ro-denied\ndevice\n", "{}", err(&o));
}

/// The static probe, built from tests/support/sandbox_probe.c.
fn probe() -> &'static Path {
    static PROBE: OnceLock<PathBuf> = OnceLock::new();
    PROBE.get_or_init(|| {
        // Built once per source, and kept: a directory per run would pile
        // up. In /tmp, which a user namespace's root may enter (the cache
        // under /root it may not).
        let source = common::repo_root().join("tests/support/sandbox_probe.c");
        let key = &common::containers::sha256_hex(&std::fs::read(&source).unwrap())[..16];
        let dir = std::env::temp_dir().join(format!("skiff-probe-{key}"));
        let bin = dir.join("sandbox_probe");
        // Another user's directory of that name is never trusted.
        if let Ok(m) = std::fs::symlink_metadata(&dir) {
            use std::os::unix::fs::MetadataExt;
            // SAFETY: geteuid takes nothing and cannot fail.
            let me = unsafe { libc::geteuid() };
            assert!(
                m.is_dir() && m.uid() == me && m.mode() & 0o022 == 0,
                "{} is not this user's own directory: remove it",
                dir.display()
            );
        }
        if !bin.exists() {
            std::fs::create_dir_all(&dir).unwrap();
            let tmp = dir.join(format!(".sandbox_probe.{}", std::process::id()));
            sh(Command::new("gcc")
                .args(["-static", "-O2", "-o"])
                .arg(&tmp)
                .arg(&source));
            std::fs::rename(&tmp, &bin).unwrap();
        }
        bin
    })
}

/// A non-loopback IPv4 address of this host, if it has one.
fn host_address() -> Option<String> {
    let o = Command::new("hostname").arg("-I").output().ok()?;
    String::from_utf8_lossy(&o.stdout)
        .split_whitespace()
        .find(|a| a.contains('.') && !a.starts_with("127."))
        .map(str::to_string)
}

fn probe_results(skiff: &Skiff, opts: &[&str]) -> std::collections::BTreeMap<String, String> {
    probe_results_via(opts, |args| skiff.run(args))
}

/// The probe, with `skiff run` started by `start` (given skiff's arguments).
fn probe_results_via(
    opts: &[&str],
    start: impl FnOnce(&[&str]) -> Output,
) -> std::collections::BTreeMap<String, String> {
    let listener = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
    let port = listener.local_addr().unwrap().port().to_string();
    let addr = host_address().unwrap_or_else(|| "127.0.0.2".into());
    let vol = format!("{}:/probe:ro", probe().parent().unwrap().display());
    let pid = std::process::id().to_string();
    let mut args = vec!["run", "--rm", "-v", vol.as_str()];
    args.extend_from_slice(opts);
    args.extend_from_slice(&[layout(), "/probe/sandbox_probe", &pid, &port, &addr]);
    let o = start(&args);
    assert_eq!(code(&o), 0, "probe failed: {}\n{}", out(&o), err(&o));
    out(&o)
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn the_sandbox_denies_what_dockers_defaults_deny() {
    let skiff = Skiff::new();
    let r = probe_results(&skiff, &[]);
    for check in [
        "see_host_process",
        "mount",
        "init_module",
        "finit_module",
        "sysrq_trigger",
        "kcore",
        "timer_list",
        "proc_sys",
        "mknod_block",
        "keyctl",
        "add_key",
        "unshare_user",
        "unshare_mount",
        "reboot",
        "host_loopback",
        "host_address",
    ] {
        let v = r
            .get(check)
            .unwrap_or_else(|| panic!("{check} missing from {r:?}"));
        assert!(v.starts_with("denied"), "{check}: {v} (all: {r:?})");
    }
    // The device cgroup: a node may be made, but only listed devices open.
    assert!(r["open_fuse_device"].starts_with("denied"), "{r:?}");
    assert_eq!(r["open_zero_device"], "allowed", "{r:?}");
    // seccomp answers these itself, with EPERM.
    for check in ["keyctl", "add_key", "unshare_user", "init_module", "reboot"] {
        assert_eq!(r[check], "denied 1", "{check}");
    }
    assert_eq!(
        r["loopback"], "allowed",
        "--network none keeps a working loopback"
    );

    // The compiled filter is kept; the next container loads it from there
    // and is denied the same.
    let filters = || {
        std::fs::read_dir(skiff.root.path().join("seccomp"))
            .unwrap()
            .count()
    };
    assert_eq!(filters(), 1, "one compiled filter cached");
    let again = probe_results(&skiff, &[]);
    for check in ["keyctl", "unshare_user", "mount", "reboot"] {
        assert_eq!(again[check], "denied 1", "{check} with the cached filter");
    }
    assert_eq!(filters(), 1, "the cached filter was reused");

    // The same probe finds the holes when the sandbox is opened up, so the
    // checks above can fail.
    let open = probe_results(
        &skiff,
        &[
            "--security-opt",
            "seccomp=unconfined",
            "--cap-add",
            "ALL",
            "--network",
            "host",
        ],
    );
    for check in [
        "mount",
        "keyctl",
        "add_key",
        "unshare_user",
        "host_loopback",
    ] {
        assert_eq!(
            open[check], "allowed",
            "{check} with the sandbox opened: {open:?}"
        );
    }
}

/// On a cgroup v2 host the device rules are skiff's own eBPF program (v2
/// has no devices controller). This host is hybrid (v1 controllers, the v2
/// hierarchy at /sys/fs/cgroup/unified), so skiff runs in a mount namespace
/// whose /sys/fs/cgroup is the v2 hierarchy: the runtime then takes its v2
/// path (CLONE_INTO_CGROUP, the program), as on a unified host.
#[test]
fn device_rules_hold_on_cgroup_v2() {
    let skiff = Skiff::new();
    let unified = if Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        None
    } else {
        let u = Path::new("/sys/fs/cgroup/unified");
        assert!(
            u.join("cgroup.controllers").exists(),
            "this host has no cgroup v2 hierarchy to test on"
        );
        Some(u)
    };
    // Mount the image out here first: a mount the namespace made would
    // outlive the test, out of reach of its clean-up.
    let warm = run(&skiff, &[], &["true"]);
    assert_eq!(code(&warm), 0, "{}", err(&warm));
    let r = probe_results_via(&[], |args| {
        let Some(u) = unified else {
            return skiff.run(args);
        };
        let script = format!(
            "mount --make-rprivate / && mount --bind {} /sys/fs/cgroup && exec \"$0\" \"$@\"",
            u.display()
        );
        let mut c = Command::new("unshare");
        c.args(["-m", "sh", "-c", &script])
            .arg(env!("CARGO_BIN_EXE_skiff"))
            .args(args)
            .env("SKIFF_ROOT", skiff.root.path())
            .env_remove("SKIFF_LOG");
        c.output().unwrap()
    });
    assert!(
        r["open_fuse_device"].starts_with("denied"),
        "a device outside the list opened under cgroup v2: {r:?}"
    );
    assert_eq!(r["open_zero_device"], "allowed", "{r:?}");
    assert!(r["mknod_block"].starts_with("denied"), "{r:?}");
}

#[test]
fn writes_never_reach_the_image() {
    let skiff = Skiff::new();
    let o = run(
        &skiff,
        &[],
        &[
            "sh",
            "-c",
            "echo changed > /etc/hostname && rm -rf /usr/bin/tr && echo new > /new-file && echo ok",
        ],
    );
    assert_eq!(out(&o), "ok\n", "{}", err(&o));
    let o = run(&skiff, &[], &["sh", "-c", "cat /etc/hostname; test -e /usr/bin/tr && echo tr-present; test -e /new-file || echo no-new-file"]);
    let text = out(&o);
    assert!(!text.contains("changed"), "{text}");
    assert!(
        text.contains("tr-present") && text.contains("no-new-file"),
        "{text}"
    );
    // --read-only: the root cannot be written at all.
    let o = run(
        &skiff,
        &["--read-only"],
        &["sh", "-c", "echo x > /x || echo denied"],
    );
    assert_eq!(out(&o), "denied\n", "{}", err(&o));
}

#[test]
fn volume_paths_cannot_climb_out() {
    let skiff = Skiff::new();
    let host = tempfile::tempdir().unwrap();
    let (c, e) = skiff.fails(&[
        "run",
        "--rm",
        "-v",
        &format!("{}:/tmp/../../etc/skiff-escape", host.path().display()),
        layout(),
        "true",
    ]);
    assert_eq!(c, 125);
    assert!(e.contains(".."), "{e}");
    // /var/run is an absolute symlink to /run in the image: the volume lands
    // in the container's /run, not the host's.
    let marker = format!("skiff-escape-{}", std::process::id());
    let o = run(
        &skiff,
        &[
            "-v",
            &format!("{}:/var/run/{marker}", host.path().display()),
        ],
        &["sh", "-c", &format!("test -d /run/{marker} && echo inside")],
    );
    assert_eq!(out(&o), "inside\n", "{}", err(&o));
    assert!(
        !Path::new("/run").join(&marker).exists(),
        "the volume escaped to the host's /run"
    );
}

#[test]
fn memory_limit_oom_kills_and_is_reported() {
    let skiff = Skiff::new();
    let o = run(
        &skiff,
        &["--memory", "32M"],
        &[
            "python3",
            "-c",
            "b = bytearray(256 << 20); print('survived')",
        ],
    );
    assert_eq!(code(&o), 137, "{}{}", out(&o), err(&o));
    assert!(!out(&o).contains("survived"));
    assert!(err(&o).contains("OOM"), "{}", err(&o));
    // Under the limit, it runs.
    let o = run(
        &skiff,
        &["--memory", "128M", "--pids-limit", "64", "--cpus", "0.5"],
        &["python3", "-c", "b = bytearray(8 << 20); print('ok')"],
    );
    assert_eq!(out(&o), "ok\n", "{}", err(&o));
}

#[test]
fn userns_remap_makes_container_root_an_unprivileged_host_user() {
    let skiff = Skiff::new();
    // A host directory only host root may write to.
    let host = tempfile::tempdir().unwrap();
    let mut perms = std::fs::metadata(host.path()).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
    std::fs::set_permissions(host.path(), perms).unwrap();
    let vol = format!("{}:/vol", host.path().display());
    let script = "id -u; cat /proc/self/uid_map; stat -c %u:%g /etc/passwd /; \
                  touch /etc/made-here && chown 1000:1000 /etc/made-here && stat -c %u /etc/made-here; \
                  ls /sys/class/net; \
                  touch /vol/x 2>/dev/null && echo vol-written || echo vol-denied";

    // Without a user namespace, container root writes the host directory:
    // the check below can fail.
    let o = run(
        &skiff,
        &["-v", &vol],
        &["sh", "-c", "touch /vol/x && echo vol-written"],
    );
    assert_eq!(out(&o), "vol-written\n", "{}", err(&o));
    std::fs::remove_file(host.path().join("x")).unwrap();

    let o = run(
        &skiff,
        &["--userns", "remap", "-v", &vol],
        &["sh", "-c", script],
    );
    assert_eq!(code(&o), 0, "{}", err(&o));
    let lines: Vec<String> = out(&o)
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect();
    assert_eq!(
        lines,
        [
            "0",
            "0 100000 65536",
            "0:0",
            "0:0",
            "1000",
            "lo",
            "vol-denied"
        ],
        "{}",
        err(&o)
    );
    assert!(!host.path().join("x").exists());

    // On the host, the container's processes run as 100000, and the files
    // it made belong to 100000 + their in-container owner.
    let id = skiff.ok(&[
        "run",
        "-d",
        "--userns",
        "remap",
        layout(),
        "sh",
        "-c",
        "touch /made; sleep 60",
    ]);
    let id = id.trim();
    let rec = ps_record(&skiff, id);
    let pid = rec["pid"].as_i64().unwrap();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let uid_line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    assert_eq!(
        uid_line.split_whitespace().collect::<Vec<_>>(),
        ["Uid:", "100000", "100000", "100000", "100000"]
    );
    let upper = skiff
        .root
        .path()
        .join("containers")
        .join(id)
        .join("upper/made");
    let mut owner = None;
    for _ in 0..50 {
        if let Ok(m) = std::fs::metadata(&upper) {
            owner = Some(std::os::unix::fs::MetadataExt::uid(&m));
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(owner, Some(100000));
    skiff.ok(&["rm", "-f", id]);

    // The sandbox's denials hold inside the user namespace too.
    let r = probe_results(&skiff, &["--userns", "remap"]);
    for check in [
        "see_host_process",
        "mount",
        "init_module",
        "mknod_block",
        "keyctl",
        "unshare_user",
        "reboot",
        "host_loopback",
        "proc_sys",
    ] {
        assert!(
            r[check].starts_with("denied"),
            "{check}: {} ({r:?})",
            r[check]
        );
    }

    let o = skiff.run(&["run", "--rm", "--userns", "0:65536", layout(), "true"]);
    assert_eq!(
        code(&o),
        125,
        "BASE 0 is refused (a usage error of run): {}",
        err(&o)
    );
    assert!(err(&o).contains("host root"), "{}", err(&o));
}

/// A `--record-trace` run has a private image mount; a run that fails
/// before its container starts (here: a user the image lacks) must release
/// it. It leaked, with its FUSE daemon.
#[test]
fn a_failed_recording_run_releases_its_private_mount() {
    let skiff = Skiff::new();
    let trace = skiff.root.path().join("trace.json");
    let o = run(
        &skiff,
        &["--record-trace", trace.to_str().unwrap(), "-u", "ghost"],
        &["true"],
    );
    assert_eq!(code(&o), 125, "{}", err(&o));
    let table = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let root = skiff.root.path().to_str().unwrap();
    let left: Vec<&str> = table
        .lines()
        .filter(|l| l.contains(root) && l.contains("fuse"))
        .collect();
    assert!(left.is_empty(), "a recording mount was left: {left:?}");
}

/// `skiff stop` counted any unreadable record as "exited" and reported
/// success while the container ran on. Only a removed record is.
#[test]
fn stop_fails_on_an_unreadable_record() {
    let skiff = Skiff::new();
    let id = skiff.ok(&[
        "run",
        "-d",
        "--name",
        "stubborn",
        layout(),
        "sh",
        "-c",
        "trap '' TERM; while :; do sleep 0.1; done",
    ]);
    let id = id.trim().to_string();
    let state = skiff
        .root
        .path()
        .join("containers")
        .join(&id)
        .join("state.json");
    let saved = std::fs::read(&state).unwrap();
    let rec = serde_json::from_slice::<serde_json::Value>(&saved).unwrap();
    let pid = rec["pid"].as_i64().unwrap() as i32;
    let stop = skiff
        .cmd()
        .args(["stop", "-t", "20", "stubborn"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // While it waits out the grace period, the record turns unreadable.
    std::thread::sleep(Duration::from_millis(700));
    std::fs::write(&state, b"{ not json").unwrap();
    let o = stop.wait_with_output().unwrap();
    std::fs::write(&state, &saved).unwrap();
    // SAFETY: kill(2) with signal 0 only checks that the process exists.
    let alive = unsafe { libc::kill(pid, 0) } == 0;
    assert!(alive, "the container is gone");
    assert_ne!(code(&o), 0, "stop reported success: {}", out(&o));
    assert!(err(&o).contains("state.json"), "{}", err(&o));
    skiff.ok(&["rm", "-f", &id]);
}
