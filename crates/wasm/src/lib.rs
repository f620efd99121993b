//! The Wasm sandbox kind (`--sandbox wasm`; docs/wasm.md). A container's
//! command names a WASI module in its root. The module is compiled once
//! per node ([`cache`]), and the container becomes a namespace-sandbox
//! container whose process is the static `skiff-wasm` runner, bound in
//! read-only with the compiled module: the engine runs under the same
//! namespaces, cgroup, seccomp policy and `no_new_privs` as any container.

pub mod cache;
pub mod pool;

use std::path::{Path, PathBuf};

use oci_spec::runtime::{Mount, MountBuilder, Spec};
use skiff_sandbox::{
    ExecProcess, ExecStart, ImageFacts, NamespaceKind, Prepare, Running, Sandbox, SandboxError,
    SandboxKind, Stats,
};

pub use cache::{Compiled, ModuleCache};
pub use pool::PoolPlace;

/// The runner's path under the cache, as `make wasm` leaves it.
pub const RUNNER_IN_CACHE: &str = "wasm-target/skiff-wasm";

/// Where the runner and the compiled module appear in the container.
const RUNNER_IN_ROOT: &str = "/.skiff-wasm/runner";
const COMPILED_IN_ROOT: &str = "/.skiff-wasm/module.cwasm";
/// The image's tree alone, without the container's `/proc`, `/sys`, `/dev`
/// or any other mount under it: what the module sees as `/`.
const TREE_IN_ROOT: &str = "/.skiff-wasm/root";

/// Modules larger than this are refused before they are read whole.
const MAX_MODULE_BYTES: u64 = 512 << 20;

/// Finds the runner: `$SKIFF_WASM_RUNNER`, else beside the running binary
/// if static, else [`RUNNER_IN_CACHE`] under `cache`. It must be static:
/// a Wasm image's root has no libc.
pub fn find_runner(cache: &Path) -> Result<PathBuf, SandboxError> {
    let beside = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(|d| d.join("skiff-wasm")));
    let runner = std::env::var_os("SKIFF_WASM_RUNNER")
        .map(PathBuf::from)
        .or_else(|| beside.filter(|p| skiff_sandbox::elf::is_static_executable(p)))
        .unwrap_or_else(|| cache.join(RUNNER_IN_CACHE));
    if !runner.is_file() {
        return Err(SandboxError::Unsupported(format!(
            "no Wasm runner at {}: run `make wasm`, or set SKIFF_WASM_RUNNER",
            runner.display()
        )));
    }
    if !skiff_sandbox::elf::is_static_executable(&runner) {
        return Err(SandboxError::Unsupported(format!(
            "the Wasm runner {} is not a static executable, and a Wasm image has no libc: build it with `make wasm`",
            runner.display()
        )));
    }
    Ok(runner)
}

/// Whether an image with these facts holds a WASI module to run: its
/// platform is `wasi/wasm`, or it asks for Wasm by crun's annotation.
pub fn is_wasm_image(image: &ImageFacts) -> bool {
    image.architecture == "wasm" || image.os.starts_with("wasi") || image.asks_for_wasm()
}

pub struct WasmKind {
    namespace: NamespaceKind,
    /// `~/.cache/skiff`, where `make wasm` leaves the runner.
    asset_cache: PathBuf,
    modules: ModuleCache,
    pool: PoolPlace,
}

/// How long an idle pool stays, unless the engine says otherwise.
pub const POOL_IDLE: std::time::Duration = std::time::Duration::from_secs(600);

/// Set to `off`, every module runs in a runner process of its own.
pub const POOL_ENV: &str = "SKIFF_WASM_POOL";

impl WasmKind {
    /// A kind whose compiled modules live in `module_cache` (under the
    /// node's root), with the namespace kind's seccomp filter cache.
    pub fn new(asset_cache: &Path, module_cache: &Path, seccomp_cache: &Path) -> Self {
        WasmKind {
            namespace: NamespaceKind::new(seccomp_cache),
            asset_cache: asset_cache.to_path_buf(),
            modules: ModuleCache::new(module_cache),
            pool: PoolPlace::new(&module_cache.join("pool"), POOL_IDLE),
        }
    }

