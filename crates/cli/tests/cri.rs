//! The Kubernetes path: a kubelet stand-in (a CRI v1 client on the
//! `k8s-cri` crate) against containerd 1.6's CRI plugin, with `skiff
//! snapshotter` as its snapshotter. It pulls a skiff image, runs a pod
//! with host networking (no CNI needed), creates and starts a container,
//! and reads its log, as the kubelet does. The pause image is built here
//! from a static binary, since no public registry is reachable.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::containerd::{Containerd, Snapshotter};
use common::containers::layout;
use common::layers::{Entry, LayerBlob, Tar};
use common::registry::Registry;
use common::sh;
use k8s_cri::v1::image_service_client::ImageServiceClient;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use k8s_cri::v1::{
    ContainerConfig, ContainerMetadata, ContainerState, ContainerStatusRequest,
    CreateContainerRequest, ImageSpec, LinuxPodSandboxConfig, LinuxSandboxSecurityContext,
    NamespaceMode, NamespaceOption, PodSandboxConfig, PodSandboxMetadata, PullImageRequest,
    RemoveContainerRequest, RemovePodSandboxRequest, RunPodSandboxRequest, StartContainerRequest,
    StopPodSandboxRequest, VersionRequest,
};

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

/// The text of a CRI container log (`TIME STREAM TAG TEXT` per line).
fn log_text(path: &Path) -> String {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let mut f = l.splitn(4, ' ');
            let (_, stream, _, text) = (f.next()?, f.next()?, f.next()?, f.next()?);
            (stream == "stdout").then(|| format!("{text}\n"))
        })
        .collect()
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
    let output = rt.block_on(async {
        let socket = containerd.socket();
        let channel = tonic::transport::Endpoint::try_from("http://[::]")
            .unwrap()
            .connect_with_connector(tower::service_fn(move |_: tonic::transport::Uri| {
                tokio::net::UnixStream::connect(socket.clone())
            }))
            .await
            .unwrap();
        let mut runtime = RuntimeServiceClient::new(channel.clone());
        let mut images = ImageServiceClient::new(channel);
        let version = runtime
            .version(VersionRequest {
                version: "v1".into(),
            })
            .await
            .expect("containerd serves CRI v1")
            .into_inner();
        assert_eq!(version.runtime_name, "containerd");

        let pulled = images
            .pull_image(PullImageRequest {
                image: Some(ImageSpec {
                    image: image.clone(),
                    ..Default::default()
                }),
                ..Default::default()
            })
            .await
            .unwrap_or_else(|e| panic!("PullImage: {e}\n{}", snapshotter.log()))
            .into_inner();
        assert!(pulled.image_ref.starts_with("sha256:"), "{pulled:?}");

        let uid = format!("pod-{}", std::process::id());
        let pod_config = PodSandboxConfig {
            metadata: Some(PodSandboxMetadata {
                name: "skiff-pod".into(),
                uid: uid.clone(),
                namespace: "default".into(),
                attempt: 0,
            }),
            log_directory: logs.display().to_string(),
            linux: Some(LinuxPodSandboxConfig {
                security_context: Some(LinuxSandboxSecurityContext {
                    namespace_options: Some(NamespaceOption {
                        network: NamespaceMode::Node as i32,
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let pod = runtime
            .run_pod_sandbox(RunPodSandboxRequest {
                config: Some(pod_config.clone()),
                runtime_handler: String::new(),
            })
            .await
            .unwrap_or_else(|e| panic!("RunPodSandbox: {e}\n{}", containerd.log()))
            .into_inner()
            .pod_sandbox_id;
        let created = runtime
            .create_container(CreateContainerRequest {
                pod_sandbox_id: pod.clone(),
                config: Some(ContainerConfig {
                    metadata: Some(ContainerMetadata {
                        name: "reader".into(),
                        attempt: 0,
                    }),
                    image: Some(ImageSpec {
                        image: image.clone(),
                        ..Default::default()
                    }),
                    command: vec!["sh".into(), "-c".into()],
                    args: vec!["head -1 /etc/os-release; md5sum /usr/bin/perl | cut -c1-8".into()],
                    log_path: "reader.log".into(),
                    ..Default::default()
                }),
                sandbox_config: Some(pod_config),
            })
            .await
            .unwrap_or_else(|e| panic!("CreateContainer: {e}\n{}", snapshotter.log()))
            .into_inner()
            .container_id;
        runtime
            .start_container(StartContainerRequest {
                container_id: created.clone(),
            })
            .await
            .unwrap_or_else(|e| panic!("StartContainer: {e}\n{}", containerd.log()));
        let deadline = Instant::now() + Duration::from_secs(60);
        let status = loop {
            let s = runtime
                .container_status(ContainerStatusRequest {
                    container_id: created.clone(),
                    verbose: false,
                })
                .await
                .unwrap()
                .into_inner()
                .status
                .unwrap();
            if s.state == ContainerState::ContainerExited as i32 {
                break s;
            }
            assert!(
                Instant::now() < deadline,
                "the container did not exit: {s:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        assert_eq!(status.exit_code, 0, "{status:?}");
        let output = log_text(&logs.join("reader.log"));

        runtime
            .remove_container(RemoveContainerRequest {
                container_id: created,
            })
            .await
            .unwrap();
        runtime
            .stop_pod_sandbox(StopPodSandboxRequest {
                pod_sandbox_id: pod.clone(),
            })
            .await
            .unwrap();
        runtime
            .remove_pod_sandbox(RemovePodSandboxRequest {
                pod_sandbox_id: pod,
            })
            .await
            .unwrap();
        output
    });
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
