//! Damage to a converted image is found, named, and reported with exit code 3.

mod common;

use common::layers::{write_image, LayerBlob, Tar};
use common::{flip_byte, Skiff};

fn converted(work: &std::path::Path) -> (Skiff, String, serde_json::Value) {
    let mut t = Tar::new();
    let text: Vec<u8> = b"0123456789abcdef"
        .iter()
        .cycle()
        .take(200_000)
        .copied()
        .collect();
    let other: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 253) as u8).collect();
    t.dir("etc")
        .file("etc/victim", &text)
        .file("etc/bystander", &other)
        .file("etc/small", b"tiny");
    write_image(
        &work.join("src"),
        "t",
        &[LayerBlob::gzip(&t.finish())],
        ("linux", "amd64"),
    );
    let skiff = Skiff::new();
    let dst = format!("oci:{}:t", work.join("out").display());
    skiff.ok(&[
        "convert",
        &format!("oci:{}:t", work.join("src").display()),
        &dst,
    ]);
    let manifest_digest = {
        let idx: serde_json::Value =
            serde_json::from_slice(&std::fs::read(work.join("out/index.json")).unwrap()).unwrap();
        idx["manifests"][0]["digest"].as_str().unwrap().to_string()
    };
    let manifest: serde_json::Value = serde_json::from_slice(
        &std::fs::read(work.join("out/blobs/sha256").join(&manifest_digest[7..])).unwrap(),
    )
    .unwrap();
    (skiff, dst, manifest)
}

#[test]
fn corrupt_chunk_is_named_with_its_files() {
    let work = tempfile::tempdir().unwrap();
    let (skiff, dst, manifest) = converted(work.path());
    skiff.ok(&["check", &dst]);
    let blob = manifest["layers"][0]["digest"].as_str().unwrap();
    // The first chunk of the blob is the start of etc/victim's data.
    flip_byte(&work.path().join("out/blobs/sha256").join(&blob[7..]), 10);
    let (code, stderr) = skiff.fails(&["check", &dst]);
    assert_eq!(code, 3, "{stderr}");
    assert!(stderr.contains("first bad chunk"), "{stderr}");
    assert!(stderr.contains("/etc/victim"), "{stderr}");
    assert!(!stderr.contains("/etc/bystander"), "{stderr}");
    let report = skiff.run(&["check", &dst, "--json"]);
    assert_eq!(report.status.code(), Some(3));
    let report: serde_json::Value = serde_json::from_slice(&report.stdout).unwrap();
    assert_eq!(report["bad_chunks"][0]["files"][0], "/etc/victim");
    // Unpacking refuses to write unverified bytes.
    let (code, stderr) =
        skiff.fails(&["unpack", &dst, work.path().join("rootfs").to_str().unwrap()]);
    assert_eq!(code, 3, "{stderr}");
}

#[test]
fn corrupt_metadata_is_refused() {
    let work = tempfile::tempdir().unwrap();
    let (skiff, dst, manifest) = converted(work.path());
    let layers = manifest["layers"].as_array().unwrap();
    let meta = layers.last().unwrap()["digest"].as_str().unwrap();
    flip_byte(&work.path().join("out/blobs/sha256").join(&meta[7..]), 20);
    for cmd in ["check", "inspect"] {
        let (code, stderr) = skiff.fails(&[cmd, &dst]);
        assert_eq!(code, 3, "{cmd}: {stderr}");
        assert!(
            stderr.contains("corrupt") || stderr.contains("digest"),
            "{stderr}"
        );
    }
}
