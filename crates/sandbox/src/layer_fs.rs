//! A bounded writable layer (`--storage-opt size=`): an ext4 filesystem of
//! that size in a sparse file beside the container's state, loop-mounted,
//! holding the overlay's upper and work directories. A write past the size
//! fails with ENOSPC inside the container, and `df /` there shows the size.
//!
//! Why not project quotas, as Docker's overlay2 uses: they need XFS or ext4
//! mounted with `prjquota` under ROOT, and a kernel built with quota
//! support; the machines this project is tested on have neither, so that
//! path could not be tested. A loop device works on any host that has them.
//! Cost: a sparse file of a few MB, and ~16 ms at start (mkfs and mount).
//!
//! The loop ioctls are made by hand: they are two fixed-layout calls, and
//! the crates that wrap them generate their bindings with libclang at
//! build time.

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;
use std::process::Command;

use rustix::fs::{Mode, OFlags};

use crate::SandboxError;

/// The smallest bound skiff accepts: ext4 needs room for its own metadata.
pub const MIN_SIZE: u64 = 16 << 20;

/// linux/loop.h.
const LOOP_CTL_GET_FREE: libc::c_ulong = 0x4C82;
const LOOP_CONFIGURE: libc::c_ulong = 0x4C0A;
const LO_FLAGS_AUTOCLEAR: u32 = 4;

#[repr(C)]
struct LoopInfo64 {
    device: u64,
    inode: u64,
    rdevice: u64,
    offset: u64,
    sizelimit: u64,
    number: u32,
    encrypt_type: u32,
    encrypt_key_size: u32,
    flags: u32,
    file_name: [u8; 64],
    crypt_name: [u8; 64],
    encrypt_key: [u8; 32],
    init: [u64; 2],
}

#[repr(C)]
struct LoopConfig {
    fd: u32,
    block_size: u32,
    info: LoopInfo64,
    reserved: [u64; 8],
}

fn io(what: String) -> impl FnOnce(std::io::Error) -> SandboxError {
    move |e| SandboxError::io(what, e)
}

