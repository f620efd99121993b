//! The Wasm sandbox's test module and images (issue 19).

use std::path::Path;
use std::process::Command;
use std::sync::OnceLock;

use super::containers::{cache_dir, err};
use super::layers::{write_image_with_config, LayerBlob, Tar};

/// tests/wasm/probe.c compiled for wasm32-wasi, once per test binary.
pub fn probe_module() -> &'static [u8] {
    static MODULE: OnceLock<Vec<u8>> = OnceLock::new();
    MODULE.get_or_init(|| {
        let source = super::repo_root().join("tests/wasm/probe.c");
        let dir = cache_dir().join("wasm-test");
        std::fs::create_dir_all(&dir).unwrap();
        let wasm = dir.join(format!("probe-{}.wasm", std::process::id()));
        let o = Command::new("clang")
            .args(["--target=wasm32-wasi", "-O2", "-Wl,--strip-all", "-o"])
            .arg(&wasm)
            .arg(&source)
            .output()
            .expect("running clang (make deps installs clang, lld, wasi-libc and libclang-rt-14-dev-wasm32)");
        assert!(o.status.success(), "clang: {}", err(&o));
        let bytes = std::fs::read(&wasm).unwrap();
        let _ = std::fs::remove_file(&wasm);
        bytes
    })
}

/// An ordinary image for the `wasi/wasm` platform in an OCI layout under
/// `dir`: the module `/probe.wasm` as its entrypoint, with a file beside
/// it. Returns its reference.
pub fn wasi_image(dir: &Path, tag: &str, module: &[u8]) -> String {
    module_image(dir, tag, module, ("wasi", "wasm"))
}

/// [`wasi_image`] for another platform (`os`, `architecture`).
pub fn module_image(dir: &Path, tag: &str, module: &[u8], platform: (&str, &str)) -> String {
    let mut tar = Tar::new();
    tar.dir("etc")
        .file("etc/greeting.txt", b"from the image\n")
        .file("probe.wasm", module);
    write_image_with_config(
        dir,
        tag,
        &[LayerBlob::plain(&tar.finish())],
        platform,
        serde_json::json!({"Entrypoint": ["/probe.wasm"], "Env": ["GREETING=from-the-image"]}),
    );
    format!("oci:{}:{tag}", dir.display())
}
