//! skiff's node engine: containers and their records, image mounts and
//! their daemons, under one `--root`, for every front end (the `skiff`
//! command today; the containerd snapshotter, the OCI runtime command and
//! the shim next). Front ends keep arguments, output and exit codes; the
//! engine keeps the state and the rules.

mod block_daemon;
pub mod config;
pub mod console;
pub mod container;
pub mod container_log;
pub mod error;
pub mod helper;
pub mod image_mounts;
pub mod image_store;
pub mod images;
pub mod mount_daemon;
pub mod mount_records;
pub mod oci_runtime;
pub mod record;
pub mod request;
pub mod root_dir;
pub mod volumes;
pub mod wasm_images;

pub use block_daemon::bound_heap;
pub use config::{CacheSize, EngineConfig, DEFAULT_CACHE_SIZE, DEFAULT_IMAGE_IDLE_TIMEOUT};
pub use container::{Created, Launch, SuperviseOptions, Supervisor, SupervisorOptions};
pub use error::{EngineError, Result};
pub use mount_daemon::MountRequest;
/// A container's OCI runtime spec, as front ends show it.
pub use oci_spec::runtime::Spec;
pub use record::{Record, Status};
pub use request::RunRequest;
pub use skiff_wasm::pool::{
    keeper_main as wasm_pool_keeper_main, KEEPER_ARG as WASM_POOL_KEEPER_ARG,
};

use skiff_sandbox::{ImageFacts, SandboxKind};

/// Makes a progress reporter for a conversion (a front end's bars).
pub type ProgressFactory =
    std::sync::Arc<dyn Fn() -> std::sync::Arc<dyn skiff_builder::Progress> + Send + Sync>;

/// The engine of one node state directory.
pub struct Engine {
    config: EngineConfig,
    /// Reports a conversion's progress, where a front end draws it.
    convert_progress: Option<ProgressFactory>,
    /// The sandbox kinds it can run containers in, the default first.
    kinds: Vec<Box<dyn SandboxKind>>,
}

impl Engine {
    /// An engine over `config.root`, whose directories are made owner-only
    /// (see [`root_dir`]).
    pub fn new(config: EngineConfig) -> Result<Self> {
        let filters = root_dir::seccomp_cache(&config.root);
        let kinds: Vec<Box<dyn SandboxKind>> = vec![
            Box::new(skiff_sandbox::NamespaceKind::new(&filters)),
            Box::new(skiff_vm::VmKind::new(
                &config::asset_cache(),
                &config.root.join("vm"),
                &filters,
            )),
            Box::new(
                skiff_wasm::WasmKind::new(
                    &config::asset_cache(),
                    &config.root.join("wasm"),
                    &filters,
                )
                .with_pool_idle(config.image_idle_timeout.unwrap_or(skiff_wasm::POOL_IDLE)),
            ),
        ];
        Self::with_kinds(config, kinds)
    }

    /// An engine with these sandbox kinds (the default first), for
    /// front ends that offer others, and for tests.
    pub fn with_kinds(config: EngineConfig, kinds: Vec<Box<dyn SandboxKind>>) -> Result<Self> {
        root_dir::prepare(&config.root)?;
        Ok(Engine {
            config,
            convert_progress: None,
            kinds,
        })
    }

    /// Where conversions on the node report their progress.
    pub fn set_convert_progress(&mut self, factory: ProgressFactory) {
        self.convert_progress = Some(factory);
    }

    /// The sandbox kind named `name` (as a record keeps it).
    pub fn kind(&self, name: &str) -> Result<&dyn SandboxKind> {
        self.kinds
            .iter()
            .find(|k| k.name() == name)
            .map(|k| k.as_ref())
            .ok_or_else(|| {
                let known: Vec<&str> = self.kinds.iter().map(|k| k.name()).collect();
                EngineError::Invalid(format!(
                    "no sandbox kind {name:?} here; the kinds are {}",
                    known.join(", ")
                ))
            })
    }

    /// The first kind that can run an image with these facts.
    pub fn kind_for(&self, image: &ImageFacts) -> Result<&dyn SandboxKind> {
        self.kinds
            .iter()
            .find(|k| k.can_handle(image))
            .map(|k| k.as_ref())
            .ok_or_else(|| {
                EngineError::Invalid(format!(
                    "no sandbox here runs images for {}/{}",
                    image.os, image.architecture
                ))
            })
    }

    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// Every recorded container, oldest first, with the status to show.
    /// Containers whose supervisor died are finished first (see
    /// [`container::orphans`]).
    pub fn containers(&self) -> Result<Vec<Record>> {
        let mut list = self.reap_orphans()?;
        for r in &mut list {
            r.status = r.effective_status();
        }
        Ok(list)
    }

    /// What the running container `record` uses now: CPU time, memory and
    /// processes, from its sandbox kind.
    pub fn stats(&self, record: &Record) -> Result<skiff_sandbox::Stats> {
        Ok(self.kind(&record.sandbox)?.stats(&record.cgroups_path)?)
    }

    /// A container by name, full ID or unique ID prefix (after finishing
    /// orphans, as [`Engine::containers`] does).
    pub fn find(&self, key: &str) -> Result<Record> {
        record::find_in(self.reap_orphans()?, key)
    }
}
