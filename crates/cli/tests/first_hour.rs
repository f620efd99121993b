//! What a new user meets in the first hour (issue 15): closed pipes,
//! destructive look-alikes, leftovers, option checks, and Docker's
//! everyday verbs.

mod common;

use std::process::Stdio;

use common::containers::{code, err, layout, run};
use common::layers::{write_image, LayerBlob, Tar};
use common::{debian_image, Skiff};

/// Runs skiff with a stdout whose reader is already gone, so that every
/// write to it fails with EPIPE; returns (exit code, stderr).
fn with_closed_stdout(skiff: &Skiff, args: &[&str]) -> (Option<i32>, String) {
    let mut fds = [0; 2];
    // SAFETY: pipe() fills the two-element array it is given.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    // SAFETY: both descriptors are new and owned here alone.
    let (reader, writer) = unsafe {
        use std::os::fd::FromRawFd;
        (
            std::os::fd::OwnedFd::from_raw_fd(fds[0]),
            std::os::fd::OwnedFd::from_raw_fd(fds[1]),
        )
    };
    drop(reader);
    let out = skiff
        .cmd()
        .args(args)
        .stdin(Stdio::null())
        .stdout(writer)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_closed_stdout_ends_the_command_quietly() {
    let skiff = Skiff::new();
    let work = tempfile::tempdir().unwrap();
    let target = format!("oci:{}:conv", work.path().display());
    let source = format!("oci:{}:full", debian_image().display());
    let cases: Vec<Vec<&str>> = vec![
        vec!["inspect", "--tree", layout()],
        vec!["ps", "-a"],
        vec!["cache", "stats"],
        vec!["check", layout()],
        vec!["convert", "--json", "-q", &source, &target],
        vec!["images"],
    ];
    for args in &cases {
        let (code, stderr) = with_closed_stdout(&skiff, args);
        assert_eq!(code, Some(0), "skiff {args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "skiff {args:?}: {stderr}");
        assert!(!stderr.contains("Broken pipe"), "skiff {args:?}: {stderr}");
    }
    // The conversion finished and is whole: its work is not lost to the pipe.
    skiff.ok(&["check", &target]);
}

/// A one-file OCI image in a fresh layout, tagged `v1`.
fn small_layout(dir: &std::path::Path) -> String {
    let tar = Tar::new().file("hello.txt", b"hello\n").finish();
    write_image(dir, "v1", &[LayerBlob::gzip(&tar)], ("linux", "amd64"));
    format!("oci:{}:v1", dir.display())
}

#[test]
fn convert_refuses_to_overwrite_its_own_source() {
    let skiff = Skiff::new();
    let work = tempfile::tempdir().unwrap();
    let src = small_layout(&work.path().join("layout"));
    let index = std::fs::read(work.path().join("layout/index.json")).unwrap();
    // The same directory spelled another way is still the source.
    let same = format!("oci:{}/./layout:v1", work.path().display());
    for target in [&src, &same] {
        let (c, e) = skiff.fails(&["convert", "-q", &src, target]);
        assert_eq!(c, 1, "{e}");
        assert!(e.contains("names the source image itself"), "{e}");
        assert!(e.contains("--force"), "{e}");
    }
    assert_eq!(
        std::fs::read(work.path().join("layout/index.json")).unwrap(),
        index,
        "the source is untouched"
    );
    // Another tag of the same layout is fine, and --force does as told.
    let other = format!("oci:{}:v1-skiff", work.path().join("layout").display());
    skiff.ok(&["convert", "-q", &src, &other]);
    skiff.ok(&["convert", "-q", "--force", &src, &src]);
    skiff.ok(&["check", &src]);
}

#[test]
fn convert_json_names_tags_and_counts_what_it_wrote() {
    let skiff = Skiff::new();
    let work = tempfile::tempdir().unwrap();
    let src = small_layout(&work.path().join("layout"));
    let dst = format!("oci:{}:conv", work.path().join("out").display());
    let v: serde_json::Value =
        serde_json::from_str(&skiff.ok(&["convert", "-q", "--json", &src, &dst])).unwrap();
    assert_eq!(v["source"], src.as_str(), "{v}");
    assert_eq!(v["target"], dst.as_str(), "{v}");
    let write = &v["images"][0]["stats"]["write"];
    assert!(write["new_chunks"].as_u64().unwrap() >= 1, "{v}");
    // No counter that is never counted.
    assert!(write.get("chunks_submitted").is_none(), "{v}");
}

#[test]
fn option_checks_say_what_is_wrong() {
    let skiff = Skiff::new();
    let o = run(&skiff, &["--cpus", "1000"], &["true"]);
    assert_eq!(code(&o), 125, "{}", err(&o));
    assert!(err(&o).contains("this host has"), "{}", err(&o));
    let o = run(&skiff, &["-w", "/etc/passwd"], &["true"]);
    assert_ne!(code(&o), 0);
    assert!(err(&o).contains("not a directory"), "{}", err(&o));
    assert!(!err(&o).contains("File exists"), "{}", err(&o));
    let unlimited = skiff.json(&["--cache-size", "none", "cache", "stats"]);
    assert!(unlimited["limit"].is_null(), "{unlimited}");
    let limited = skiff.json(&["--cache-size", "1G", "cache", "stats"]);
    assert_eq!(limited["limit"], 1u64 << 30, "{limited}");
}

#[test]
fn removed_containers_leave_no_log_behind() {
    let skiff = Skiff::new();
    skiff.ok(&["run", "-d", "--name", "brief", layout(), "true"]);
    skiff.ok(&["wait", "brief"]);
    skiff.ok(&["rm", "brief"]);
    let o = run(&skiff, &[], &["true"]);
    assert_eq!(code(&o), 0, "{}", err(&o));
    let logs: Vec<_> = std::fs::read_dir(skiff.root.path().join("logs"))
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with("container-"))
                .collect()
        })
        .unwrap_or_default();
    assert!(logs.is_empty(), "{logs:?}");
}

