//! The node's compiled modules: `CACHE/ENGINE/MODULE.cwasm`, where ENGINE
//! is the runner's engine compatibility hash and MODULE the module's
//! BLAKE3 digest, each beside `MODULE.blake3`, the digest of the compiled
//! bytes as skiff recorded them when it compiled them. An entry whose
//! bytes no longer match is compiled again; the runner checks the digest
//! too before it deserializes.

use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use skiff_sandbox::SandboxError;

use crate::io_error;

/// A module compiled for the runner's engine, ready to run.
#[derive(Debug, Clone)]
pub struct Compiled {
    pub path: PathBuf,
    /// The BLAKE3 digest of its bytes, hex.
    pub blake3: String,
    /// Whether this start compiled it (a cold start) or found it.
    pub compiled_now: bool,
}

/// The compiled-module cache of one node state directory.
pub struct ModuleCache {
    dir: PathBuf,
}

fn io(context: String) -> impl FnOnce(std::io::Error) -> SandboxError {
    move |e| SandboxError::Io { context, source: e }
}

impl ModuleCache {
    /// Its directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn new(dir: &Path) -> Self {
        ModuleCache {
            dir: dir.to_path_buf(),
        }
    }

    /// The engine compatibility hash of `runner`, asked of it once per
    /// build of it and kept under the cache.
    pub fn engine_hash(&self, runner: &Path) -> Result<String, SandboxError> {
        use std::os::unix::fs::MetadataExt;
        let meta =
            std::fs::metadata(runner).map_err(io(format!("reading {}", runner.display())))?;
        let identity = format!(
            "{}-{}-{}-{}",
            meta.dev(),
            meta.ino(),
            meta.size(),
            meta.mtime_nsec() + meta.mtime() * 1_000_000_000
        );
        let known = self.dir.join("runners").join(&identity);
        if let Ok(h) = std::fs::read_to_string(&known) {
            if is_hex(h.trim()) {
                return Ok(h.trim().to_string());
            }
        }
        let out = Command::new(runner)
            .arg("hash")
            .env_clear()
            .stdin(Stdio::null())
            .output()
            .map_err(io(format!("running {}", runner.display())))?;
        let hash = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if !out.status.success() || !is_hex(&hash) {
            return Err(SandboxError::Setup(format!(
                "{} hash failed: {}",
                runner.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        write_atomically(&known, hash.as_bytes())?;
        Ok(hash)
    }

    fn entry(&self, engine: &str, module_digest: &str) -> (PathBuf, PathBuf) {
        let dir = self.dir.join(engine);
        (
            dir.join(format!("{module_digest}.cwasm")),
            dir.join(format!("{module_digest}.blake3")),
        )
    }

    /// The compiled form of `module` (named `name` in errors), compiled by
    /// `runner` unless a sound entry is cached.
    pub fn ensure(
        &self,
        runner: &Path,
        name: &str,
        module: &[u8],
    ) -> Result<Compiled, SandboxError> {
        let engine = self.engine_hash(runner)?;
        let digest = blake3::hash(module).to_hex().to_string();
        let (path, recorded) = self.entry(&engine, &digest);
        if let Some(blake3) = sound_entry(&path, &recorded) {
            return Ok(Compiled {
                path,
                blake3,
                compiled_now: false,
            });
        }
        if path.exists() {
            tracing::warn!(entry = %path.display(), "a compiled module's bytes do not match the digest recorded for them; compiling it again");
        }
        let compiled = compile(runner, name, module)?;
        let blake3 = blake3::hash(&compiled).to_hex().to_string();
        write_atomically(&path, &compiled)?;
        write_atomically(&recorded, blake3.as_bytes())?;
        Ok(Compiled {
            path,
            blake3,
            compiled_now: true,
        })
    }

    /// Removes the compiled forms of the module with this digest, under
    /// every engine's directory.
    pub fn forget(&self, module_digest: &str) {
        let Ok(engines) = std::fs::read_dir(&self.dir) else {
            return;
        };
        for engine in engines.flatten() {
            for ext in ["cwasm", "blake3"] {
                let _ = std::fs::remove_file(engine.path().join(format!("{module_digest}.{ext}")));
            }
        }
    }

    /// Whether a sound compiled form of the module with this digest is
    /// cached for `runner`'s engine.
    pub fn holds(&self, runner: &Path, module_digest: &str) -> bool {
        let Ok(engine) = self.engine_hash(runner) else {
            return false;
        };
        let (path, recorded) = self.entry(&engine, module_digest);
        sound_entry(&path, &recorded).is_some()
    }
}

/// The recorded digest of a cached entry whose bytes still match it.
fn sound_entry(path: &Path, recorded: &Path) -> Option<String> {
    let want = std::fs::read_to_string(recorded).ok()?;
    let bytes = std::fs::read(path).ok()?;
    (blake3::hash(&bytes).to_hex().as_str() == want.trim()).then(|| want.trim().to_string())
}

fn is_hex(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Compiles `module` with `runner compile`, run as `nobody` with no
/// environment, no capabilities and `no_new_privs`: the module is
/// untrusted input to the compiler. The runner is opened as root and
/// executed from that descriptor, since `nobody` may not reach its path
/// (under root's home).
fn compile(runner: &Path, name: &str, module: &[u8]) -> Result<Vec<u8>, SandboxError> {
    use std::os::fd::AsRawFd;
    let binary =
        std::fs::File::open(runner).map_err(io(format!("opening {}", runner.display())))?;
    let fd = binary.as_raw_fd();
    // Made before the fork: nothing may allocate between fork and exec.
    let arg0 = c"skiff-wasm";
    let arg1 = c"compile";
    let argv = [arg0.as_ptr(), arg1.as_ptr(), std::ptr::null()];
    let envp: [*const libc::c_char; 1] = [std::ptr::null()];
    let (argv_addr, envp_addr) = (argv.as_ptr() as usize, envp.as_ptr() as usize);
    let mut cmd = Command::new(runner);
    cmd.env_clear().current_dir("/").stdout(Stdio::piped());
    // SAFETY: only async-signal-safe calls between fork and exec; `argv`
    // and `envp` outlive the spawn, which returns once the child has
    // executed (or failed to).
    unsafe {
        cmd.pre_exec(move || {
            const NOBODY: libc::uid_t = 65534;
            if libc::setgroups(0, std::ptr::null()) != 0
                || libc::setgid(NOBODY) != 0
                || libc::setuid(NOBODY) != 0
                || libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            libc::fexecve(
                fd,
                argv_addr as *const *const libc::c_char,
                envp_addr as *const *const libc::c_char,
            );
            Err(std::io::Error::last_os_error())
        });
    }
    // Files, not pipes: no thread may be started to feed and drain the
    // child, since the namespace kind clones the container's init from
    // this process, which must then be single-threaded.
    let input = memfd("skiff-wasm-module")?;
    (&input)
        .write_all(module)
        .map_err(io(format!("buffering {name}")))?;
    let errors = memfd("skiff-wasm-errors")?;
    use std::io::Seek;
    (&input)
        .seek(std::io::SeekFrom::Start(0))
        .map_err(io(format!("buffering {name}")))?;
    cmd.stdin(Stdio::from(input)).stderr(Stdio::from(
        errors.try_clone().map_err(io("a descriptor".into()))?,
    ));
    let mut child = cmd
        .spawn()
        .map_err(io(format!("running {} compile", runner.display())))?;
    drop(binary);
    let mut compiled = Vec::new();
    child
        .stdout
        .take()
        .expect("piped")
        .read_to_end(&mut compiled)
        .map_err(io(format!("reading the compiled form of {name}")))?;
    let status = child
        .wait()
        .map_err(io(format!("waiting for the compiler of {name}")))?;
    if !status.success() {
        let mut text = String::new();
        let _ = (&errors).seek(std::io::SeekFrom::Start(0));
        let _ = (&errors).take(64 << 10).read_to_string(&mut text);
        let why = text.trim().trim_start_matches("skiff-wasm: ");
        return Err(SandboxError::NotExecutable(format!(
            "{name} is not a valid WebAssembly module: {why}"
        )));
    }
    Ok(compiled)
}

/// An anonymous file in memory.
fn memfd(name: &str) -> Result<std::fs::File, SandboxError> {
    let fd = rustix::fs::memfd_create(name, rustix::fs::MemfdFlags::CLOEXEC)
        .map_err(|e| io_error("making an anonymous file".into(), e.into()))?;
    Ok(std::fs::File::from(fd))
}

/// Writes `bytes` to `path` through a temporary file and a rename, so a
/// reader sees the whole file or none.
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), SandboxError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(io(format!("creating {}", dir.display())))?;
    let tmp = dir.join(format!(
        ".{}.{}.tmp",
        path.file_name().unwrap_or_default().to_string_lossy(),
        std::process::id()
    ));
    let written = std::fs::File::create(&tmp)
        .and_then(|mut f| f.write_all(bytes).and_then(|()| f.sync_all()))
        .and_then(|()| std::fs::rename(&tmp, path));
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(SandboxError::Io {
            context: format!("writing {}", path.display()),
            source: e,
        });
    }
    Ok(())
}
