//! `skiff-oci` where users meet it: Podman (`podman --runtime`, through
//! conmon) and containerd's runc shim with skiff-oci as its runc binary
//! (`ctr run --runc-binary`, the shim's `BinaryName`), over real services
//! (Debian's podman 4.3 and containerd 1.6, the docker-registry).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::containerd::PulledNode;
use common::debian_image;
use common::oci::{unique, Oci};
use common::registry::Registry;

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Podman with storage of the test's own, skiff-oci as its runtime, and
/// the options this machine needs (MACHINE.md: its NOFILE hard limit).
struct Podman {
    dir: tempfile::TempDir,
    runtime: PathBuf,
}

impl Podman {
    fn new(runtime: &Path) -> Self {
        Podman {
            dir: tempfile::tempdir().unwrap(),
            runtime: runtime.to_path_buf(),
        }
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let d = self.dir.path();
        let mut c = Command::new("podman");
        c.arg("--root")
            .arg(d.join("storage"))
            .arg("--runroot")
            .arg(d.join("run"))
            .arg("--tmpdir")
            .arg(d.join("tmp"))
            .arg("--runtime")
            .arg(&self.runtime)
            .args(["--cgroup-manager", "cgroupfs", "--events-backend", "file"])
            .args(args);
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().unwrap()
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        let _ = self.run(&["rm", "--all", "--force", "--time", "0"]);
        let _ = self.run(&["system", "reset", "--force"]);
    }
}

const RUN_OPTS: &[&str] = &[
    "--tls-verify=false",
    "--network",
    "none",
    "--ulimit",
    "nofile=20000:20000",
    "--ulimit",
    "nproc=4096:4096",
];

#[test]
fn podman_runs_containers_on_skiff_oci() {
    let registry = Registry::start();
    registry.push_layout(
        &format!("oci:{}:full", debian_image().display()),
        "deb:plain",
    );
    let image = registry.reference("deb:plain");
    let oci = Oci::new();
    let podman = Podman::new(&oci.bin);
    let pulled = podman.run(&["pull", "--tls-verify=false", "-q", &image]);
    assert!(pulled.status.success(), "{}", text(&pulled));

    let data = tempfile::tempdir().unwrap();
    std::fs::write(data.path().join("in.txt"), "from the host").unwrap();
    let volume = format!("{}:/data", data.path().display());
    let mut args = vec!["run", "--rm", "-e", "GREETING=hello", "-v", &volume];
    args.extend_from_slice(RUN_OPTS);
    args.extend_from_slice(&[
        &image,
        "sh",
        "-c",
        "echo $GREETING; cat /data/in.txt; echo; echo out > /data/out.txt; exit 5",
    ]);
    let o = podman.run(&args);
    assert_eq!(o.status.code(), Some(5), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("hello") && out.contains("from the host"),
        "{}",
        text(&o)
    );
    assert_eq!(
        std::fs::read_to_string(data.path().join("out.txt")).unwrap(),
        "out\n"
    );

    // The VM sandbox, picked by the bundle's annotation: the same run in a
    // guest of its own kernel, with Podman's /etc/hosts and the volume.
    let mut args = vec![
        "run",
        "--rm",
        "--annotation",
        "io.skiff.sandbox=vm",
        "-v",
        &volume,
    ];
    args.extend_from_slice(RUN_OPTS);
    args.extend_from_slice(&[
        &image,
        "sh",
        "-c",
        "echo kernel=$(uname -r); cat /data/in.txt; echo; grep -c localhost /etc/hosts; \
         echo seccomp=$(awk '/^Seccomp:/ {print $2}' /proc/self/status); exit 6",
    ]);
    let o = podman.run(&args);
    assert_eq!(o.status.code(), Some(6), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("kernel=6.1.") && out.contains("from the host"),
        "{}",
        text(&o)
    );
    // Podman asks for no no_new_privs: the filter is loaded while the
    // process may still (runc's order), and holds.
    assert!(out.contains("seccomp=2"), "{}", text(&o));

    // A command that is not there: Podman's 127.
    let mut args = vec!["run", "--rm"];
    args.extend_from_slice(RUN_OPTS);
    args.extend_from_slice(&[&image, "no-such-command"]);
    let o = podman.run(&args);
    assert_eq!(o.status.code(), Some(127), "{}", text(&o));

    // Detached, then podman exec, stop and rm.
    let name = unique("podexec");
    let mut args = vec!["run", "-d", "--name", &name];
    args.extend_from_slice(RUN_OPTS);
    args.extend_from_slice(&[&image, "sleep", "1000"]);
    let o = podman.run(&args);
    assert!(o.status.success(), "{}", text(&o));
    let e = podman.run(&[
        "exec",
        "-e",
        "X=7",
        &name,
        "sh",
        "-c",
        "echo exec $X; exit 3",
    ]);
    assert_eq!(e.status.code(), Some(3), "{}", text(&e));
    assert!(
        String::from_utf8_lossy(&e.stdout).contains("exec 7"),
        "{}",
        text(&e)
    );
    let ps = podman.run(&["ps", "--format", "{{.Names}} {{.Status}}"]);
    assert!(
        String::from_utf8_lossy(&ps.stdout).contains(&name),
        "{}",
        text(&ps)
    );
    // The container is skiff-oci's: its state is under skiff-oci's root.
    let listed = Command::new(&oci.bin)
        .args(["list", "-q"])
        .output()
        .unwrap();
    assert!(
        !String::from_utf8_lossy(&listed.stdout).trim().is_empty(),
        "skiff-oci lists podman's container: {}",
        text(&listed)
    );
    let o = podman.run(&["rm", "--force", "--time", "0", &name]);
    assert!(o.status.success(), "{}", text(&o));
}

