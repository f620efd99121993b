//! Layers that exercise the corners of OCI layer semantics, converted and
//! unpacked, compared with `umoci unpack` of the same image.

mod common;

use std::os::unix::fs::MetadataExt;

use common::images::edge_image;
use common::layers::{write_image, LayerBlob};
use common::trees::{assert_same, snapshot};
use common::{umoci_unpack, Skiff};

#[test]
fn edge_case_layers_match_umoci() {
    let work = tempfile::tempdir().unwrap();
    let layout = work.path().join("src");
    edge_image(&layout);
    let skiff = Skiff::new();
    let src = format!("oci:{}:edge", layout.display());
    let dst = format!("oci:{}:edge", work.path().join("out").display());
    skiff.ok(&["convert", &src, &dst]);
    skiff.ok(&["check", &dst]);
    let rootfs = work.path().join("rootfs");
    skiff.ok(&["unpack", &dst, rootfs.to_str().unwrap()]);
    let (_keep, reference) = umoci_unpack(&format!("{}:edge", layout.display()));
    let ours = snapshot(&rootfs, true);
    assert_same(&ours, &snapshot(&reference, true), "edge layers vs umoci");

    // Spot checks, so the comparison cannot pass by both sides being wrong.
    let read = |p: &str| std::fs::read(rootfs.join(p)).unwrap();
    assert!(!rootfs.join("opq/old1").exists() && !rootfs.join("absln").exists());
    assert_eq!(read("opq/new"), b"after opaque");
    assert_eq!(read("a/del"), b"re-added in layer 3");
    assert_eq!(read("a/sub"), b"a file where a directory was");
    assert_eq!(read("hl/orig"), b"rewritten in layer 2");
    assert_eq!(read("hl/link2"), b"original content");
    let ino = |p: &str| std::fs::metadata(rootfs.join(p)).unwrap().ino();
    assert_eq!(ino("hl/link1"), ino("hl/link2"));
    assert_ne!(ino("hl/link1"), ino("hl/orig"));
    assert_eq!(ino("hl/link3"), ino("big"));
    assert_eq!(read("big").len(), 200_000);
    let m = std::fs::symlink_metadata(rootfs.join("dev-null")).unwrap();
    assert_eq!((libc::major(m.rdev()), libc::minor(m.rdev())), (1, 3));
    assert_eq!(m.mode() & 0o7777, 0o666);
    assert_eq!(
        std::fs::metadata(rootfs.join("suid-bin")).unwrap().mode() & 0o7777,
        0o4755
    );
    let nx = ours.nodes.get(&b"/xattr-file"[..]).unwrap();
    assert_eq!(
        nx.xattrs.get(&b"user.skiff"[..]).map(Vec::as_slice),
        Some(&b"hello"[..])
    );
    assert!(ours
        .nodes
        .contains_key(&[b"/", &b"bad\xff\xfename"[..]].concat()));
    assert!(ours
        .nodes
        .contains_key(format!("/{}", "n".repeat(255)).as_bytes()));
}

#[test]
fn sparse_file_over_4gib() {
    use std::io::{Seek, SeekFrom, Write};
    use std::os::unix::fs::FileExt;
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("tree");
    std::fs::create_dir(&src).unwrap();
    let size: u64 = 5 << 30;
    let marks: [(u64, &[u8]); 3] = [
        (0, b"start"),
        (4_500_000_000, b"past four gib"),
        (size - 3, b"end"),
    ];
    let mut f = std::fs::File::create(src.join("sparse")).unwrap();
    f.set_len(size).unwrap();
    for (off, data) in marks {
        f.seek(SeekFrom::Start(off)).unwrap();
        f.write_all(data).unwrap();
    }
    drop(f);
    let tar = work.path().join("layer.tar");
    common::sh(
        std::process::Command::new("tar")
            .args(["--sparse", "--format=gnu", "--numeric-owner", "-cf"])
            .arg(&tar)
            .arg("-C")
            .arg(&src)
            .arg("sparse"),
    );
    let tar_bytes = std::fs::read(&tar).unwrap();
    assert!(
        tar_bytes.len() < 1 << 20,
        "GNU tar did not write a sparse member"
    );
    let layout = work.path().join("layout");
    write_image(
        &layout,
        "sparse",
        &[LayerBlob::gzip(&tar_bytes)],
        ("linux", "amd64"),
    );
    let skiff = Skiff::new();
    let dst = format!("oci:{}:s", work.path().join("out").display());
    skiff.ok(&["convert", &format!("oci:{}:sparse", layout.display()), &dst]);
    let info = skiff.json(&["inspect", &dst]);
    assert_eq!(info["file_bytes"].as_u64().unwrap(), size);
    assert!(info["hole_bytes"].as_u64().unwrap() > size - (1 << 20));
    assert!(
        info["chunk_bytes"].as_u64().unwrap() < 1 << 20,
        "holes were stored: {info}"
    );
    let rootfs = work.path().join("rootfs");
    skiff.ok(&["unpack", &dst, rootfs.to_str().unwrap()]);
    let out = std::fs::File::open(rootfs.join("sparse")).unwrap();
    let meta = out.metadata().unwrap();
    assert_eq!(meta.len(), size);
    assert!(
        meta.blocks() * 512 < 64 << 20,
        "unpacked file is not sparse"
    );
    for (off, data) in marks {
        let mut buf = vec![0u8; data.len()];
        out.read_exact_at(&mut buf, off).unwrap();
        assert_eq!(buf, data, "at offset {off}");
    }
    let mut zeros = vec![1u8; 4096];
    out.read_exact_at(&mut zeros, 3 << 30).unwrap();
    assert!(zeros.iter().all(|&b| b == 0));
}