    /// The same, with an idle pool leaving after `idle`.
    pub fn with_pool_idle(mut self, idle: std::time::Duration) -> Self {
        self.pool = PoolPlace::new(&self.modules.dir().join("pool"), idle);
        self
    }

    /// Whether a container of this spec runs in the pool (not a pod's
    /// pause container, nothing the pool cannot give): a front end that
    /// holds pooled modules itself (the shim) asks before [`SandboxKind::prepare`],
    /// which is then safe from a process with many threads.
    pub fn pools(&self, spec: &Spec) -> bool {
        !is_pod_sandbox(spec) && pool_can_run(spec, false)
    }

    /// Runs the module in the node's pool.
    fn prepare_pooled(&self, container: Prepare<'_>) -> Result<Box<dyn Sandbox>, SandboxError> {
        let (conn, plan) = self.pooled(container.spec, container.bundle)?;
        Ok(Box::new(pool::PooledInstance::prepare(
            conn,
            plan.request,
            &plan.compiled,
            &plan.root,
            &plan.dirs,
            container.stdio,
        )?))
    }

    /// The pool's connection and what to send it.
    fn pooled(
        &self,
        spec: &Spec,
        bundle: &Path,
    ) -> Result<(std::os::fd::OwnedFd, PoolPlan), SandboxError> {
        let runner = find_runner(&self.asset_cache)?;
        let module = ModuleOfSpec::read(spec, bundle)?;
        let compiled = self.modules.ensure(&runner, &module.path, &module.bytes)?;
        tracing::info!(module = %module.path, compiled_now = compiled.compiled_now, "the Wasm module is compiled; it runs in the pool");
        let process = spec
            .process()
            .as_ref()
            .expect("checked by ModuleOfSpec::read");
        let env = process
            .env()
            .iter()
            .flatten()
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let mounts = spec.mounts().clone().unwrap_or_default();
        let (volumes, dirs) = volumes(&mounts)
            .into_iter()
            .map(|(dest, writable, source)| ((dest, writable), source))
            .unzip();
        let conn = self.pool.connect(&self.namespace, &runner)?;
        Ok((
            conn,
            PoolPlan {
                request: pool::StartRequest {
                    blake3: compiled.blake3.clone(),
                    argv: module.args,
                    env,
                    dirs: volumes,
                    memory: memory_limit(spec).map(|l| module_memory(l) as usize),
                    stdin: true,
                },
                compiled: compiled.path,
                root: module.root,
                dirs,
            },
        ))
    }

    /// The spec the namespace kind runs: the runner as the process, with
    /// the module's own command line after `--`.
    fn runner_spec(&self, spec: &Spec, bundle: &Path) -> Result<Spec, SandboxError> {
        let runner = find_runner(&self.asset_cache)?;
        let module = ModuleOfSpec::read(spec, bundle)?;
        let compiled = self.modules.ensure(&runner, &module.path, &module.bytes)?;
        tracing::info!(
            module = %module.path,
            compiled_now = compiled.compiled_now,
            "the Wasm module is compiled"
        );
        let (process, args, root) = (
            spec.process()
                .as_ref()
                .expect("checked by ModuleOfSpec::read"),
            module.args,
            module.root,
        );

        let mut runner_args = vec![
            RUNNER_IN_ROOT.to_string(),
            "run".into(),
            "--cwasm".into(),
            COMPILED_IN_ROOT.into(),
            "--blake3".into(),
            compiled.blake3.clone(),
            "--root".into(),
            TREE_IN_ROOT.into(),
        ];
        if let Some(limit) = memory_limit(spec) {
            runner_args.extend(["--memory".into(), module_memory(limit).to_string()]);
        }
        let mut mounts = spec.mounts().clone().unwrap_or_default();
        for (path, writable, _) in volumes(&mounts) {
            runner_args.extend([
                "--dir".into(),
                format!("{path}:{}", if writable { "rw" } else { "ro" }),
            ]);
        }
        runner_args.push("--".into());
        runner_args.extend(args);
        // Not recursive: the mounts under the root stay out of the view.
        mounts.push(read_only_bind(&root, TREE_IN_ROOT)?);
        mounts.push(read_only_bind(&runner, RUNNER_IN_ROOT)?);
        mounts.push(read_only_bind(&compiled.path, COMPILED_IN_ROOT)?);

        let mut out = spec.clone();
        let mut process = process.clone();
        process.set_args(Some(runner_args));
        out.set_process(Some(process));
        out.set_mounts(Some(mounts));
        Ok(out)
    }
}

