//! Source formats: docker-archive, Docker schema 2, multi-platform indexes;
//! and the command-line surface (help, bad references).

mod common;

use std::process::Command;

use common::layers::{write_image, write_index, LayerBlob, Tar};
use common::registry::Registry;
use common::trees::{assert_same, snapshot};
use common::{sh, umoci_unpack, Skiff};

fn two_layer_image(dir: &std::path::Path, tag: &str, marker: &[u8]) -> serde_json::Value {
    let l1 = Tar::new()
        .dir("etc")
        .file("etc/base", b"base layer")
        .file("etc/gone", b"deleted")
        .finish();
    let l2 = Tar::new()
        .whiteout("etc", "gone")
        .file("etc/marker", marker)
        .finish();
    write_image(
        dir,
        tag,
        &[LayerBlob::gzip(&l1), LayerBlob::gzip(&l2)],
        ("linux", "amd64"),
    )
}

#[test]
fn docker_archive_source() {
    let work = tempfile::tempdir().unwrap();
    let layout = work.path().join("src");
    two_layer_image(&layout, "v1", b"from an archive");
    let archive = work.path().join("image.tar");
    sh(Command::new("skopeo").args([
        "copy",
        "--quiet",
        &format!("oci:{}:v1", layout.display()),
        &format!("docker-archive:{}:test/app:v1", archive.display()),
    ]));
    let skiff = Skiff::new();
    let dst = format!("oci:{}:a", work.path().join("out").display());
    skiff.ok(&[
        "convert",
        &format!("docker-archive:{}", archive.display()),
        &dst,
    ]);
    skiff.ok(&[
        "convert",
        &format!("docker-archive:{}:test/app:v1", archive.display()),
        &dst,
    ]);
    let (code, err) = skiff.fails(&[
        "convert",
        &format!("docker-archive:{}:test/app:nope", archive.display()),
        &dst,
    ]);
    assert_eq!(code, 1);
    assert!(err.contains("not found"), "{err}");
    let rootfs = work.path().join("rootfs");
    skiff.ok(&["unpack", &dst, rootfs.to_str().unwrap()]);
    let (_k, reference) = umoci_unpack(&format!("{}:v1", layout.display()));
    assert_same(
        &snapshot(&rootfs, true),
        &snapshot(&reference, true),
        "docker-archive",
    );
}

#[test]
fn docker_schema2_from_registry() {
    let work = tempfile::tempdir().unwrap();
    let layout = work.path().join("src");
    two_layer_image(&layout, "v1", b"docker v2s2");
    let reg = Registry::start();
    sh(Command::new("skopeo").args([
        "copy",
        "--quiet",
        "--format",
        "v2s2",
        "--dest-tls-verify=false",
        &format!("oci:{}:v1", layout.display()),
        &format!("docker://{}", reg.reference("d/app:v1")),
    ]));
    let raw = sh(Command::new("skopeo").args([
        "inspect",
        "--raw",
        "--tls-verify=false",
        &format!("docker://{}", reg.reference("d/app:v1")),
    ]));
    assert!(raw.contains("application/vnd.docker.distribution.manifest.v2+json"));
    let skiff = Skiff::new();
    let dst = reg.reference("s/app:v1");
    skiff.ok(&["convert", &reg.reference("d/app:v1"), &dst]);
    let rootfs = work.path().join("rootfs");
    skiff.ok(&["unpack", &dst, rootfs.to_str().unwrap()]);
    assert_eq!(
        std::fs::read(rootfs.join("etc/marker")).unwrap(),
        b"docker v2s2"
    );
    assert!(!rootfs.join("etc/gone").exists());
}

#[test]
fn multi_platform_index() {
    let work = tempfile::tempdir().unwrap();
    let layout = work.path().join("src");
    let amd = two_layer_image(&layout, "amd", b"amd64 build");
    let arm_l = Tar::new()
        .dir("etc")
        .file("etc/marker", b"arm64 build")
        .finish();
    let arm = write_image(
        &layout,
        "arm",
        &[LayerBlob::gzip(&arm_l)],
        ("linux", "arm64"),
    );
    // An attestation manifest, as buildkit adds: skipped.
    let mut att = write_image(
        &layout,
        "att",
        &[LayerBlob::gzip(&Tar::new().finish())],
        ("unknown", "unknown"),
    );
    att["platform"] = serde_json::json!({"os": "unknown", "architecture": "unknown"});
    write_index(&layout, "multi", &[amd, arm, att]);
    let skiff = Skiff::new();
    let src = format!("oci:{}:multi", layout.display());
    let out = work.path().join("out");
    let all = skiff.json(&["convert", &src, &format!("oci:{}:all", out.display())]);
    assert_eq!(all["images"].as_array().unwrap().len(), 2);
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("index.json")).unwrap()).unwrap();
    let top = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == "all")
        .unwrap();
    assert_eq!(top["mediaType"], "application/vnd.oci.image.index.v1+json");
    for (platform, marker) in [
        ("linux/amd64", "amd64 build"),
        ("linux/arm64", "arm64 build"),
    ] {
        let rootfs = work.path().join(platform.replace('/', "-"));
        skiff.ok(&[
            "unpack",
            &format!("oci:{}:all", out.display()),
            rootfs.to_str().unwrap(),
            "--platform",
            platform,
        ]);
        assert_eq!(
            std::fs::read_to_string(rootfs.join("etc/marker")).unwrap(),
            marker
        );
        skiff.ok(&[
            "check",
            &format!("oci:{}:all", out.display()),
            "--platform",
            platform,
        ]);
    }
    // Only the wanted platform's manifest is read: another's, missing,
    // does not fail it.
    let all_index = top["digest"]
        .as_str()
        .unwrap()
        .trim_start_matches("sha256:");
    let index_doc: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("blobs/sha256").join(all_index)).unwrap())
            .unwrap();
    let arm_manifest = index_doc["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["platform"]["architecture"] == "arm64")
        .unwrap()["digest"]
        .as_str()
        .unwrap()
        .trim_start_matches("sha256:")
        .to_string();
    let moved = work.path().join("arm-manifest");
    std::fs::rename(out.join("blobs/sha256").join(&arm_manifest), &moved).unwrap();
    let amd_root = work.path().join("amd-again");
    skiff.ok(&[
        "unpack",
        &format!("oci:{}:all", out.display()),
        amd_root.to_str().unwrap(),
        "--platform",
        "linux/amd64",
    ]);
    assert_eq!(
        std::fs::read_to_string(amd_root.join("etc/marker")).unwrap(),
        "amd64 build"
    );
    std::fs::rename(&moved, out.join("blobs/sha256").join(&arm_manifest)).unwrap();
    let one = skiff.json(&[
        "convert",
        &src,
        &format!("oci:{}:arm", out.display()),
        "--platform",
        "linux/arm64",
    ]);
    assert_eq!(one["images"].as_array().unwrap().len(), 1);
    assert_eq!(one["images"][0]["platform"], "linux/arm64");
    let (code, err) = skiff.fails(&[
        "convert",
        &src,
        &format!("oci:{}:x", out.display()),
        "--platform",
        "linux/s390x",
    ]);
    assert_eq!(code, 1);
    assert!(err.contains("available: linux/amd64, linux/arm64"), "{err}");
}

