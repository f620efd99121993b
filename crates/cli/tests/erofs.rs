//! `skiff unpack --erofs`: the EROFS image a VM's block device serves,
//! mounted by the host's own kernel, holds exactly the tree `skiff unpack`
//! writes; a tampered chunk stops it.

mod common;

use std::io::{Read, Write};
use std::path::Path;
use std::process::Command;

use common::containers::layout;
use common::trees::{assert_same, snapshot};
use common::Skiff;

/// Unmounts on drop, so a failed assertion leaves no mount behind.
struct Mount<'a>(&'a Path);

impl Drop for Mount<'_> {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.0).status();
    }
}

#[test]
fn the_kernel_mounts_the_erofs_image_with_the_unpacked_tree() {
    let skiff = Skiff::new();
    let work = tempfile::tempdir().unwrap();
    let image = layout();
    let dir = work.path().join("dir");
    skiff.ok(&["unpack", image, dir.to_str().unwrap()]);
    let file = work.path().join("rootfs.erofs");
    let stats = skiff.json(&["unpack", "--erofs", image, file.to_str().unwrap()]);
    assert_eq!(
        stats["bytes"].as_u64(),
        Some(std::fs::metadata(&file).unwrap().len())
    );
    assert_eq!(stats["dropped_xattrs"], 0);
    let mnt = work.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let status = Command::new("mount")
        .args(["-t", "erofs", "-o", "ro"])
        .arg(&file)
        .arg(&mnt)
        .status()
        .unwrap();
    assert!(status.success(), "the kernel refused the EROFS image");
    let _mounted = Mount(&mnt);
    let ours = snapshot(&mnt, true);
    assert_same(&snapshot(&dir, true), &ours, "unpack vs the EROFS image");
    // The comparison covers xattrs, devices, hardlinks and large directories.
    assert!(ours.nodes[&b"/usr/bin/ping"[..]]
        .xattrs
        .contains_key(&b"security.capability"[..]));
    assert_eq!(ours.nodes[&b"/dev/null"[..]].rdev, Some((1, 3)));
    assert!(!ours.links.is_empty());
    // /usr/bin's entries take more than one block.
    let usr_bin = std::fs::metadata(mnt.join("usr/bin")).unwrap().len();
    assert!(usr_bin > 4096, "/usr/bin is only {usr_bin} bytes");
    // An existing file is never overwritten.
    let (code, err) = skiff.fails(&["unpack", "--erofs", image, file.to_str().unwrap()]);
    assert_ne!(code, 0);
    assert!(err.contains("must not exist"), "{err}");
}

#[test]
fn a_tampered_chunk_fails_the_erofs_image_and_leaves_no_file() {
    let work = tempfile::tempdir().unwrap();
    let tampered = common::containers::tampered_layout_copy(work.path());
    let skiff = Skiff::new();
    let file = work.path().join("rootfs.erofs");
    let (code, err) = skiff.fails(&["unpack", "--erofs", &tampered, file.to_str().unwrap()]);
    assert_ne!(code, 0);
    assert!(err.contains("is corrupt"), "{err}");
    assert!(err.contains(": /"), "the message names no file: {err}");
    assert!(!file.exists(), "a failed image was left behind");
    // Over NBD, QEMU's read of the device fails at the tampered chunk, and
    // the daemon serves on.
    let sock = work.path().join("rootfs.sock");
    skiff.ok(&[
        "mount",
        "--daemon",
        "--nbd",
        &tampered,
        sock.to_str().unwrap(),
    ]);
    let url = format!("nbd+unix:///?socket={}", sock.display());
    let o = Command::new("qemu-img")
        .args(["convert", "-f", "raw", "-O", "raw", &url])
        .arg(work.path().join("copy.raw"))
        .output()
        .unwrap();
    assert!(!o.status.success(), "a tampered device read whole");
    let stats = skiff.json(&["stats", sock.to_str().unwrap()]);
    assert!(
        stats["metrics"]["verify_failures"].as_u64().unwrap() > 0,
        "{stats:#}"
    );
    let o = Command::new("qemu-io")
        .args(["-r", "-f", "raw", "-c", "read -P 0xe2 1024 1", &url])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&o.stdout);
    assert!(
        said.contains("read 1/1 bytes"),
        "{said}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    skiff.ok(&["umount", sock.to_str().unwrap()]);
}

