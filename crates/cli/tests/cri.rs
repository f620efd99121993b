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
use std::time::Duration;

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

/// A node for the CRI tests: the registry with the pause and skiff test
/// images, `skiff snapshotter`, and containerd with its CRI plugin on
/// both (`runtimes` is more TOML for the CRI's runtime handlers).
struct CriNode {
    registry: Registry,
    work: tempfile::TempDir,
    snapshotter: Snapshotter,
    containerd: Containerd,
}

/// How many skiff shims run with `-id ID` (a shim is named after the
/// first container it served: a pod's, its sandbox).
fn shims_serving(id: &str) -> usize {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .filter(|cmdline| {
            let args: Vec<&[u8]> = cmdline.split(|&b| b == 0).collect();
            args.first()
                .is_some_and(|a| a.ends_with(b"containerd-shim-skiff-v2"))
                && args
                    .windows(2)
                    .any(|w| w[0] == b"-id" && w[1] == id.as_bytes())
                && !args.contains(&&b"delete"[..])
        })
        .count()
}

fn cri_node(runtimes: &str) -> CriNode {
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
{runtimes}
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
    CriNode {
        registry,
        work,
        snapshotter,
        containerd,
    }
}

/// A CRI node whose containerd also has the runtime handler `skiff-KIND`
/// (`io.containerd.skiff-KIND.v2`, skiff's shim pinned to that kind).
fn cri_node_with_handler(kind: &str) -> CriNode {
    common::containerd::link_shim_for_kind(kind);
    cri_node(&format!(
        r#"
  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
    runtime_type = "io.containerd.runc.v2"
  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.skiff-{kind}]
    runtime_type = "io.containerd.skiff-{kind}.v2"
"#
    ))
}

#[test]
fn the_cri_pulls_and_runs_a_skiff_image_lazily() {
    let CriNode {
        registry,
        work,
        snapshotter,
        containerd,
    } = cri_node("");
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
                runtime_handler: String::new(),
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

/// Connects a CRI v1 client to containerd's socket.
async fn cri_clients(
    socket: std::path::PathBuf,
) -> (
    k8s_cri::v1::runtime_service_client::RuntimeServiceClient<tonic::transport::Channel>,
    k8s_cri::v1::image_service_client::ImageServiceClient<tonic::transport::Channel>,
) {
    let channel = tonic::transport::Endpoint::try_from("http://[::]")
        .unwrap()
        .connect_with_connector(tower::service_fn(move |_: tonic::transport::Uri| {
            tokio::net::UnixStream::connect(socket.clone())
        }))
        .await
        .unwrap();
    (
        k8s_cri::v1::runtime_service_client::RuntimeServiceClient::new(channel.clone()),
        k8s_cri::v1::image_service_client::ImageServiceClient::new(channel),
    )
}

/// A pod network namespace of its own for each pod: Debian's CNI plugins,
/// a point-to-point veth (the CRI wants an eth0) on a private /28 whose
/// addresses are kept in the test's own directory.
fn pod_network(node: &CriNode) {
    let cni = node.work.path().join("cni");
    std::fs::create_dir_all(cni.join("bin")).unwrap();
    std::fs::create_dir_all(cni.join("conf")).unwrap();
    for plugin in ["loopback", "ptp", "host-local"] {
        std::os::unix::fs::symlink(
            Path::new("/usr/lib/cni").join(plugin),
            cni.join("bin").join(plugin),
        )
        .unwrap();
    }
    std::fs::write(
        cni.join("conf/10-pod.conflist"),
        format!(
            r#"{{"cniVersion": "0.4.0", "name": "skiff-test-pod", "plugins": [{{"type": "ptp", "ipMasq": false,
              "ipam": {{"type": "host-local", "subnet": "10.254.177.0/28", "dataDir": "{}"}}}}]}}"#,
            cni.join("ipam").display()
        ),
    )
    .unwrap();
}

