//! The Kubernetes path: a kubelet stand-in (a CRI v1 client on the
//! `k8s-cri` crate) against containerd 1.6's CRI plugin, with `skiff
//! snapshotter` as its snapshotter. It pulls a skiff image, runs a pod
//! with host networking (no CNI needed), creates and starts a container,
//! and reads its log, as the kubelet does (`examples/cri_run.rs`, which
//! the benchmark's CRI path runs too). The pause image is built here
//! from a static binary, since no public registry is reachable.

mod common;

use std::path::Path;
use std::process::Command;

use common::containerd::{Containerd, Snapshotter};
use common::containers::layout;
use common::layers::{Entry, LayerBlob, Tar};
use common::registry::Registry;
use common::sh;

/// The kubelet stand-in, shared with the benchmark's CRI path.
#[allow(dead_code)]
#[path = "../examples/cri_run.rs"]
mod cri_run;

/// A pause image: one static binary that sleeps until SIGTERM or SIGINT.
fn pause_layout(dir: &Path) -> String {
    let src = dir.join("pause.c");
    std::fs::write(
        &src,
        "#include <signal.h>\n#include <unistd.h>\n\
         static void quit(int s) { (void)s; _exit(0); }\n\
         int main(void) { signal(SIGTERM, quit); signal(SIGINT, quit); for (;;) pause(); }\n",
    )
    .unwrap();
    let bin = dir.join("pause");
    sh(Command::new("gcc")
        .args(["-static", "-O2", "-o"])
        .arg(&bin)
        .arg(&src));
    let mut e = Entry::new("pause", b'0');
    e.mode = 0o755;
    e.data = std::fs::read(&bin).unwrap();
    let tar = Tar::new().entry(&e).finish();
    let layout = dir.join("layout");
    common::layers::write_image_with_config(
        &layout,
        "pause",
        &[LayerBlob::gzip(&tar)],
        ("linux", "amd64"),
        serde_json::json!({"Entrypoint": ["/pause"]}),
    );
    format!("oci:{}:pause", layout.display())
}

#[test]
fn the_cri_pulls_and_runs_a_skiff_image_lazily() {
    let registry = Registry::start();
    let work = tempfile::tempdir().unwrap();
    registry.push_layout(&pause_layout(work.path()), "pause:skiff-test");
    registry.push_layout(layout(), "deb:skiff");
    let snapshotter = Snapshotter::start();
    let cri = format!(
        r#"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{pause}"
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  # Lowering a sandbox's OOM score (to -998) is denied on this machine,
  # as in any container without CAP_SYS_RESOURCE.
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "skiff"
    disable_snapshot_annotations = false
  [plugins."io.containerd.grpc.v1.cri".registry.mirrors."{reg}"]
    endpoint = ["http://{reg}"]
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{dir}/cni/bin"
    conf_dir = "{dir}/cni/conf"
"#,
        pause = registry.reference("pause:skiff-test"),
        reg = registry.addr,
        dir = work.path().display(),
    );
    let containerd = Containerd::start(&snapshotter.socket(), &cri);
    let image = registry.reference("deb:skiff");
    let logs = work.path().join("pod-logs");
    std::fs::create_dir_all(&logs).unwrap();

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut out = Vec::new();
    let code = rt
        .block_on(cri_run::run(
            &cri_run::Args {
                containerd: containerd.socket(),
                log_dir: logs.clone(),
                name: "reader".into(),
                image: image.clone(),
                command: vec![
                    "sh".into(),
                    "-c".into(),
                    "head -1 /etc/os-release; md5sum /usr/bin/perl | cut -c1-8".into(),
                ],
            },
            &mut out,
        ))
        .unwrap_or_else(|e| panic!("{e}\n{}\n{}", snapshotter.log(), containerd.log()));
    assert_eq!(code, 0);
    let output = String::from_utf8(out).unwrap();
    assert!(
        logs.join("reader.log").exists(),
        "the CRI log is where the pod said"
    );
    assert_eq!(
        output,
        "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\n293a3e33\n"
    );

    // Lazily: every layer of the skiff image was served by skiff, with the
    // CRI's labels; the pause image's one layer was unpacked by containerd.
    let manifest = sh(Command::new("skopeo").args([
        "inspect",
        "--raw",
        "--tls-verify=false",
        &format!("docker://{image}"),
    ]));
    let manifest: serde_json::Value = serde_json::from_str(&manifest).unwrap();
    let layers = manifest["layers"].as_array().unwrap();
    assert_eq!(
        snapshotter.metric("skiff_snapshotter_lazy_layers_total"),
        layers.len() as u64
    );
    assert_eq!(
        snapshotter.metric("skiff_snapshotter_not_lazy_layers_total"),
        1
    );
    let log = registry.log();
    for l in layers {
        if l["mediaType"] != "application/vnd.oci.image.layer.skiff.blob.v1" {
            continue;
        }
        let d = l["digest"].as_str().unwrap();
        for line in log.lines().filter(|x| x.contains(&format!("/blobs/{d} "))) {
            assert!(
                !(line.contains("\"GET ") && line.contains("\" 200 ")),
                "data blob {d} downloaded whole: {line}"
            );
        }
    }
}