#[test]
fn help_and_usage_errors() {
    let skiff = Skiff::new();
    for cmd in [
        vec!["--help"],
        vec!["convert", "--help"],
        vec!["inspect", "--help"],
        vec!["check", "--help"],
        vec!["unpack", "--help"],
        vec!["mount", "--help"],
        vec!["umount", "--help"],
        vec!["stats", "--help"],
        vec!["cache", "--help"],
        vec!["run", "--help"],
        vec!["ps", "--help"],
        vec!["stop", "--help"],
        vec!["rm", "--help"],
        vec!["logs", "--help"],
    ] {
        let out = skiff.ok(&cmd);
        assert!(out.contains("Usage"), "{out}");
    }
    let (code, _) = skiff.fails(&["convert"]);
    assert_eq!(code, 2);
    // `run` reports its own failures as Docker does: 125.
    let (code, err) = skiff.fails(&["run", "--rm", "oci:/nonexistent/layout", "true"]);
    assert_eq!(code, 125);
    assert!(err.contains("not found"), "{err}");
    let (code, err) = skiff.fails(&["stop", "no-such-container"]);
    assert_eq!(code, 1);
    assert!(err.contains("skiff ps -a"), "{err}");
    let (code, err) = skiff.fails(&["inspect", "Not A Ref"]);
    assert_eq!(code, 1);
    assert!(err.contains("invalid image reference"), "{err}");
    let (code, err) = skiff.fails(&["inspect", "oci:/nonexistent/layout"]);
    assert_eq!(code, 1);
    assert!(err.contains("not found"), "{err}");
    let (code, err) = skiff.fails(&["convert", "oci:/x", "oci:/y", "--compression", "gzip"]);
    assert_eq!(code, 2);
    assert!(err.contains("zstd"), "{err}");
}

#[test]
fn concurrent_writers_keep_every_tag() {
    let work = tempfile::tempdir().unwrap();
    let layout = work.path().join("src");
    two_layer_image(&layout, "v1", b"shared");
    let out = work.path().join("out");
    let skiff = Skiff::new();
    let children: Vec<_> = (0..6)
        .map(|i| {
            skiff
                .cmd()
                .args([
                    "convert",
                    "-q",
                    &format!("oci:{}:v1", layout.display()),
                    &format!("oci:{}:t{i}", out.display()),
                ])
                .stdout(std::process::Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    for mut c in children {
        assert!(c.wait().unwrap().success());
    }
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("index.json")).unwrap()).unwrap();
    let mut tags: Vec<String> = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            m["annotations"]["org.opencontainers.image.ref.name"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    tags.sort();
    assert_eq!(tags, (0..6).map(|i| format!("t{i}")).collect::<Vec<_>>());
}

#[test]
fn unpack_without_root_skips_what_needs_root() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let image = common::debian_image();
    let skiff = Skiff::new();
    let work = tempfile::tempdir().unwrap();
    std::fs::set_permissions(work.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    std::fs::set_permissions(skiff.root.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let dst = format!("oci:{}:full", work.path().join("img").display());
    skiff.ok(&[
        "convert",
        "-q",
        &format!("oci:{}:full", image.display()),
        &dst,
    ]);
    sh(Command::new("chmod")
        .args(["-R", "a+rX"])
        .arg(work.path().join("img")));
    let rootfs = work.path().join("rootfs");
    let out = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
        ])
        .arg(env!("CARGO_BIN_EXE_skiff"))
        .args([
            "--root",
            skiff.root.path().to_str().unwrap(),
            "unpack",
            &dst,
            rootfs.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("skipped") && stderr.contains("device nodes"),
        "{stderr}"
    );
    let ping = std::fs::metadata(rootfs.join("usr/bin/ping")).unwrap();
    assert_eq!(ping.uid(), 65534);
    assert!(!rootfs.join("dev/null").exists());
    assert_eq!(
        std::fs::read(rootfs.join("etc/motd")).unwrap(),
        b"rewritten by layer 3\n"
    );
}
