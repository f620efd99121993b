//! Tasks whose module runs in the node's Wasm pool, held by the shim
//! itself: no helper, no supervisor and no copy of its streams. The pool
//! gets containerd's FIFOs directly (a module cannot reopen a descriptor
//! by path: WASI has no `/proc`), and one small thread per task waits for
//! the module's end. So a pod of many modules costs its shim little more
//! than their stores in the pool (docs/wasm.md, "The pool").

use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

use containerd_shim::api;
use containerd_shim::protos::ttrpc::Code;
use skiff_engine::oci_runtime::{PooledModule, PooledSignal};
use skiff_engine::EngineError;

use super::{
    engine_error, exit_event, not_found, rpc_error, Container, Inner, Proc, RpcResult, TaskService,
};
use crate::helper::{self, RootfsMount};
use crate::io::ProcessIo;

/// A pooled task's module: created, then running (its signals).
pub(super) enum Pooled {
    Created(PooledModule),
    Running(PooledSignal),
}

/// The waiting thread's stack: it only blocks in `recvmsg`.
const WAITER_STACK: usize = 64 << 10;

impl TaskService {
    /// Creates task `req.id` in the pool when its spec lets it (no hooks,
    /// no terminal, nothing the pool cannot give); `None` sends it down
    /// the usual path.
    pub(super) fn create_pooled(
        &self,
        req: &api::CreateTaskRequest,
        bundle: &Path,
        rootfs: &[RootfsMount],
        spec: &serde_json::Value,
    ) -> RpcResult<Option<api::CreateTaskResponse>> {
        let s = &self.inner;
        let id = &req.id;
        let has_hooks = spec
            .get("hooks")
            .and_then(|h| h.as_object())
            .is_some_and(|h| {
                h.values()
                    .any(|v| v.as_array().is_some_and(|a| !a.is_empty()))
            });
        if req.terminal || has_hooks {
            return Ok(None);
        }
        let target = bundle.join("rootfs");
        helper::mount_rootfs(rootfs, &target).map_err(|e| rpc_error(Code::UNKNOWN, e))?;
        let made = s.runtime.prepare_pooled_module(id, bundle, || {
            ProcessIo::direct(&req.stdin, &req.stdout, &req.stderr).map_err(EngineError::Invalid)
        });
        let module = match made {
            Ok(Some(m)) => m,
            other => {
                if !rootfs.is_empty() {
                    helper::unmount_rootfs(&target);
                }
                return other.map(|_| None).map_err(engine_error);
            }
        };
        let pid = module.pid();
        s.lock().insert(
            id.clone(),
            Container {
                bundle: bundle.to_path_buf(),
                sandbox: "wasm".into(),
                rootfs_mounted: !rootfs.is_empty(),
                poststart_hooks: false,
                poststop_hooks: false,
                init: Proc {
                    pid,
                    status: api::Status::CREATED,
                    exit: None,
                    io: ProcessIo::default(),
                    stdin: req.stdin.clone(),
                    stdout: req.stdout.clone(),
                    stderr: req.stderr.clone(),
                    terminal: false,
                    spec: Vec::new(),
                },
                execs: Default::default(),
                in_pool: true,
                pooled: Some(Pooled::Created(module)),
            },
        );
        s.publish_created(req, pid);
        Ok(Some(api::CreateTaskResponse {
            pid: pid as u32,
            ..Default::default()
        }))
    }

    /// Starts a pooled task's module, and a thread that records its end.
    pub(super) fn start_pooled(&self, id: &str, mut module: PooledModule) -> RpcResult<()> {
        let s = &self.inner;
        if let Err(e) = module.start() {
            module.delete();
            s.pooled_exited(id, 255);
            return Err(engine_error(e));
        }
        if let Some(c) = s.lock().get_mut(id) {
            c.pooled = Some(Pooled::Running(module.signal_handle()));
        }
        let inner = Arc::clone(&self.inner);
        let task = id.to_string();
        std::thread::Builder::new()
            .name("skiff-pooled".into())
            .stack_size(WAITER_STACK)
            .spawn(move || {
                let code = module.wait().unwrap_or_else(|e| {
                    tracing::warn!(id = %task, "waiting for the pooled module: {e}");
                    128 + libc::SIGKILL
                });
                module.delete();
                inner.pooled_exited(&task, code);
            })
            .map(|_| ())
            .map_err(|e| rpc_error(Code::UNKNOWN, format!("starting the task's waiter: {e}")))
    }

    /// Kills a pooled task: a signal to its running module, or the end of
    /// one never started.
    pub(super) fn kill_pooled(&self, id: &str, signal: i32) -> RpcResult<api::Empty> {
        let s = &self.inner;
        let mut containers = s.lock();
        let c = containers.get_mut(id).ok_or_else(|| not_found(id))?;
        match c.pooled.take() {
            Some(Pooled::Running(handle)) => {
                c.pooled = Some(Pooled::Running(handle.clone()));
                drop(containers);
                handle(signal)
                    .map_err(|_| rpc_error(Code::NOT_FOUND, "process already finished"))?;
            }
            Some(Pooled::Created(mut module)) => {
                drop(containers);
                module.delete();
                s.pooled_exited(id, 128 + signal);
            }
            None => return Err(rpc_error(Code::NOT_FOUND, "process already finished")),
        }
        Ok(api::Empty::new())
    }
}

impl Inner {
    /// A pooled task's module ended with `code`: recorded and announced.
    pub(super) fn pooled_exited(&self, id: &str, code: i32) {
        let mut containers = self.lock();
        let Some(c) = containers.get_mut(id) else {
            return;
        };
        if c.init.exit.is_some() {
            return;
        }
        c.init.exited(code, SystemTime::now());
        let event = exit_event(id, id, &c.init);
        drop(containers);
        self.announce_exit(event);
    }
}
