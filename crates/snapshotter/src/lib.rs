//! skiff's containerd proxy snapshotter: containerd's snapshots API over
//! the node engine. skiff images are served lazily (their data layers are
//! never downloaded; the image is the engine's verified mount); ordinary
//! OCI layers are unpacked by containerd into directories, as its
//! overlayfs snapshotter keeps them. See `docs/containerd.md`.

// `tonic::Status` is what every RPC answers and the trait's error type;
// errors are rare, so boxing it everywhere would buy nothing.
#![allow(clippy::result_large_err)]

pub mod filter;
pub mod labels;
pub mod metrics;
pub mod pull;
pub mod serve;
pub mod service;
pub mod snapshots;

pub use serve::{serve, ServeOptions};
