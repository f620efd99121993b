//! The holes an attack on a default `skiff run` found (issue 13), each
//! shown closed from where the attacker stood: an unprivileged host user,
//! a hostile image, or code inside the container. Each of these tests
//! fails on the code before its fix.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::containers::{code, err, layout, out, run};
use common::layers::{write_image_with_config, Entry, LayerBlob, Tar};
use common::{as_nobody, sh, skiff_bin, Skiff};

/// Mount points under any of `prefixes`, from the host's mount table.
fn mounts_under(prefixes: &[&Path]) -> Vec<(PathBuf, String)> {
    let table = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    table
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            let point = PathBuf::from(f.get(4)?.replace("\\040", " "));
            let sep = f.iter().position(|x| *x == "-")?;
            let fstype = f.get(sep + 1)?.to_string();
            prefixes
                .iter()
                .any(|p| point.starts_with(p))
                .then_some((point, fstype))
        })
        .collect()
}

/// A converted skiff image of one layer built from `tar`, with `runtime`
/// as its config's runtime part.
fn hostile_image(skiff: &Skiff, work: &Path, tar: &[u8], runtime: serde_json::Value) -> String {
    write_image_with_config(
        &work.join("src"),
        "h",
        &[LayerBlob::gzip(tar)],
        ("linux", "amd64"),
        runtime,
    );
    let src = format!("oci:{}:h", work.join("src").display());
    let dst = format!("oci:{}:h", work.join("out").display());
    skiff.ok(&["convert", "-q", &src, &dst]);
    dst
}

