//! The engine as a library, as the snapshotter, the OCI runtime command
//! and the shim will use it: from a multithreaded process (this test
//! harness, with threads of its own besides), through helper processes
//! started from an explicit path, create then start, signal, wait.

mod common;

use std::path::PathBuf;

use common::containers::layout;
use skiff_engine::{Engine, EngineConfig, RunRequest, SupervisorOptions};

fn engine(root: &std::path::Path) -> Engine {
    Engine::new(EngineConfig {
        root: root.to_path_buf(),
        registry: Default::default(),
        helper: PathBuf::from(common::skiff_bin()),
        cache_size: skiff_engine::DEFAULT_CACHE_SIZE,
        image_idle_timeout: None,
    })
    .unwrap()
}

fn threads() -> usize {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

fn request(command: &[&str]) -> RunRequest {
    RunRequest {
        image: layout().to_string(),
        command: command.iter().map(|s| s.to_string()).collect(),
        detach: true,
        ..Default::default()
    }
}

#[test]
fn containers_run_from_a_multithreaded_process() {
    // Busy threads of our own, as a tokio runtime would have.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let workers: Vec<_> = (0..4)
        .map(|_| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    std::thread::sleep(std::time::Duration::from_millis(5));
                }
            })
        })
        .collect();
    assert!(threads() > 4);
    let root = tempfile::tempdir().unwrap();
    let engine = engine(root.path());
    let out = root.path().join("out.txt");

    // Created, not started; then started; its exit code comes back.
    let created = engine
        .create(&request(&["sh", "-c", "echo from the engine; exit 3"]))
        .unwrap();
    let sup = engine
        .spawn_supervisor(
            &created.record,
            &SupervisorOptions {
                wait_for_start: true,
                stdout: Some(out.clone()),
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(sup.state().unwrap(), "created");
    assert!(!out.exists() || std::fs::read_to_string(&out).unwrap().is_empty());
    sup.start().unwrap();
    assert!(sup.start().is_err(), "started twice");
    assert_eq!(sup.wait().unwrap(), 3);
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "from the engine\n");
    let rec = engine.find(&created.record.id).unwrap();
    assert_eq!(rec.exit_code, Some(3));

    // A running one, signalled through its supervisor.
    let created = engine.create(&request(&["sleep", "300"])).unwrap();
    let sup = engine
        .spawn_supervisor(&created.record, &SupervisorOptions::default())
        .unwrap();
    assert_eq!(sup.state().unwrap(), "running");
    sup.signal(libc::SIGKILL).unwrap();
    assert_eq!(sup.wait().unwrap(), 137);

    // A created one killed before its start: the supervisor gives up, and
    // nothing is left of it.
    let created = engine.create(&request(&["true"])).unwrap();
    let sup = engine
        .spawn_supervisor(
            &created.record,
            &SupervisorOptions {
                wait_for_start: true,
                ..Default::default()
            },
        )
        .unwrap();
    sup.signal(libc::SIGKILL).unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while engine.find(&created.record.id).is_ok() {
        assert!(
            std::time::Instant::now() < deadline,
            "the killed container stayed"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }

    // In this process, the namespace sandbox refuses with a clear error.
    let created = engine.create(&request(&["true"])).unwrap();
    let null = || -> std::os::fd::OwnedFd { std::fs::File::open("/dev/null").unwrap().into() };
    let e = engine
        .supervise(
            created.record.clone(),
            &created.spec,
            skiff_engine::Launch::Streams {
                stdin: None,
                stdout: null(),
                stderr: null(),
            },
            Default::default(),
        )
        .unwrap_err();
    assert!(e.to_string().contains("single-threaded"), "{e}");
    assert!(
        engine.find(&created.record.id).is_err(),
        "a failed start was kept"
    );

    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for w in workers {
        w.join().unwrap();
    }
    for r in engine.containers().unwrap() {
        let _ = engine.remove(&r.id, true);
    }
    for i in engine.images().unwrap() {
        let _ = engine.remove_image(&i.record.reference, true);
    }
}
