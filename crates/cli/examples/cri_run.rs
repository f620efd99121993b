//! `cri_run`: one pod as the kubelet runs it, over CRI v1 against
//! containerd's socket, for the CRI test (`tests/cri.rs`) and the
//! cold-start benchmark's CRI path. There is no `crictl` package in
//! Debian 12, hence this small stand-in.
//!
//! It pulls the image, runs a pod sandbox with host networking (no CNI
//! needed), creates and starts one container, copies the container's
//! stdout from its CRI log to this process's stdout as lines appear,
//! then removes the container and the pod. It exits with the
//! container's exit code. The phase times go to stderr as one JSON line.
//!
//! Usage: cri_run --containerd SOCKET --log-dir DIR [--name NAME] IMAGE CMD [ARG...]

use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use k8s_cri::v1::image_service_client::ImageServiceClient;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use k8s_cri::v1::{
    ContainerConfig, ContainerMetadata, ContainerState, ContainerStatusRequest,
    CreateContainerRequest, ImageSpec, LinuxPodSandboxConfig, LinuxSandboxSecurityContext,
    NamespaceMode, NamespaceOption, PodSandboxConfig, PodSandboxMetadata, PullImageRequest,
    RemoveContainerRequest, RemovePodSandboxRequest, RunPodSandboxRequest, StartContainerRequest,
    StopPodSandboxRequest, VersionRequest,
};

pub struct Args {
    pub containerd: PathBuf,
    pub log_dir: PathBuf,
    pub name: String,
    pub image: String,
    pub command: Vec<String>,
    /// The RuntimeClass handler (empty: containerd's default runtime).
    pub runtime_handler: String,
}

fn parse() -> Result<Args, String> {
    let mut it = std::env::args().skip(1);
    let (mut containerd, mut log_dir, mut name) = (None, None, "cri-run".to_string());
    let mut runtime_handler = String::new();
    let mut rest = Vec::new();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--containerd" => containerd = it.next().map(PathBuf::from),
            "--log-dir" => log_dir = it.next().map(PathBuf::from),
            "--name" => name = it.next().ok_or("--name needs a value")?,
            "--runtime-handler" => {
                runtime_handler = it.next().ok_or("--runtime-handler needs a value")?
            }
            _ => {
                rest.push(a);
                rest.extend(it.by_ref());
            }
        }
    }
    if rest.len() < 2 {
        return Err(
            "usage: cri_run --containerd SOCKET --log-dir DIR [--name NAME] [--runtime-handler H] IMAGE CMD [ARG...]"
                .into(),
        );
    }
    let image = rest.remove(0);
    Ok(Args {
        containerd: containerd.ok_or("--containerd SOCKET is required")?,
        log_dir: log_dir.ok_or("--log-dir DIR is required")?,
        name,
        image,
        command: rest,
        runtime_handler,
    })
}

fn main() {
    let args = match parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("cri_run: {e}");
            std::process::exit(2);
        }
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    match rt.block_on(run(&args, &mut std::io::stdout())) {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("cri_run: {e}");
            std::process::exit(1);
        }
    }
}

