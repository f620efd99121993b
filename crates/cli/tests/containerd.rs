//! `skiff snapshotter` under a real containerd 1.6 (Debian's), with `ctr`
//! and the docker-registry on 127.0.0.1: lazy runs of skiff images, plain
//! OCI images through the same snapshotter, a `kill -9` and restart under
//! a running container, image removal with containerd's GC, and faults.

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::containerd::{Containerd, Snapshotter};
use common::containers::layout;
use common::layers::{LayerBlob, Tar};
use common::registry::Registry;
use common::{debian_image, sh};

/// A container ID no other test (or earlier run) uses: the runc shim
/// keeps its state under /run/containerd whatever containerd's state dir.
fn unique(name: &str) -> String {
    format!("{name}-{}-{}", std::process::id(), rand_suffix())
}

fn rand_suffix() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos()
}

/// The manifest of a layout image (`oci:DIR:TAG`).
fn layout_manifest(layout: &str) -> serde_json::Value {
    let rest = layout.strip_prefix("oci:").unwrap();
    let (dir, tag) = rest.rsplit_once(':').unwrap();
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(Path::new(dir).join("index.json")).unwrap()).unwrap();
    let desc = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == tag)
        .unwrap();
    let blob = |d: &str| {
        Path::new(dir)
            .join("blobs/sha256")
            .join(d.trim_start_matches("sha256:"))
    };
    serde_json::from_slice(&std::fs::read(blob(desc["digest"].as_str().unwrap())).unwrap()).unwrap()
}

/// The digests of a skiff manifest's data blobs.
fn data_blobs(manifest: &serde_json::Value) -> Vec<String> {
    manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l["mediaType"] == "application/vnd.oci.image.layer.skiff.blob.v1")
        .map(|l| l["digest"].as_str().unwrap().to_string())
        .collect()
}

/// Registry access-log lines of GETs of `digest`, with their status.
fn blob_gets(registry: &Registry, digest: &str) -> Vec<String> {
    registry
        .log()
        .lines()
        .filter(|l| l.contains("GET /v2/") && l.contains(&format!("/blobs/{digest} ")))
        .map(str::to_string)
        .collect()
}

fn all_blob_gets(registry: &Registry) -> usize {
    registry
        .log()
        .lines()
        .filter(|l| l.contains("\"GET /v2/") && l.contains("/blobs/"))
        .count()
}

fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

struct Node {
    registry: Registry,
    snapshotter: Snapshotter,
    containerd: Containerd,
}

fn node() -> Node {
    let registry = Registry::start();
    let snapshotter = Snapshotter::start();
    let containerd = Containerd::start(&snapshotter.socket(), "");
    Node {
        registry,
        snapshotter,
        containerd,
    }
}

impl Node {
    /// Pushes the shared skiff test image and pulls it into containerd.
    fn pull_skiff(&self, repo_tag: &str) -> String {
        self.registry.push_layout(layout(), repo_tag);
        let image = self.registry.reference(repo_tag);
        let o = self.snapshotter.pull(&self.containerd, &image);
        assert!(
            o.status.success(),
            "pull failed: {}\n{}",
            stderr(&o),
            self.snapshotter.log()
        );
        image
    }
}

