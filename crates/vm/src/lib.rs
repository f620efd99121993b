//! The VM sandbox's host side: the sandbox kind, the guest's assets, its
//! initramfs, and the hypervisor that boots it. See README.md.

pub mod assets;
mod exec;
pub mod hypervisor;
pub mod initramfs;
pub mod pod;
pub mod sandbox;
mod streams;

pub use assets::GuestAssets;
pub use hypervisor::{pick_accel, Accel, Hypervisor, Qemu, Share, VmSpec};
pub use sandbox::{VmKind, VmSandbox};

/// A VM sandbox error; the message names the thing and the fix.
#[derive(Debug)]
pub struct VmError(pub String);

impl std::fmt::Display for VmError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for VmError {}

pub type Result<T> = std::result::Result<T, VmError>;

fn io_err(what: impl std::fmt::Display, e: std::io::Error) -> VmError {
    VmError(format!("{what}: {e}"))
}