/// Runs the pod; the container's stdout goes to `out` as it appears.
pub async fn run(a: &Args, out: &mut dyn Write) -> Result<i32, String> {
    let t0 = Instant::now();
    let socket = a.containerd.clone();
    let channel = tonic::transport::Endpoint::try_from("http://[::]")
        .map_err(|e| e.to_string())?
        .connect_with_connector(tower::service_fn(move |_: tonic::transport::Uri| {
            tokio::net::UnixStream::connect(socket.clone())
        }))
        .await
        .map_err(|e| format!("connecting to {}: {e}", a.containerd.display()))?;
    let mut runtime = RuntimeServiceClient::new(channel.clone());
    let mut images = ImageServiceClient::new(channel);
    let version = runtime
        .version(VersionRequest {
            version: "v1".into(),
        })
        .await
        .map_err(|e| format!("Version: {e}"))?
        .into_inner();
    if version.runtime_api_version != "v1" {
        return Err(format!(
            "containerd serves CRI {}, not v1",
            version.runtime_api_version
        ));
    }
    images
        .pull_image(PullImageRequest {
            image: Some(ImageSpec {
                image: a.image.clone(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .map_err(|e| format!("PullImage {}: {}", a.image, e.message()))?;
    let pulled = t0.elapsed();

    std::fs::create_dir_all(&a.log_dir)
        .map_err(|e| format!("creating {}: {e}", a.log_dir.display()))?;
    let pod_config = PodSandboxConfig {
        metadata: Some(PodSandboxMetadata {
            name: a.name.clone(),
            uid: format!("{}-{}", a.name, std::process::id()),
            namespace: "default".into(),
            attempt: 0,
        }),
        log_directory: a.log_dir.display().to_string(),
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
            runtime_handler: a.runtime_handler.clone(),
        })
        .await
        .map_err(|e| format!("RunPodSandbox: {}", e.message()))?
        .into_inner()
        .pod_sandbox_id;
    let sandboxed = t0.elapsed();
    let log_name = format!("{}.log", a.name);
    let result = async {
        let id = runtime
            .create_container(CreateContainerRequest {
                pod_sandbox_id: pod.clone(),
                config: Some(ContainerConfig {
                    metadata: Some(ContainerMetadata {
                        name: a.name.clone(),
                        attempt: 0,
                    }),
                    image: Some(ImageSpec {
                        image: a.image.clone(),
                        ..Default::default()
                    }),
                    command: a.command.clone(),
                    log_path: log_name.clone(),
                    ..Default::default()
                }),
                sandbox_config: Some(pod_config),
            })
            .await
            .map_err(|e| format!("CreateContainer: {}", e.message()))?
            .into_inner()
            .container_id;
        runtime
            .start_container(StartContainerRequest {
                container_id: id.clone(),
            })
            .await
            .map_err(|e| format!("StartContainer: {}", e.message()))?;
        let started = t0.elapsed();
        let log = a.log_dir.join(&log_name);
        let mut copied = 0;
        let deadline = Instant::now() + Duration::from_secs(600);
        let code = loop {
            copied = copy_new_lines(&log, copied, out);
            let s = runtime
                .container_status(ContainerStatusRequest {
                    container_id: id.clone(),
                    verbose: false,
                })
                .await
                .map_err(|e| format!("ContainerStatus: {}", e.message()))?
                .into_inner()
                .status
                .ok_or("ContainerStatus without a status")?;
            if s.state == ContainerState::ContainerExited as i32 {
                copy_new_lines(&log, copied, out);
                break s.exit_code;
            }
            if Instant::now() > deadline {
                return Err("the container did not exit within 600 s".to_string());
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        let _ = runtime
            .remove_container(RemoveContainerRequest { container_id: id })
            .await;
        eprintln!(
            "{{\"pull_s\":{:.3},\"sandbox_s\":{:.3},\"started_s\":{:.3},\"exited_s\":{:.3}}}",
            pulled.as_secs_f64(),
            sandboxed.as_secs_f64(),
            started.as_secs_f64(),
            t0.elapsed().as_secs_f64()
        );
        Ok(code)
    }
    .await;
    let _ = runtime
        .stop_pod_sandbox(StopPodSandboxRequest {
            pod_sandbox_id: pod.clone(),
        })
        .await;
    let _ = runtime
        .remove_pod_sandbox(RemovePodSandboxRequest {
            pod_sandbox_id: pod,
        })
        .await;
    result
}

/// Copies the stdout lines of a CRI log (`TIME STREAM TAG TEXT`) past the
/// first `done` lines to `out`; returns how many lines it has seen.
fn copy_new_lines(log: &std::path::Path, done: usize, out: &mut dyn Write) -> usize {
    let Ok(text) = std::fs::read_to_string(log) else {
        return done;
    };
    // Only whole lines: the runtime may be writing the last one.
    let complete = match text.rfind('\n') {
        Some(i) => &text[..=i],
        None => return done,
    };
    let mut n = 0;
    for line in complete.lines() {
        n += 1;
        if n <= done {
            continue;
        }
        let mut f = line.splitn(4, ' ');
        if let (Some(_), Some("stdout"), Some(_), Some(text)) =
            (f.next(), f.next(), f.next(), f.next())
        {
            let _ = writeln!(out, "{text}");
        }
    }
    let _ = out.flush();
    n
}