#[test]
fn a_skiff_image_runs_lazily_through_ctr() {
    let n = node();
    let image = n.pull_skiff("deb:skiff");
    let manifest = layout_manifest(layout());
    let layers = manifest["layers"].as_array().unwrap().len();
    let o = n.snapshotter.pull(&n.containerd, &image);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).contains(&format!(
            "({layers} layers: 0 served lazily, {layers} already here)"
        )),
        "a second pull finds every layer: {}",
        stdout(&o)
    );
    assert_eq!(
        n.snapshotter.metric("skiff_snapshotter_lazy_layers_total"),
        layers as u64
    );

    let id = unique("lazy");
    let out = n.containerd.run_sh(
        &image,
        &id,
        "head -1 /etc/os-release; cat /etc/debian_version; echo written > /tmp/w; cat /tmp/w",
    );
    assert!(
        out.starts_with("PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\n"),
        "{out}"
    );
    assert!(
        out.lines().nth(1).is_some_and(|v| v.starts_with("12.")),
        "{out}"
    );
    assert!(
        out.ends_with("written\n"),
        "the container's layer is writable: {out}"
    );

    // Lazily: no data blob was downloaded whole, and some were read in ranges.
    let mut ranged = 0;
    for d in data_blobs(&manifest) {
        for line in blob_gets(&n.registry, &d) {
            assert!(
                !line.contains("\" 200 "),
                "data blob {d} downloaded whole: {line}"
            );
            ranged += line.contains("\" 206 ") as usize;
        }
    }
    assert!(
        ranged > 0,
        "the container read its files from the registry in ranges:\n{}",
        n.registry.log()
    );
    // containerd's content store holds the manifest and config only.
    let content = n.containerd.ctr_ok(&["content", "ls", "-q"]);
    for d in data_blobs(&manifest) {
        assert!(!content.contains(&d), "containerd fetched {d}:\n{content}");
    }
    assert_eq!(content.lines().count(), 2, "{content}");

    // The metrics endpoint covers the image mount too.
    let metrics = n.snapshotter.metrics();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("skiff_fetched_bytes_total{image=\"") && !l.ends_with(" 0")),
        "{metrics}"
    );
}

#[test]
fn the_snapshotter_socket_is_root_only() {
    let n = node();
    // Let others reach the directory, so the socket's own mode is tested.
    sh(Command::new("chmod")
        .arg("0755")
        .arg(n.snapshotter.dir.path()));
    let mode = std::fs::metadata(n.snapshotter.socket()).unwrap();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode.permissions()) & 0o777,
        0o600
    );
    let o = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "/usr/bin/python3", "-c"])
        .arg(format!(
            "import socket,sys\ns=socket.socket(socket.AF_UNIX)\ntry:\n  s.connect({:?})\nexcept PermissionError:\n  print('denied'); sys.exit(0)\nprint('connected')",
            n.snapshotter.socket().display().to_string()
        ))
        .output()
        .unwrap();
    assert_eq!(stdout(&o), "denied\n", "{}", stderr(&o));
}

#[test]
fn a_plain_oci_image_runs_through_the_same_snapshotter() {
    let n = node();
    // Debian's base layer, plus one that adds a file and deletes one.
    let base = layout_manifest(&format!("oci:{}:base", debian_image().display()));
    let layer = &base["layers"][0];
    let blob = std::fs::read(
        debian_image().join("blobs/sha256").join(
            layer["digest"]
                .as_str()
                .unwrap()
                .trim_start_matches("sha256:"),
        ),
    )
    .unwrap();
    let config: serde_json::Value = serde_json::from_slice(
        &std::fs::read(
            debian_image().join("blobs/sha256").join(
                base["config"]["digest"]
                    .as_str()
                    .unwrap()
                    .trim_start_matches("sha256:"),
            ),
        )
        .unwrap(),
    )
    .unwrap();
    let top = Tar::new()
        .dir("srv")
        .file("srv/hello.txt", b"hello from the top layer\n")
        .whiteout("etc", "issue.net")
        .finish();
    let dir = tempfile::tempdir().unwrap();
    common::layers::write_image(
        dir.path(),
        "two",
        &[
            LayerBlob {
                bytes: blob,
                media_type: layer["mediaType"].as_str().unwrap().to_string(),
                diff_id: config["rootfs"]["diff_ids"][0]
                    .as_str()
                    .unwrap()
                    .to_string(),
            },
            LayerBlob::gzip(&top),
        ],
        ("linux", "amd64"),
    );
    n.registry
        .push_layout(&format!("oci:{}:two", dir.path().display()), "plain:two");
    let image = n.registry.reference("plain:two");
    n.containerd.ctr_ok(&[
        "image",
        "pull",
        "--plain-http",
        "--snapshotter",
        "skiff",
        &image,
    ]);
    let id = unique("plain");
    let out = n.containerd.run_sh(&image, &id, "cat /srv/hello.txt; test -e /etc/issue.net && echo issue.net-still-there; head -1 /etc/os-release");
    assert_eq!(
        out,
        "hello from the top layer\nPRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\n"
    );
    // Never silent: both layers were counted as not lazy.
    assert_eq!(
        n.snapshotter
            .metric("skiff_snapshotter_not_lazy_layers_total"),
        2
    );
    assert!(
        n.snapshotter
            .log()
            .contains("not lazy: an ordinary OCI layer"),
        "{}",
        n.snapshotter.log()
    );

    let listed = n.snapshotter.skiff.ok(&["images"]);
    assert!(
        listed.contains("0 layers served lazily, 2 not lazy (ordinary OCI layers"),
        "skiff images shows the layers that were not lazy: {listed}"
    );
    // And a skiff image runs beside it on the same node.
    let skiff_image = n.pull_skiff("deb:skiff");
    let id = unique("beside");
    let out = n.containerd.run_sh(&skiff_image, &id, "cat /etc/hostname");
    assert!(!out.is_empty());
}

