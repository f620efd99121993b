//! The node's images: `skiff pull`, `skiff images`, `skiff rmi`, ordinary
//! OCI images converted on the node, idle image mounts released, and the
//! chunk cache keeping the chunks of images still on the node.

mod common;

use std::time::{Duration, Instant};

use common::containers::{code, err, layout, out};
use common::{debian_image, Skiff};

fn images(skiff: &Skiff) -> Vec<serde_json::Value> {
    let v: serde_json::Value = serde_json::from_str(&skiff.ok(&["images", "--json"])).unwrap();
    v.as_array().unwrap().clone()
}

fn fuse_mounts_under(skiff: &Skiff) -> usize {
    let root = skiff.root.path().to_str().unwrap().to_string();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter(|l| l.contains(&root) && l.contains(" fuse"))
        .count()
}

/// `skiff run` of an image nobody converted: it is converted on the node,
/// once, says so in one line, and runs.
#[test]
fn an_ordinary_oci_image_runs_after_one_conversion() {
    let skiff = Skiff::new();
    let plain = format!("oci:{}:full", debian_image().display());
    let o = skiff.run(&[
        "run",
        "--rm",
        &plain,
        "sh",
        "-c",
        "echo from a plain OCI image",
    ]);
    assert_eq!(code(&o), 0, "{}", err(&o));
    assert_eq!(out(&o), "from a plain OCI image\n");
    assert!(
        err(&o).contains("is not a skiff image: converted it on this node"),
        "{}",
        err(&o)
    );
    let o = skiff.run(&["run", "--rm", &plain, "true"]);
    assert_eq!(code(&o), 0, "{}", err(&o));
    assert!(
        !err(&o).contains("converted"),
        "converted twice: {}",
        err(&o)
    );
    let list = images(&skiff);
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(list[0]["mode"], "converted");
    assert_eq!(list[0]["reference"], plain.as_str());
    // Removed, the conversion goes with it.
    skiff.ok(&["rmi", &plain]);
    assert!(images(&skiff).is_empty());
    let store = skiff.root.path().join("store");
    assert_eq!(
        std::fs::read_dir(&store).unwrap().count(),
        0,
        "the conversion was kept"
    );
}

#[test]
fn pull_images_and_rmi() {
    let skiff = Skiff::new();
    let pulled: serde_json::Value =
        serde_json::from_str(&skiff.ok(&["pull", layout(), "--json"])).unwrap();
    assert_eq!(pulled["mode"], "lazy");
    assert_eq!(pulled["mounted"], true);
    assert!(pulled["digest"].as_str().unwrap().starts_with("sha256:"));
    assert!(pulled["size_bytes"].as_u64().unwrap() > 1 << 20);
    // Its chunks are pinned in the node's cache, one line each.
    let pins = skiff.root.path().join("cache/pins");
    let pin = std::fs::read_dir(&pins)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    assert!(std::fs::read_to_string(&pin).unwrap().lines().count() > 100);

    let id = skiff.ok(&["run", "-d", layout(), "sleep", "300"]);
    let id = id.trim().to_string();
    let list = images(&skiff);
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["containers"][0], id.as_str());
    let text = skiff.ok(&["images"]);
    assert!(text.contains("lazy") && text.lines().count() == 2, "{text}");

    let (c, e) = skiff.fails(&["rmi", layout()]);
    assert_eq!(c, 1);
    assert!(e.contains("running container"), "{e}");
    skiff.ok(&["stop", "-t", "1", &id]);
    let (_, e) = skiff.fails(&["rmi", layout()]);
    assert!(e.contains("stopped containers") && e.contains("-f"), "{e}");
    let digest = list[0]["digest"].as_str().unwrap()[7..19].to_string();
    let removed = skiff.ok(&["rmi", "-f", &digest]);
    assert!(removed.contains(layout()), "{removed}");
    assert!(images(&skiff).is_empty());
    assert_eq!(fuse_mounts_under(&skiff), 0, "its mount is still there");
    assert!(!pin.exists(), "its chunks are still pinned");
    let (_, e) = skiff.fails(&["rmi", layout()]);
    assert!(e.contains("no image"), "{e}");
    skiff.ok(&["rm", &id]);
}

/// An image mount with no running container and no reads goes after the
/// idle timeout; one that a container runs from stays.
#[test]
fn idle_image_mounts_are_released() {
    let skiff = Skiff::new();
    let with_idle = |args: &[&str]| skiff.ok_with_env(&[("SKIFF_IMAGE_IDLE_TIMEOUT", "2")], args);
    with_idle(&["pull", layout()]);
    assert_eq!(fuse_mounts_under(&skiff), 1);
    let deadline = Instant::now() + Duration::from_secs(20);
    while fuse_mounts_under(&skiff) > 0 {
        assert!(Instant::now() < deadline, "the idle mount stayed");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(images(&skiff)[0]["mounted"], false);

    let id = with_idle(&["run", "-d", layout(), "sleep", "300"]);
    std::thread::sleep(Duration::from_secs(6));
    assert_eq!(fuse_mounts_under(&skiff), 1, "a mount in use was released");
    skiff.ok(&["rm", "-f", id.trim()]);
    let deadline = Instant::now() + Duration::from_secs(20);
    while fuse_mounts_under(&skiff) > 0 {
        assert!(
            Instant::now() < deadline,
            "the mount stayed after its container went"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}
