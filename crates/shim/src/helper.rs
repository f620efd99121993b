//! The shim's helper: this same binary, run with [`ARG`], single-threaded.
//!
//! The namespace sandbox clones its init (and forks an exec's process)
//! from the calling process, which must be single-threaded: `chdir`,
//! `setns` and a clone without `exec` are not safe in a shim that serves
//! ttrpc from a pool of threads. So the shim hands each such step to a
//! fresh helper, as containerd's runc shim hands them to `runc`; the
//! container's init is the helper's child, and once the helper exits it
//! is reparented to the shim (a subreaper), which reaps it.
//!
//! The request is one JSON argument; the container's streams are the
//! helper's own 0, 1 and 2; the outcome is a JSON file the shim reads
//! after it has reaped the helper (a pipe would stay open in the init,
//! which is cloned with the helper's descriptors).

use std::ffi::OsString;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use skiff_engine::oci_runtime::{CreateOptions, ExecOptions, ExecOutcome, OciRuntime};

use crate::reaper::Reaper;

/// The first argument that makes this binary the helper.
pub const ARG: &str = "--skiff-shim-helper";

/// How long one step may take: hooks may run for 120 s each (their
/// default timeout), so well beyond that.
const HELPER_LIMIT: Duration = Duration::from_secs(300);

/// One rootfs mount containerd hands the shim (`CreateTaskRequest.rootfs`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RootfsMount {
    pub fs_type: String,
    pub source: String,
    pub options: Vec<String>,
}

#[derive(Debug, Serialize, Deserialize)]
pub enum Step {
    /// Mounts the rootfs, then creates the container (its init waits).
    Create {
        bundle: PathBuf,
        rootfs: Vec<RootfsMount>,
        console_socket: Option<PathBuf>,
    },
    /// Starts a created container; only when it has poststart hooks,
    /// which spawn processes the shim's reaper would steal.
    Start,
    /// Starts a process in the running container.
    Exec {
        process_json: Vec<u8>,
        console_socket: Option<PathBuf>,
    },
    /// Deletes the container; only when it has poststop hooks.
    Delete { force: bool },
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Request {
    /// The OCI runtime's state root.
    pub root: PathBuf,
    pub id: String,
    pub sandbox: String,
    /// On Create, whether the kind is still open: a bundle whose command
    /// is a WebAssembly module (seen once its root is mounted) takes the
    /// Wasm kind instead of `sandbox`.
    #[serde(default)]
    pub detect_wasm: bool,
    pub step: Step,
    /// Where the outcome is written.
    pub outcome: PathBuf,
}

/// What a step came to: the new process's pid, or why it failed.
#[derive(Debug, Serialize, Deserialize)]
pub struct Outcome {
    pub pid: Option<i32>,
    pub error: Option<String>,
    /// The kind a Create used, where detection changed it.
    #[serde(default)]
    pub sandbox: Option<String>,
}

/// What a successful step reports.
#[derive(Debug, Default)]
pub struct Done {
    pub pid: Option<i32>,
    /// The kind a Create used, where detection changed it.
    pub sandbox: Option<String>,
}

/// Runs `request` in a helper whose streams are `stdio`, and waits for it.
pub fn run(reaper: &Reaper, request: &Request, stdio: [OwnedFd; 3]) -> Result<Done, String> {
    let text = serde_json::to_string(request).map_err(|e| e.to_string())?;
    let _ = std::fs::remove_file(&request.outcome);
    let [stdin, stdout, stderr] = stdio;
    // /proc/self/exe always names this binary, even if its file was
    // replaced; an exec that cannot fail keeps std's spawn from waiting on
    // a child the reaper may already have taken.
    let child = reaper.spawn(
        Command::new("/proc/self/exe")
            .arg(ARG)
            .arg(text)
            .stdin(Stdio::from(stdin))
            .stdout(Stdio::from(stdout))
            .stderr(Stdio::from(stderr)),
    )?;
    let code = match reaper.wait(child, HELPER_LIMIT) {
        Some(code) => code,
        None => {
            // SAFETY: kill(2) on the helper, a child not yet reaped.
            unsafe { libc::kill(child, libc::SIGKILL) };
            let _ = reaper.wait(child, Duration::from_secs(10));
            let _ = std::fs::remove_file(&request.outcome);
            return Err(format!(
                "skiff's shim helper did not finish its step in {} s and was killed",
                HELPER_LIMIT.as_secs()
            ));
        }
    };
    let outcome = std::fs::read(&request.outcome);
    let _ = std::fs::remove_file(&request.outcome);
    match outcome
        .ok()
        .and_then(|b| serde_json::from_slice::<Outcome>(&b).ok())
    {
        Some(Outcome { error: Some(e), .. }) => Err(e),
        Some(Outcome { pid, sandbox, .. }) if code == 0 => Ok(Done { pid, sandbox }),
        _ => Err(format!(
            "skiff's shim helper exited with status {code} and no outcome"
        )),
    }
}

/// The helper's whole life; returns its exit status.
pub fn main(args: &[OsString]) -> i32 {
    let Some(text) = args.first().and_then(|a| a.to_str()) else {
        eprintln!("{ARG} needs its request as one JSON argument");
        return 2;
    };
    let request: Request = match serde_json::from_str(text) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("{ARG}: a malformed request: {e}");
            return 2;
        }
    };
    let result = step(&request);
    let outcome = match &result {
        Ok(done) => Outcome {
            pid: done.pid,
            error: None,
            sandbox: done.sandbox.clone(),
        },
        Err(e) => Outcome {
            pid: None,
            error: Some(e.clone()),
            sandbox: None,
        },
    };
    let bytes = serde_json::to_vec(&outcome).unwrap_or_default();
    if skiff_engine::record::write_atomically(&request.outcome, &bytes).is_err() {
        return 3;
    }
    i32::from(result.is_err())
}

