//! `skiff run --sandbox wasm` (issue 19): a WASI module from an image,
//! compiled once per node by the static `skiff-wasm` runner (`make wasm`)
//! and run by it inside the namespace sandbox. The test module is C
//! (tests/wasm/probe.c) compiled here with Debian's clang for wasm32-wasi;
//! the bad modules are WAT.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::containers::{code, err, out};
use common::layers::{write_image_with_config, LayerBlob, Tar};
use common::wasm::{probe_module, wasi_image};
use common::Skiff;

/// The CNCF Wasm OCI artifact form of `module` in the OCI layout at
/// `dir`: config `application/vnd.wasm.config.v0+json`, the module as its
/// one `application/wasm` layer. Returns its reference.
fn wasm_artifact(dir: &Path, tag: &str, module: &[u8]) -> String {
    use common::layers::sha256;
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    let put = |bytes: &[u8]| {
        let d = sha256(bytes);
        std::fs::write(blobs.join(&d[7..]), bytes).unwrap();
        d
    };
    let layer = put(module);
    let config = serde_json::to_vec(&serde_json::json!({
        "created": "2026-12-07T00:00:00Z", "architecture": "wasm", "os": "wasip1",
        "layerDigests": [layer],
    }))
    .unwrap();
    let config_digest = put(&config);
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "artifactType": "application/vnd.wasm.module.v1+wasm",
        "config": {"mediaType": "application/vnd.wasm.config.v0+json", "digest": config_digest, "size": config.len()},
        "layers": [{"mediaType": "application/wasm", "digest": layer, "size": module.len(),
                    "annotations": {"org.opencontainers.image.title": "probe.wasm"}}],
    }))
    .unwrap();
    let manifest_digest = put(&manifest);
    let index = serde_json::json!({"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": manifest_digest,
        "size": manifest.len(), "annotations": {"org.opencontainers.image.ref.name": tag},
    }]});
    std::fs::write(dir.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
    format!("oci:{}:{tag}", dir.display())
}

/// Both forms Wasm users publish, pushed to a registry with skopeo, run
/// from it: the ordinary `wasi/wasm` image and the CNCF artifact (whose
/// module becomes `/module.wasm`, its entrypoint).
#[test]
fn both_published_forms_run_from_a_registry() {
    let registry = common::registry::Registry::start();
    let skiff = Skiff::new();
    let work = tempfile::tempdir().unwrap();
    let image = wasi_image(&work.path().join("image"), "wasi", probe_module());
    registry.push_layout(&image, "probe/image:1");
    let artifact = wasm_artifact(&work.path().join("artifact"), "wasm", probe_module());
    registry.push_layout(&artifact, "probe/artifact:1");

    let o = skiff.run(&[
        "run",
        "--rm",
        &registry.reference("probe/image:1"),
        "cat",
        "/etc/greeting.txt",
    ]);
    assert_eq!(out(&o), "from the image\n", "{}", err(&o));
    let o = skiff.run(&[
        "run",
        "--rm",
        &registry.reference("probe/artifact:1"),
        "args",
        "x",
    ]);
    assert_eq!(
        out(&o),
        "argv[0]=/module.wasm\nargv[1]=args\nargv[2]=x\n",
        "{}",
        err(&o)
    );
    let o = skiff.run(&[
        "run",
        "--rm",
        &registry.reference("probe/artifact:1"),
        "exit",
        "9",
    ]);
    assert_eq!(code(&o), 9, "{}", err(&o));
    // One module, one compiled form, whichever form carried it.
    assert_eq!(compiled_modules(&skiff).len(), 1);
}

/// The compiled modules under the node's cache: (path, inode, mtime).
fn compiled_modules(skiff: &Skiff) -> Vec<(PathBuf, u64, i64)> {
    use std::os::unix::fs::MetadataExt;
    let mut found = Vec::new();
    let Ok(engines) = std::fs::read_dir(skiff.root.path().join("wasm")) else {
        return found;
    };
    for engine in engines.flatten() {
        for e in std::fs::read_dir(engine.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            let p = e.path();
            if p.extension().is_some_and(|x| x == "cwasm") {
                let m = std::fs::metadata(&p).unwrap();
                found.push((p, m.ino(), m.mtime_nsec() + m.mtime() * 1_000_000_000));
            }
        }
    }
    found
}

