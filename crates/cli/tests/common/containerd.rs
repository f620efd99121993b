//! A real containerd (Debian's 1.6) for a test: its own root, state and
//! socket under a temporary directory, with `skiff snapshotter` as the
//! proxy plugin `skiff`, and the `ctr` that talks to it.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use super::Skiff;

pub struct Containerd {
    pub dir: tempfile::TempDir,
    child: Child,
}

/// A socket path short enough for sun_path, whatever TMPDIR is.
fn short_dir(prefix: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in("/tmp")
        .unwrap()
}

impl Containerd {
    /// Starts containerd with `[proxy_plugins.skiff]` at `snapshotter`'s
    /// socket; `extra` is appended to its config.
    pub fn start(snapshotter: &Path, extra: &str) -> Self {
        let dir = short_dir("ctd.");
        let d = dir.path();
        let config = format!(
            r#"version = 2
root = "{root}"
state = "{state}"
{disabled}
[grpc]
  address = "{sock}"
[ttrpc]
  address = "{sock}.ttrpc"
[proxy_plugins.skiff]
  type = "snapshot"
  address = "{snap}"
{extra}"#,
            root = d.join("root").display(),
            state = d.join("state").display(),
            sock = d.join("containerd.sock").display(),
            snap = snapshotter.display(),
            disabled = if extra.contains("io.containerd.grpc.v1.cri") {
                ""
            } else {
                r#"disabled_plugins = ["io.containerd.grpc.v1.cri"]"#
            },
        );
        std::fs::write(d.join("config.toml"), config).unwrap();
        let log = std::fs::File::create(d.join("containerd.log")).unwrap();
        // containerd finds runtime v2 shims on its PATH: skiff's is built
        // beside the skiff binary.
        let bin_dir = Path::new(&super::skiff_bin())
            .parent()
            .unwrap()
            .to_path_buf();
        let path = format!(
            "{}:{}",
            bin_dir.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let child = Command::new("containerd")
            .env("PATH", path)
            .arg("--config")
            .arg(d.join("config.toml"))
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("containerd is installed (make test installs it)");
        let c = Containerd { dir, child };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !c.ctr(&["version"]).status.success() {
            assert!(
                Instant::now() < deadline,
                "containerd did not start:\n{}",
                c.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        c
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("containerd.sock")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("containerd.log")).unwrap_or_default()
    }

    /// `ctr` against this containerd.
    pub fn ctr(&self, args: &[&str]) -> Output {
        Command::new("ctr")
            .arg("-a")
            .arg(self.socket())
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    /// `ctr` that must succeed; returns its stdout.
    pub fn ctr_ok(&self, args: &[&str]) -> String {
        let o = self.ctr(args);
        assert!(
            o.status.success(),
            "ctr {args:?} failed:\n{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// `ctr run --rm --snapshotter skiff IMAGE ID sh -c SCRIPT`; returns
    /// what the script printed. Its output goes to a file on a bind
    /// mount: ctr's own copy of a container's stdout can lose the end
    /// when the task exits under load.
    pub fn run_sh(&self, image: &str, id: &str, script: &str) -> String {
        let out = tempfile::tempdir().unwrap();
        let mount = format!(
            "type=bind,src={},dst=/skiff-out,options=rbind:rw",
            out.path().display()
        );
        let wrapped = format!("( {script} ) > /skiff-out/stdout");
        self.ctr_ok(&[
            "run",
            "--rm",
            "--snapshotter",
            "skiff",
            "--mount",
            &mount,
            image,
            id,
            "sh",
            "-c",
            &wrapped,
        ]);
        std::fs::read_to_string(out.path().join("stdout")).unwrap()
    }

    /// Waits until containerd reaches the snapshotter again: after a
    /// restart it redials a proxy plugin with a backoff of up to ~3 s.
    pub fn wait_for_snapshotter(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let o = self.ctr(&["snapshots", "--snapshotter", "skiff", "ls"]);
            if o.status.success() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "containerd did not reconnect to the snapshotter: {}",
                String::from_utf8_lossy(&o.stderr)
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The names of the skiff snapshotter's snapshots, as containerd
    /// lists them, sorted.
    pub fn snapshots(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .ctr_ok(&["snapshots", "--snapshotter", "skiff", "ls"])
            .lines()
            .skip(1)
            .filter_map(|l| l.split_whitespace().next().map(str::to_string))
            .collect();
        v.sort();
        v
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        // Tasks left by a failed test: their shims outlive containerd.
        let namespaces = self.ctr(&["namespaces", "ls", "-q"]);
        for ns in String::from_utf8_lossy(&namespaces.stdout).lines() {
            let tasks = self.ctr(&["-n", ns, "task", "ls", "-q"]);
            for id in String::from_utf8_lossy(&tasks.stdout).lines() {
                let _ = self.ctr(&["-n", ns, "task", "kill", "-s", "KILL", id]);
                std::thread::sleep(Duration::from_millis(200));
                let _ = self.ctr(&["-n", ns, "task", "rm", "-f", id]);
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        detach_mounts_under(self.dir.path());
    }
}

/// `skiff snapshotter` on its own socket, with a root of its own.
pub struct Snapshotter {
    pub skiff: Skiff,
    pub dir: tempfile::TempDir,
    pub metrics_port: u16,
    child: Option<Child>,
}

impl Snapshotter {
    pub fn start() -> Self {
        let mut s = Snapshotter {
            skiff: Skiff::new(),
            dir: short_dir("snap."),
            metrics_port: super::registry::free_port(),
            child: None,
        };
        s.restart();
        s
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("skiff.sock")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("snapshotter.log")).unwrap_or_default()
    }

    /// (Re)starts the process on the same root and socket.
    pub fn restart(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("snapshotter.log"))
            .unwrap();
        let child = self
            .skiff
            .cmd()
            .env("SKIFF_LOG", "info")
            .args(["snapshotter", "--address"])
            .arg(self.socket())
            .arg("--metrics-address")
            .arg(format!("127.0.0.1:{}", self.metrics_port))
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap();
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::os::unix::net::UnixStream::connect(self.socket()).is_err() {
            assert!(
                Instant::now() < deadline,
                "the snapshotter did not start:\n{}",
                self.log()
            );
            if let Some(Some(status)) = self.child.as_mut().map(|c| c.try_wait().unwrap()) {
                panic!("the snapshotter exited ({status}):\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// One scrape of its metrics endpoint.
    pub fn metrics(&self) -> String {
        use std::io::{Read, Write};
        let mut c = std::net::TcpStream::connect(("127.0.0.1", self.metrics_port)).unwrap();
        c.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").unwrap();
        let mut s = String::new();
        c.read_to_string(&mut s).unwrap();
        s
    }

    /// The value of one metric without labels.
    pub fn metric(&self, name: &str) -> u64 {
        let text = self.metrics();
        text.lines()
            .find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(' ')))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no metric {name} in:\n{text}"))
    }

    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// `skiff snapshotter pull` into `containerd`.
    pub fn pull(&self, containerd: &Containerd, image: &str) -> Output {
        self.skiff
            .cmd()
            .args(["snapshotter", "pull", image, "--containerd-address"])
            .arg(containerd.socket())
            .output()
            .unwrap()
    }
}

impl Drop for Snapshotter {
    fn drop(&mut self) {
        self.kill9();
        // The image mounts' daemons exit once their mounts are gone.
        detach_mounts_under(self.skiff.root.path());
    }
}

/// Detaches every mount under `dir`, deepest first.
pub fn detach_mounts_under(dir: &Path) {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let dir = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    let mut points: Vec<PathBuf> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(PathBuf::from)
        .filter(|p| p.starts_with(&dir))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    for p in points {
        let _ = Command::new("umount").arg("-l").arg(&p).status();
    }
}

/// A node with skiff's test image pulled lazily: the test registry holding
/// it, skiff snapshotter, and a containerd using both. Fields drop in
/// order, containerd first.
pub struct PulledNode {
    pub containerd: Containerd,
    pub snapshotter: Snapshotter,
    pub registry: super::registry::Registry,
    /// The image's reference in the registry.
    pub image: String,
}

impl PulledNode {
    pub fn start() -> Self {
        let registry = super::registry::Registry::start();
        let snapshotter = Snapshotter::start();
        let containerd = Containerd::start(&snapshotter.socket(), "");
        registry.push_layout(super::containers::layout(), "deb:skiff");
        let image = registry.reference("deb:skiff");
        let o = snapshotter.pull(&containerd, &image);
        assert!(
            o.status.success(),
            "pulling {image}: {}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        PulledNode {
            containerd,
            snapshotter,
            registry,
            image,
        }
    }
}

/// Makes `containerd-shim-skiff-KIND-v2`, the link to skiff's shim that the
/// runtime type `io.containerd.skiff-KIND.v2` runs, beside the shim.
pub fn link_shim_for_kind(kind: &str) {
    let shim = Path::new(&super::skiff_bin()).with_file_name("containerd-shim-skiff-v2");
    let link = shim.with_file_name(format!("containerd-shim-skiff-{kind}-v2"));
    match std::os::unix::fs::symlink(&shim, &link) {
        Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => panic!("{e}"),
        _ => {}
    }
}