/// Makes a `bytes`-sized ext4 filesystem in `image` (sparse) and mounts it
/// at `mountpoint` (created).
pub fn create(image: &Path, mountpoint: &Path, bytes: u64) -> Result<(), SandboxError> {
    if bytes < MIN_SIZE {
        return Err(SandboxError::Invalid(format!(
            "a writable layer of {bytes} bytes is too small to hold a filesystem; give at least 16M"
        )));
    }
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(image)
        .map_err(io(format!("creating {}", image.display())))?;
    file.set_len(bytes)
        .map_err(io(format!("sizing {}", image.display())))?;
    // No journal: the layer is volatile (the overlay is too), and a journal
    // would take 64 MB of every layer's size.
    let out = Command::new("mkfs.ext4")
        .args([
            "-q",
            "-F",
            "-O",
            "^has_journal",
            "-E",
            "lazy_itable_init=1,nodiscard",
            "-m",
            "0",
        ])
        .arg(image)
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| {
            SandboxError::io(
                "running mkfs.ext4 for the writable layer (install e2fsprogs)".into(),
                e,
            )
        })?;
    if !out.status.success() {
        return Err(SandboxError::Setup(format!(
            "mkfs.ext4 {} failed: {}",
            image.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    std::fs::create_dir_all(mountpoint)
        .map_err(io(format!("creating {}", mountpoint.display())))?;
    let device = attach(&file)?;
    let name = device_name(&device)?;
    // The mount holds the device from here; the descriptor closing after
    // lets the kernel detach it once the mount is gone (autoclear).
    rustix::mount::mount(
        name.as_str(),
        mountpoint,
        "ext4",
        rustix::mount::MountFlags::NOATIME,
        None,
    )
    .map_err(|e| {
        SandboxError::io(
            format!(
                "mounting the writable layer {} at {}",
                name,
                mountpoint.display()
            ),
            e.into(),
        )
    })
}

/// A free loop device backed by `file`, detached when no longer used.
fn attach(file: &std::fs::File) -> Result<OwnedFd, SandboxError> {
    let control = rustix::fs::open(
        "/dev/loop-control",
        OFlags::RDWR | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| {
        SandboxError::io(
            "opening /dev/loop-control (is the loop module loaded?)".into(),
            e.into(),
        )
    })?;
    // Another process may take the free device first: then ask again.
    for _ in 0..16 {
        // SAFETY: LOOP_CTL_GET_FREE takes no argument and returns a number.
        let n = unsafe { libc::ioctl(control.as_raw_fd(), LOOP_CTL_GET_FREE) };
        if n < 0 {
            return Err(SandboxError::io(
                "finding a free loop device".into(),
                std::io::Error::last_os_error(),
            ));
        }
        let path = format!("/dev/loop{n}");
        let device = rustix::fs::open(path.as_str(), OFlags::RDWR | OFlags::CLOEXEC, Mode::empty())
            .map_err(|e| SandboxError::io(format!("opening {path}"), e.into()))?;
        let mut config = LoopConfig {
            fd: file.as_raw_fd() as u32,
            block_size: 0,
            // SAFETY: loop_info64 is plain integers and bytes; zero is valid.
            info: unsafe { std::mem::zeroed() },
            reserved: [0; 8],
        };
        config.info.flags = LO_FLAGS_AUTOCLEAR;
        // SAFETY: LOOP_CONFIGURE reads a `struct loop_config`, which
        // `config` is, alive for the call.
        let rc = unsafe {
            libc::ioctl(
                device.as_raw_fd(),
                LOOP_CONFIGURE,
                &config as *const LoopConfig,
            )
        };
        if rc == 0 {
            return Ok(device);
        }
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EBUSY) {
            return Err(SandboxError::io(format!("setting up {path}"), e));
        }
    }
    Err(SandboxError::Unsupported(
        "every free loop device was taken before skiff could use it".into(),
    ))
}

fn device_name(device: &OwnedFd) -> Result<String, SandboxError> {
    let link = std::fs::read_link(format!("/proc/self/fd/{}", device.as_raw_fd()))
        .map_err(io("naming the loop device".into()))?;
    link.to_str()
        .map(str::to_string)
        .ok_or_else(|| SandboxError::Setup("the loop device's name is not UTF-8".into()))
}

/// Unmounts a writable layer's filesystem; not mounted is fine.
pub fn unmount(mountpoint: &Path) -> Result<(), SandboxError> {
    match rustix::mount::unmount(mountpoint, rustix::mount::UnmountFlags::DETACH) {
        Ok(()) | Err(rustix::io::Errno::INVAL) | Err(rustix::io::Errno::NOENT) => Ok(()),
        Err(e) => Err(SandboxError::io(
            format!("unmounting the writable layer {}", mountpoint.display()),
            e.into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn structures_have_the_kernels_sizes() {
        assert_eq!(std::mem::size_of::<LoopInfo64>(), 232);
        assert_eq!(std::mem::size_of::<LoopConfig>(), 304);
    }

    #[test]
    fn a_bounded_layer_holds_no_more_than_its_size() {
        let dir = tempfile::tempdir().unwrap();
        let mnt = dir.path().join("fs");
        create(&dir.path().join("layer.img"), &mnt, 32 << 20).unwrap();
        let big = vec![7u8; 1 << 20];
        let mut f = std::fs::File::create(mnt.join("fill")).unwrap();
        let mut written = 0u64;
        let err = loop {
            match std::io::Write::write_all(&mut f, &big) {
                Ok(()) => written += big.len() as u64,
                Err(e) => break e,
            }
            assert!(written <= 32 << 20, "wrote past the bound");
        };
        drop(f);
        unmount(&mnt).unwrap();
        assert_eq!(err.raw_os_error(), Some(libc::ENOSPC));
        assert!(written >= 16 << 20, "only {written} bytes fitted");
        assert!(create(&dir.path().join("tiny.img"), &mnt, 1 << 20).is_err());
    }
}
