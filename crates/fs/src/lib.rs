//! Filesystem views of skiff images.

pub mod unpack;

pub use unpack::{unpack, UnpackError, UnpackOptions, UnpackStats};
