//! Shared pieces of the container tests: the skiff-converted Debian image
//! and `skiff run` with its output.

use std::path::PathBuf;
use std::process::Output;
use std::sync::OnceLock;

use super::{debian_image, Skiff};

/// The Debian image converted to skiff in an OCI layout, cached under
/// $SKIFF_CACHE (rebuilt when missing, or for another format version);
/// converting is deterministic.
pub fn layout() -> &'static str {
    static LAYOUT: OnceLock<String> = OnceLock::new();
    LAYOUT.get_or_init(|| {
        let src = debian_image();
        let index = std::fs::read(src.join("index.json")).unwrap();
        let version = skiff_format::layout::METADATA_VERSION.to_le_bytes();
        // Bumped when what convert writes changes without a format version
        // (containerd's layer annotations).
        let salt = b"snapshot-annotations-2";
        let key = &sha256_hex(&[&index[..], &version[..], &salt[..]].concat())[..16];
        let cache = cache_dir();
        let dir = cache.join("images").join(format!("skiff-debian-{key}"));
        if !dir.join("index.json").exists() {
            let tmp = cache
                .join("images")
                .join(format!("skiff-debian-{key}.tmp-{}", std::process::id()));
            let skiff = Skiff::new();
            skiff.ok(&[
                "convert",
                "-q",
                &format!("oci:{}:full", src.display()),
                &format!("oci:{}:full", tmp.display()),
            ]);
            // A concurrent builder may have won; either copy is the same.
            if std::fs::rename(&tmp, &dir).is_err() {
                let _ = std::fs::remove_dir_all(&tmp);
            }
        }
        format!("oci:{}:full", dir.display())
    })
}

/// $SKIFF_CACHE, or ~/.cache/skiff: where built test images are kept.
pub fn cache_dir() -> PathBuf {
    std::env::var("SKIFF_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(std::env::var("HOME").unwrap()).join(".cache/skiff"))
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex(&sha2::Sha256::digest(bytes))
}

pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

pub fn out(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn err(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// `skiff run --rm IMAGE ARGS...`, returning its output.
pub fn run(skiff: &Skiff, opts: &[&str], args: &[&str]) -> Output {
    let mut a = vec!["run", "--rm"];
    a.extend_from_slice(opts);
    a.push(layout());
    a.extend_from_slice(args);
    skiff.run(&a)
}

pub fn code(o: &Output) -> i32 {
    o.status.code().unwrap_or(-1)
}

/// A copy of the test image's layout in `work/layout`, with one byte in
/// the middle of its first data blob flipped; the copy's `oci:` reference.
pub fn tampered_layout_copy(work: &std::path::Path) -> String {
    let src = layout()
        .strip_prefix("oci:")
        .unwrap()
        .rsplit_once(':')
        .unwrap()
        .0;
    let copy = work.join("layout");
    assert!(std::process::Command::new("cp")
        .arg("-a")
        .arg(src)
        .arg(&copy)
        .status()
        .unwrap()
        .success());
    let read_json = |p: &std::path::Path| -> serde_json::Value {
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
    format!("oci:{}:full", copy.display())
}