/// The module a spec runs, read from its root.
struct ModuleOfSpec {
    /// Its path in the root.
    path: String,
    /// The command line, the module first.
    args: Vec<String>,
    /// The container's root on the host.
    root: PathBuf,
    bytes: Vec<u8>,
}

impl ModuleOfSpec {
    fn read(spec: &Spec, bundle: &Path) -> Result<Self, SandboxError> {
        let process = spec
            .process()
            .as_ref()
            .ok_or_else(|| SandboxError::Invalid("the spec has no process".into()))?;
        let args = process.args().clone().unwrap_or_default();
        let path = module_path(&args, process.cwd())?;
        let root_path = spec
            .root()
            .as_ref()
            .map(|r| r.path().clone())
            .ok_or_else(|| SandboxError::Invalid("the spec has no root".into()))?;
        let root = if root_path.is_absolute() {
            root_path
        } else {
            bundle.join(root_path)
        };
        let bytes = read_module(&root, &path)?;
        Ok(ModuleOfSpec {
            path,
            args,
            root,
            bytes,
        })
    }
}

/// What a pooled start sends besides the connection.
struct PoolPlan {
    request: pool::StartRequest,
    compiled: PathBuf,
    root: PathBuf,
    /// The host directories of the request's `dirs`, in order.
    dirs: Vec<PathBuf>,
}

/// The spec's memory limit, if it has one.
fn memory_limit(spec: &Spec) -> Option<i64> {
    spec.linux()
        .as_ref()
        .and_then(|l| l.resources().as_ref())
        .and_then(|r| r.memory().as_ref())
        .and_then(|m| m.limit())
        .filter(|l| *l > 0)
}

/// Whether the pool can give a module all this spec asks: a module in the
/// pool shares its process, so not a terminal, another user, a CPU quota
/// or a user namespace. `SKIFF_WASM_POOL=off` turns the pool off.
fn pool_can_run(spec: &Spec, terminal: bool) -> bool {
    if std::env::var(POOL_ENV).is_ok_and(|v| v == "off") || terminal {
        return false;
    }
    let Some(process) = spec.process().as_ref() else {
        return false;
    };
    if process.terminal() == Some(true) || process.user().uid() != 0 || process.user().gid() != 0 {
        return false;
    }
    let linux = spec.linux().as_ref();
    let has_user_ns = linux
        .and_then(|l| l.namespaces().as_ref())
        .is_some_and(|ns| {
            ns.iter()
                .any(|n| n.typ() == oci_spec::runtime::LinuxNamespaceType::User)
        });
    let has_cpu_quota = linux
        .and_then(|l| l.resources().as_ref())
        .and_then(|r| r.cpu().as_ref())
        .and_then(|c| c.quota())
        .is_some_and(|q| q > 0);
    !has_user_ns && !has_cpu_quota
}

/// The engine's own share of `--memory` (its code, the compiled module,
/// WASI's buffers: about 7 MiB measured), kept out of the module's limit
/// so that the store's limit, with its clear message, trips before the
/// cgroup's OOM killer.
const ENGINE_SHARE: i64 = 16 << 20;

/// The module's memory limit within a container limit of `limit` bytes.
fn module_memory(limit: i64) -> i64 {
    if limit > 2 * ENGINE_SHARE {
        limit - ENGINE_SHARE
    } else {
        limit / 2
    }
}

