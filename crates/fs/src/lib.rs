//! Filesystem views of skiff images: a directory on disk (`unpack`) and a
//! lazily fetched FUSE mount (`fuse`, `mount`).

pub mod control;
pub mod erofs;
pub mod fuse;
pub mod mount;
pub mod nbd;
pub mod socket;
pub mod unpack;

pub use fuse::{IdShift, SkiffFs, TraceRecorder};
pub use mount::{mount, MountOptions};
pub use unpack::{unpack, UnpackError, UnpackOptions, UnpackStats};
