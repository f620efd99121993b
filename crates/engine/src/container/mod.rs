//! A container's life on the node, one verb per file: [`create`] (record,
//! writable layer, spec), [`supervise`] (the sandbox from start to exit),
//! [`stop`], [`remove`] (and the cleanup every end shares), [`orphans`]
//! (containers whose supervisor died).

pub mod control;
pub mod create;
pub mod exec;
pub mod kill;
pub mod orphans;
pub mod remove;
pub mod stop;
pub mod supervise;

pub use control::Supervisor;
pub use create::Created;
pub use supervise::{Launch, SuperviseOptions, SupervisorOptions};