#[test]
fn a_wasi_image_runs_its_module_with_its_args_env_files_and_exit_code() {
    let skiff = Skiff::new();
    let work = tempfile::tempdir().unwrap();
    let image = wasi_image(&work.path().join("layout"), "wasi", probe_module());
    let run = |opts: &[&str], args: &[&str]| {
        let mut a = vec!["run", "--rm"];
        a.extend_from_slice(opts);
        a.push(&image);
        a.extend_from_slice(args);
        // The host's own GREETING must not reach the module.
        skiff
            .cmd()
            .env("GREETING", "from-the-host")
            .args(&a)
            .output()
            .unwrap()
    };

    // Picked by the image's platform; the image's env, never the host's.
    let o = run(&[], &[]);
    assert_eq!(code(&o), 0, "{}", err(&o));
    assert!(
        out(&o).starts_with("hello from wasm, GREETING=from-the-image"),
        "{}",
        out(&o)
    );
    let o = run(&["--sandbox", "wasm", "-e", "GREETING=given"], &[]);
    assert!(out(&o).contains("GREETING=given"), "{}", out(&o));
    let o = run(&[], &["args", "one", "two words"]);
    assert_eq!(
        out(&o),
        "argv[0]=/probe.wasm\nargv[1]=args\nargv[2]=one\nargv[3]=two words\n"
    );
    // A compiled module is cached: a second run compiles nothing.
    let cached = compiled_modules(&skiff);
    assert_eq!(cached.len(), 1, "{cached:?}");

    // A file of the image; the root is read-only.
    let o = run(&[], &["cat", "/etc/greeting.txt"]);
    assert_eq!(out(&o), "from the image\n", "{}", err(&o));
    let o = run(&["--read-only"], &["cat", "/etc/greeting.txt"]);
    assert_eq!(out(&o), "from the image\n", "--read-only: {}", err(&o));
    let o = run(&[], &["put", "/etc/new.txt", "x"]);
    assert_eq!(code(&o), 1);
    assert!(out(&o).starts_with("denied /etc/new.txt"), "{}", out(&o));

    // Volumes, preopened with their modes.
    let rw = work.path().join("rw");
    let ro = work.path().join("ro");
    std::fs::create_dir_all(&rw).unwrap();
    std::fs::create_dir_all(&ro).unwrap();
    std::fs::write(ro.join("in.txt"), "from a volume\n").unwrap();
    let volumes = [
        "-v",
        &format!("{}:/data", rw.display()),
        "-v",
        &format!("{}:/input:ro", ro.display()),
    ];
    let o = run(&volumes, &["cat", "/input/in.txt"]);
    assert_eq!(out(&o), "from a volume\n", "{}", err(&o));
    let o = run(&volumes, &["put", "/data/out.txt", "written by wasm"]);
    assert_eq!(code(&o), 0, "{} {}", out(&o), err(&o));
    assert_eq!(
        std::fs::read_to_string(rw.join("out.txt")).unwrap(),
        "written by wasm"
    );
    let o = run(&volumes, &["put", "/input/out.txt", "x"]);
    assert_eq!(code(&o), 1, "{}", out(&o));
    assert!(!ro.join("out.txt").exists());

    // Outside the image's tree and the volumes: the container's /proc, a
    // climb out of a volume. The runner's own files are not there (in the
    // pool), or show only as the empty mount points of the container's
    // layer (a runner process of its own).
    let o = run(&volumes, &["cat", "/.skiff-wasm/module.cwasm"]);
    assert!(
        out(&o).is_empty() || out(&o).starts_with("denied /.skiff-wasm/module.cwasm: errno 44"),
        "{}",
        out(&o)
    );
    for path in ["/proc/self/environ", "/data/../../../../proc/1/cmdline"] {
        let o = run(&volumes, &["cat", path]);
        assert_eq!(code(&o), 1, "{path}: {}", out(&o));
        assert!(
            out(&o).starts_with(&format!("denied {path}: errno")),
            "{}",
            out(&o)
        );
    }

    // Exit codes: the module's own, and a trap's (128 + SIGKILL).
    let o = run(&[], &["exit", "7"]);
    assert_eq!(code(&o), 7, "{}", err(&o));
    let o = run(&[], &["trap"]);
    assert_eq!(code(&o), 137, "{}", err(&o));
    assert!(err(&o).contains("/probe.wasm: trapped"), "{}", err(&o));

    // Standard input, with -i.
    let mut child = skiff
        .cmd()
        .args(["run", "--rm", "-i", &image, "echo-stdin"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(b"a line\n").unwrap();
    }
    let o = child.wait_with_output().unwrap();
    assert_eq!(out(&o), "got a line\n", "{}", err(&o));

    // A terminal, with -t: the module's stdio is the container's pty.
    let o = run(&["-t"], &["tty"]);
    assert!(
        out(&o).contains("stdin tty, stdout tty"),
        "{} {}",
        out(&o),
        err(&o)
    );
    let o = run(&[], &["tty"]);
    assert_eq!(out(&o), "stdin not a tty, stdout not a tty\n");

    assert_eq!(
        compiled_modules(&skiff),
        cached,
        "a cached module was compiled again"
    );
}

/// Runs a command, killing it if it outlives `limit` (a hang fails the
/// test instead of stalling it).
trait OutputWithTimeout {
    fn output_with_timeout(&mut self, limit: Duration) -> std::process::Output;
}

impl OutputWithTimeout for Command {
    fn output_with_timeout(&mut self, limit: Duration) -> std::process::Output {
        use std::sync::atomic::{AtomicBool, Ordering};
        let child = self
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let pid = child.id() as i32;
        let hung = std::sync::Arc::new(AtomicBool::new(false));
        let (done, waited) = std::sync::mpsc::channel::<()>();
        let flag = hung.clone();
        let guard = std::thread::spawn(move || {
            if let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = waited.recv_timeout(limit) {
                flag.store(true, Ordering::SeqCst);
                // SAFETY: kill with integer arguments.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        });
        let o = child.wait_with_output().unwrap();
        drop(done);
        guard.join().unwrap();
        assert!(
            !hung.load(Ordering::SeqCst),
            "the command hung for {limit:?}"
        );
        o
    }
}

/// A WAT module as bytes.
fn wat(text: &str) -> Vec<u8> {
    wat::parse_str(text).unwrap()
}

#[test]
fn bad_modules_fail_clearly_and_a_corrupt_cache_entry_is_rebuilt() {
    let skiff = Skiff::new();
    let work = tempfile::tempdir().unwrap();
    let layout = work.path().join("layout");

    // Not a module at all, then a module whose body is cut short.
    let not_wasm = wasi_image(&layout, "not-wasm", b"#!/bin/sh\necho hi\n");
    let (c, e) = skiff.fails(&["run", "--rm", &not_wasm]);
    assert_eq!(c, 126, "{e}");
    assert!(e.contains("/probe.wasm is not a WebAssembly module"), "{e}");
    let mut cut = probe_module().to_vec();
    cut.truncate(cut.len() / 2);
    let cut = wasi_image(&layout, "cut", &cut);
    let (c, e) = skiff.fails(&["run", "--rm", &cut]);
    assert_eq!(c, 126, "{e}");
    assert!(
        e.contains("/probe.wasm is not a valid WebAssembly module"),
        "{e}"
    );

    // A command the image does not have.
    let good = wasi_image(&layout, "good", probe_module());
    let (c, e) = skiff.fails(&["run", "--rm", "--entrypoint", "/missing.wasm", &good]);
    assert_eq!(c, 127, "{e}");
    assert!(e.contains("/missing.wasm"), "{e}");

    // A FIFO or a device node as the command: refused without opening it
    // (a FIFO would block the open; a device's open acts on the host's
    // device), within a bounded time.
    for (tag, typeflag, major, minor) in [("fifo", b'6', 0, 0), ("device", b'3', 1, 3)] {
        let mut tar = Tar::new();
        let mut entry = common::layers::Entry::new("probe.wasm", typeflag);
        entry.major = major;
        entry.minor = minor;
        tar.entry(&entry);
        write_image_with_config(
            &layout,
            tag,
            &[LayerBlob::plain(&tar.finish())],
            ("wasi", "wasm"),
            serde_json::json!({"Entrypoint": ["/probe.wasm"]}),
        );
        let image = format!("oci:{}:{tag}", layout.display());
        let o = skiff
            .cmd()
            .args(["run", "--rm", &image])
            .output_with_timeout(Duration::from_secs(60));
        assert_eq!(code(&o), 126, "{tag}: {}", err(&o));
        assert!(
            err(&o).contains("/probe.wasm is not a regular file"),
            "{tag}: {}",
            err(&o)
        );
    }

    // A function skiff does not provide.
    let imports = wasi_image(
        &layout,
        "imports",
        &wat(r#"(module (import "env" "launch_missiles" (func)) (func (export "_start") call 0))"#),
    );
    let o = skiff.run(&["run", "--rm", &imports]);
    assert_eq!(code(&o), 126, "{}", err(&o));
    assert!(err(&o).contains("launch_missiles"), "{}", err(&o));

    // Memory past --memory: stopped, with the limit named.
    let o = skiff.run(&["run", "--rm", "--memory", "64m", &good, "grow"]);
    assert_ne!(code(&o), 0, "{}", out(&o));
    assert!(
        err(&o).contains("memory would grow past 50331648 bytes, the module's share of --memory"),
        "{} {}",
        out(&o),
        err(&o)
    );

    // A corrupt compiled module is compiled again, not loaded.
    let o = skiff.run(&["run", "--rm", &good, "exit", "5"]);
    assert_eq!(code(&o), 5, "{}", err(&o));
    let entries = compiled_modules(&skiff);
    let (entry, _, _) = entries
        .iter()
        .find(|(p, _, _)| std::fs::read(p).is_ok_and(|b| b.len() > 100_000))
        .expect("the probe's compiled module");
    let mut bytes = std::fs::read(entry).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(entry, &bytes).unwrap();
    let o = skiff.run(&["run", "--rm", &good, "exit", "5"]);
    assert_eq!(code(&o), 5, "{}", err(&o));
    assert_ne!(
        std::fs::read(entry).unwrap(),
        bytes,
        "the corrupt entry stayed"
    );
}

#[test]
fn a_running_module_is_stopped_by_skiff_stop() {
    let work = tempfile::tempdir().unwrap();
    let image = wasi_image(&work.path().join("layout"), "wasi", probe_module());
    stop_a_spinning_module(&image, true);
    stop_a_spinning_module(&image, false);
}

/// Runs the `spin` module detached, in the node's pool or (`pooled`
/// false) in a runner process of its own, checks the engine's confinement
/// from the host, and stops it.
fn stop_a_spinning_module(image: &str, pooled: bool) {
    let skiff = Skiff::new();
    let env: &[(&str, &str)] = if pooled {
        &[]
    } else {
        &[("SKIFF_WASM_POOL", "off")]
    };
    let id = skiff.ok_with_env(env, &["run", "-d", image, "spin"]);
    let id = id.trim();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !skiff.ok(&["logs", id]).contains("spinning") {
        assert!(Instant::now() < deadline, "the module never started");
        std::thread::sleep(Duration::from_millis(100));
    }
    // The engine runs confined as any container: its own mount and pid
    // namespaces, no_new_privs, Docker's seccomp policy. In the pool, the
    // pool's process holds it; otherwise its own runner process.
    let pool_pid = skiff.root.path().join("wasm/pool/pool.pid");
    let (pid, command) = if pooled {
        let pid = std::fs::read_to_string(&pool_pid).expect("the pool's pid");
        (
            pid.trim().parse::<i64>().unwrap(),
            &b"/.skiff-wasm/runner\0serve\0"[..],
        )
    } else {
        assert!(
            !pool_pid.exists(),
            "a pool started with SKIFF_WASM_POOL=off"
        );
        let ps = skiff.json(&["ps"]);
        (
            ps[0]["pid"].as_i64().expect("a pid"),
            &b"/.skiff-wasm/runner\0run\0"[..],
        )
    };
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |k: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(k))
            .map(str::trim)
            .unwrap_or_default()
            .to_string()
    };
    assert_eq!(field("NoNewPrivs:"), "1", "{status}");
    assert_eq!(field("Seccomp:"), "2", "{status}");
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
    assert!(
        cmdline.starts_with(command),
        "{}",
        String::from_utf8_lossy(&cmdline)
    );
    for ns in ["mnt", "pid", "net"] {
        assert_ne!(
            std::fs::read_link(format!("/proc/{pid}/ns/{ns}")).unwrap(),
            std::fs::read_link(format!("/proc/self/ns/{ns}")).unwrap(),
            "the engine shares the host's {ns} namespace"
        );
    }
    // SIGTERM interrupts the module at once (epoch interruption): no
    // SIGKILL after the timeout is needed.
    skiff.ok(&["stop", "-t", "20", id]);
    let ps = skiff.json(&["ps", "-a"]);
    let c = &ps.as_array().unwrap()[0];
    assert_eq!(c["exit_code"], 143, "{ps:#}");
    let logs = Command::new(common::skiff_bin())
        .env("SKIFF_ROOT", skiff.root.path())
        .args(["logs", id])
        .output()
        .unwrap();
    assert!(
        err(&logs).contains("stopped by signal 15"),
        "{}",
        err(&logs)
    );
    skiff.ok(&["rm", id]);
    if pooled {
        // The pool serves on, for the next module.
        assert!(
            std::fs::read_to_string(&pool_pid).is_ok_and(|p| std::path::Path::new(&format!(
                "/proc/{}",
                p.trim()
            ))
            .exists())
        );
    }
}

/// The node's pool: many modules in one process, reachable by root
/// alone, gone when idle with nothing left, and replaced after a kill -9
/// that ends its running modules as killed.
#[test]
fn the_pool_runs_modules_side_by_side_and_survives_kill_9() {
    let skiff = Skiff::new();
    let work = tempfile::tempdir().unwrap();
    let image = wasi_image(&work.path().join("layout"), "wasi", probe_module());
    let pool_dir = skiff.root.path().join("wasm/pool");
    let pool_pid = || {
        std::fs::read_to_string(pool_dir.join("pool.pid"))
            .ok()
            .and_then(|p| p.trim().parse::<i32>().ok())
    };
    let alive = |pid: i32| std::path::Path::new(&format!("/proc/{pid}")).exists();
    // Two sleeping modules at once, in one pool.
    let a = skiff.ok(&["run", "-d", &image, "sleep", "600"]);
    let b = skiff.ok(&["run", "-d", &image, "sleep", "600"]);
    let first = pool_pid().expect("a pool runs");
    assert!(alive(first));
    let ps = skiff.json(&["ps"]);
    assert_eq!(ps.as_array().unwrap().len(), 2, "{ps:#}");
    // Only root reaches the pool: its socket refuses the host's nobody.
    let socket = pool_dir.join("sock/pool.sock");
    let o = common::as_nobody(&[
        "python3",
        "-c",
        "import socket,sys\ns=socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)\ns.connect(sys.argv[1])\nprint('connected')",
        socket.to_str().unwrap(),
    ]);
    assert!(
        !o.status.success(),
        "nobody connected to the pool: {}",
        out(&o)
    );
    assert!(err(&o).contains("Permission denied"), "{}", err(&o));
    // One stops; the other sleeps on in the same pool.
    skiff.ok(&["stop", "-t", "20", a.trim()]);
    let ps = skiff.json(&["ps"]);
    assert_eq!(ps.as_array().unwrap().len(), 1, "{ps:#}");
    assert_eq!(pool_pid(), Some(first));
    // The pool killed with -9: the module still running ends as killed,
    // and the next start gets a new pool, which works.
    // SAFETY: kill(2) on the pool's pid, read just now.
    assert_eq!(unsafe { libc::kill(first, libc::SIGKILL) }, 0);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let ps = skiff.json(&["ps", "-a"]);
        let c = ps
            .as_array()
            .unwrap()
            .iter()
            .find(|c| b.trim().starts_with(c["id"].as_str().unwrap_or("-")))
            .cloned()
            .unwrap_or_default();
        if c["status"] == "exited" {
            assert_eq!(c["exit_code"], 137, "{ps:#}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the module outlived its pool: {ps:#}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let o = skiff.run(&["run", "--rm", &image, "cat", "/etc/greeting.txt"]);
    assert_eq!(out(&o), "from the image\n", "{}", err(&o));
    let second = pool_pid().expect("a new pool");
    assert_ne!(second, first);
    skiff.ok(&["rm", "-f", a.trim(), b.trim()]);
    // Idle, it leaves (here after 1 s), and its keeper removes its cgroup.
    let idle = Skiff::new();
    let o = idle.run(&[
        "--image-idle-timeout",
        "1",
        "run",
        "--rm",
        &image,
        "exit",
        "0",
    ]);
    assert_eq!(code(&o), 0, "{}", err(&o));
    let dir = idle.root.path().join("wasm/pool");
    let pid: i32 = std::fs::read_to_string(dir.join("pool.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    // Its cgroups, wherever this host keeps them (v2, or v1 and hybrid).
    let cgroup = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    let dirs: Vec<std::path::PathBuf> = cgroup
        .lines()
        .filter_map(|l| {
            let (_, rest) = l.split_once(':')?;
            let (controllers, path) = rest.split_once(':')?;
            let base = match controllers {
                "" if std::path::Path::new("/sys/fs/cgroup/unified").is_dir() => {
                    "/sys/fs/cgroup/unified".to_string()
                }
                "" => "/sys/fs/cgroup".to_string(),
                "pids" | "memory" => format!("/sys/fs/cgroup/{controllers}"),
                _ => return None,
            };
            Some(std::path::PathBuf::from(format!("{base}{path}")))
        })
        .filter(|d| d.to_string_lossy().contains("wasm-pool-"))
        .collect();
    assert!(
        !dirs.is_empty(),
        "the pool has no cgroup of its own: {cgroup}"
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while alive(pid) || dir.join("keeper.pid").exists() {
        assert!(Instant::now() < deadline, "the idle pool stayed");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(!dir.join("pool.pid").exists());
    for d in &dirs {
        assert!(!d.exists(), "the pool's cgroup {} stayed", d.display());
    }
}

/// Through containerd 1.6: `ctr run --runtime io.containerd.skiff-wasm.v2`
/// (the `skiff-wasm` runtime handler, a RuntimeClass's) runs a `wasi/wasm`
/// image that containerd pulled and unpacked itself; so does the plain
/// `io.containerd.skiff.v2`, seeing that the command is a module.
#[test]
fn containerd_runs_a_wasi_image_on_the_skiff_wasm_handler() {
    use common::containerd::Containerd;
    let registry = common::registry::Registry::start();
    let work = tempfile::tempdir().unwrap();
    let image = wasi_image(&work.path().join("image"), "wasi", probe_module());
    registry.push_layout(&image, "probe/image:1");
    let reference = registry.reference("probe/image:1");
    common::containerd::link_shim_for_kind("wasm");
    // No skiff snapshotter here: containerd's own overlayfs unpacks it.
    let containerd = Containerd::start(&work.path().join("no-snapshotter.sock"), "");
    containerd.ctr_ok(&[
        "image",
        "pull",
        "--plain-http",
        "--platform",
        "wasi/wasm",
        &reference,
    ]);
    let run = |id: &str, command: &[&str]| {
        let mut args = vec![
            "run",
            "--rm",
            "--platform",
            "wasi/wasm",
            "--runtime",
            "io.containerd.skiff-wasm.v2",
            &reference,
            id,
        ];
        args.extend_from_slice(command);
        containerd.ctr(&args)
    };
    let o = run("wasm-args", &["/probe.wasm", "args", "through containerd"]);
    assert!(
        o.status.success(),
        "{} {}\n{}",
        out(&o),
        err(&o),
        containerd.log()
    );
    assert_eq!(
        out(&o),
        "argv[0]=/probe.wasm\nargv[1]=args\nargv[2]=through containerd\n"
    );
    let o = run("wasm-file", &["/probe.wasm", "cat", "/etc/greeting.txt"]);
    assert_eq!(out(&o), "from the image\n", "{}", err(&o));
    let o = run("wasm-exit", &["/probe.wasm", "exit", "6"]);
    assert_eq!(o.status.code(), Some(6), "{}", err(&o));

    // The plain handler, io.containerd.skiff.v2, names no kind: the
    // command is a module, so the Wasm kind takes it (runwasi's rule).
    let o = containerd.ctr(&[
        "run",
        "--rm",
        "--platform",
        "wasi/wasm",
        "--runtime",
        "io.containerd.skiff.v2",
        &reference,
        "wasm-plain",
        "/probe.wasm",
        "args",
        "plain",
    ]);
    assert_eq!(
        out(&o),
        "argv[0]=/probe.wasm\nargv[1]=args\nargv[2]=plain\n",
        "{}\n{}",
        err(&o),
        containerd.log()
    );

    // Three modules of one pod (the CRI's pod annotation groups them in
    // one shim) run in the node's pool, held by the shim itself: no
    // process and no supervisor of their own; the shim's pid stands for
    // each.
    let ids = ["pod-a", "pod-b", "pod-c"];
    for id in ids {
        containerd.ctr_ok(&[
            "run",
            "-d",
            "--platform",
            "wasi/wasm",
            "--runtime",
            "io.containerd.skiff-wasm.v2",
            "--annotation",
            "io.kubernetes.cri.sandbox-id=wasm-pod",
            &reference,
            id,
            "/probe.wasm",
            "sleep",
            "600",
        ]);
    }
    let tasks = containerd.ctr_ok(&["task", "ls"]);
    let rows: Vec<Vec<&str>> = tasks
        .lines()
        .map(|l| l.split_whitespace().collect())
        .filter(|r: &Vec<&str>| r.first().is_some_and(|t| t.starts_with("pod-")))
        .collect();
    assert_eq!(rows.len(), 3, "{tasks}");
    assert!(
        rows.iter().all(|r| r[2] == "RUNNING" && r[1] == rows[0][1]),
        "{tasks}"
    );
    let shim: i32 = rows[0][1].parse().unwrap();
    let cmdline = std::fs::read(format!("/proc/{shim}/cmdline")).unwrap();
    assert!(
        String::from_utf8_lossy(&cmdline).contains("containerd-shim-skiff"),
        "task pid {shim} is not the shim: {}",
        String::from_utf8_lossy(&cmdline)
    );
    let supervisors = Command::new("pgrep")
        .args(["-f", "skiff-oci-supervisor.*\"id\":\"pod-"])
        .output()
        .unwrap();
    assert!(
        out(&supervisors).is_empty(),
        "supervisors: {}",
        out(&supervisors)
    );
    // One stops by its signal; the others sleep on.
    containerd.ctr_ok(&["task", "kill", "-s", "SIGTERM", "pod-a"]);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let tasks = containerd.ctr_ok(&["task", "ls"]);
        let status = |id: &str| {
            tasks
                .lines()
                .find(|l| l.starts_with(id))
                .and_then(|l| l.split_whitespace().nth(2))
                .unwrap_or_default()
                .to_string()
        };
        if status("pod-a") == "STOPPED" {
            assert_eq!(status("pod-b"), "RUNNING", "{tasks}");
            break;
        }
        assert!(Instant::now() < deadline, "pod-a did not stop: {tasks}");
        std::thread::sleep(Duration::from_millis(100));
    }
    for id in ids {
        let _ = containerd.ctr(&["task", "kill", "-s", "SIGKILL", id]);
    }
    for id in ids {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !containerd.ctr(&["task", "delete", id]).status.success() {
            assert!(Instant::now() < deadline, "task {id} was not deleted");
            std::thread::sleep(Duration::from_millis(100));
        }
        containerd.ctr_ok(&["container", "delete", id]);
    }
}

/// `skiff pull` of a `wasi/wasm` image compiles its module, so its first
/// run compiles nothing; `skiff images` says whether it is compiled; `skiff
/// rmi` of the last image that runs it removes it.
#[test]
fn pull_compiles_the_module_and_images_shows_it() {
    let skiff = Skiff::new();
    let work = tempfile::tempdir().unwrap();
    let image = wasi_image(&work.path().join("layout"), "wasi", probe_module());
    skiff.ok(&["pull", &image]);
    let images = skiff.json(&["images"]);
    let module = &images[0]["wasm_module"];
    assert_eq!(module["path"], "/probe.wasm", "{images:#}");
    assert_eq!(module["compiled"], true, "{images:#}");
    let table = skiff.ok(&["images"]);
    assert!(
        table.contains("WASM") && table.contains("compiled"),
        "{table}"
    );
    let cached = compiled_modules(&skiff);
    assert_eq!(cached.len(), 1);
    let o = skiff.run(&["run", "--rm", &image, "exit", "4"]);
    assert_eq!(code(&o), 4, "{}", err(&o));
    assert_eq!(
        compiled_modules(&skiff),
        cached,
        "the run compiled it again"
    );
    // With the cache emptied, the image's module is not compiled.
    std::fs::remove_file(&cached[0].0).unwrap();
    let images = skiff.json(&["images"]);
    assert_eq!(images[0]["wasm_module"]["compiled"], false, "{images:#}");
    assert!(skiff.ok(&["images"]).contains("not yet"));

    // skiff rmi of the last image that runs a module removes its compiled
    // form; while another image runs the same module, it stays.
    let copy = wasi_image(&work.path().join("copy"), "wasi", probe_module());
    skiff.ok(&["pull", &image]);
    skiff.ok(&["pull", &copy]);
    assert_eq!(compiled_modules(&skiff).len(), 1);
    skiff.ok(&["rmi", &image]);
    assert_eq!(compiled_modules(&skiff).len(), 1, "another image runs it");
    skiff.ok(&["rmi", &copy]);
    assert_eq!(compiled_modules(&skiff), Vec::new());
}

/// Adds `annotations` to the manifest tagged `tag` in the layout at `dir`.
fn annotate_manifest(dir: &Path, tag: &str, annotations: serde_json::Value) {
    use common::layers::sha256;
    let index_path = dir.join("index.json");
    let mut index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&index_path).unwrap()).unwrap();
    let entry = index["manifests"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == tag)
        .unwrap();
    let blob = |d: &str| dir.join("blobs/sha256").join(&d[7..]);
    let mut manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(blob(entry["digest"].as_str().unwrap())).unwrap())
            .unwrap();
    manifest["annotations"] = annotations;
    let bytes = serde_json::to_vec(&manifest).unwrap();
    let digest = sha256(&bytes);
    std::fs::write(blob(&digest), &bytes).unwrap();
    entry["digest"] = digest.into();
    entry["size"] = bytes.len().into();
    std::fs::write(&index_path, serde_json::to_vec(&index).unwrap()).unwrap();
}

/// crun's annotation: a `linux/amd64` image whose manifest says
/// `module.wasm.image/variant=compat` runs its `.wasm` entrypoint in the
/// Wasm sandbox; without it, the same image is a Linux image, and the
/// namespace sandbox cannot execute a module.
#[test]
fn crun_s_wasm_variant_annotation_picks_the_wasm_sandbox() {
    let skiff = Skiff::new();
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("layout");
    let write = |tag: &str| {
        let mut tar = Tar::new();
        tar.file("probe.wasm", probe_module());
        write_image_with_config(
            &dir,
            tag,
            &[LayerBlob::plain(&tar.finish())],
            ("linux", "amd64"),
            serde_json::json!({"Entrypoint": ["/probe.wasm"]}),
        );
        format!("oci:{}:{tag}", dir.display())
    };
    let compat = write("compat");
    annotate_manifest(
        &dir,
        "compat",
        serde_json::json!({"module.wasm.image/variant": "compat"}),
    );
    let o = skiff.run(&["run", "--rm", &compat, "args", "compat"]);
    assert_eq!(
        out(&o),
        "argv[0]=/probe.wasm\nargv[1]=args\nargv[2]=compat\n",
        "{}",
        err(&o)
    );
    let plain = write("plain");
    let o = skiff.run(&["run", "--rm", &plain, "args"]);
    assert_ne!(
        code(&o),
        0,
        "a module ran in the namespace sandbox: {}",
        out(&o)
    );
    // Named, the Wasm sandbox runs it whatever its platform says.
    let o = skiff.run(&["run", "--rm", "--sandbox", "wasm", &plain, "args", "named"]);
    assert_eq!(
        out(&o),
        "argv[0]=/probe.wasm\nargv[1]=args\nargv[2]=named\n",
        "{}",
        err(&o)
    );
}

/// Through the OCI runtime command, as Podman or containerd's runc shim
/// call it: a bundle whose command is a module runs in the Wasm sandbox
/// with no annotation (runwasi's rule), and one with crun's annotation
/// does too, while `io.skiff.sandbox=namespace` keeps it a Linux process,
/// which cannot execute a module.
#[test]
fn the_oci_runtime_command_runs_a_bundle_whose_command_is_a_module() {
    use common::oci::{config, unique, Oci};
    let oci = Oci::new();
    let work = tempfile::tempdir().unwrap();
    let rootfs = work.path().join("rootfs");
    std::fs::create_dir_all(rootfs.join("etc")).unwrap();
    std::fs::write(rootfs.join("probe.wasm"), probe_module()).unwrap();
    std::fs::write(rootfs.join("etc/greeting.txt"), "from the bundle\n").unwrap();
    let bundle = |name: &str, annotations: serde_json::Value, args: &[&str]| {
        let id = unique(name);
        let mut c = config(&id, args);
        c["root"]["path"] = rootfs.to_str().unwrap().into();
        c["annotations"] = annotations;
        (id, common::oci::bundle(work.path(), name, &c))
    };
    let (id, b) = bundle(
        "plain",
        serde_json::json!({}),
        &["/probe.wasm", "cat", "/etc/greeting.txt"],
    );
    let o = oci.run(&["run", "--bundle", b.to_str().unwrap(), &id]);
    assert_eq!(out(&o), "from the bundle\n", "{}", err(&o));
    let (id, b) = bundle(
        "crun",
        serde_json::json!({"run.oci.handler": "wasm"}),
        &["/probe.wasm", "exit", "3"],
    );
    let o = oci.run(&["run", "--bundle", b.to_str().unwrap(), &id]);
    assert_eq!(code(&o), 3, "{}", err(&o));
    // A FIFO as the command: looking at it must not block (it is not
    // opened), and it is no module, so it stays a Linux process, which
    // cannot execute it.
    let fifo = rootfs.join("fifo");
    let made = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: mkfifo with a NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(made.as_ptr(), 0o644) }, 0);
    let (id, b) = bundle("fifo", serde_json::json!({}), &["/fifo"]);
    let o = oci
        .cmd(&["run", "--bundle", b.to_str().unwrap(), &id])
        .output_with_timeout(Duration::from_secs(60));
    assert_ne!(code(&o), 0, "a FIFO ran: {}", out(&o));
    let _ = oci.run(&["delete", "--force", &id]);
    let (id, b) = bundle(
        "pinned",
        serde_json::json!({"io.skiff.sandbox": "namespace"}),
        &["/probe.wasm", "args"],
    );
    let o = oci.run(&["run", "--bundle", b.to_str().unwrap(), &id]);
    assert_ne!(code(&o), 0, "a module ran as a Linux process: {}", out(&o));
    let _ = oci.run(&["delete", "--force", &id]);
}

/// A WASI preview 2 command: a component exporting `wasi:cli/run`, whose
/// core code returns `ok` or `err`, or traps.
fn run_component(result: &str) -> Vec<u8> {
    let body = match result {
        "ok" => "i32.const 0",
        "err" => "i32.const 1",
        _ => "unreachable",
    };
    wat(&format!(
        r#"(component
  (core module $m (func (export "run") (result i32) {body}))
  (core instance $i (instantiate $m))
  (func $run (result (result)) (canon lift (core func $i "run")))
  (instance $cli (export "run" (func $run)))
  (export "wasi:cli/run@0.2.0" (instance $cli)))"#
    ))
}

/// Components (WASI preview 2) run too, compiled and cached as modules
/// are: `run`'s `ok` is exit code 0, its `err` 1, a trap 137.
#[test]
fn a_preview_2_component_runs_and_its_result_is_the_exit_code() {
    let skiff = Skiff::new();
    let work = tempfile::tempdir().unwrap();
    let layout = work.path().join("layout");
    for (result, want) in [("ok", 0), ("err", 1), ("trap", 137)] {
        let image = wasi_image(&layout, result, &run_component(result));
        let o = skiff.run(&["run", "--rm", &image]);
        assert_eq!(code(&o), want, "{result}: {}", err(&o));
    }
    assert_eq!(compiled_modules(&skiff).len(), 3);
}