/// The module a command names: its first word, made absolute against the
/// working directory.
pub fn module_path(args: &[String], cwd: &Path) -> Result<String, SandboxError> {
    let first = args.first().ok_or_else(|| {
        SandboxError::Invalid("the container has no command: give the module to run".into())
    })?;
    if first.starts_with('/') {
        Ok(first.clone())
    } else {
        Ok(cwd.join(first).to_string_lossy().into_owned())
    }
}

/// Whether the file at `module` inside `root` is a WebAssembly module (its
/// first four bytes), as runwasi decides for an entrypoint.
pub fn is_module(root: &Path, module: &str) -> bool {
    use std::io::Read;
    let Ok(file) = open_in_root(root, module) else {
        return false;
    };
    let mut head = [0u8; 4];
    std::fs::File::from(file).read_exact(&mut head).is_ok() && &head == b"\0asm"
}

/// Opens `module` inside `root` for reading, resolving every symlink
/// within the root. Only a regular file is opened: the file is first
/// reached with `O_PATH`, so a FIFO (which would block the open) or a
/// device node (whose open may act on the host's device) is never opened.
fn open_in_root(root: &Path, module: &str) -> Result<std::os::fd::OwnedFd, rustix::io::Errno> {
    use rustix::fs::{FileType, Mode, OFlags, ResolveFlags};
    let root_dir = rustix::fs::open(
        root,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let found = rustix::fs::openat2(
        &root_dir,
        module.trim_start_matches('/'),
        OFlags::PATH | OFlags::CLOEXEC,
        Mode::empty(),
        ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
    )?;
    if FileType::from_raw_mode(rustix::fs::fstat(&found)?.st_mode) != FileType::RegularFile {
        return Err(rustix::io::Errno::ACCESS);
    }
    // The file itself, not a path that could be swapped meanwhile.
    rustix::fs::open(
        format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&found)),
        OFlags::RDONLY | OFlags::CLOEXEC,
        Mode::empty(),
    )
}

/// The BLAKE3 digest of the module at `module` inside `root` (the key of
/// its compiled form).
pub fn module_digest(root: &Path, module: &str) -> Result<String, SandboxError> {
    Ok(blake3::hash(&read_module(root, module)?)
        .to_hex()
        .to_string())
}

