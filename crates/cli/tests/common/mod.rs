//! Shared support for skiff's integration tests: real registries, the real
//! Debian test image, OCI layouts built from tar layers, and tree comparison.
#![allow(dead_code)]

pub mod containerd;
pub mod containers;
pub mod images;
pub mod layers;
pub mod oci;
pub mod proxy;
pub mod registry;
pub mod trees;
pub mod wasm;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

/// The repository root. Cargo sets CARGO_MANIFEST_DIR at run time too; it
/// wins over the compile-time path, because a shared target directory may
/// hold a test binary built from another checkout of the same commit.
pub fn repo_root() -> PathBuf {
    let manifest_dir =
        std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").into());
    Path::new(&manifest_dir)
        .join("../..")
        .canonicalize()
        .unwrap()
}

/// The skiff binary under test: this build's, or SKIFF_TEST_BIN's (to
/// check that a new test fails on the code before its fix).
pub fn skiff_bin() -> String {
    std::env::var("SKIFF_TEST_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_skiff").to_string())
}

/// A `skiff` command with its own `--root`.
pub struct Skiff {
    pub root: tempfile::TempDir,
}

impl Skiff {
    pub fn new() -> Self {
        Self {
            root: tempfile::tempdir().unwrap(),
        }
    }

    /// A root whose sockets (ROOT/containers/ID/control.sock) are longer
    /// than a unix socket address holds, as under a deep temporary dir.
    pub fn with_deep_root() -> Self {
        Self {
            root: tempfile::Builder::new()
                .prefix("skiff-root-deeper-than-a-unix-socket-address-holds.")
                .tempdir()
                .unwrap(),
        }
    }

    pub fn cmd(&self) -> Command {
        let mut c = Command::new(skiff_bin());
        c.env("SKIFF_ROOT", self.root.path())
            .env_remove("SKIFF_LOG");
        c
    }

    /// Runs skiff; panics with its output unless it exits 0.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "skiff {args:?} failed ({:?}):\n{}\n{}",
            out.status.code(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// [`Skiff::ok`] with these variables set for skiff.
    pub fn ok_with_env(&self, env: &[(&str, &str)], args: &[&str]) -> String {
        let o = self
            .cmd()
            .envs(env.iter().copied())
            .args(args)
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "skiff {args:?} failed ({:?}):\n{}",
            o.status.code(),
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8(o.stdout).unwrap()
    }

    /// `skiff convert -q SOURCE TARGET --prefetch-trace TRACE`.
    pub fn convert_with_trace(&self, source: &str, target: &str, trace: &std::path::Path) {
        self.ok(&[
            "convert",
            "-q",
            source,
            target,
            "--prefetch-trace",
            trace.to_str().unwrap(),
        ]);
    }

    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut a = args.to_vec();
        a.push("--json");
        serde_json::from_str(&self.ok(&a)).unwrap()
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd().args(args).output().expect("running skiff")
    }

    /// Runs skiff expecting failure; returns (exit code, stderr).
    pub fn fails(&self, args: &[&str]) -> (i32, String) {
        let out = self.run(args);
        assert!(
            !out.status.success(),
            "skiff {args:?} unexpectedly succeeded:\n{}",
            String::from_utf8_lossy(&out.stdout)
        );
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

/// Containers and image mounts that `skiff run` left under the root would
/// outlive the test (and pin its temporary directory): clear them.
impl Drop for Skiff {
    fn drop(&mut self) {
        let root = self.root.path();
        if let Ok(entries) = std::fs::read_dir(root.join("containers")) {
            for e in entries.flatten() {
                let id = e.file_name().to_string_lossy().into_owned();
                let _ = self.run(&["rm", "-f", &id]);
            }
        }
        if let Ok(entries) = std::fs::read_dir(root.join("images")) {
            for e in entries.flatten() {
                let tree = e.path().join("tree");
                let _ = self.run(&["umount", "--lazy", tree.to_str().unwrap()]);
                let block = e.path().join("block.sock");
                if block.exists() {
                    let _ = self.run(&["umount", block.to_str().unwrap()]);
                }
            }
        }
    }
}

/// Runs a command, panicking with its output on failure.
pub fn sh(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The real multi-layer Debian image (tags base, pkgs, full), built once by
/// `tests/images/build-debian.sh` and cached under ~/.cache/skiff.
pub fn debian_image() -> &'static Path {
    static IMAGE: OnceLock<PathBuf> = OnceLock::new();
    IMAGE.get_or_init(|| {
        let script = repo_root().join("tests/images/build-debian.sh");
        let out = sh(Command::new("bash").arg(script));
        PathBuf::from(out.trim().lines().last().unwrap())
    })
}

/// `umoci unpack` of an OCI layout image, as the reference tree.
pub fn umoci_unpack(image: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let bundle = dir.path().join("bundle");
    sh(Command::new("umoci")
        .args(["unpack", "--image", image])
        .arg(&bundle));
    (dir, bundle.join("rootfs"))
}

/// Flips one byte of a file at `offset`.
pub fn flip_byte(path: &Path, offset: u64) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, offset).unwrap();
    b[0] ^= 0x5a;
    f.write_all_at(&b, offset).unwrap();
}

/// A `skiff mount --daemon`, unmounted when dropped.
pub struct Mounted<'a> {
    pub skiff: &'a Skiff,
    pub dir: PathBuf,
    _tmp: tempfile::TempDir,
}

impl<'a> Mounted<'a> {
    pub fn new(skiff: &'a Skiff, image: &str, extra: &[&str]) -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("mnt");
        let mut args = vec!["mount", "--daemon", image, dir.to_str().unwrap()];
        args.extend_from_slice(extra);
        skiff.ok(&args);
        Self {
            skiff,
            dir,
            _tmp: tmp,
        }
    }

    pub fn stats(&self) -> serde_json::Value {
        serde_json::from_str(&self.skiff.ok(&["stats", self.dir.to_str().unwrap()])).unwrap()
    }

    /// The daemon's pid, from the mount record.
    pub fn pid(&self) -> i32 {
        self.stats()["pid"].as_i64().unwrap() as i32
    }
}

impl Drop for Mounted<'_> {
    fn drop(&mut self) {
        let _ = self
            .skiff
            .run(&["umount", "--lazy", self.dir.to_str().unwrap()]);
    }
}

/// Runs `args` as the host's `nobody`, with no capabilities and no groups.
/// Through a shell: setpriv makes its own execve still holding root's
/// capabilities (they drop at that exec), so a path it execs directly is
/// resolved with them; the shell runs as nobody proper.
pub fn as_nobody(args: &[&str]) -> std::process::Output {
    Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
            "--bounding-set=-all",
            "--",
            "sh",
            "-c",
            "exec \"$@\"",
            "sh",
        ])
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("running setpriv (util-linux)")
}