#[test]
fn mount_leaves_no_directory_and_hides_no_files() {
    let skiff = Skiff::new();
    let work = tempfile::tempdir().unwrap();
    // A failed mount removes the mount point it created.
    let fresh = work.path().join("fresh");
    let missing = format!("oci:{}:none", work.path().join("no-layout").display());
    let (c, e) = skiff.fails(&["mount", &missing, fresh.to_str().unwrap()]);
    assert_eq!(c, 1, "{e}");
    assert!(!fresh.exists(), "a failed mount left {}", fresh.display());
    // Over a directory with files: refused, and the files stay visible.
    let full = work.path().join("full");
    std::fs::create_dir(&full).unwrap();
    std::fs::write(full.join("keep.txt"), b"mine").unwrap();
    let (c, e) = skiff.fails(&["mount", "--daemon", layout(), full.to_str().unwrap()]);
    assert_eq!(c, 1, "{e}");
    assert!(e.contains("not empty") && e.contains("--nonempty"), "{e}");
    assert_eq!(std::fs::read(full.join("keep.txt")).unwrap(), b"mine");
    // --nonempty mounts over it, as asked.
    skiff.ok(&[
        "mount",
        "--daemon",
        "--nonempty",
        layout(),
        full.to_str().unwrap(),
    ]);
    assert!(full.join("etc/debian_version").exists());
    skiff.ok(&["umount", full.to_str().unwrap()]);
    assert_eq!(std::fs::read(full.join("keep.txt")).unwrap(), b"mine");
}

