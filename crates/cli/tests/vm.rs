//! The VM sandbox's path end to end, below the command line that is still
//! to come (issue 18): Debian's kernel under QEMU's microvm (TCG here),
//! skiff's agent as PID 1 of an initramfs, and the image served by
//! `skiff mount --nbd` as a lazy, verified EROFS block device; the
//! initramfs and QEMU's command line come from skiff-vm. `make agent`
//! builds the agent and fetches the kernel.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::containers::{cache_dir, layout};
use common::Skiff;
use skiff_vm::{GuestAssets, Hypervisor, Qemu, VmSpec};

/// The guest's assets: the kernel (fetched by vm/guest-kernel.sh, cached)
/// and the agent `make agent` built; and its initramfs, built by skiff-vm.
fn guest() -> (GuestAssets, PathBuf) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let o = Command::new("bash")
        .arg(root.join("vm/guest-kernel.sh"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let assets = GuestAssets::find(&cache_dir()).unwrap_or_else(|e| panic!("{e}"));
    let initramfs = skiff_vm::initramfs::ensure(&assets, &cache_dir().join("vm"))
        .unwrap_or_else(|e| panic!("{e}"));
    (assets, initramfs)
}

/// Boots the guest with `argv`; its console output.
fn boot(guest: &(GuestAssets, PathBuf), sock: &Path, argv: &[&str]) -> String {
    let spec = VmSpec {
        kernel: guest.0.kernel.clone(),
        initramfs: guest.1.clone(),
        rootfs_socket: sock.to_path_buf(),
        memory_mib: 256,
        cpus: 1,
        argv: argv.iter().map(|a| a.to_string()).collect(),
    };
    let (qemu, why) = Qemu::detect();
    if let Some(why) = why {
        eprintln!("{why}");
    }
    let qemu = qemu.command(&spec);
    let mut c = Command::new("timeout");
    c.arg("120").arg(qemu.get_program()).args(qemu.get_args());
    let o = c.output().unwrap();
    let console = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(
        o.status.success(),
        "QEMU failed ({}): {console}{}",
        o.status,
        String::from_utf8_lossy(&o.stderr)
    );
    console
}

fn exit_code(console: &str) -> i32 {
    console
        .lines()
        .find_map(|l| l.trim().strip_prefix("skiff-agent: exit "))
        .unwrap_or_else(|| panic!("the agent reported no exit: {console}"))
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn a_command_runs_in_the_guest_from_the_lazy_block_device() {
    let guest = guest();
    let work = tempfile::tempdir().unwrap();
    let skiff = Skiff::new();
    let sock = work.path().join("rootfs.sock");
    skiff.ok(&[
        "mount",
        "--daemon",
        "--nbd",
        layout(),
        sock.to_str().unwrap(),
    ]);

    let console = boot(
        &guest,
        &sock,
        &[
            "sh",
            "-c",
            "echo image $(cat /etc/debian_version); echo kernel $(uname -r); \
             echo > /tmp/written && echo writable; exit 3",
        ],
    );
    let host_kernel =
        String::from_utf8(Command::new("uname").arg("-r").output().unwrap().stdout).unwrap();
    let image_version = std::fs::read_to_string(
        skiff_unpacked_file(&skiff, work.path(), "etc/debian_version").as_path(),
    )
    .unwrap();
    assert!(
        console.contains(&format!("image {}", image_version.trim())),
        "{console}"
    );
    let guest_kernel = console
        .lines()
        .find_map(|l| l.strip_prefix("kernel "))
        .unwrap_or_else(|| panic!("{console}"));
    assert_ne!(
        guest_kernel.trim(),
        host_kernel.trim(),
        "the command ran on the host's kernel"
    );
    assert!(guest
        .0
        .kernel
        .parent()
        .unwrap()
        .ends_with(format!("linux-image-{}", guest_kernel.trim())));
    assert!(
        console.contains("writable"),
        "the overlay is not writable: {console}"
    );
    assert_eq!(exit_code(&console), 3);
    // What the guest read came through the daemon, verified.
    let stats = skiff.json(&["stats", sock.to_str().unwrap()]);
    assert!(stats["metrics"]["fetched_chunks"].as_u64().unwrap() > 0);
    assert_eq!(stats["metrics"]["verify_failures"], 0);

    // A command that does not exist: 127, as in the namespace sandbox.
    let console = boot(&guest, &sock, &["no-such-command"]);
    assert_eq!(exit_code(&console), 127, "{console}");
    skiff.ok(&["umount", sock.to_str().unwrap()]);
}

/// One file of the image, as `skiff unpack` writes it.
fn skiff_unpacked_file(skiff: &Skiff, work: &Path, path: &str) -> PathBuf {
    let dir = work.join("unpacked");
    if !dir.exists() {
        skiff.ok(&["unpack", "-q", layout(), dir.to_str().unwrap()]);
    }
    dir.join(path)
}
