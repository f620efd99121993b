//! `skiff unpack --erofs`: the EROFS image a VM's block device serves,
//! mounted by the host's own kernel, holds exactly the tree `skiff unpack`
//! writes; a tampered chunk stops it.

mod common;

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
    let src = layout()
        .strip_prefix("oci:")
        .unwrap()
        .rsplit_once(':')
        .unwrap()
        .0;
    let copy = work.path().join("layout");
    let status = Command::new("cp")
        .arg("-a")
        .arg(src)
        .arg(&copy)
        .status()
        .unwrap();
    assert!(status.success());
    // The first data blob of the image's manifest.
    let read_json = |p: &Path| -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap()
    };
    let blob = |digest: &str| {
        copy.join("blobs/sha256")
            .join(digest.trim_start_matches("sha256:"))
    };
    let index = read_json(&copy.join("index.json"));
    let manifest = read_json(&blob(index["manifests"][0]["digest"].as_str().unwrap()));
    let data = blob(manifest["layers"][0]["digest"].as_str().unwrap());
    let mut bytes = std::fs::read(&data).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x20;
    // The blob is read-only in the cache's copy.
    let _ = std::fs::remove_file(&data);
    std::fs::write(&data, &bytes).unwrap();
    let skiff = Skiff::new();
    let file = work.path().join("rootfs.erofs");
    let (code, err) = skiff.fails(&[
        "unpack",
        "--erofs",
        &format!("oci:{}:full", copy.display()),
        file.to_str().unwrap(),
    ]);
    assert_ne!(code, 0);
    assert!(err.contains("is corrupt"), "{err}");
    assert!(!file.exists(), "a failed image was left behind");
}
