//! The real Debian image through a real registry: push with skopeo, convert
//! registry to registry, check, unpack, and compare with `umoci unpack`.

mod common;

use std::process::Command;

use common::registry::Registry;
use common::trees::{assert_same, snapshot};
use common::{debian_image, sh, umoci_unpack, Skiff};

#[test]
fn registry_round_trip_matches_umoci() {
    let image = debian_image();
    let reg = Registry::start();
    reg.push_layout(&format!("oci:{}:full", image.display()), "src/debian:full");
    let skiff = Skiff::new();
    let src = reg.reference("src/debian:full");
    let dst = reg.reference("skiff/debian:full");

    let report = skiff.json(&["convert", &src, &dst]);
    let digest = report["digest"].as_str().unwrap().to_string();
    let img = &report["images"][0];
    assert_eq!(img["stats"]["layers"], 3);
    assert!(img["stats"]["write"]["new_chunks"].as_u64().unwrap() > 100);

    // Reproducible: the same input and options give the same digest.
    let again = skiff.json(&["convert", &src, &reg.reference("skiff/debian:again")]);
    assert_eq!(
        again["digest"], report["digest"],
        "conversion is not reproducible"
    );

    // skopeo and the registry accept it as an ordinary OCI image.
    let inspect: serde_json::Value = serde_json::from_str(&sh(Command::new("skopeo").args([
        "inspect",
        "--tls-verify=false",
        &format!("docker://{dst}"),
    ])))
    .unwrap();
    assert_eq!(inspect["Digest"].as_str().unwrap(), digest);
    let raw: serde_json::Value = serde_json::from_str(&sh(Command::new("skopeo").args([
        "inspect",
        "--raw",
        "--tls-verify=false",
        &format!("docker://{dst}"),
    ])))
    .unwrap();
    let layers = raw["layers"].as_array().unwrap();
    assert_eq!(
        layers.last().unwrap()["mediaType"],
        "application/vnd.oci.image.layer.skiff.metadata.v1.zstd"
    );
    assert!(layers[..layers.len() - 1]
        .iter()
        .all(|l| l["mediaType"] == "application/vnd.oci.image.layer.skiff.blob.v1"));
    let copy = reg.reference("copied/debian:1");
    sh(Command::new("skopeo").args([
        "copy",
        "--quiet",
        "--src-tls-verify=false",
        "--dest-tls-verify=false",
        &format!("docker://{dst}"),
        &format!("docker://{copy}"),
    ]));
    let dir = tempfile::tempdir().unwrap();
    let layout = format!("oci:{}:x", dir.path().join("layout").display());
    sh(Command::new("skopeo").args([
        "copy",
        "--quiet",
        "--src-tls-verify=false",
        &format!("docker://{dst}"),
        &layout,
    ]));

    for r in [&dst, &copy, &layout] {
        let out = skiff.ok(&["check", r]);
        assert!(out.starts_with("ok:"), "{out}");
    }

    let inspect = skiff.json(&["inspect", &dst]);
    assert!(inspect["files"].as_u64().unwrap() > 3000);
    assert!(inspect["compression_ratio"].as_f64().unwrap() > 1.5);
    assert!(inspect["dedup_ratio"].as_f64().unwrap() >= 1.0);

    let unpacked = dir.path().join("rootfs");
    skiff.ok(&["unpack", &dst, unpacked.to_str().unwrap()]);
    let (_keep, reference) = umoci_unpack(&format!("{}:full", image.display()));
    let ours = snapshot(&unpacked, true);
    assert_same(&ours, &snapshot(&reference, true), "unpack vs umoci");
    // The comparison covers real xattrs, devices and hardlinks.
    let ping = &ours.nodes[&b"/usr/bin/ping"[..]];
    assert!(
        ping.xattrs.contains_key(&b"security.capability"[..]),
        "{ping:?}"
    );
    assert_eq!(ours.nodes[&b"/dev/null"[..]].rdev, Some((1, 3)));
    assert!(ours
        .links
        .iter()
        .any(|g| g.contains(&b"/usr/local/bin/dpkg-hardlink".to_vec())));
    assert_eq!(ours.nodes[&b"/var/local/test.fifo"[..]].kind, "fifo");
}

#[test]
fn layout_and_registry_sources_agree() {
    let image = debian_image();
    let reg = Registry::start();
    reg.push_layout(&format!("oci:{}:pkgs", image.display()), "src/debian:pkgs");
    let skiff = Skiff::new();
    let out = tempfile::tempdir().unwrap();
    let from_layout = skiff.json(&[
        "convert",
        &format!("oci:{}:pkgs", image.display()),
        &format!("oci:{}:pkgs", out.path().display()),
    ]);
    let from_registry = skiff.json(&[
        "convert",
        &reg.reference("src/debian:pkgs"),
        &reg.reference("s/debian:pkgs"),
    ]);
    assert_eq!(from_layout["digest"], from_registry["digest"]);
}