#[test]
fn running_containers_keep_reading_through_a_snapshotter_kill_and_restart() {
    let mut n = node();
    let image = n.pull_skiff("deb:skiff");
    let out_dir = tempfile::tempdir().unwrap();
    let id = unique("reader");
    // Reads every file under /usr once, one at a time (most of them cold,
    // fetched lazily), and counts them.
    let script = "find /usr -type f > /tmp/files; n=0; while read f; do \
        if cat \"$f\" > /dev/null; then n=$((n+1)); echo $n > /out/count.new; mv /out/count.new /out/count; \
        else echo \"$f\" >> /out/errors; fi; sleep 0.02; done < /tmp/files; echo done > /out/finished; sleep 600";
    n.containerd.ctr_ok(&[
        "run",
        "-d",
        "--snapshotter",
        "skiff",
        "--mount",
        &format!(
            "type=bind,src={},dst=/out,options=rbind:rw",
            out_dir.path().display()
        ),
        &image,
        &id,
        "sh",
        "-c",
        script,
    ]);
    let count = || -> u64 {
        std::fs::read_to_string(out_dir.path().join("count"))
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0)
    };
    wait_for(
        "the container to read files",
        Duration::from_secs(60),
        || count() >= 20,
    );
    let before = n.containerd.snapshots();

    n.snapshotter.kill9();
    let at_kill = count();
    wait_for(
        "reads while the snapshotter is dead",
        Duration::from_secs(60),
        || count() >= at_kill + 30,
    );
    let fetched_while_dead = all_blob_gets(&n.registry);

    n.snapshotter.restart();
    let at_restart = count();
    wait_for("reads after the restart", Duration::from_secs(60), || {
        count() >= at_restart + 30
    });
    let errors = std::fs::read_to_string(out_dir.path().join("errors")).unwrap_or_default();
    assert_eq!(errors, "", "the container saw read errors:\n{errors}");
    assert!(fetched_while_dead > 0);

    n.containerd.wait_for_snapshotter();
    let after = n.containerd.snapshots();
    assert_eq!(
        before, after,
        "the snapshots listed before and after the restart"
    );

    // A new container of the same image starts.
    let id2 = unique("after");
    let out = n.containerd.run_sh(&image, &id2, "head -1 /etc/os-release");
    assert!(out.starts_with("PRETTY_NAME="), "{out}");

    n.containerd.ctr_ok(&["task", "kill", "-s", "KILL", &id]);
    wait_for("the reader to stop", Duration::from_secs(30), || {
        !n.containerd
            .ctr_ok(&["task", "ls"])
            .contains(&format!("{id} "))
            || n.containerd.ctr(&["task", "rm", &id]).status.success()
    });
    let _ = n.containerd.ctr(&["task", "rm", "-f", &id]);
    n.containerd.ctr_ok(&["container", "rm", &id]);
}

