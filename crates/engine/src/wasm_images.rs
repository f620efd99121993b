//! Which images hold a WASI module, and whether it is compiled on the node
//! (`skiff images`), and compiling it when such an image is pulled, so that
//! its first run starts warm.

use std::path::Path;

use skiff_oci::RuntimeConfig;

use crate::Engine;

/// Beside an image's record: the BLAKE3 digest of the module its command
/// names (the key of its compiled form).
const MODULE_NOTE: &str = "wasm-module";

/// An image's module, for `skiff images`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct WasmModule {
    /// The module's path in the image.
    pub path: String,
    /// Its BLAKE3 digest.
    pub digest: String,
    /// Whether its compiled form is in the node's cache.
    pub compiled: bool,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Note {
    path: String,
    digest: String,
    /// The manifest digest of the image it was noted for.
    #[serde(default)]
    image: String,
}

/// What a sandbox kind is told about an image with this config.
pub(crate) fn image_facts(config: &RuntimeConfig) -> skiff_sandbox::ImageFacts {
    skiff_sandbox::ImageFacts {
        os: config.os.clone(),
        architecture: config.architecture.clone(),
        annotations: config.annotations.clone(),
    }
}

fn read_note(dir: &Path) -> Option<Note> {
    serde_json::from_slice(&std::fs::read(dir.join(MODULE_NOTE)).ok()?).ok()
}

impl Engine {
    fn module_cache(&self) -> skiff_wasm::ModuleCache {
        skiff_wasm::ModuleCache::new(&self.config.root.join("wasm"))
    }

    /// For a `wasi/wasm` image mounted at `tree` (in `ROOT/images/KEY/`),
    /// notes the module its command names, and compiles it if `compile`.
    /// A module noted for this image already (and compiled, if asked) is
    /// not read again: each start of the image comes through here, and the
    /// sandbox reads the module itself. Anything wrong here is left for the
    /// run to report.
    pub(crate) fn note_wasm_module(&self, tree: &Path, config: &RuntimeConfig, compile: bool) {
        if !skiff_wasm::is_wasm_image(&image_facts(config)) {
            return;
        }
        let args: Vec<String> = config
            .entrypoint
            .iter()
            .chain(&config.cmd)
            .cloned()
            .collect();
        let cwd = if config.working_dir.is_empty() {
            "/"
        } else {
            &config.working_dir
        };
        let Ok(path) = skiff_wasm::module_path(&args, Path::new(cwd)) else {
            return;
        };
        let dir = tree.parent().unwrap_or(tree);
        let image = crate::image_store::read_record(dir)
            .map(|r| r.digest)
            .unwrap_or_default();
        let runner = skiff_wasm::find_runner(&crate::config::asset_cache());
        if let Some(note) = read_note(dir).filter(|n| n.path == path && n.image == image) {
            let cache = self.module_cache();
            if !compile || runner.as_ref().is_ok_and(|r| cache.holds(r, &note.digest)) {
                return;
            }
        }
        let noted = (|| -> Result<(), String> {
            let bytes = skiff_wasm::read_module(tree, &path).map_err(|e| e.to_string())?;
            let digest = blake3::hash(&bytes).to_hex().to_string();
            let note = serde_json::to_vec(&Note {
                path: path.clone(),
                digest,
                image,
            })
            .map_err(|e| e.to_string())?;
            std::fs::write(dir.join(MODULE_NOTE), note).map_err(|e| e.to_string())?;
            if compile {
                let runner = runner.map_err(|e| e.to_string())?;
                let compiled = self
                    .module_cache()
                    .ensure(&runner, &path, &bytes)
                    .map_err(|e| e.to_string())?;
                tracing::info!(module = %path, compiled_now = compiled.compiled_now, "the image's Wasm module is compiled");
            }
            Ok(())
        })();
        if let Err(e) = noted {
            tracing::warn!(module = %path, "not noting the image's Wasm module: {e}");
        }
    }

    /// Removes the compiled forms of the module with this digest, for every
    /// engine build (`skiff rmi` of the last image that runs it).
    pub(crate) fn forget_compiled_module(&self, module_digest: &str) {
        self.module_cache().forget(module_digest);
    }

    /// The module noted for the image directory `dir`, if any.
    pub(crate) fn wasm_module(&self, dir: &Path) -> Option<WasmModule> {
        let note = read_note(dir)?;
        let compiled = skiff_wasm::find_runner(&crate::config::asset_cache())
            .is_ok_and(|r| self.module_cache().holds(&r, &note.digest));
        Some(WasmModule {
            path: note.path,
            digest: note.digest,
            compiled,
        })
    }
}