/// Reads the module at `module` inside `root`, resolving every symlink
/// within the root, never outside it.
pub fn read_module(root: &Path, module: &str) -> Result<Vec<u8>, SandboxError> {
    use std::io::Read;
    let fd = open_in_root(root, module).map_err(|e| match e {
        rustix::io::Errno::NOENT | rustix::io::Errno::NOTDIR => {
            SandboxError::NotFound(format!("{module}: no such module in the image"))
        }
        rustix::io::Errno::ACCESS => {
            SandboxError::NotExecutable(format!("{module} is not a regular file"))
        }
        e => SandboxError::NotExecutable(format!("{module}: cannot be read: {e}")),
    })?;
    let mut file = std::fs::File::from(fd);
    let meta = file
        .metadata()
        .map_err(|e| io_error(format!("reading {module}"), e))?;
    if !meta.is_file() {
        return Err(SandboxError::NotExecutable(format!(
            "{module} is not a file"
        )));
    }
    if meta.len() > MAX_MODULE_BYTES {
        return Err(SandboxError::NotExecutable(format!(
            "{module} is {} bytes, more than the {MAX_MODULE_BYTES} a module may have",
            meta.len()
        )));
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.read_to_end(&mut bytes).map_err(|e| {
        io_error(
            format!("reading {module} (a chunk that failed verification reads as EIO)"),
            e,
        )
    })?;
    if !bytes.starts_with(b"\0asm") {
        return Err(SandboxError::NotExecutable(format!(
            "{module} is not a WebAssembly module (it does not start with \\0asm)"
        )));
    }
    Ok(bytes)
}

/// Directories mounted from the host into the container that the module
/// may open (`-v`), with whether they are writable and where they are on
/// the host; not the ones every container gets.
fn volumes(mounts: &[Mount]) -> Vec<(String, bool, PathBuf)> {
    const SYSTEM: [&str; 4] = ["/proc", "/dev", "/sys", "/etc"];
    mounts
        .iter()
        .filter(|m| {
            m.typ().as_deref() == Some("bind")
                || m.options()
                    .as_ref()
                    .is_some_and(|o| o.iter().any(|x| x == "bind" || x == "rbind"))
        })
        .filter_map(|m| {
            let dest = m.destination().to_string_lossy().into_owned();
            let system = SYSTEM
                .iter()
                .any(|s| dest == *s || dest.starts_with(&format!("{s}/")));
            let source = m.source().clone().filter(|s| s.is_dir())?;
            if system {
                return None;
            }
            let read_only = m
                .options()
                .as_ref()
                .is_some_and(|o| o.iter().any(|x| x == "ro"));
            Some((dest, !read_only, source))
        })
        .collect()
}

/// Whether the CRI made this spec for a pod's sandbox container.
fn is_pod_sandbox(spec: &Spec) -> bool {
    spec.annotations()
        .as_ref()
        .and_then(|a| a.get("io.kubernetes.cri.container-type"))
        .is_some_and(|t| t == "sandbox")
}

pub(crate) fn io_error(context: String, source: std::io::Error) -> SandboxError {
    SandboxError::Io { context, source }
}

fn read_only_bind(source: &Path, destination: &str) -> Result<Mount, SandboxError> {
    MountBuilder::default()
        .destination(destination)
        .typ("bind")
        .source(source)
        .options(vec![
            "bind".to_string(),
            "ro".into(),
            "nosuid".into(),
            "nodev".into(),
        ])
        .build()
        .map_err(|e| SandboxError::Invalid(format!("the runner's mount: {e}")))
}

impl SandboxKind for WasmKind {
    fn name(&self) -> &'static str {
        "wasm"
    }

    fn can_handle(&self, image: &ImageFacts) -> bool {
        is_wasm_image(image)
    }

    /// Named (`--sandbox wasm`), any image: its command must be a module,
    /// which the start checks.
    fn can_run_when_named(&self, _image: &ImageFacts) -> bool {
        true
    }

    /// A pooled module has no process of its own to signal: its
    /// supervisor tells the pool.
    fn signals_through_supervisor(&self) -> bool {
        true
    }

    /// A module in the pool reads the image's tree and nothing else.
    fn writes_its_root(&self, spec: &Spec) -> bool {
        !self.pools(spec)
    }

    /// A pod's pause container is a Linux process of its own.
    fn runs_under_supervisor(&self, spec: &Spec) -> bool {
        !is_pod_sandbox(spec)
    }

    fn prepare(&self, container: Prepare<'_>) -> Result<Box<dyn Sandbox>, SandboxError> {
        // A Kubernetes pod's sandbox (pause) container is a Linux binary
        // that holds the pod's namespaces: it runs as it is, as runwasi
        // runs it; the pod's containers are its modules.
        if is_pod_sandbox(container.spec) {
            return self.namespace.prepare(container);
        }
        let terminal = matches!(container.stdio, skiff_sandbox::Stdio::Terminal);
        if pool_can_run(container.spec, terminal) {
            return self.prepare_pooled(container);
        }
        let spec = self.runner_spec(container.spec, container.bundle)?;
        self.namespace.prepare(Prepare {
            spec: &spec,
            ..container
        })
    }

    fn exec(
        &self,
        _container: Running<'_>,
        _start: ExecStart<'_>,
    ) -> Result<Box<dyn ExecProcess>, SandboxError> {
        Err(SandboxError::Unsupported(
            "a Wasm container runs one module: it has nothing to exec into".into(),
        ))
    }

    fn remove_leftovers(&self, cgroups_path: &str) -> Result<(), SandboxError> {
        self.namespace.remove_leftovers(cgroups_path)
    }

    fn stats(&self, cgroups_path: &str) -> Result<Stats, SandboxError> {
        self.namespace.stats(cgroups_path)
    }
}
