//! OCI plumbing for skiff: image references, manifests, a registry client,
//! OCI image layouts and docker archives, behind one [`Repository`] trait.

pub mod archive;
pub mod auth;
pub mod config;
pub mod error;
pub mod layout;
pub mod manifest;
pub mod open;
pub mod reference;
pub mod registry;
pub mod repository;
pub mod verify;

pub use config::RuntimeConfig;
pub use error::{OciError, Result};
pub use manifest::{Descriptor, Index, Manifest, Platform};
pub use open::OpenedRef;
pub use reference::{ImageRef, RegistryRef};
pub use registry::RegistryOptions;
pub use repository::{copy_blob, resolve, FetchedManifest, Repository, Resolved, ResolvedImage};