fn wait_for_log(skiff: &Skiff, id: &str, text: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !skiff.ok(&["logs", id]).contains(text) {
        assert!(
            Instant::now() < deadline,
            "{text:?} never showed in the log"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Hole 1 (HIGH): the container's root, mounted on the host, honours
/// setuid and device nodes, so any host user who can reach it becomes
/// root. Nothing skiff mounts or listens on may be reachable by others,
/// even under a --root that anyone may enter.
#[test]
fn container_roots_and_image_mounts_are_root_only() {
    let skiff = Skiff::new();
    std::fs::set_permissions(skiff.root.path(), PermissionsExt::from_mode(0o755)).unwrap();
    let id = skiff.ok(&[
        "run",
        "-d",
        layout(),
        "sh",
        "-c",
        "cp /bin/bash /rtsh && chmod 4755 /rtsh && mknod -m 666 /rtkmsg c 1 11 && echo ready; sleep 300",
    ]);
    let id = id.trim();
    wait_for_log(&skiff, id, "ready");

    let mounts = mounts_under(&[Path::new("/run/skiff"), skiff.root.path()]);
    let rootfs = mounts
        .iter()
        .find(|(p, t)| t == "overlay" && p.to_string_lossy().contains(id))
        .map(|(p, _)| p.clone())
        .unwrap_or_else(|| panic!("no overlay root for {id} in {mounts:?}"));
    assert!(
        mounts.iter().any(|(_, t)| t.starts_with("fuse")),
        "no image mount in {mounts:?}"
    );
    // The attack's files are there, for root: the test is not vacuous.
    let rtsh = rootfs.join("rtsh");
    let mode = std::fs::metadata(&rtsh).unwrap().permissions().mode();
    assert_eq!(mode & 0o4777, 0o4755, "{}", rtsh.display());

    for (point, _) in &mounts {
        let o = as_nobody(&["ls", "-a", point.to_str().unwrap()]);
        assert!(
            !o.status.success() && err(&o).contains("Permission denied"),
            "nobody reached {}: {}{}",
            point.display(),
            out(&o),
            err(&o)
        );
    }
    let o = as_nobody(&[rtsh.to_str().unwrap(), "-p", "-c", "id -u; cat /etc/shadow"]);
    assert!(
        !o.status.success(),
        "nobody ran {}: {}",
        rtsh.display(),
        out(&o)
    );
    assert!(!out(&o).contains("root:"), "{}", out(&o));
    let kmsg = format!("echo from-nobody > {}", rootfs.join("rtkmsg").display());
    assert!(!as_nobody(&["sh", "-c", &kmsg]).status.success());
    // The mount daemons' control sockets too.
    let sockets: Vec<PathBuf> = std::fs::read_dir(skiff.root.path().join("run"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert!(!sockets.is_empty());
    for s in &sockets {
        let o = as_nobody(&["stat", s.to_str().unwrap()]);
        assert!(!o.status.success(), "nobody reached {}", s.display());
    }
    skiff.ok(&["rm", "-f", id]);
}

/// Hole 2 (MEDIUM): a user or group ID of 4294967295 is -1 to setresuid,
/// "leave unchanged": the container stayed root with its capabilities.
#[test]
fn ids_above_2_31_are_refused() {
    let skiff = Skiff::new();
    for user in ["4294967295", "1000:4294967295", "-1", "2147483648"] {
        let o = run(&skiff, &["-u", user], &["id"]);
        assert_eq!(code(&o), 125, "-u {user}: {}{}", out(&o), err(&o));
        assert!(err(&o).contains("out of range"), "-u {user}: {}", err(&o));
        assert!(!out(&o).contains("uid=0"), "{}", out(&o));
    }
    let o = run(&skiff, &["-u", "2147483647:2147483647"], &["id", "-u"]);
    assert_eq!(out(&o), "2147483647\n", "{}", err(&o));

    // From a hostile image: its /etc/passwd maps its User to -1.
    let work = tempfile::tempdir().unwrap();
    let tar = Tar::new()
        .dir("etc")
        .file("etc/passwd", b"evil:x:4294967295:4294967295::/:/x\n")
        .finish();
    let image = hostile_image(
        &skiff,
        work.path(),
        &tar,
        serde_json::json!({"User": "evil", "Cmd": ["/x"]}),
    );
    let o = skiff.run(&["run", "--rm", &image]);
    assert_eq!(code(&o), 125, "{}", err(&o));
    assert!(err(&o).contains("out of range"), "{}", err(&o));
}

/// Hole 3 (MEDIUM-LOW): the container got skiff's own stdout and stderr.
/// Redirected to a host file, it could reopen /proc/self/fd/1 read-write,
/// read the file and truncate it; on a terminal, change the terminal.
#[test]
fn the_container_gets_pipes_not_skiffs_files() {
    let skiff = Skiff::new();
    let dir = tempfile::tempdir().unwrap();
    let host_log = dir.path().join("host.log");
    std::fs::write(&host_log, "secret\n").unwrap();
    let file = std::fs::OpenOptions::new()
        .append(true)
        .open(&host_log)
        .unwrap();
    // Reopened read-write, skiff's stdout would give the host file to read
    // from its start, and to truncate.
    let attack = "exec 3<>/proc/$$/fd/1; timeout 2 head -c 100 <&3 > /tmp/stolen; \
                  : > /proc/$$/fd/1; readlink /proc/$$/fd/1; wc -c < /tmp/stolen";
    let o = skiff
        .cmd()
        .args(["run", "--rm", layout(), "sh", "-c", attack])
        .stdout(file)
        .output()
        .unwrap();
    assert_eq!(code(&o), 0, "{}", err(&o));
    let text = std::fs::read_to_string(&host_log).unwrap();
    assert!(
        text.starts_with("secret\npipe:["),
        "the host file: {text:?}"
    );
    assert!(text.ends_with("\n0\n"), "the host file: {text:?}");

    // On a terminal (script gives skiff one on 0, 1 and 2), the container
    // has none, with -i or without.
    for opts in ["", "-i"] {
        let probe = "for f in 0 1 2; do [ -t $f ] && echo tty-$f; done; \
                     stty -echo <&1 2>/dev/null && echo echo-off; echo end";
        let cmd = format!(
            "{} run --rm {opts} {} sh -c '{probe}'",
            skiff_bin(),
            layout()
        );
        let o = Command::new("script")
            .args(["-qec", &cmd, "/dev/null"])
            .env("SKIFF_ROOT", skiff.root.path())
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let text = out(&o).replace('\r', "");
        assert!(text.ends_with("end\n"), "{opts}: {text}{}", err(&o));
        assert!(
            !text.contains("tty-") && !text.contains("echo-off"),
            "{opts}: {text}"
        );
    }

    // The relay keeps what direct descriptors gave: stdin's end, the
    // exit code, each stream's bytes in order, and (one open file for
    // both) the interleaving.
    let mut child = skiff
        .cmd()
        .args([
            "run",
            "--rm",
            "-i",
            layout(),
            "sh",
            "-c",
            "cat; echo out; echo err >&2; exit 7",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), b"a\nb\n").unwrap();
    let o = child.wait_with_output().unwrap();
    assert_eq!(
        (code(&o), out(&o).as_str()),
        (7, "a\nb\nout\n"),
        "{}",
        err(&o)
    );
    assert_eq!(err(&o), "err\n");

    let input: Vec<u8> = (0..20_000_000u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 24) as u8)
        .collect();
    let input_file = dir.path().join("input");
    std::fs::write(&input_file, &input).unwrap();
    let o = skiff
        .cmd()
        .args([
            "run",
            "--rm",
            "-i",
            layout(),
            "sh",
            "-c",
            "sha256sum; head -c 30000000 /dev/zero | wc -c >&2",
        ])
        .stdin(std::fs::File::open(&input_file).unwrap())
        .output()
        .unwrap();
    assert_eq!(code(&o), 0, "{}", err(&o));
    let want = common::containers::sha256_hex(&input);
    assert_eq!(out(&o), format!("{want}  -\n"));
    assert_eq!(err(&o), "30000000\n");

    let both = dir.path().join("both.log");
    let file = std::fs::File::create(&both).unwrap();
    let o = skiff
        .cmd()
        .args([
            "run",
            "--rm",
            layout(),
            "sh",
            "-c",
            "for i in 1 2 3; do echo o$i; echo e$i >&2; done",
        ])
        .stdout(file.try_clone().unwrap())
        .stderr(file)
        .status()
        .unwrap();
    assert!(o.success());
    assert_eq!(
        std::fs::read_to_string(&both).unwrap(),
        "o1\ne1\no2\ne2\no3\ne3\n"
    );
}

/// Hole 4 (LOW): an image symlink sent a volume onto /dev; skiff then made
/// device nodes (0666) in the operator's host directory, and the volume hid
/// the container's devpts, shm and mqueue.
#[test]
fn a_volume_cannot_be_redirected_into_kernel_filesystems() {
    let skiff = Skiff::new();
    let work = tempfile::tempdir().unwrap();
    let tar = Tar::new()
        .dir("dev")
        .dir("proc")
        .dir("sys")
        .symlink("data", "/dev")
        .symlink("knobs", "../proc/sys")
        .finish();
    let image = hostile_image(
        &skiff,
        work.path(),
        &tar,
        serde_json::json!({"Cmd": ["/x"]}),
    );
    let host = tempfile::tempdir().unwrap();
    for dest in ["/data", "/knobs/kernel"] {
        let vol = format!("{}:{dest}", host.path().display());
        let o = skiff.run(&["run", "--rm", "-v", &vol, &image]);
        assert_eq!(code(&o), 125, "{dest}: {}", err(&o));
        assert!(
            err(&o).contains("through a symlink in the image"),
            "{dest}: {}",
            err(&o)
        );
        let left: Vec<_> = std::fs::read_dir(host.path()).unwrap().collect();
        assert!(
            left.is_empty(),
            "{dest}: skiff wrote {left:?} into the host directory"
        );
    }
    // Written out, /dev itself is refused too; a node under it is fine.
    let vol = format!("{}:/dev", host.path().display());
    let (c, e) = skiff.fails(&["run", "--rm", "-v", &vol, layout(), "true"]);
    assert_eq!(c, 125, "{e}");
    assert!(e.contains("kernel filesystems"), "{e}");
    let o = run(
        &skiff,
        &["-v", "/dev/null:/dev/log"],
        &[
            "sh",
            "-c",
            "test -c /dev/log && test -e /dev/pts/ptmx && echo ok",
        ],
    );
    assert_eq!(out(&o), "ok\n", "{}", err(&o));
}

/// Hole 5 (LOW): a FIFO at /etc/passwd hung `skiff run` while it resolved
/// the user.
#[test]
fn a_fifo_passwd_fails_instead_of_hanging() {
    let skiff = Skiff::new();
    let work = tempfile::tempdir().unwrap();
    let mut fifo = Entry::new("etc/passwd", b'6');
    fifo.mode = 0o644;
    let tar = Tar::new().dir("etc").entry(&fifo).finish();
    let image = hostile_image(
        &skiff,
        work.path(),
        &tar,
        serde_json::json!({"Cmd": ["/x"]}),
    );
    let mut child = skiff
        .cmd()
        .args(["run", "--rm", &image])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("skiff run hung on a FIFO /etc/passwd");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let o = child.wait_with_output().unwrap();
    assert_eq!(code(&o), 125, "{}", err(&o));
    assert!(err(&o).contains("not a regular file"), "{}", err(&o));
}

/// Defaults a shared node needs: a pids limit, and resource limits that
/// are skiff's, not those of the shell that started it.
#[test]
fn pids_and_rlimits_have_documented_defaults() {
    let skiff = Skiff::new();
    let script = "cg() { for f in \"$@\"; do if [ -r \"$f\" ]; then cat \"$f\"; return; fi; done; echo missing; }; \
                  cg /sys/fs/cgroup/pids/pids.max /sys/fs/cgroup/pids.max; \
                  ulimit -Sn; ulimit -Hn; ulimit -Sl; ulimit -Hl; ulimit -Sc";
    let own_hard = |resource| {
        let mut r = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit fills the struct.
        assert_eq!(unsafe { libc::getrlimit(resource, &mut r) }, 0);
        r.rlim_max
    };
    let can_raise = std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .map(|v| u64::from_str_radix(v.trim(), 16).unwrap() & (1 << 24) != 0)
        .unwrap();
    let expect = |want: u64, resource| {
        let v = if can_raise {
            want
        } else {
            want.min(own_hard(resource))
        };
        v.to_string()
    };
    // The caller's soft limits differ from the defaults: none may leak.
    let mut cmd = Command::new("prlimit");
    cmd.args(["--nofile=4000:", "--memlock=4096:", "--core=1024:", "--"])
        .arg(skiff_bin())
        .args(["run", "--rm", layout(), "sh", "-c", script])
        .env("SKIFF_ROOT", skiff.root.path());
    let text = sh(&mut cmd);
    let want = [
        "2048".to_string(),
        expect(1024, libc::RLIMIT_NOFILE),
        expect(524_288, libc::RLIMIT_NOFILE),
        expect(8 << 20, libc::RLIMIT_MEMLOCK)
            .parse::<u64>()
            .map(|b| (b / 1024).to_string())
            .unwrap(),
        expect(8 << 20, libc::RLIMIT_MEMLOCK)
            .parse::<u64>()
            .map(|b| (b / 1024).to_string())
            .unwrap(),
        "0".to_string(),
    ];
    assert_eq!(text.lines().collect::<Vec<_>>(), want, "{text}");

    let o = run(
        &skiff,
        &[
            "--pids-limit",
            "-1",
            "--ulimit",
            "nofile=2048:4096",
            "--ulimit",
            "core=0:0",
        ],
        &["sh", "-c", script],
    );
    let lines: Vec<String> = out(&o).lines().map(str::to_string).collect();
    assert_eq!(&lines[..3], ["max", "2048", "4096"], "{}", err(&o));
    let (c, e) = skiff.fails(&["run", "--rm", "--ulimit", "nofile=9:8", layout(), "true"]);
    assert_eq!(c, 125);
    assert!(e.contains("soft limit is above the hard limit"), "{e}");
}

/// The writable layer is unbounded on the host's disk by default;
/// `--storage-opt size=` bounds it, and removal (after the supervisor was
/// killed with -9, too) leaves no loop device or mount behind.
#[test]
fn storage_opt_size_bounds_the_writable_layer() {
    let skiff = Skiff::new();
    let script = "df -k / | tail -1 | tr -s ' ' | cut -d' ' -f2; \
                  dd if=/dev/zero of=/ten bs=1M count=10 2>/dev/null && echo ten-fits; \
                  dd if=/dev/zero of=/big bs=1M count=64 2>&1 | grep -o 'No space left on device' | head -1";
    let o = run(
        &skiff,
        &["--storage-opt", "size=40M"],
        &["sh", "-c", script],
    );
    assert_eq!(code(&o), 0, "{}", err(&o));
    let text = out(&o);
    let lines: Vec<&str> = text.lines().collect();
    let size_kb: u64 = lines[0].parse().unwrap();
    assert!(
        (30_000..=41_000).contains(&size_kb),
        "df says {size_kb} KB: {text}"
    );
    assert_eq!(
        &lines[1..],
        ["ten-fits", "No space left on device"],
        "{text}"
    );

    let (c, e) = skiff.fails(&["run", "--rm", "--storage-opt", "size=1M", layout(), "true"]);
    assert_eq!(c, 125);
    assert!(e.contains("at least 16M"), "{e}");
    let (_, e) = skiff.fails(&["run", "--rm", "--storage-opt", "quota=1", layout(), "true"]);
    assert!(e.contains("size=SIZE"), "{e}");

    // kill -9 of the supervisor, then rm -f: nothing is left.
    let id = skiff.ok(&[
        "run",
        "-d",
        "--storage-opt",
        "size=32M",
        layout(),
        "sleep",
        "300",
    ]);
    let id = id.trim().to_string();
    let cdir = skiff.root.path().join("containers").join(&id);
    let records: serde_json::Value = serde_json::from_str(&skiff.ok(&["ps", "--json"])).unwrap();
    let pid = records
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == id.as_str())
        .and_then(|r| r["pid"].as_i64())
        .unwrap();
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let ppid: i32 = stat[stat.rfind(')').unwrap() + 2..]
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    // SAFETY: kill(2) of the container's supervisor.
    assert_eq!(unsafe { libc::kill(ppid, libc::SIGKILL) }, 0);
    skiff.ok(&["rm", "-f", &id]);
    assert!(!cdir.exists());
    let left = mounts_under(&[skiff.root.path()])
        .into_iter()
        .filter(|(p, _)| p.starts_with(&cdir))
        .count();
    assert_eq!(left, 0);
    for entry in std::fs::read_dir("/sys/block").unwrap() {
        let backing = entry.unwrap().path().join("loop/backing_file");
        if let Ok(b) = std::fs::read_to_string(&backing) {
            assert!(!b.contains(&id), "a loop device still backs {b}");
        }
    }
}