fn step(request: &Request) -> Result<Done, String> {
    let runtime = OciRuntime::new(&request.root).map_err(|e| e.to_string())?;
    let mut kind = runtime
        .sandbox_kind(&request.sandbox)
        .map_err(|e| e.to_string())?;
    let pid_only = |pid: Option<i32>| Done { pid, sandbox: None };
    let id = &request.id;
    match &request.step {
        Step::Create {
            bundle,
            rootfs,
            console_socket,
        } => {
            let target = bundle.join("rootfs");
            mount_rootfs(rootfs, &target)?;
            let mut chosen = None;
            if request.detect_wasm
                && skiff_engine::oci_runtime::bundle_sandbox(bundle).as_deref() == Some("wasm")
            {
                kind = runtime.sandbox_kind("wasm").map_err(|e| e.to_string())?;
                chosen = Some("wasm".to_string());
            }
            let options = CreateOptions {
                console_socket: console_socket.clone(),
                ..Default::default()
            };
            match runtime.create(&*kind, id, bundle, &options) {
                Ok(state) => Ok(Done {
                    pid: Some(state.pid),
                    sandbox: chosen,
                }),
                Err(e) => {
                    if !rootfs.is_empty() {
                        unmount_rootfs(&target);
                    }
                    Err(e.to_string())
                }
            }
        }
        Step::Start => runtime
            .start(id)
            .map(|()| pid_only(None))
            .map_err(|e| e.to_string()),
        Step::Exec {
            process_json,
            console_socket,
        } => {
            let options = ExecOptions {
                process_json: Some(process_json.clone()),
                detach: true,
                console_socket: console_socket.clone(),
                ..Default::default()
            };
            match runtime.exec(&*kind, id, &options) {
                Ok(ExecOutcome::Started(pid)) => Ok(pid_only(Some(pid))),
                Ok(ExecOutcome::Exited(code)) => {
                    Err(format!("the exec exited ({code}) before it was detached"))
                }
                Err(e) => Err(e.to_string()),
            }
        }
        Step::Delete { force } => runtime
            .delete(&[&*kind], id, *force)
            .map(|()| pid_only(None))
            .map_err(|e| e.to_string()),
    }
}

/// Mounts containerd's rootfs mounts (an overlay of snapshots, or skiff
/// snapshotter's) on the bundle's `rootfs`, in order.
pub fn mount_rootfs(mounts: &[RootfsMount], target: &Path) -> Result<(), String> {
    if mounts.is_empty() {
        return Ok(());
    }
    std::fs::create_dir_all(target).map_err(|e| format!("creating {}: {e}", target.display()))?;
    for (done, m) in mounts.iter().enumerate() {
        if let Err(e) = crate::mount::mount(m, target) {
            for _ in 0..done {
                unmount_rootfs(target);
            }
            return Err(format!(
                "mounting the rootfs ({} from {}) on {}: {e}",
                m.fs_type,
                m.source,
                target.display()
            ));
        }
    }
    Ok(())
}

/// Detaches whatever is mounted on `target` (what [`mount_rootfs`] put
/// there, stacked).
pub fn unmount_rootfs(target: &Path) {
    while rustix::mount::unmount(target, rustix::mount::UnmountFlags::DETACH).is_ok() {}
}