/// Until the CRI has loaded the CNI config it watches for.
async fn network_ready(
    runtime: &mut k8s_cri::v1::runtime_service_client::RuntimeServiceClient<
        tonic::transport::Channel,
    >,
) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let status = runtime
            .status(k8s_cri::v1::StatusRequest { verbose: false })
            .await
            .unwrap()
            .into_inner();
        let ready = status.status.is_some_and(|s| {
            s.conditions
                .iter()
                .any(|c| c.r#type == "NetworkReady" && c.status)
        });
        if ready {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the CNI config never loaded"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// PullImage of `image`, as the kubelet asks it.
async fn pull(
    images: &mut k8s_cri::v1::image_service_client::ImageServiceClient<tonic::transport::Channel>,
    image: &str,
) -> Result<(), tonic::Status> {
    images
        .pull_image(k8s_cri::v1::PullImageRequest {
            image: Some(k8s_cri::v1::ImageSpec {
                image: image.to_string(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .map(drop)
}

/// A pod's config as the kubelet sends it: its own network and IPC,
/// processes shared or not as `pid` says, logs under `logs`.
fn pod_config(
    name: &str,
    logs: &Path,
    pid: k8s_cri::v1::NamespaceMode,
) -> k8s_cri::v1::PodSandboxConfig {
    use k8s_cri::v1::*;
    PodSandboxConfig {
        metadata: Some(PodSandboxMetadata {
            name: name.into(),
            uid: format!("{name}-{}", std::process::id()),
            namespace: "default".into(),
            attempt: 0,
        }),
        log_directory: logs.display().to_string(),
        linux: Some(LinuxPodSandboxConfig {
            security_context: Some(LinuxSandboxSecurityContext {
                namespace_options: Some(NamespaceOption {
                    network: NamespaceMode::Pod as i32,
                    ipc: NamespaceMode::Pod as i32,
                    pid: pid as i32,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// CreateContainer of `sh -c COMMAND` from `image` in `pod`, logging to
/// `NAME.log`, in the pod's namespaces.
fn container_request(
    pod: &str,
    pod_config: &k8s_cri::v1::PodSandboxConfig,
    image: &str,
    name: &str,
    command: &str,
) -> k8s_cri::v1::CreateContainerRequest {
    use k8s_cri::v1::*;
    let namespace_options = pod_config
        .linux
        .as_ref()
        .and_then(|l| l.security_context.as_ref())
        .and_then(|c| c.namespace_options.clone());
    CreateContainerRequest {
        pod_sandbox_id: pod.to_string(),
        config: Some(ContainerConfig {
            metadata: Some(ContainerMetadata {
                name: name.into(),
                attempt: 0,
            }),
            image: Some(ImageSpec {
                image: image.to_string(),
                ..Default::default()
            }),
            command: vec!["sh".into(), "-c".into(), command.into()],
            log_path: format!("{name}.log"),
            linux: Some(LinuxContainerConfig {
                security_context: Some(LinuxContainerSecurityContext {
                    namespace_options,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
        sandbox_config: Some(pod_config.clone()),
    }
}

/// RemoveContainer of each of `ids`; the failing call's name and error.
async fn remove_containers(
    runtime: &mut k8s_cri::v1::runtime_service_client::RuntimeServiceClient<
        tonic::transport::Channel,
    >,
    ids: &[&String],
) -> Result<(), (&'static str, tonic::Status)> {
    for id in ids {
        runtime
            .remove_container(k8s_cri::v1::RemoveContainerRequest {
                container_id: id.to_string(),
            })
            .await
            .map_err(|e| ("RemoveContainer", e))?;
    }
    Ok(())
}

/// StopPodSandbox, then RemovePodSandbox, as the kubelet ends a pod.
async fn remove_pod(
    runtime: &mut k8s_cri::v1::runtime_service_client::RuntimeServiceClient<
        tonic::transport::Channel,
    >,
    pod: &str,
) -> Result<(), (&'static str, tonic::Status)> {
    runtime
        .stop_pod_sandbox(k8s_cri::v1::StopPodSandboxRequest {
            pod_sandbox_id: pod.to_string(),
        })
        .await
        .map_err(|e| ("StopPodSandbox", e))?;
    runtime
        .remove_pod_sandbox(k8s_cri::v1::RemovePodSandboxRequest {
            pod_sandbox_id: pod.to_string(),
        })
        .await
        .map_err(|e| ("RemovePodSandbox", e))?;
    Ok(())
}

/// The kubelet's pod lifecycle with the runtime handler `skiff-oci`:
/// containerd's runc shim with skiff-oci as its binary, so the pause
/// container and the pod's containers all run on skiff's runtime.
#[test]
fn a_pod_lives_its_whole_lifecycle_on_skiffs_shim() {
    use k8s_cri::v1::*;
    let oci = common::oci::Oci::new();
    let runtimes = format!(
        r#"
  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
    runtime_type = "io.containerd.runc.v2"
  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.skiff]
    runtime_type = "io.containerd.skiff.v2"
  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.skiff-oci]
    runtime_type = "io.containerd.runc.v2"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.skiff-oci.options]
      BinaryName = "{}"
"#,
        oci.bin.display()
    );
    let node = cri_node(&runtimes);
    pod_network(&node);
    let host_net = std::fs::read_link("/proc/self/ns/net").unwrap();
    let image = node.registry.reference("deb:skiff");
    let logs = node.work.path().join("pod-logs");
    std::fs::create_dir_all(&logs).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let fail = |what: &str, e: tonic::Status| -> ! {
        panic!("{what}: {}\n{}", e.message(), node.containerd.log())
    };
    rt.block_on(async {
        let (mut runtime, mut images) = cri_clients(node.containerd.socket()).await;
        network_ready(&mut runtime).await;
        pull(&mut images, &image)
            .await
            .unwrap_or_else(|e| fail("PullImage", e));
        let pod_config = pod_config("pod", &logs, NamespaceMode::Pod);
        let pod = runtime
            .run_pod_sandbox(RunPodSandboxRequest {
                config: Some(pod_config.clone()),
                runtime_handler: "skiff".into(),
            })
            .await
            .unwrap_or_else(|e| fail("RunPodSandbox", e))
            .into_inner()
            .pod_sandbox_id;
        let container =
            |name: &str, command: &str| container_request(&pod, &pod_config, &image, name, command);
        // The first container makes a SysV shared memory segment, which
        // only a container in the same IPC namespace can see.
        let first = runtime
            .create_container(container("first", "ipcmk -M 4096 && exec sleep 1000"))
            .await
            .unwrap_or_else(|e| fail("CreateContainer", e))
            .into_inner()
            .container_id;
        runtime
            .start_container(StartContainerRequest {
                container_id: first.clone(),
            })
            .await
            .unwrap_or_else(|e| fail("StartContainer", e));
        // It runs on skiff's shim: its state is under the shim's root, and
        // one shim (the pod's) serves the pod's containers.
        assert_eq!(shims_serving(&pod), 1, "the pod has one shim");
        assert_eq!(
            shims_serving(&first),
            0,
            "the container has no shim of its own"
        );
        let state = Command::new(&oci.bin)
            .args(["--root", "/run/skiff-shim/k8s.io", "state", &first])
            .output()
            .unwrap();
        assert!(
            String::from_utf8_lossy(&state.stdout).contains("\"running\""),
            "{}{}",
            String::from_utf8_lossy(&state.stdout),
            String::from_utf8_lossy(&state.stderr)
        );

        let exec = runtime
            .exec_sync(ExecSyncRequest {
                container_id: first.clone(),
                cmd: vec![
                    "sh".into(),
                    "-c".into(),
                    "readlink /proc/self/ns/ipc /proc/self/ns/net; exit 3".into(),
                ],
                timeout: 10,
            })
            .await
            .unwrap_or_else(|e| fail("ExecSync", e))
            .into_inner();
        assert_eq!(exec.exit_code, 3);
        let shown = String::from_utf8_lossy(&exec.stdout).into_owned();
        let mut lines = shown.lines();
        let first_ipc = lines.next().unwrap_or("").to_string();
        let first_net = lines.next().unwrap_or("").to_string();
        assert!(first_ipc.starts_with("ipc:["), "{shown}");
        assert!(first_net.starts_with("net:["), "{shown}");
        assert_ne!(
            Path::new(&first_net),
            host_net,
            "the pod has a network namespace of its own"
        );
        // A timeout ends a command that does not finish.
        let started = std::time::Instant::now();
        let slow = runtime
            .exec_sync(ExecSyncRequest {
                container_id: first.clone(),
                cmd: vec!["sleep".into(), "60".into()],
                timeout: 1,
            })
            .await;
        assert!(
            slow.is_err() || slow.as_ref().unwrap().get_ref().exit_code != 0,
            "a 60 s command with a 1 s timeout succeeded"
        );
        assert!(started.elapsed() < Duration::from_secs(30));

        let stats = runtime
            .container_stats(ContainerStatsRequest {
                container_id: first.clone(),
            })
            .await
            .unwrap_or_else(|e| fail("ContainerStats", e))
            .into_inner()
            .stats
            .expect("stats");
        let memory = stats.memory.expect("memory stats");
        assert!(
            memory.working_set_bytes.as_ref().map_or(0, |v| v.value) > 0,
            "{memory:?}"
        );
        assert!(stats.cpu.is_some());

        let second = runtime
            .create_container(container(
                "second",
                "readlink /proc/self/ns/ipc /proc/self/ns/net; ipcs -m | grep -c 4096",
            ))
            .await
            .unwrap_or_else(|e| fail("CreateContainer", e))
            .into_inner()
            .container_id;
        runtime
            .start_container(StartContainerRequest {
                container_id: second.clone(),
            })
            .await
            .unwrap_or_else(|e| fail("StartContainer", e));
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            let s = runtime
                .container_status(ContainerStatusRequest {
                    container_id: second.clone(),
                    verbose: false,
                })
                .await
                .unwrap_or_else(|e| fail("ContainerStatus", e))
                .into_inner()
                .status
                .unwrap();
            if s.state == ContainerState::ContainerExited as i32 {
                assert_eq!(s.exit_code, 0);
                break;
            }
            assert!(std::time::Instant::now() < deadline, "second never exited");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let log = std::fs::read_to_string(logs.join("second.log")).unwrap();
        assert!(
            log.contains(&first_ipc),
            "not the pod's IPC namespace: {log}"
        );
        assert!(
            log.contains(&first_net),
            "not the pod's network namespace: {log}"
        );
        assert!(log.contains(" stdout F 1"), "the segment is shared: {log}");

        runtime
            .stop_container(StopContainerRequest {
                container_id: first.clone(),
                timeout: 2,
            })
            .await
            .unwrap_or_else(|e| fail("StopContainer", e));
        remove_containers(&mut runtime, &[&first, &second])
            .await
            .unwrap_or_else(|(what, e)| fail(what, e));
        remove_pod(&mut runtime, &pod)
            .await
            .unwrap_or_else(|(what, e)| fail(what, e));
        // Nothing of the pod is left: its shim has exited, and the shim's
        // state holds none of it.
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while shims_serving(&pod) > 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "the pod's shim did not exit"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let left = Command::new(&oci.bin)
            .args(["--root", "/run/skiff-shim/k8s.io", "list", "-q"])
            .output()
            .unwrap();
        let left = String::from_utf8_lossy(&left.stdout);
        for id in [&first, &second, &pod] {
            assert!(!left.contains(id.as_str()), "{id} left behind: {left}");
        }
    });
}

/// QEMU processes whose command line holds `needle` (a container's ID is
/// in its agent socket's path).
fn qemus_with(needle: &str) -> usize {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .filter(|c| {
            let text = String::from_utf8_lossy(c);
            text.starts_with("qemu-system") && text.contains(needle)
        })
        .count()
}

/// How many QEMUs are children of `pid`.
fn qemus_under(pid: i32) -> usize {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|e| {
            let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
            // pid (comm) state ppid ...: comm may hold spaces, so split after it.
            let after = stat.rsplit_once(") ").map_or("", |(_, rest)| rest);
            stat.contains("(qemu-system-") && after.split(' ').nth(1) == Some(&pid.to_string())
        })
        .count()
}

/// The mount points under `dir`.
fn mounts_under(dir: &str) -> Vec<String> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|p| p.starts_with(dir))
        .map(str::to_string)
        .collect()
}

/// A Kubernetes pod on the runtime handler `skiff-vm` (a RuntimeClass's
/// handler): the pod is one guest, booted by its sandbox container, and
/// each container of the pod runs in it with a root of its own, sharing
/// the pod's IPC and hostname; nothing of it is left once it is removed,
/// not even when a container's supervisor, or the pod's, is killed with
/// -9.
#[test]
fn a_pod_on_the_skiff_vm_handler_runs_in_one_guest() {
    use k8s_cri::v1::*;
    let node = cri_node_with_handler("vm");
    pod_network(&node);
    let image = node.registry.reference("deb:skiff");
    let logs = node.work.path().join("pod-logs");
    std::fs::create_dir_all(&logs).unwrap();
    let oci = common::oci::Oci::new();
    let state_root = "/run/skiff-shim/k8s.io";
    let host_kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // The guests' consoles too, while the shim's state still holds them.
    let fail = |what: &str, e: tonic::Status| -> ! {
        let consoles: String = std::fs::read_dir(state_root)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|d| std::fs::read_to_string(d.path().join("console.log")).ok())
            .collect();
        panic!(
            "{what}: {}\n{}\nthe guests' consoles:\n{consoles}",
            e.message(),
            node.containerd.log()
        )
    };
    rt.block_on(async {
        let (mut runtime, mut images) = cri_clients(node.containerd.socket()).await;
        network_ready(&mut runtime).await;
        pull(&mut images, &image)
            .await
            .unwrap_or_else(|e| fail("PullImage", e));
        let pod_config = PodSandboxConfig {
            hostname: "vmpod".into(),
            dns_config: Some(DnsConfig {
                servers: vec!["10.254.177.53".into()],
                ..Default::default()
            }),
            ..pod_config("vmpod", &logs, NamespaceMode::Container)
        };
        let pod = runtime
            .run_pod_sandbox(RunPodSandboxRequest {
                config: Some(pod_config.clone()),
                runtime_handler: "skiff-vm".into(),
            })
            .await
            .unwrap_or_else(|e| fail("RunPodSandbox", e))
            .into_inner()
            .pod_sandbox_id;
        assert_eq!(qemus_with(&pod), 1, "the pod's sandbox boots its guest");
        let container =
            |name: &str, command: &str| container_request(&pod, &pod_config, &image, name, command);
        let create_and_start = |request: CreateContainerRequest| {
            let mut runtime = runtime.clone();
            async move {
                let id = runtime
                    .create_container(request)
                    .await
                    .unwrap_or_else(|e| fail("CreateContainer", e))
                    .into_inner()
                    .container_id;
                runtime
                    .start_container(StartContainerRequest {
                        container_id: id.clone(),
                    })
                    .await
                    .unwrap_or_else(|e| fail("StartContainer", e));
                id
            }
        };
        let wait_exited = |id: String| {
            let mut runtime = runtime.clone();
            async move {
                let deadline = std::time::Instant::now() + Duration::from_secs(60);
                loop {
                    let s = runtime
                        .container_status(ContainerStatusRequest {
                            container_id: id.clone(),
                            verbose: false,
                        })
                        .await
                        .unwrap_or_else(|e| fail("ContainerStatus", e))
                        .into_inner()
                        .status
                        .unwrap();
                    if s.state == ContainerState::ContainerExited as i32 {
                        return s.exit_code;
                    }
                    assert!(std::time::Instant::now() < deadline, "{id} never exited");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        };

        // The first container makes a SysV shared memory segment, which
        // only a container in the same IPC namespace can see.
        let first = create_and_start(container(
            "first",
            "ipcmk -M 4096 && echo ready > /tmp/made && exec sleep 1000",
        ))
        .await;
        let exec = |cmd: &str| {
            let mut runtime = runtime.clone();
            let request = ExecSyncRequest {
                container_id: first.clone(),
                cmd: vec!["sh".into(), "-c".into(), cmd.into()],
                timeout: 30,
            };
            async move {
                runtime
                    .exec_sync(request)
                    .await
                    .unwrap_or_else(|e| fail("ExecSync", e))
                    .into_inner()
            }
        };
        // An exec joins the container, in the guest: its kernel, its
        // processes (the container's own pid namespace), its root.
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        let shown = loop {
            let e = exec("cat /tmp/made; uname -r; cat /proc/1/comm; hostname; exit 3").await;
            let out = String::from_utf8_lossy(&e.stdout).into_owned();
            if out.starts_with("ready") {
                assert_eq!(e.exit_code, 3, "{out}");
                break out;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "first never ran: {out}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let lines: Vec<&str> = shown.lines().collect();
        assert_ne!(
            lines[1],
            host_kernel.trim(),
            "not the guest's kernel: {shown}"
        );
        assert_eq!(
            lines[2], "sleep",
            "not the container's pid namespace: {shown}"
        );
        assert_eq!(lines[3], "vmpod", "not the pod's hostname: {shown}");

        // The second sees the first's segment, the pod's hostname (its
        // UTS namespace, and the CRI's /etc/hostname bound in through the
        // pod share), and only its own processes in a root of its own.
        let second = create_and_start(container(
            "second",
            "ipcs -m | grep -c 4096; uname -r; hostname; cat /etc/hostname; echo pid=$$; \
             test -e /tmp/made || echo own-root; grep nameserver /etc/resolv.conf; \
             python3 -c 'import os; own = sorted(os.listdir(\"/\")); fd = os.open(\"/\", 0); \
               os.makedirs(\"/tmp/jail\"); os.chroot(\"/tmp/jail\"); os.fchdir(fd); \
               [os.chdir(\"..\") for _ in range(64)]; os.chroot(\".\"); out = sorted(os.listdir(\"/\")); \
               print(\"escape contained\" if out == own else \"escaped to \" + \" \".join(out))'",
        ))
        .await;
        assert_eq!(wait_exited(second.clone()).await, 0);
        let log = std::fs::read_to_string(logs.join("second.log")).unwrap();
        let said: Vec<&str> = log
            .lines()
            .filter_map(|l| l.split_once(" stdout F ").map(|(_, t)| t))
            .collect();
        assert_eq!(
            said,
            [
                "1",
                lines[1],
                "vmpod",
                "vmpod",
                "pid=1",
                "own-root",
                "nameserver 10.254.177.53",
                "escape contained"
            ],
            "{log}"
        );
        assert_eq!(qemus_with(&pod), 1, "one guest holds the pod");
        assert_eq!(qemus_with(&first), 0, "a container boots no guest");

        // A container's supervisor killed with -9: the container ends,
        // and removing it leaves nothing bound in the pod's share.
        // ContainerStats of a pod's container is its cgroup in the guest,
        // asked of the agent: 48 MiB that it holds show there, which no
        // host process of skiff's holds.
        let third = create_and_start(container(
            "third",
            "exec python3 -c 'import time; held = b\"x\" * (48 << 20); time.sleep(1000)'",
        ))
        .await;
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            let stats = runtime
                .clone()
                .container_stats(ContainerStatsRequest {
                    container_id: third.clone(),
                })
                .await
                .unwrap_or_else(|e| fail("ContainerStats", e))
                .into_inner()
                .stats
                .expect("stats");
            let usage = stats
                .memory
                .as_ref()
                .and_then(|m| m.usage_bytes.as_ref())
                .map_or(0, |v| v.value);
            if usage >= 48 << 20 {
                assert!(
                    usage < 256 << 20,
                    "more than the pod's guest has: {usage}"
                );
                let cpu = stats.cpu.and_then(|c| c.usage_core_nano_seconds);
                assert!(cpu.as_ref().map_or(0, |v| v.value) > 0, "no CPU time: {cpu:?}");
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the third container's memory never showed 48 MiB: {usage} bytes"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let state = Command::new(&oci.bin)
            .args(["--root", state_root, "state", &third])
            .output()
            .unwrap();
        let state: serde_json::Value = serde_json::from_slice(&state.stdout).unwrap();
        let pid = state["pid"].as_i64().unwrap() as i32;
        let share = format!("{state_root}/{pod}/pod/");
        assert!(
            !mounts_under(&format!("{share}{third}")).is_empty(),
            "the third container's root is bound in the pod's share"
        );
        // SAFETY: kill with integer arguments.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
        assert_ne!(wait_exited(third.clone()).await, 0);

        let fourth = create_and_start(container("fourth", "exec sleep 1000")).await;
        runtime
            .clone()
            .stop_container(StopContainerRequest {
                container_id: first.clone(),
                timeout: 2,
            })
            .await
            .unwrap_or_else(|e| fail("StopContainer", e));

        // The pod's own supervisor killed with -9: its guest goes with it,
        // within a bounded time, and so does every container in it; the
        // pod is no longer ready, and removing it leaves nothing.
        let state = Command::new(&oci.bin)
            .args(["--root", state_root, "state", &pod])
            .output()
            .unwrap();
        let state: serde_json::Value = serde_json::from_slice(&state.stdout).unwrap();
        let supervisor = state["pid"].as_i64().unwrap() as i32;
        assert_eq!(qemus_under(supervisor), 1, "the pod's init is its guest's supervisor");
        // SAFETY: kill with integer arguments.
        assert_eq!(unsafe { libc::kill(supervisor, libc::SIGKILL) }, 0);
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while qemus_with(&pod) > 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "the pod's guest outlived its supervisor"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_ne!(wait_exited(fourth.clone()).await, 0);
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let status = runtime
                .clone()
                .pod_sandbox_status(PodSandboxStatusRequest {
                    pod_sandbox_id: pod.clone(),
                    verbose: false,
                })
                .await
                .unwrap_or_else(|e| fail("PodSandboxStatus", e))
                .into_inner()
                .status
                .unwrap();
            if status.state == PodSandboxState::SandboxNotready as i32 {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the pod stayed ready without its guest"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }

        remove_containers(&mut runtime, &[&first, &second, &third, &fourth])
            .await
            .unwrap_or_else(|(what, e)| fail(what, e));
        assert_eq!(mounts_under(&share), Vec::<String>::new());
        remove_pod(&mut runtime, &pod)
            .await
            .unwrap_or_else(|(what, e)| fail(what, e));
        let left = Command::new(&oci.bin)
            .args(["--root", state_root, "list", "-q"])
            .output()
            .unwrap();
        let left = String::from_utf8_lossy(&left.stdout);
        for id in [&first, &second, &third, &fourth, &pod] {
            assert!(!left.contains(id.as_str()), "{id} left behind: {left}");
        }
        assert_eq!(
            mounts_under(&format!("{state_root}/{pod}")),
            Vec::<String>::new()
        );
    });
}

/// A pod on the runtime handler `skiff-wasm` (a RuntimeClass's): the pause
/// container runs as it is, a Linux binary, and the pod's container runs
/// its module in the Wasm sandbox, its output in the CRI's log.
#[test]
fn a_pod_on_the_skiff_wasm_handler_runs_its_container_as_a_module() {
    let node = cri_node_with_handler("wasm");
    // The CRI pulls for the node's platform: the module in a linux/amd64
    // image, as the handler, not the platform, picks the sandbox here.
    let layout = common::wasm::module_image(
        &node.work.path().join("probe"),
        "linux",
        common::wasm::probe_module(),
        ("linux", "amd64"),
    );
    node.registry.push_layout(&layout, "probe:linux");
    let logs = node.work.path().join("pod-logs");
    std::fs::create_dir_all(&logs).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut out = Vec::new();
    let code = rt
        .block_on(cri_run::run(
            &cri_run::Args {
                containerd: node.containerd.socket(),
                log_dir: logs.clone(),
                name: "wasm".into(),
                image: node.registry.reference("probe:linux"),
                command: vec![
                    "/probe.wasm".into(),
                    "cat".into(),
                    "/etc/greeting.txt".into(),
                ],
                runtime_handler: "skiff-wasm".into(),
            },
            &mut out,
        ))
        .unwrap_or_else(|e| panic!("{e}\n{}", node.containerd.log()));
    assert_eq!(code, 0, "{}", String::from_utf8_lossy(&out));
    assert_eq!(String::from_utf8(out).unwrap(), "from the image\n");
}
