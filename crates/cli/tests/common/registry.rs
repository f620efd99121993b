//! A real `docker-registry` on 127.0.0.1, one per test.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Registry {
    pub addr: String,
    pub storage: PathBuf,
    child: Child,
    _dir: tempfile::TempDir,
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Whether the server at `addr` is the registry that sends `marker`.
fn is_ours(addr: &str, marker: &str) -> bool {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(addr) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if s.write_all(b"GET /v2/ HTTP/1.0\r\n\r\n").is_err() {
        return false;
    }
    let mut resp = String::new();
    let _ = s.read_to_string(&mut resp);
    resp.contains(marker)
}

impl Registry {
    pub fn start() -> Self {
        Self::start_with("")
    }

    /// Starts a registry; `extra` is appended to its YAML config. A port
    /// picked free can be taken by a concurrent test before the registry
    /// binds it, so a registry that exits at once is retried on another.
    pub fn start_with(extra: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let storage = dir.path().join("data");
        let log_path = dir.path().join("registry.log");
        for _ in 0..5 {
            let addr = format!("127.0.0.1:{}", free_port());
            // A header only this instance sends, to tell it from a server
            // that already held the port.
            let marker = format!("{}-{}", std::process::id(), free_port());
            let config = dir.path().join("config.yml");
            std::fs::write(
                &config,
                format!(
                    "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: false\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {addr}\n  headers:\n    X-Skiff-Test: [\"{marker}\"]\n{extra}",
                    storage.display()
                ),
            )
            .unwrap();
            let log = std::fs::File::create(&log_path).unwrap();
            let mut cmd = Command::new("docker-registry");
            // docker-registry reads REGISTRY_* variables as config overrides;
            // a test may set REGISTRY_AUTH_FILE (a client setting) in-process.
            for (k, _) in std::env::vars_os() {
                if k.to_string_lossy().starts_with("REGISTRY_") {
                    cmd.env_remove(k);
                }
            }
            let mut child = cmd
                .arg("serve")
                .arg(&config)
                .stdout(Stdio::from(log.try_clone().unwrap()))
                .stderr(Stdio::from(log))
                .spawn()
                .expect("docker-registry is installed (make test installs it)");
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                if is_ours(&addr, &marker) {
                    return Self {
                        addr,
                        storage,
                        child,
                        _dir: dir,
                    };
                }
                if child.try_wait().unwrap().is_some() {
                    break; // exited: most likely the port was taken; retry
                }
                if Instant::now() > deadline {
                    let _ = child.kill();
                    panic!(
                        "registry on {addr} did not start:\n{}",
                        std::fs::read_to_string(&log_path).unwrap_or_default()
                    );
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        panic!(
            "registry did not start after 5 attempts:\n{}",
            std::fs::read_to_string(&log_path).unwrap_or_default()
        );
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.storage.parent().unwrap().join("registry.log"))
            .unwrap_or_default()
    }

    /// The path of a blob in the registry's filesystem storage.
    pub fn blob_path(&self, digest: &str) -> PathBuf {
        let hex = digest.strip_prefix("sha256:").unwrap();
        self.storage
            .join("docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }

    /// `skopeo copy` from an OCI layout into this registry.
    pub fn push_layout(&self, layout: &str, repo_tag: &str) {
        super::sh(Command::new("skopeo").args([
            "copy",
            "--quiet",
            "--dest-tls-verify=false",
            layout,
            &format!("docker://{}/{repo_tag}", self.addr),
        ]));
    }

    pub fn reference(&self, repo_tag: &str) -> String {
        format!("{}/{repo_tag}", self.addr)
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
