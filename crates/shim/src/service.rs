//! The shim's side of containerd's runtime v2 life cycle: `start` (spawn
//! or reuse the pod's shim), `delete` (clean up after a shim that died),
//! and the long-running serve.

use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

use containerd_shim::api::DeleteResponse;
use containerd_shim::protos::protobuf::MessageField;
use containerd_shim::publisher::RemotePublisher;
use containerd_shim::{Config, ExitSignal, Flags, StartOpts};
use skiff_engine::oci_runtime::OciRuntime;

use crate::task::{state_root, TaskService};

/// The annotation the CRI puts on every container of a pod.
const POD_ID_ANNOTATION: &str = "io.kubernetes.cri.sandbox-id";

pub struct Service {
    namespace: String,
    id: String,
    exit: Arc<ExitSignal>,
}

impl containerd_shim::Shim for Service {
    type T = TaskService;

    fn new(_runtime_id: &str, args: &Flags, _config: &mut Config) -> Self {
        Service {
            namespace: args.namespace.clone(),
            id: args.id.clone(),
            exit: Arc::new(ExitSignal::default()),
        }
    }

    /// One shim per pod: the socket's name comes from the pod's ID, so the
    /// pod's later containers find the shim its first one started.
    fn start_shim(&mut self, opts: StartOpts) -> containerd_shim::Result<String> {
        let grouping = pod_id(Path::new("config.json")).unwrap_or_else(|| opts.id.clone());
        let kind = crate::task::handler_sandbox().unwrap_or_default();
        let vars = vec![(crate::task::HANDLER_SANDBOX_ENV, kind.as_str())];
        let (_pid, address) = containerd_shim::spawn(opts, &grouping, vars)?;
        containerd_shim::util::write_address(&address)?;
        Ok(address)
    }

    /// containerd runs `delete` when the shim serving container `id` is
    /// gone (killed, say): whatever it left (processes, cgroup, rootfs
    /// mount, state) goes, and the container counts as killed.
    fn delete_shim(&mut self) -> containerd_shim::Result<DeleteResponse> {
        let root = state_root(&self.namespace);
        let mut pid = 0;
        if let Ok(runtime) = OciRuntime::new(&root) {
            if let Ok(state) = runtime.load(&self.id) {
                pid = state.pid.max(0) as u32;
                match runtime.sandbox_kind(&state.sandbox) {
                    Ok(kind) => {
                        if let Err(e) = runtime.delete(&[&*kind], &self.id, true) {
                            tracing::warn!(id = %self.id, "cleaning up: {e}");
                        }
                    }
                    Err(e) => tracing::warn!(id = %self.id, "cleaning up: {e}"),
                }
            }
        }
        // The shim's working directory is the container's bundle.
        crate::helper::unmount_rootfs(Path::new("rootfs"));
        Ok(DeleteResponse {
            pid,
            exit_status: 128 + libc::SIGKILL as u32,
            exited_at: MessageField::some(crate::task::timestamp(SystemTime::now())),
            ..Default::default()
        })
    }

    fn wait(&mut self) {
        self.exit.wait();
    }

    fn create_task_service(&self, publisher: RemotePublisher) -> TaskService {
        TaskService::new(&self.namespace, publisher, Arc::clone(&self.exit))
    }
}

/// The pod a container belongs to, from its bundle's spec.
fn pod_id(config: &Path) -> Option<String> {
    let bytes = std::fs::read(config).ok()?;
    let spec: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    spec.get("annotations")?
        .get(POD_ID_ANNOTATION)?
        .as_str()
        .map(str::to_owned)
}
