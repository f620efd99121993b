//! OCI lifecycle hooks (runtime spec, "POSIX-platform Hooks"): each hook
//! is a program run with the container's state JSON on its stdin, its own
//! `args` and `env` (nothing of the caller's), and an optional timeout.
//! A failing `prestart`, `createRuntime`, `createContainer` or
//! `startContainer` hook fails the container; a failing `poststart` or
//! `poststop` hook is only logged (the spec's rule).
//!
//! Written here rather than taken from a crate: it is a fork, a pipe and
//! a wait, and it must run inside the container's init too.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use oci_spec::runtime::{Hook, Spec};

use crate::SandboxError;

/// The runtime spec's state of a container (`state` prints it; hooks read
/// it on stdin).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct State {
    #[serde(rename = "ociVersion")]
    pub oci_version: String,
    pub id: String,
    /// `creating`, `created`, `running`, `paused` or `stopped`.
    pub status: String,
    /// The container's first process as the host sees it; 0 once stopped.
    #[serde(default)]
    pub pid: i32,
    pub bundle: String,
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub annotations: std::collections::BTreeMap<String, String>,
}

/// The runtime spec version skiff's runtime implements.
pub const OCI_VERSION: &str = "1.1.0";

impl State {
    /// The state of container `id` of `spec`, from `bundle`.
    pub fn new(id: &str, spec: &Spec, bundle: &std::path::Path, status: &str, pid: i32) -> Self {
        State {
            oci_version: OCI_VERSION.into(),
            id: id.into(),
            status: status.into(),
            pid,
            bundle: bundle.to_string_lossy().into_owned(),
            annotations: spec
                .annotations()
                .iter()
                .flatten()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        }
    }

    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }
}

/// Which hooks of the spec's `hooks`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HookKind {
    Prestart,
    CreateRuntime,
    CreateContainer,
    StartContainer,
    Poststart,
    Poststop,
}

impl HookKind {
    pub fn name(self) -> &'static str {
        match self {
            HookKind::Prestart => "prestart",
            HookKind::CreateRuntime => "createRuntime",
            HookKind::CreateContainer => "createContainer",
            HookKind::StartContainer => "startContainer",
            HookKind::Poststart => "poststart",
            HookKind::Poststop => "poststop",
        }
    }

    /// The hooks of this kind in `spec`, in order.
    pub fn of(self, spec: &Spec) -> Vec<Hook> {
        let Some(h) = spec.hooks() else {
            return Vec::new();
        };
        let list = match self {
            HookKind::Prestart => h.prestart(),
            HookKind::CreateRuntime => h.create_runtime(),
            HookKind::CreateContainer => h.create_container(),
            HookKind::StartContainer => h.start_container(),
            HookKind::Poststart => h.poststart(),
            HookKind::Poststop => h.poststop(),
        };
        list.clone().unwrap_or_default()
    }
}

/// A hook with no timeout of its own is given this long: a hook that
/// never returns must not hang the container's creation for ever.
pub const DEFAULT_HOOK_TIMEOUT: Duration = Duration::from_secs(120);

/// Runs each hook in turn with `state` on stdin; the first that fails (or
/// outlives its timeout, and is killed) is the error, naming the hook.
pub fn run(kind: HookKind, hooks: &[Hook], state: &[u8]) -> Result<(), SandboxError> {
    for hook in hooks {
        run_one(kind, hook, state)?;
    }
    Ok(())
}

fn run_one(kind: HookKind, hook: &Hook, state: &[u8]) -> Result<(), SandboxError> {
    use std::os::unix::process::CommandExt;
    let path = hook.path();
    let shown = format!("the {} hook {}", kind.name(), path.display());
    let mut cmd = Command::new(path);
    let args = hook.args().clone().unwrap_or_default();
    if let Some((argv0, rest)) = args.split_first() {
        cmd.arg0(argv0).args(rest);
    }
    cmd.env_clear();
    for e in hook.env().iter().flatten() {
        if let Some((k, v)) = e.split_once('=') {
            cmd.env(k, v);
        }
    }
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::inherit())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(|e| {
        SandboxError::Invalid(format!(
            "{shown} cannot be run: {e}; fix its path in config.json"
        ))
    })?;
    if let Some(mut stdin) = child.stdin.take() {
        // A hook that does not read its state is not an error.
        let _ = stdin.write_all(state);
    }
    let mut stderr = child.stderr.take();
    let timeout = match hook.timeout() {
        Some(s) if s > 0 => Duration::from_secs(s as u64),
        Some(_) => {
            let _ = child.kill();
            let _ = child.wait();
            return Err(SandboxError::Invalid(format!(
                "{shown} has a timeout that is not positive; the spec requires one above 0"
            )));
        }
        None => DEFAULT_HOOK_TIMEOUT,
    };
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(SandboxError::Setup(format!(
                    "{shown} did not finish within {} s and was killed",
                    timeout.as_secs()
                )));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(2)),
            Err(e) => return Err(SandboxError::io(format!("waiting for {shown}"), e)),
        }
    };
    if status.success() {
        return Ok(());
    }
    let mut said = String::new();
    if let Some(err) = stderr.as_mut() {
        use std::io::Read;
        let _ = err.take(4096).read_to_string(&mut said);
    }
    let said = said.trim();
    Err(SandboxError::Setup(format!(
        "{shown} failed ({status}){}",
        if said.is_empty() {
            String::new()
        } else {
            format!(": {said}")
        }
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hook(json: serde_json::Value) -> Hook {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn a_hook_reads_its_state_and_gets_only_its_env() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let h = hook(serde_json::json!({
            "path": "/bin/sh",
            "args": ["sh", "-c", format!("cat > {0}; echo \" $X $HOME\" >> {0}", out.display())],
            "env": ["X=1"],
        }));
        run(HookKind::Poststart, &[h], b"{\"id\":\"c\"}").unwrap();
        let got = std::fs::read_to_string(&out).unwrap();
        assert_eq!(got.trim_end(), "{\"id\":\"c\"} 1");
    }

    #[test]
    fn a_failing_or_slow_hook_is_an_error_naming_it() {
        let fails = hook(serde_json::json!({
            "path": "/bin/sh", "args": ["sh", "-c", "echo broken >&2; exit 3"],
        }));
        let e = run(HookKind::CreateRuntime, &[fails], b"{}").unwrap_err();
        let text = e.to_string();
        assert!(text.contains("createRuntime hook /bin/sh"), "{text}");
        assert!(text.contains("broken"), "{text}");
        let slow = hook(serde_json::json!({
            "path": "/bin/sleep", "args": ["sleep", "30"], "timeout": 1,
        }));
        let e = run(HookKind::Prestart, &[slow], b"{}").unwrap_err();
        assert!(e.to_string().contains("within 1 s"), "{e}");
        let missing = hook(serde_json::json!({"path": "/nonexistent/hook"}));
        let e = run(HookKind::Poststop, &[missing], b"{}").unwrap_err();
        assert!(e.to_string().contains("/nonexistent/hook"), "{e}");
    }
}
