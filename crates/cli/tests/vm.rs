//! The VM sandbox's path end to end, below the command line that is still
//! to come (issue 18): Debian's kernel under QEMU's microvm (TCG here),
//! skiff's agent as PID 1 of an initramfs, and the image served by
//! `skiff mount --nbd` as a lazy, verified EROFS block device.
//! `make agent` builds the agent and fetches the kernel.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::containers::{cache_dir, layout};
use common::Skiff;

fn agent() -> PathBuf {
    let p = std::env::var("SKIFF_AGENT")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            cache_dir().join("agent-target/x86_64-unknown-linux-gnu/release/skiff-agent")
        });
    assert!(p.exists(), "no agent at {}: run `make agent`", p.display());
    p
}

/// The cached guest kernel directory (vmlinux, modules/).
fn kernel() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let o = Command::new("bash")
        .arg(root.join("vm/guest-kernel.sh"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    PathBuf::from(String::from_utf8(o.stdout).unwrap().trim())
}

/// An initramfs of the agent as /init, the console and the modules.
fn initramfs(dir: &Path, kernel: &Path) -> PathBuf {
    let root = dir.join("initramfs");
    std::fs::create_dir_all(root.join("dev")).unwrap();
    let ok = |c: &mut Command| assert!(c.status().unwrap().success(), "{c:?}");
    ok(Command::new("strip")
        .arg("-o")
        .arg(root.join("init"))
        .arg(agent()));
    ok(Command::new("mknod")
        .arg(root.join("dev/console"))
        .args(["c", "5", "1"]));
    ok(Command::new("cp")
        .arg("-r")
        .arg(kernel.join("modules"))
        .arg(root.join("modules")));
    let out = dir.join("initramfs.cpio");
    ok(Command::new("sh").arg("-c").arg(format!(
        "cd {} && find . | cpio -o -H newc --quiet > {}",
        root.display(),
        out.display()
    )));
    out
}

/// Boots the guest with `argv`; its console output and QEMU's status.
fn boot(kernel: &Path, initrd: &Path, sock: &Path, argv: &[&str]) -> String {
    let hex: String = argv
        .join("\0")
        .bytes()
        .map(|b| format!("{b:02x}"))
        .collect();
    let khz = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap()
        .lines()
        .find_map(|l| {
            l.strip_prefix("cpu MHz")
                .map(|v| v.trim_start_matches([' ', '\t', ':']))
        })
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map_or(2_000_000, |mhz| (mhz * 1000.0) as u64);
    let o = Command::new("timeout")
        .args([
            "120",
            "qemu-system-x86_64",
            "-M",
            "microvm",
            "-accel",
            "tcg",
            "-cpu",
            "max",
        ])
        .args([
            "-m",
            "256",
            "-smp",
            "1",
            "-nodefaults",
            "-no-user-config",
            "-nographic",
        ])
        .args(["-no-reboot", "-serial", "stdio", "-kernel"])
        .arg(kernel.join("vmlinux"))
        .arg("-initrd")
        .arg(initrd)
        .arg("-drive")
        .arg(format!(
            "file=nbd+unix:///?socket={},format=raw,if=none,id=rootfs,readonly=on",
            sock.display()
        ))
        .args(["-device", "virtio-blk-device,drive=rootfs", "-append"])
        .arg(format!(
            "console=ttyS0 tsc_early_khz={khz} quiet panic=-1 reboot=t skiff_argv={hex}"
        ))
        .output()
        .unwrap();
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
    let kernel = kernel();
    let work = tempfile::tempdir().unwrap();
    let initrd = initramfs(work.path(), &kernel);
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
        &kernel,
        &initrd,
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
    assert!(kernel.ends_with(format!("linux-image-{}", guest_kernel.trim())));
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
    let console = boot(&kernel, &initrd, &sock, &["no-such-command"]);
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