#[test]
fn containerds_runc_shim_runs_skiff_oci_as_its_binary() {
    let node = PulledNode::start();
    let containerd = &node.containerd;
    let image = node.image.clone();
    let oci = Oci::new();
    let binary = oci.bin.to_str().unwrap().to_string();
    let out = tempfile::tempdir().unwrap();
    let mount = format!(
        "type=bind,src={},dst=/out,options=rbind:rw",
        out.path().display()
    );

    // Output and exit code, through the lazily served skiff image.
    let id = unique("shim");
    let o = containerd.ctr(&[
        "run",
        "--rm",
        "--runc-binary",
        &binary,
        "--snapshotter",
        "skiff",
        "--mount",
        &mount,
        &image,
        &id,
        "sh",
        "-c",
        "echo ran-on-skiff-oci > /out/stdout; exit 4",
    ]);
    assert_eq!(
        o.status.code(),
        Some(4),
        "{}\n{}",
        text(&o),
        containerd.log()
    );
    assert_eq!(
        std::fs::read_to_string(out.path().join("stdout")).unwrap(),
        "ran-on-skiff-oci\n"
    );

    // A task that keeps running: exec, metrics, kill.
    let id = unique("shimtask");
    let o = containerd.ctr(&[
        "run",
        "-d",
        "--runc-binary",
        &binary,
        "--snapshotter",
        "skiff",
        "--mount",
        &mount,
        &image,
        &id,
        "sleep",
        "1000",
    ]);
    assert!(o.status.success(), "{}\n{}", text(&o), containerd.log());
    let e = containerd.ctr(&[
        "task",
        "exec",
        "--exec-id",
        "e1",
        &id,
        "sh",
        "-c",
        "echo exec-ok > /out/exec; exit 6",
    ]);
    assert_eq!(e.status.code(), Some(6), "{}", text(&e));
    assert_eq!(
        std::fs::read_to_string(out.path().join("exec")).unwrap(),
        "exec-ok\n"
    );
    let m = containerd.ctr(&["task", "metrics", &id]);
    assert!(m.status.success(), "{}", text(&m));
    let metrics = String::from_utf8_lossy(&m.stdout);
    assert!(
        metrics.contains("memory") || metrics.contains("pids"),
        "{metrics}"
    );
    // Its state is skiff-oci's, under the shim's runc root.
    let state = Command::new(&oci.bin)
        .args(["--root", "/run/containerd/runc/default", "state", &id])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&state.stdout).contains("\"running\""),
        "{}",
        text(&state)
    );
    containerd.ctr_ok(&["task", "kill", "-s", "KILL", &id]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let t = containerd.ctr(&["task", "ls"]);
        let listing = String::from_utf8_lossy(&t.stdout).into_owned();
        let line = listing.lines().find(|l| l.starts_with(&id)).unwrap_or("");
        if line.contains("STOPPED") {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{listing}");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    containerd.ctr_ok(&["task", "delete", &id]);
    containerd.ctr_ok(&["container", "delete", &id]);
}