#[test]
fn logs_are_plain_text_off_a_terminal_and_quiet_about_ioctls() {
    let skiff = Skiff::new();
    let o = skiff
        .cmd()
        .env("SKIFF_LOG", "debug")
        .args(["run", "--rm", layout(), "true"])
        .output()
        .unwrap();
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(e.contains("DEBUG"), "no log lines to check: {e}");
    assert!(!e.contains('\x1b'), "colour codes in a pipe: {e:?}");
    // An ioctl on a mounted file: refused (the kernel shows ENOTTY to
    // lsattr as "not supported"), and not logged.
    let m = common::Mounted::new(&skiff, layout(), &[]);
    let o = std::process::Command::new("lsattr")
        .arg(m.dir.join("etc/debian_version"))
        .output()
        .unwrap();
    assert!(!o.status.success());
    let why = String::from_utf8_lossy(&o.stderr);
    assert!(
        why.contains("Inappropriate ioctl") || why.contains("Operation not supported"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    drop(m);
    let logs = skiff.root.path().join("logs");
    for entry in std::fs::read_dir(&logs).unwrap().flatten() {
        let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
        assert!(
            !text.contains("Not Implemented"),
            "{}: {text}",
            entry.path().display()
        );
        assert!(
            !text.contains('\x1b'),
            "{}: {text:?}",
            entry.path().display()
        );
    }
}

#[test]
fn ctrl_c_ends_a_foreground_mount_cleanly() {
    use std::io::{BufRead, BufReader};
    let skiff = Skiff::new();
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("mnt");
    let mut child = skiff
        .cmd()
        .args(["mount", layout(), dir.to_str().unwrap()])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    stderr.read_line(&mut line).unwrap();
    assert!(line.contains("mounted"), "{line}");
    assert!(dir.join("etc/debian_version").exists());
    // SAFETY: signalling a child this test started and has not reaped.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGINT) }, 0);
    let status = child.wait().unwrap();
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stderr, &mut rest).unwrap();
    assert!(status.success(), "{status:?}: {rest}");
    assert!(!rest.contains("Failed to umount"), "{rest}");
    assert!(!dir.join("etc").exists(), "still mounted");
}

#[test]
fn kill_wait_and_version() {
    let skiff = Skiff::new();
    skiff.ok(&[
        "run",
        "-d",
        "--name",
        "hup",
        layout(),
        "sh",
        "-c",
        "trap 'exit 7' HUP; echo ready; while :; do sleep 0.1; done",
    ]);
    // An init ignores signals it has no handler for: wait for the trap.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !skiff.ok(&["logs", "hup"]).contains("ready") {
        assert!(
            std::time::Instant::now() < deadline,
            "the trap was never set"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    skiff.ok(&["kill", "-s", "HUP", "hup"]);
    assert_eq!(skiff.ok(&["wait", "hup"]), "7\n");
    // Not running any more: an error, not a signal to whatever has its pid.
    let (c, e) = skiff.fails(&["kill", "hup"]);
    assert_eq!(c, 1);
    assert!(e.contains("not running"), "{e}");
    let (c, e) = skiff.fails(&["kill", "-s", "NOPE", "hup"]);
    assert_eq!(c, 2, "{e}");
    skiff.ok(&["run", "-d", "--name", "sleeper", layout(), "sleep", "60"]);
    skiff.ok(&["kill", "sleeper"]);
    assert_eq!(skiff.ok(&["wait", "sleeper"]), "137\n");
    let v = skiff.json(&["version"]);
    assert_eq!(v["version"], env!("CARGO_PKG_VERSION"), "{v}");
    assert!(skiff.ok(&["version"]).starts_with("skiff "));
}

#[test]
fn an_unreachable_registry_fails_at_once_with_one_line() {
    let skiff = Skiff::new();
    // Nothing listens on a port just freed; `.invalid` never resolves.
    let port = common::registry::free_port();
    let refused = format!("127.0.0.1:{port}/app:v1");
    for (image, says) in [
        (refused.as_str(), "connection refused"),
        ("registry.invalid/app:v1", "does not resolve"),
    ] {
        let started = std::time::Instant::now();
        let o = skiff.run(&["pull", image]);
        // A guard against the 30-second retry budget, not a speed target.
        assert!(started.elapsed() < std::time::Duration::from_secs(15));
        assert_eq!(code(&o), 1, "{}", err(&o));
        let e = err(&o);
        let lines: Vec<_> = e.lines().collect();
        assert_eq!(lines.len(), 1, "one line, no retry warnings: {e}");
        assert!(lines[0].contains(says), "{e}");
        let registry = image.split('/').next().unwrap();
        assert!(lines[0].contains(registry), "names the registry: {e}");
    }
    // `run` fails the same way.
    let o = skiff.run(&["run", "--rm", &refused, "true"]);
    assert_ne!(code(&o), 0);
    assert_eq!(err(&o).lines().count(), 1, "{}", err(&o));
}

#[test]
fn a_mistyped_verb_never_suggests_a_destructive_one() {
    let skiff = Skiff::new();
    for typo in ["top", "rmv", "kil", "stpo"] {
        let (c, e) = skiff.fails(&[typo]);
        assert_eq!(c, 2, "{e}");
        assert!(e.contains("is not a skiff command"), "{e}");
        for destructive in ["stop", "rm", "rmi", "kill"] {
            assert!(
                !e.contains(&format!("skiff {destructive}")),
                "`skiff {typo}` suggested `{destructive}`: {e}"
            );
        }
    }
    let (_, e) = skiff.fails(&["imgaes"]);
    assert!(e.contains("skiff images"), "{e}");
}

#[test]
fn a_usage_error_in_run_exits_125_and_elsewhere_2() {
    let skiff = Skiff::new();
    let (c, e) = skiff.fails(&["run", "--no-such-flag", layout()]);
    assert_eq!(c, 125, "{e}");
    let (c, e) = skiff.fails(&["--root", "/tmp", "run", "--memory"]);
    assert_eq!(c, 125, "{e}");
    let (c, e) = skiff.fails(&["ps", "--no-such-flag"]);
    assert_eq!(c, 2, "{e}");
}

#[test]
fn stop_acts_on_several_containers_at_once() {
    let skiff = Skiff::new();
    let shared = tempfile::tempdir().unwrap();
    let vol = format!("{}:/v", shared.path().display());
    // `first` finishes its TERM handler only once `second` has had its
    // TERM: one at a time, `first` would be killed at the end of its grace.
    let first = "trap 'while [ ! -e /v/second-termed ]; do sleep 0.05; done; exit 0' TERM; \
                 touch /v/first-ready; while :; do sleep 0.1; done";
    let second = "trap 'touch /v/second-termed; exit 0' TERM; \
                  touch /v/second-ready; while :; do sleep 0.1; done";
    for (name, script) in [("first", first), ("second", second)] {
        skiff.ok(&[
            "run",
            "-d",
            "--name",
            name,
            "-v",
            &vol,
            layout(),
            "sh",
            "-c",
            script,
        ]);
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !(shared.path().join("first-ready").exists()
        && shared.path().join("second-ready").exists())
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the traps were never set"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_eq!(
        skiff.ok(&["stop", "-t", "5", "first", "second"]),
        "first\nsecond\n"
    );
    assert_eq!(skiff.ok(&["wait", "first", "second"]), "0\n0\n");
    assert_eq!(skiff.ok(&["rm", "first", "second"]), "first\nsecond\n");
}

#[test]
fn run_help_shows_its_own_options_first() {
    let skiff = Skiff::new();
    let help = skiff.ok(&["run", "--help"]);
    let own = help.find("--env").expect("run's -e");
    let heading = help
        .find("Global options:")
        .expect("a heading for the global options");
    let root = help.find("--root <DIR>").expect("--root");
    assert!(own < heading && heading < root, "{help}");
}

#[test]
fn a_failed_unpack_leaves_no_tree() {
    let skiff = Skiff::new();
    let work = tempfile::tempdir().unwrap();
    // Files in path order: `a` is written before `z`'s chunk fails.
    let noise: Vec<u8> = (0..300_000u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    let tar = Tar::new()
        .file("a.txt", b"first\n")
        .file("z.bin", &noise)
        .finish();
    let src_dir = work.path().join("src");
    write_image(&src_dir, "v1", &[LayerBlob::gzip(&tar)], ("linux", "amd64"));
    let out = work.path().join("out");
    let dst = format!("oci:{}:s", out.display());
    skiff.ok(&[
        "convert",
        "-q",
        &format!("oci:{}:v1", src_dir.display()),
        &dst,
    ]);
    // Corrupt the chunk blob (not the metadata, which fails before any write).
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("index.json")).unwrap()).unwrap();
    let manifest_digest = index["manifests"][0]["digest"].as_str().unwrap();
    let blob = |d: &str| out.join("blobs/sha256").join(&d[7..]);
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(blob(manifest_digest)).unwrap()).unwrap();
    let chunks = manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["mediaType"] == "application/vnd.oci.image.layer.skiff.blob.v1")
        .unwrap();
    common::flip_byte(&blob(chunks["digest"].as_str().unwrap()), 100);
    for existing in [false, true] {
        let dir = work.path().join(format!("rootfs-{existing}"));
        if existing {
            std::fs::create_dir(&dir).unwrap();
        }
        let (c, e) = skiff.fails(&["unpack", &dst, dir.to_str().unwrap()]);
        assert_eq!(c, 3, "a verification failure: {e}");
        let left: Vec<_> = std::fs::read_dir(&dir)
            .map(|d| d.flatten().map(|e| e.file_name()).collect())
            .unwrap_or_default();
        assert!(left.is_empty(), "a partial tree: {left:?}");
        assert_eq!(dir.exists(), existing);
    }
    let strays: Vec<_> = std::fs::read_dir(work.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("skiff-unpack"))
        .collect();
    assert!(strays.is_empty(), "{strays:?}");
}

