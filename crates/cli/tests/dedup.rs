//! Two images sharing a base: converting the second against the first as a
//! chunk dictionary stores no more than the second's new content.

mod common;

use std::io::Read;

use common::registry::Registry;
use common::trees::{assert_same, snapshot};
use common::{debian_image, umoci_unpack, Skiff};

/// Bytes of regular-file content in a gzip tar layer.
fn file_bytes_in_layer(path: &std::path::Path) -> u64 {
    let mut tar = Vec::new();
    flate2::read::GzDecoder::new(std::fs::File::open(path).unwrap())
        .read_to_end(&mut tar)
        .unwrap();
    let mut a = tar::Archive::new(&tar[..]);
    a.entries()
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.header().entry_type().is_file())
        .map(|e| e.size())
        .sum()
}

#[test]
fn second_image_adds_only_its_new_content() {
    let image = debian_image();
    let reg = Registry::start();
    reg.push_layout(&format!("oci:{}:pkgs", image.display()), "src/debian:pkgs");
    reg.push_layout(&format!("oci:{}:full", image.display()), "src/debian:full");
    let skiff = Skiff::new();
    let v1 = reg.reference("skiff/v1:pkgs");
    let v2 = reg.reference("skiff/v2:full");
    let first = skiff.json(&["convert", &reg.reference("src/debian:pkgs"), &v1]);
    let second = skiff.json(&[
        "convert",
        &reg.reference("src/debian:full"),
        &v2,
        "--chunk-dict",
        &v1,
    ]);

    // The new content of v2 is its top layer.
    let manifest: serde_json::Value = serde_json::from_slice(
        &std::fs::read(image.join("index.json"))
            .map(|i| {
                let index: serde_json::Value = serde_json::from_slice(&i).unwrap();
                let d = index["manifests"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == "full")
                    .unwrap()["digest"]
                    .as_str()
                    .unwrap()
                    .to_string();
                std::fs::read(image.join("blobs/sha256").join(&d[7..])).unwrap()
            })
            .unwrap(),
    )
    .unwrap();
    let top = manifest["layers"].as_array().unwrap().last().unwrap()["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let new_content = file_bytes_in_layer(&image.join("blobs/sha256").join(&top[7..]));

    let w1 = &first["images"][0]["stats"]["write"];
    let w2 = &second["images"][0]["stats"]["write"];
    let stored = w2["new_bytes"].as_u64().unwrap();
    assert!(
        stored <= new_content,
        "v2 stored {stored} new bytes, its new layer holds {new_content}"
    );
    assert!(w2["dict_chunks"].as_u64().unwrap() * 10 >= w1["new_chunks"].as_u64().unwrap() * 9);
    let written = second["images"][0]["new_blob_bytes"].as_u64().unwrap();
    let total = second["images"][0]["blob_bytes"].as_u64().unwrap();
    assert!(
        written * 50 < total,
        "v2 wrote {written} of {total} blob bytes"
    );

    // v2 is complete on its own: checks, and unpacks to the real tree.
    skiff.ok(&["check", &v2]);
    let out = tempfile::tempdir().unwrap();
    let rootfs = out.path().join("rootfs");
    skiff.ok(&["unpack", &v2, rootfs.to_str().unwrap()]);
    let (_keep, reference) = umoci_unpack(&format!("{}:full", image.display()));
    assert_same(
        &snapshot(&rootfs, true),
        &snapshot(&reference, true),
        "dedup'd v2 vs umoci",
    );
}

#[test]
fn dictionary_in_another_layout_is_copied() {
    let image = debian_image();
    let skiff = Skiff::new();
    let work = tempfile::tempdir().unwrap();
    let v1 = format!("oci:{}:v1", work.path().join("one").display());
    let v2 = format!("oci:{}:v2", work.path().join("two").display());
    skiff.ok(&["convert", &format!("oci:{}:pkgs", image.display()), &v1]);
    skiff.ok(&[
        "convert",
        &format!("oci:{}:full", image.display()),
        &v2,
        "--chunk-dict",
        &v1,
    ]);
    // The dictionary's blobs were copied into the second layout.
    std::fs::remove_dir_all(work.path().join("one")).unwrap();
    skiff.ok(&["check", &v2]);
}