#[test]
fn the_nbd_block_device_serves_the_same_image_lazily_and_to_root_alone() {
    let skiff = Skiff::new();
    let work = tempfile::tempdir().unwrap();
    let image = layout();
    let file = work.path().join("rootfs.erofs");
    skiff.ok(&["unpack", "--erofs", "-q", image, file.to_str().unwrap()]);
    let sock = work.path().join("rootfs.sock");
    skiff.ok(&["mount", "--daemon", "--nbd", image, sock.to_str().unwrap()]);
    // Nothing of the files' data is fetched before a block is read.
    let stats = skiff.json(&["stats", sock.to_str().unwrap()]);
    assert_eq!(stats["metrics"]["fetched_chunks"], 0, "{stats:#}");
    let mode = std::fs::metadata(&sock).unwrap();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode.permissions()) & 0o777,
        0o600
    );
    // The same socket, as an unprivileged user, in a directory anyone may enter.
    Command::new("chmod")
        .arg("0755")
        .arg(work.path())
        .status()
        .unwrap();
    let o = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "/usr/bin/python3", "-c"])
        .arg(format!(
            "import socket,sys\ns=socket.socket(socket.AF_UNIX)\ntry:\n  s.connect({:?})\nexcept PermissionError:\n  print('denied'); sys.exit(0)\nprint('connected')",
            sock.display().to_string()
        ))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&o.stdout), "denied\n");
    // QEMU's own NBD client reads the whole device: the same bytes as the file.
    let copy = work.path().join("copy.raw");
    let o = Command::new("qemu-img")
        .args(["convert", "-f", "raw", "-O", "raw"])
        .arg(format!("nbd+unix:///?socket={}", sock.display()))
        .arg(&copy)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "qemu-img: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(
        std::fs::read(&copy).unwrap() == std::fs::read(&file).unwrap(),
        "the block device and skiff unpack --erofs differ"
    );
    let stats = skiff.json(&["stats", sock.to_str().unwrap()]);
    assert!(stats["metrics"]["fetched_chunks"].as_u64().unwrap() > 0);
    assert_eq!(stats["metrics"]["verify_failures"], 0);
    // Speaking the protocol directly: a write is refused by the server,
    // a read past the end is invalid, and the superblock reads back.
    let mut c = std::os::unix::net::UnixStream::connect(&sock).unwrap();
    let mut hello = [0u8; 18];
    c.read_exact(&mut hello).unwrap();
    assert_eq!(&hello[..16], b"NBDMAGICIHAVEOPT");
    c.write_all(&3u32.to_be_bytes()).unwrap(); // fixed newstyle, no zeroes
    let mut opt = b"IHAVEOPT".to_vec();
    opt.extend_from_slice(&1u32.to_be_bytes()); // NBD_OPT_EXPORT_NAME
    opt.extend_from_slice(&0u32.to_be_bytes());
    c.write_all(&opt).unwrap();
    let mut export = [0u8; 10];
    c.read_exact(&mut export).unwrap();
    let size = u64::from_be_bytes(export[..8].try_into().unwrap());
    assert_eq!(size, std::fs::metadata(&file).unwrap().len());
    let request =
        |c: &mut std::os::unix::net::UnixStream, kind: u16, offset: u64, len: u32, data: &[u8]| {
            let mut r = 0x2560_9513u32.to_be_bytes().to_vec();
            r.extend_from_slice(&0u16.to_be_bytes());
            r.extend_from_slice(&kind.to_be_bytes());
            r.extend_from_slice(&7u64.to_be_bytes());
            r.extend_from_slice(&offset.to_be_bytes());
            r.extend_from_slice(&len.to_be_bytes());
            r.extend_from_slice(data);
            c.write_all(&r).unwrap();
            let mut reply = [0u8; 16];
            c.read_exact(&mut reply).unwrap();
            assert_eq!(&reply[..4], &0x6744_6698u32.to_be_bytes());
            assert_eq!(&reply[8..], &7u64.to_be_bytes(), "the reply's handle");
            u32::from_be_bytes(reply[4..8].try_into().unwrap())
        };
    assert_eq!(
        request(&mut c, 1, 0, 512, &[0xAA; 512]),
        1,
        "a write was not refused with EPERM"
    );
    assert_eq!(
        request(&mut c, 0, size, 4096, &[]),
        22,
        "a read past the end was not EINVAL"
    );
    assert_eq!(request(&mut c, 0, 1024, 4, &[]), 0);
    let mut magic = [0u8; 4];
    c.read_exact(&mut magic).unwrap();
    assert_eq!(u32::from_le_bytes(magic), 0xE0F5_E1E2);
    drop(c);
    skiff.ok(&["umount", sock.to_str().unwrap()]);
    assert!(!sock.exists(), "the socket outlived its daemon");
}

#[test]
fn a_block_daemon_killed_with_9_is_cleared_by_umount_and_starts_again() {
    let skiff = Skiff::new();
    let work = tempfile::tempdir().unwrap();
    let sock = work.path().join("rootfs.sock");
    let s = sock.to_str().unwrap();
    skiff.ok(&["mount", "--daemon", "--nbd", layout(), s]);
    let pid = skiff.json(&["stats", s])["pid"].as_u64().unwrap() as i32;
    // SAFETY: kill takes no pointers.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while Path::new(&format!("/proc/{pid}")).exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "the daemon outlived kill -9"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    // A new daemon takes over the stale socket.
    skiff.ok(&["mount", "--daemon", "--nbd", layout(), s]);
    let url = format!("nbd+unix:///?socket={}", sock.display());
    let read = || {
        let o = Command::new("qemu-io")
            .args(["-r", "-f", "raw", "-c", "read -P 0xe2 1024 1", &url])
            .output()
            .unwrap();
        String::from_utf8_lossy(&o.stdout).contains("read 1/1 bytes")
    };
    assert!(read(), "the restarted daemon does not serve");
    let pid = skiff.json(&["stats", s])["pid"].as_u64().unwrap() as i32;
    // SAFETY: as above.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
    while Path::new(&format!("/proc/{pid}")).exists() {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    // umount clears what -9 left: the socket and the record.
    skiff.ok(&["umount", s]);
    assert!(!sock.exists(), "a stale socket was left");
    let (code, _) = skiff.fails(&["stats", s]);
    assert_ne!(code, 0, "the record outlived umount");
}