/// The one image mount under ROOT/images, and its record's daemon pid.
fn image_mount(skiff: &Skiff) -> (std::path::PathBuf, Option<u32>) {
    let dirs: Vec<_> = std::fs::read_dir(skiff.root.path().join("images"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert_eq!(dirs.len(), 1, "{dirs:?}");
    let tree = dirs[0].join("tree");
    let pid = std::fs::read_dir(skiff.root.path().join("mounts"))
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read(e.path()).ok())
        .filter_map(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .find(|r| r["mountpoint"] == tree.to_str().unwrap())
        .and_then(|r| r["pid"].as_u64())
        .map(|p| p as u32);
    (tree, pid)
}

fn alive(pid: u32) -> bool {
    // SAFETY: signal 0 only checks that the process exists.
    unsafe { libc::kill(pid as i32, 0) == 0 }
}

#[test]
fn a_stale_mount_daemon_leaves_a_newer_mount_alone() {
    let skiff = Skiff::new();
    skiff.ok(&["run", "-d", "--name", "c1", layout(), "sleep", "300"]);
    let (tree, old) = image_mount(&skiff);
    let old = old.expect("a record for the first mount");
    let tree_arg = tree.to_str().unwrap();
    // c1's mount namespace keeps the first mount, and its daemon, alive.
    skiff.ok(&["umount", tree_arg]);
    skiff.ok(&["run", "--rm", layout(), "true"]);
    let (_, new) = image_mount(&skiff);
    let new = new.expect("a record for the second mount");
    assert_ne!(old, new);
    // Told to unmount, the old daemon finds its mount off the path and
    // leaves the path alone; it serves c1 until c1 is gone.
    // SAFETY: signalling a daemon this test's skiff started.
    assert_eq!(unsafe { libc::kill(old as i32, libc::SIGTERM) }, 0);
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert!(!skiff
        .ok(&["exec", "c1", "cat", "/etc/debian_version"])
        .is_empty());
    skiff.ok(&["rm", "-f", "c1"]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while alive(old) {
        assert!(
            std::time::Instant::now() < deadline,
            "the old daemon lives on"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    // The newer mount, its record and its socket are untouched...
    assert_eq!(image_mount(&skiff).1, Some(new), "the record is gone");
    assert!(alive(new));
    let stats: serde_json::Value = serde_json::from_str(&skiff.ok(&["stats", tree_arg])).unwrap();
    assert_eq!(stats["pid"].as_u64(), Some(new as u64), "{stats}");
    // ...and the next run uses it rather than starting a third daemon.
    let o = run(&skiff, &[], &["cat", "/etc/debian_version"]);
    assert_eq!(code(&o), 0, "{}", err(&o));
    assert_eq!(image_mount(&skiff).1, Some(new));
}

/// The recorded state of the container named `name`, read from disk.
fn state_of(skiff: &Skiff, name: &str) -> Option<serde_json::Value> {
    std::fs::read_dir(skiff.root.path().join("containers"))
        .ok()?
        .flatten()
        .filter_map(|e| std::fs::read(e.path().join("state.json")).ok())
        .filter_map(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .find(|r| r["name"] == name)
}

/// Waits until the container `name` runs; returns its record.
fn running_state(skiff: &Skiff, name: &str) -> serde_json::Value {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        if let Some(r) = state_of(skiff, name).filter(|r| r["status"] == "running") {
            return r;
        }
        assert!(std::time::Instant::now() < deadline, "{name} never ran");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

fn mounted_anywhere(needle: &str) -> bool {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .contains(needle)
}

fn wait_gone(pid: u32) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while alive(pid)
        && std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| !s.contains(") Z "))
    {
        assert!(std::time::Instant::now() < deadline, "pid {pid} lives on");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

#[test]
fn a_container_whose_supervisor_was_killed_is_cleaned_up_by_the_next_command() {
    let skiff = Skiff::new();
    // A foreground `run --rm` is its own container's supervisor.
    let mut fg = skiff
        .cmd()
        .args(["run", "--rm", "--name", "gone", layout(), "sleep", "300"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let r = running_state(&skiff, "gone");
    let id = r["id"].as_str().unwrap().to_string();
    let init = r["pid"].as_u64().unwrap() as u32;
    assert!(
        mounted_anywhere(&id),
        "the overlay is mounted while it runs"
    );
    fg.kill().unwrap();
    fg.wait().unwrap();
    wait_gone(init);
    let ps = skiff.ok(&["ps", "-a"]);
    assert!(!ps.contains("gone"), "{ps}");
    assert!(state_of(&skiff, "gone").is_none(), "its record is removed");
    assert!(!mounted_anywhere(&id), "its overlay is unmounted");
    // The name is free again.
    skiff.ok(&["run", "--rm", "--name", "gone", layout(), "true"]);

    // A detached container without --rm is kept, with its exit unknown.
    skiff.ok(&["run", "-d", "--name", "kept", layout(), "sleep", "300"]);
    let r = running_state(&skiff, "kept");
    let id = r["id"].as_str().unwrap().to_string();
    let init = r["pid"].as_u64().unwrap() as u32;
    let supervisor = parent_of(init);
    // SAFETY: killing the supervisor this test's skiff started.
    assert_eq!(unsafe { libc::kill(supervisor, libc::SIGKILL) }, 0);
    wait_gone(init);
    let ps = skiff.ok(&["ps", "-a"]);
    let line = ps.lines().find(|l| l.contains("kept")).expect(&ps);
    assert!(
        line.contains("Exited (unknown: its supervisor died)"),
        "{ps}"
    );
    assert_eq!(state_of(&skiff, "kept").unwrap()["status"], "exited");
    assert!(!mounted_anywhere(&id), "its overlay is unmounted");
    skiff.ok(&["rm", "kept"]);

    // A command that clears its own parent-death signal (prctl is syscall
    // 157, PR_SET_PDEATHSIG is 1) outlives its supervisor; the next
    // command kills it.
    skiff.ok(&[
        "run",
        "-d",
        "--rm",
        "--name",
        "stubborn",
        layout(),
        "perl",
        "-e",
        "syscall(157, 1, 0) == 0 or die; exec 'sleep', '300'",
    ]);
    let r = running_state(&skiff, "stubborn");
    let id = r["id"].as_str().unwrap().to_string();
    let init = r["pid"].as_u64().unwrap() as u32;
    std::thread::sleep(std::time::Duration::from_millis(300));
    let supervisor = parent_of(init);
    // SAFETY: as above.
    assert_eq!(unsafe { libc::kill(supervisor, libc::SIGKILL) }, 0);
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert!(alive(init), "the command outlived its supervisor");
    let ps = skiff.ok(&["ps", "-a"]);
    assert!(!ps.contains("stubborn"), "{ps}");
    wait_gone(init);
    assert!(!mounted_anywhere(&id), "its overlay is unmounted");
}

fn parent_of(pid: u32) -> i32 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    stat[stat.rfind(')').unwrap() + 2..]
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap()
}

/// A pty pair: (master, slave), both close-on-exec from the start, so
/// that no child another test spawns meanwhile keeps the master open.
fn open_pty() -> (std::os::fd::OwnedFd, std::os::fd::OwnedFd) {
    use std::os::fd::{AsRawFd, FromRawFd};
    use std::os::unix::fs::OpenOptionsExt;
    let master: std::os::fd::OwnedFd = std::fs::File::options()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOCTTY)
        .open("/dev/ptmx")
        .unwrap()
        .into();
    let unlock: libc::c_int = 0;
    // SAFETY: ioctls on a descriptor owned here; TIOCSPTLCK reads an int.
    let slave = unsafe {
        assert_eq!(
            libc::ioctl(master.as_raw_fd(), libc::TIOCSPTLCK, &unlock),
            0
        );
        libc::ioctl(
            master.as_raw_fd(),
            libc::TIOCGPTPEER,
            libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
        )
    };
    assert!(slave >= 0);
    // SAFETY: just returned, owned here alone.
    (master, unsafe { std::os::fd::OwnedFd::from_raw_fd(slave) })
}

#[test]
fn closing_the_terminal_hangs_up_the_container_and_rm_cleans_up() {
    use std::io::Read;
    use std::os::unix::process::CommandExt;
    let skiff = Skiff::new();
    let (master, slave) = open_pty();
    let mut cmd = skiff.cmd();
    cmd.args(["run", "-it", "--rm", "--name", "term", layout(), "sh"])
        .stdin(slave.try_clone().unwrap())
        .stdout(slave.try_clone().unwrap())
        .stderr(slave.try_clone().unwrap());
    // SAFETY: only async-signal-safe calls between fork and exec: skiff
    // becomes a session leader with the pty as its terminal, as a shell
    // in a terminal window is.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().unwrap();
    drop(slave);
    let r = running_state(&skiff, "term");
    let id = r["id"].as_str().unwrap().to_string();
    // The shell prompts once it reads its terminal.
    let mut reader = std::fs::File::from(master);
    let mut seen = Vec::new();
    let mut buf = [0u8; 256];
    while !String::from_utf8_lossy(&seen).contains('#') {
        let n = reader.read(&mut buf).unwrap();
        assert!(n > 0, "no prompt: {}", String::from_utf8_lossy(&seen));
        seen.extend_from_slice(&buf[..n]);
    }
    // The terminal window closes.
    drop(reader);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if std::time::Instant::now() > deadline {
            let _ = skiff.run(&["rm", "-f", "term"]);
            let _ = child.kill();
            panic!("skiff and the container outlived their terminal");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert!(
        status.code().is_some(),
        "skiff ended by a signal: {status:?}"
    );
    assert!(
        state_of(&skiff, "term").is_none(),
        "--rm removed the record"
    );
    assert!(!mounted_anywhere(&id), "its overlay is unmounted");
}

#[test]
fn inspect_tells_containers_from_images() {
    let skiff = Skiff::new();
    skiff.ok(&["run", "-d", "--name", "web", layout(), "sleep", "60"]);
    let c = skiff.json(&["inspect", "web"]);
    assert_eq!(c["name"], "web", "{c}");
    assert_eq!(c["running"], true, "{c}");
    assert_eq!(c["status"], "running", "{c}");
    assert_eq!(
        c["spec"]["process"]["args"],
        serde_json::json!(["sleep", "60"]),
        "{c}"
    );
    // Images still inspect as before; --type picks one kind.
    assert!(
        skiff.json(&["inspect", layout()])["chunks"]
            .as_u64()
            .unwrap()
            > 0
    );
    let (code, e) = skiff.fails(&["inspect", "--type", "container", layout()]);
    assert_eq!(code, 1, "{e}");
    // Neither a container nor an image on the node: an error at once,
    // never a registry lookup of library/NAME.
    let started = std::time::Instant::now();
    let (code, e) = skiff.fails(&["inspect", "nosuchthing"]);
    assert_eq!(code, 1, "{e}");
    assert!(
        e.contains("no container or image named \"nosuchthing\""),
        "{e}"
    );
    assert!(e.contains("docker.io/library/nosuchthing:latest"), "{e}");
    assert_eq!(e.trim().lines().count(), 1, "{e}");
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
    skiff.ok(&["stop", "-t", "0", "web"]);
    assert_eq!(skiff.json(&["inspect", "web"])["running"], false);
}

#[test]
fn stats_reads_each_containers_cgroup() {
    let skiff = Skiff::new();
    skiff.ok(&[
        "run",
        "-d",
        "--name",
        "busy",
        layout(),
        "sh",
        "-c",
        "while :; do :; done",
    ]);
    skiff.ok(&["run", "-d", "--name", "idle", layout(), "sleep", "60"]);
    running_state(&skiff, "busy");
    let all = skiff.json(&["stats", "--no-stream"]);
    let mut names: Vec<&str> = all
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["busy", "idle"], "{all}");
    let named = |n: &str| {
        all.as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == n)
            .unwrap()
            .clone()
    };
    let busy = &named("busy");
    assert!(busy["cpu_percent"].as_f64().unwrap() > 5.0, "{busy}");
    assert!(busy["memory_bytes"].as_u64().unwrap() > 0, "{busy}");
    assert!(busy["pids"].as_u64().unwrap() >= 1, "{busy}");
    assert!(
        busy["memory_limit_bytes"].as_u64().unwrap() > busy["memory_bytes"].as_u64().unwrap(),
        "{busy}"
    );
    let idle = &named("idle");
    assert!(idle["cpu_percent"].as_f64().unwrap() < busy["cpu_percent"].as_f64().unwrap());
    let table = skiff.ok(&["stats", "--no-stream", "idle"]);
    assert!(table.starts_with("CONTAINER ID"), "{table}");
    assert!(table.contains("idle") && !table.contains("busy"), "{table}");
    skiff.ok(&["rm", "-f", "busy", "idle"]);
    let (code, e) = skiff.fails(&["stats", "--no-stream", "busy"]);
    assert_eq!(code, 1, "{e}");
}

#[test]
fn detached_interactive_containers_keep_their_stdin() {
    let skiff = Skiff::new();
    skiff.ok(&["run", "-dit", "--name", "shell", layout(), "sh"]);
    skiff.ok(&["run", "-di", "--name", "cat", layout(), "cat"]);
    running_state(&skiff, "shell");
    running_state(&skiff, "cat");
    std::thread::sleep(std::time::Duration::from_millis(1000));
    let ps = skiff.ok(&["ps"]);
    assert!(
        ps.contains("shell") && ps.contains("cat"),
        "both wait for input: {ps}"
    );
    assert!(
        skiff.ok(&["logs", "shell"]).contains('#'),
        "the shell prompts on its terminal"
    );
    skiff.ok(&["rm", "-f", "shell", "cat"]);
}

#[test]
fn volumes_make_missing_host_directories_and_named_volumes_persist() {
    let skiff = Skiff::new();
    let host = tempfile::tempdir().unwrap();
    let missing = host.path().join("not/yet/here");
    let bind = format!("{}:/c", missing.display());
    let o = run(&skiff, &["-v", &bind], &["sh", "-c", "echo hi > /c/f"]);
    assert_eq!(code(&o), 0, "{}", err(&o));
    assert_eq!(std::fs::read_to_string(missing.join("f")).unwrap(), "hi\n");

    let o = run(
        &skiff,
        &["-v", "data:/c"],
        &["sh", "-c", "echo kept > /c/f"],
    );
    assert_eq!(code(&o), 0, "{}", err(&o));
    let o = run(&skiff, &["-v", "data:/d:ro"], &["cat", "/d/f"]);
    assert_eq!(common::containers::out(&o), "kept\n", "{}", err(&o));
    let ls = skiff.json(&["volume", "ls"]);
    assert_eq!(ls[0]["name"], "data", "{ls}");
    // A new named volume starts with the image's files at its destination.
    let o = run(&skiff, &["-v", "seeded:/etc/apt"], &["ls", "/etc/apt"]);
    assert!(
        common::containers::out(&o).contains("sources.list"),
        "{}",
        err(&o)
    );
    skiff.ok(&["volume", "rm", "seeded"]);
    // Not with a user namespace yet: refused at once, with what to do.
    let (code_, e) = skiff.fails(&[
        "run",
        "--rm",
        "--userns",
        "remap",
        "-v",
        "data:/c",
        layout(),
        "true",
    ]);
    assert_eq!(code_, 125);
    assert!(e.contains("named volumes do not work with --userns"), "{e}");
    // In use by a container, running or not: kept.
    skiff.ok(&["run", "--name", "user", "-v", "data:/c", layout(), "true"]);
    let (code_, e) = skiff.fails(&["volume", "rm", "data"]);
    assert_eq!(code_, 1);
    assert!(e.contains("used by container"), "{e}");
    skiff.ok(&["rm", "user"]);
    skiff.ok(&["volume", "rm", "data"]);
    assert_eq!(skiff.json(&["volume", "ls"]), serde_json::json!([]));
    let (code_, e) = skiff.fails(&["volume", "rm", "data"]);
    assert_eq!(code_, 1);
    assert!(e.contains("no volume named"), "{e}");
}

#[test]
fn etc_files_are_written_for_the_container_and_never_into_the_image() {
    let skiff = Skiff::new();
    let script =
        "cat /etc/hostname; getent hosts localhost; getent hosts myhost; cat /etc/resolv.conf";
    for extra in [&[][..], &["--read-only"][..], &["--userns", "remap"][..]] {
        let mut opts = vec!["--hostname", "myhost"];
        opts.extend_from_slice(extra);
        let o = run(&skiff, &opts, &["sh", "-c", script]);
        let text = common::containers::out(&o);
        assert_eq!(code(&o), 0, "{extra:?}: {}", err(&o));
        let mut lines = text.lines();
        assert_eq!(lines.next(), Some("myhost"), "{extra:?}: {text}");
        assert!(text.contains("localhost"), "{extra:?}: {text}");
        assert!(text.contains("127.0.1.1       myhost"), "{extra:?}: {text}");
        assert!(text.contains("no nameserver"), "{extra:?}: {text}");
        assert!(!text.contains("nameserver "), "{extra:?}: {text}");
    }
    let o = run(&skiff, &["--network", "host"], &["cat", "/etc/resolv.conf"]);
    assert_eq!(
        common::containers::out(&o),
        std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default()
    );
    // The image and the container's layer keep their own files.
    let skiff = Skiff::new();
    skiff.ok(&[
        "run",
        "--name",
        "kept",
        "--hostname",
        "other",
        layout(),
        "true",
    ]);
    let (tree, _) = image_mount(&skiff);
    assert_ne!(
        std::fs::read_to_string(tree.join("etc/hostname")).unwrap(),
        "other\n"
    );
    let id = state_of(&skiff, "kept").unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let upper = skiff
        .root
        .path()
        .join("containers")
        .join(&id)
        .join("upper/etc");
    // Their mount points are in the image mount's init layer: the
    // container's layer holds no /etc at all (no copy-up at each start).
    assert!(!upper.exists(), "{}", upper.display());
    skiff.ok(&["rm", "kept"]);
}

/// `skiff logs NAME`: (stdout, stderr).
fn logs_of(skiff: &Skiff, name: &str) -> (String, String) {
    let o = skiff.run(&["logs", name]);
    assert!(o.status.success(), "{}", err(&o));
    (common::containers::out(&o), err(&o))
}

#[test]
fn logs_keep_stdout_and_stderr_apart_for_every_container() {
    let skiff = Skiff::new();
    let script = "echo out1; sleep 0.2; echo err1 >&2; sleep 0.2; echo out2";
    // Foreground: the output reaches the terminal and the log.
    let o = skiff.run(&["run", "--name", "fg", layout(), "sh", "-c", script]);
    assert_eq!(common::containers::out(&o), "out1\nout2\n");
    assert_eq!(err(&o), "err1\n");
    assert_eq!(
        logs_of(&skiff, "fg"),
        ("out1\nout2\n".into(), "err1\n".into())
    );
    // Detached: the log alone.
    skiff.ok(&["run", "-d", "--name", "bg", layout(), "sh", "-c", script]);
    assert_eq!(skiff.ok(&["wait", "bg"]), "0\n");
    assert_eq!(
        logs_of(&skiff, "bg"),
        ("out1\nout2\n".into(), "err1\n".into())
    );
    // Printed back in the order written, when both streams meet.
    let mut both = std::process::Command::new("sh");
    both.arg("-c")
        .arg(format!("'{}' logs bg 2>&1", common::skiff_bin()))
        .env("SKIFF_ROOT", skiff.root.path());
    assert_eq!(common::sh(&mut both), "out1\nerr1\nout2\n");
    // A foreground --rm container whose output goes to a pipe keeps no log
    // (it is gone at its exit, its output is the pipe's): `logs` says so.
    let mut live = skiff
        .cmd()
        .args([
            "run",
            "--rm",
            "--name",
            "live",
            layout(),
            "sh",
            "-c",
            "echo hello; sleep 30",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    running_state(&skiff, "live");
    let (c, e) = skiff.fails(&["logs", "live"]);
    assert_eq!(c, 1);
    assert!(e.contains("foreground with --rm"), "{e}");
    skiff.ok(&["stop", "-t", "0", "live"]);
    live.wait().unwrap();
    assert!(state_of(&skiff, "live").is_none(), "--rm removed it");
    // Its output on a terminal, it keeps one while it runs.
    let (_master, slave) = open_pty();
    let mut on_terminal = skiff
        .cmd()
        .args([
            "run",
            "--rm",
            "--name",
            "term",
            layout(),
            "sh",
            "-c",
            "echo hello; sleep 30",
        ])
        .stdin(Stdio::null())
        .stdout(slave.try_clone().unwrap())
        .stderr(slave)
        .spawn()
        .unwrap();
    running_state(&skiff, "term");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while logs_of(&skiff, "term").0 != "hello\n" {
        assert!(std::time::Instant::now() < deadline, "no log while it runs");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    skiff.ok(&["stop", "-t", "0", "term"]);
    on_terminal.wait().unwrap();
    skiff.ok(&["rm", "fg", "bg"]);

    // A log is bounded: it rotates at max-size and keeps two files.
    let o = skiff.run(&[
        "run",
        "--name",
        "big",
        "--log-opt",
        "max-size=1M",
        layout(),
        "head",
        "-c",
        "5000000",
        "/dev/zero",
    ]);
    assert_eq!(o.stdout.len(), 5_000_000, "{}", err(&o));
    let id = state_of(&skiff, "big").unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let cdir = skiff.root.path().join("containers").join(&id);
    let kept: u64 = ["container.log", "container.log.1"]
        .iter()
        .map(|f| std::fs::metadata(cdir.join(f)).unwrap().len())
        .sum();
    assert!(kept <= 2 << 20, "{kept} bytes kept");
    let printed = skiff.run(&["logs", "big"]).stdout.len() as u64;
    assert!(printed > 1 << 20 && printed < kept, "{printed} of {kept}");
    let (c, e) = skiff.fails(&["run", "--rm", "--log-opt", "max-file=3", layout(), "true"]);
    assert_eq!(c, 125);
    assert!(e.contains("max-size"), "{e}");
}

#[test]
fn an_unconverted_image_gets_one_line_with_the_command_to_convert_it() {
    let skiff = Skiff::new();
    let source = format!("oci:{}:full", debian_image().display());
    let command = format!("skiff convert {source} {source}-skiff");
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("t");
    let target = target.to_str().unwrap();
    for args in [
        vec!["inspect", source.as_str()],
        vec!["check", source.as_str()],
        vec!["mount", source.as_str(), target],
        vec!["unpack", source.as_str(), target],
    ] {
        let (code, e) = skiff.fails(&args);
        assert_eq!(code, 1, "{args:?}: {e}");
        assert_eq!(e.trim_end().lines().count(), 1, "{args:?}: {e}");
        assert!(e.contains(&command), "{args:?}: {e}");
    }
}