/// Mount points of FUSE filesystems under `dir`.
fn fuse_mounts_under(dir: &Path) -> BTreeSet<String> {
    let dir = dir.canonicalize().unwrap();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter(|l| l.contains(" - fuse"))
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|p| Path::new(p).starts_with(&dir))
        .map(str::to_string)
        .collect()
}

#[test]
fn removing_an_image_removes_its_snapshots_and_mount_but_keeps_shared_chunks() {
    let n = node();
    let a = n.pull_skiff("deb:skiff");
    // A second image that shares most files (and so chunks) with the first.
    let b_src = format!("oci:{}:pkgs", debian_image().display());
    let b = n.registry.reference("deb:pkgs-skiff");
    n.snapshotter
        .skiff
        .ok(&["convert", "-q", &b_src, &format!("docker://{b}")]);
    let o = n.snapshotter.pull(&n.containerd, &b);
    assert!(o.status.success(), "{}", stderr(&o));
    let root = n.snapshotter.skiff.root.path();
    assert_eq!(fuse_mounts_under(root).len(), 2, "one image mount each");
    let both = n.containerd.snapshots();

    // The second image starts once (its shell and libraries come from
    // its own blobs); the first reads perl, then goes.
    let id = unique("b0");
    n.containerd.run_sh(&b, &id, "true");
    let read = "md5sum /usr/bin/perl /usr/bin/python3.11";
    let id = unique("a");
    let sums_a = n.containerd.run_sh(&a, &id, read);

    n.containerd.ctr_ok(&["image", "rm", "--sync", &a]);
    wait_for(
        "containerd's GC to remove the image's snapshots",
        Duration::from_secs(30),
        || n.containerd.snapshots().len() < both.len(),
    );
    let left = n.containerd.snapshots();
    let manifest_b: serde_json::Value = {
        let raw = sh(Command::new("skopeo").args([
            "inspect",
            "--raw",
            "--tls-verify=false",
            &format!("docker://{b}"),
        ]));
        serde_json::from_str(&raw).unwrap()
    };
    assert_eq!(
        left.len(),
        manifest_b["layers"].as_array().unwrap().len(),
        "only the other image's layers stay: {left:?}"
    );
    wait_for(
        "the removed image's mount to go",
        Duration::from_secs(30),
        || fuse_mounts_under(root).len() == 1,
    );
    let images = n.snapshotter.skiff.json(&["images"]);
    let listed = images.to_string();
    assert!(
        !listed.contains(&format!("\"{a}@")),
        "skiff images still lists the removed image: {listed}"
    );

    // The other image reads the same files from the node's cache: the
    // chunks it shares with the removed image stayed.
    let gets = all_blob_gets(&n.registry);
    let id = unique("b");
    let sums_b = n.containerd.run_sh(&b, &id, read);
    assert_eq!(sums_a, sums_b);
    let log = n.registry.log();
    let new: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("\"GET /v2/") && l.contains("/blobs/"))
        .skip(gets)
        .collect();
    assert!(
        new.is_empty(),
        "the shared chunks were fetched again: {new:#?}"
    );
}

