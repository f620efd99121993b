//! The VM kind with a directory for its root, as an OCI bundle gives one
//! (a snapshotter's mount): the guest mounts it over 9p, with the host's
//! owners, and writes go through to it unless the spec's root is
//! read-only. Boots the guest `make agent` built, under TCG here.

use std::fs::File;
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::Command;

use skiff_sandbox::{Lifecycle, Prepare, SandboxKind, Stdio};

fn cache() -> PathBuf {
    std::env::var_os("SKIFF_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var("HOME").unwrap()).join(".cache/skiff"))
}

/// The Debian test image, unpacked with umoci into `dir/rootfs`.
fn unpack_test_image(dir: &Path) -> PathBuf {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/images/build-debian.sh");
    let o = Command::new("bash").arg(script).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let layout = String::from_utf8(o.stdout).unwrap().trim().to_string();
    let rootfs = dir.join("rootfs");
    let o = Command::new("umoci")
        .args(["raw", "unpack", "--image", &format!("{layout}:full")])
        .arg(&rootfs)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    rootfs
}

/// A pipe: its reading end, then its writing end.
fn pipe() -> (OwnedFd, OwnedFd) {
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two new fds into our array.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    // SAFETY: both are new and ours alone.
    unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
}

/// The test's parent cgroup, in every hierarchy it was made in.
fn remove_parent_cgroups() {
    for h in std::fs::read_dir("/sys/fs/cgroup").unwrap().flatten() {
        let _ = std::fs::remove_dir(h.path().join("skiff-vm-test"));
    }
    let _ = std::fs::remove_dir("/sys/fs/cgroup/skiff-vm-test");
}

fn spec(script: &str, read_only: bool, id: &str) -> oci_spec::runtime::Spec {
    serde_json::from_value(serde_json::json!({
        "ociVersion": "1.0.2",
        "process": {
            "args": ["sh", "-c", script],
            "env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            "cwd": "/",
            "user": {"uid": 0, "gid": 0}
        },
        "root": {"path": "rootfs", "readonly": read_only},
        "hostname": "guest",
        "linux": {
            "cgroupsPath": format!("/skiff-vm-test/{id}"),
            "namespaces": [{"type": "pid"}, {"type": "network"}, {"type": "mount"}]
        }
    }))
    .unwrap()
}

/// Runs `script` in a guest whose root is `bundle/rootfs`; its exit code
/// and output.
fn run(
    kind: &dyn SandboxKind,
    bundle: &Path,
    script: &str,
    read_only: bool,
    id: &str,
) -> (i32, String) {
    let spec = spec(script, read_only, id);
    let (out_r, out_w) = pipe();
    let (err_r, err_w) = pipe();
    let mut sandbox = kind
        .prepare(Prepare {
            id,
            spec: &spec,
            bundle,
            stdio: Stdio::Relay {
                stdin: None,
                stdout: out_w,
                stderr: err_w,
                tap: None,
            },
            lifecycle: Lifecycle::Supervised,
            block_device: None,
            pod: None,
        })
        .unwrap();
    sandbox.start().unwrap();
    let reader = std::thread::spawn(move || std::io::read_to_string(File::from(out_r)).unwrap());
    let errors = std::thread::spawn(move || std::io::read_to_string(File::from(err_r)).unwrap());
    let exit = sandbox.wait().unwrap();
    sandbox.finish_output();
    sandbox.delete().unwrap();
    drop(sandbox);
    let out = reader.join().unwrap();
    let err = errors.join().unwrap();
    assert!(
        err.is_empty() || exit.code() != 0 || !err.contains("panic"),
        "{err}"
    );
    (exit.code(), out)
}

#[test]
fn a_directory_root_is_shared_with_the_guest_and_written_through_unless_read_only() {
    let dir = tempfile::tempdir().unwrap();
    let rootfs = unpack_test_image(dir.path());
    let state = tempfile::tempdir().unwrap();
    let kind = skiff_vm::VmKind::new(&cache(), state.path(), state.path());

    let script = "echo image=$(cat /etc/debian_version); \
         echo root=$(awk '$2 == \"/\" {print $3}' /proc/mounts); \
         echo owner=$(stat -c %U:%G /etc/passwd); \
         echo written > /from-guest; \
         exit 3";
    let (code, out) = run(&kind, dir.path(), script, false, "dirroot-rw");
    assert_eq!(code, 3, "{out}");
    let version = std::fs::read_to_string(rootfs.join("etc/debian_version")).unwrap();
    assert!(out.contains(&format!("image={}", version.trim())), "{out}");
    assert!(out.contains("root=9p"), "{out}");
    assert!(out.contains("owner=root:root"), "{out}");
    // Written through to the host's directory.
    assert_eq!(
        std::fs::read_to_string(rootfs.join("from-guest")).unwrap(),
        "written\n"
    );

    // A read-only root: writes fail in the guest and nothing appears.
    let (code, out) = run(
        &kind,
        dir.path(),
        "echo x > /read-only-write 2>/dev/null && echo wrote || echo refused",
        true,
        "dirroot-ro",
    );
    assert_eq!(code, 0, "{out}");
    assert_eq!(out.trim(), "refused");
    assert!(!rootfs.join("read-only-write").exists());
    remove_parent_cgroups();
}
