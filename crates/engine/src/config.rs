//! What an engine is given: where node state lives, how to reach
//! registries, and which program runs its helper processes.

use std::path::PathBuf;

use skiff_oci::RegistryOptions;

#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Node state: containers, image mounts, the chunk cache, logs.
    pub root: PathBuf,
    pub registry: RegistryOptions,
    /// The skiff binary that runs the engine's helper processes (image
    /// mount daemons, container supervisors), with the hidden commands of
    /// the helper interface (see the crate README). Front ends that are
    /// not that binary (a shim) name it here; the engine never assumes it
    /// is running as it.
    pub helper: PathBuf,
}