#[test]
fn bad_images_and_registry_faults_get_clear_errors_and_the_snapshotter_keeps_serving() {
    let n = node();
    n.registry.push_layout(layout(), "deb:corrupt");
    let corrupt = n.registry.reference("deb:corrupt");
    let manifest = layout_manifest(layout());
    let meta = manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["mediaType"] == "application/vnd.oci.image.layer.skiff.metadata.v1.zstd")
        .unwrap()["digest"]
        .as_str()
        .unwrap()
        .to_string();
    // The registry's one copy of the metadata blob, tampered with.
    let path = n.registry.blob_path(&meta);
    let mut bytes = std::fs::read(&path).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    std::fs::write(&path, &bytes).unwrap();
    // A pull that must fail with one line naming the metadata layer.
    let failed_pull = || {
        let o = n.snapshotter.pull(&n.containerd, &corrupt);
        assert!(!o.status.success());
        let e = stderr(&o);
        assert!(
            e.contains("preparing layer") && e.contains(&meta[..19]),
            "names the layer: {e}"
        );
        assert_eq!(e.trim().lines().count(), 1, "one line: {e}");
        e
    };
    let e = failed_pull();
    assert!(
        e.to_lowercase().contains("digest") || e.contains("verif"),
        "says what is wrong: {e}"
    );
    // Missing at the registry: a clear error too.
    std::fs::remove_file(&path).unwrap();
    let e = failed_pull();
    assert!(
        e.contains("not found") || e.contains("404"),
        "says it is missing: {e}"
    );
    assert!(
        e.contains("FailedPrecondition"),
        "not a retryable fault: {e}"
    );
    // Repaired at the registry, the same image pulls and runs.
    bytes[mid] ^= 0x40;
    std::fs::write(&path, &bytes).unwrap();

    // The snapshotter keeps serving: a good copy of the image runs.
    let o = n.snapshotter.pull(&n.containerd, &corrupt);
    assert!(o.status.success(), "{}", stderr(&o));
    let image = corrupt.clone();
    let id = unique("good");
    let out = n
        .containerd
        .ctr_ok(&["run", "--rm", "--snapshotter", "skiff", &image, &id, "true"]);
    assert_eq!(out, "");

    // A registry that is down when a container starts whose image mount
    // died: a clear error, and the snapshotter still serves.
    let root = n.snapshotter.skiff.root.path().to_path_buf();
    for m in fuse_mounts_under(&root) {
        sh(Command::new("umount").arg("-l").arg(&m));
    }
    drop(n.registry);
    let id = unique("down");
    let o = n
        .containerd
        .ctr(&["run", "--rm", "--snapshotter", "skiff", &image, &id, "true"]);
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(
        e.contains("mounting") && e.contains(&image),
        "names the image: {e}"
    );
    assert!(
        e.contains("Unavailable") || e.contains("unavailable") || e.contains("connect"),
        "says the registry is unreachable: {e}"
    );
    let _ = n.containerd.ctr(&["container", "rm", &id]);
    assert!(
        !n.containerd.snapshots().is_empty(),
        "the snapshotter still answers"
    );
}

#[test]
fn a_full_disk_under_the_root_is_a_clear_error_and_serving_resumes_once_freed() {
    // The snapshotter's root on a small tmpfs of its own.
    let mut snapshotter = Snapshotter::start();
    snapshotter.kill9();
    let root = snapshotter.skiff.root.path().to_path_buf();
    sh(Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=8m,mode=0700", "tmpfs"])
        .arg(&root));
    snapshotter.restart();
    let containerd = Containerd::start(&snapshotter.socket(), "");
    let fill = root.join("fill");
    let _ = Command::new("dd")
        .args(["if=/dev/zero", "bs=1M", "count=64"])
        .arg(format!("of={}", fill.display()))
        .output()
        .unwrap();
    let o = containerd.ctr(&[
        "snapshots",
        "--snapshotter",
        "skiff",
        "prepare",
        "full-1",
        "",
    ]);
    assert!(!o.status.success(), "prepare on a full disk succeeded");
    let e = stderr(&o);
    assert!(
        e.contains("the disk is full; free space under the snapshotter's --root"),
        "names the cause and the fix: {e}"
    );
    std::fs::remove_file(&fill).unwrap();
    containerd.ctr_ok(&[
        "snapshots",
        "--snapshotter",
        "skiff",
        "prepare",
        "full-2",
        "",
    ]);
    assert_eq!(
        containerd.snapshots(),
        ["full-2"],
        "nothing half-made is left"
    );
    containerd.ctr_ok(&["snapshots", "--snapshotter", "skiff", "rm", "full-2"]);
    drop(containerd);
    snapshotter.kill9();
    common::containerd::detach_mounts_under(&root);
}
