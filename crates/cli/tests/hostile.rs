//! Hostile and malformed layers: each gets a clear error or a safe result,
//! and nothing is ever written outside the destination tree.

mod common;

use common::layers::{
    gzip, header, pax_record, set_checksum, sha256, write_image, Entry, LayerBlob, Tar,
};
use common::Skiff;

struct Case {
    work: tempfile::TempDir,
    skiff: Skiff,
}

impl Case {
    fn new(layers: Vec<LayerBlob>) -> Self {
        let work = tempfile::tempdir().unwrap();
        write_image(&work.path().join("src"), "h", &layers, ("linux", "amd64"));
        Self {
            work,
            skiff: Skiff::new(),
        }
    }

    fn tar(tars: &[Vec<u8>]) -> Self {
        Self::new(tars.iter().map(|t| LayerBlob::gzip(t)).collect())
    }

    fn src(&self) -> String {
        format!("oci:{}:h", self.work.path().join("src").display())
    }

    fn dst(&self) -> String {
        format!("oci:{}:h", self.work.path().join("out").display())
    }

    /// Conversion must fail, with exit `code` and a message containing `text`.
    fn refused(&self, code: i32, text: &str) {
        let (got, stderr) = self.skiff.fails(&["convert", &self.src(), &self.dst()]);
        assert_eq!(got, code, "{stderr}");
        assert!(stderr.contains(text), "expected {text:?} in: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }

    /// Conversion succeeds; the image unpacks inside `box/rootfs` only.
    fn unpacked(&self) -> std::path::PathBuf {
        self.skiff.ok(&["convert", &self.src(), &self.dst()]);
        self.skiff.ok(&["check", &self.dst()]);
        let bx = self.work.path().join("box");
        std::fs::create_dir(&bx).unwrap();
        let rootfs = bx.join("rootfs");
        self.skiff
            .ok(&["unpack", &self.dst(), rootfs.to_str().unwrap()]);
        let names: Vec<_> = std::fs::read_dir(&bx)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(
            names,
            vec![std::ffi::OsString::from("rootfs")],
            "something escaped the tree"
        );
        for outside in ["/pwned", "/tmp/pwned", "/etc/pwned"] {
            assert!(
                !std::path::Path::new(outside).exists(),
                "{outside} was written"
            );
        }
        rootfs
    }
}

#[test]
fn dotdot_paths_are_refused() {
    Case::tar(&[Tar::new().file("a/../../pwned", b"x").finish()])
        .refused(1, "climbs above the image root");
    Case::tar(&[Tar::new()
        .file("ok", b"x")
        .hardlink("h", "../../etc/passwd")
        .finish()])
    .refused(1, "climbs above the image root");
}

#[test]
fn absolute_paths_stay_inside() {
    let c = Case::tar(&[Tar::new().file("/abs/pwned", b"inside").finish()]);
    let root = c.unpacked();
    assert_eq!(std::fs::read(root.join("abs/pwned")).unwrap(), b"inside");
}

#[test]
fn symlink_then_file_through_it() {
    // In one layer: refused.
    Case::tar(&[Tar::new()
        .symlink("evil", "/tmp")
        .file("evil/pwned", b"x")
        .finish()])
    .refused(1, "lies below");
    Case::tar(&[Tar::new()
        .symlink("evil", "../../..")
        .file("evil/pwned", b"x")
        .finish()])
    .refused(1, "lies below");
    // Across layers: the upper layer's directory wins; nothing leaves the tree.
    let c = Case::tar(&[
        Tar::new().symlink("evil", "/tmp").finish(),
        Tar::new().file("evil/pwned", b"x").finish(),
    ]);
    let root = c.unpacked();
    assert!(root.join("evil").is_dir());
    assert_eq!(std::fs::read(root.join("evil/pwned")).unwrap(), b"x");
    // A symlink is stored as a symlink; unpack never follows it.
    let c = Case::tar(&[Tar::new().symlink("etc-link", "/etc").finish()]);
    let root = c.unpacked();
    assert_eq!(
        std::fs::read_link(root.join("etc-link")).unwrap(),
        std::path::Path::new("/etc")
    );
}

#[test]
fn bad_hardlinks_are_refused() {
    Case::tar(&[Tar::new().hardlink("h", "missing").finish()])
        .refused(1, "which no layer below it contains");
    Case::tar(&[Tar::new().dir("d").hardlink("h", "d").finish()])
        .refused(1, "hardlink to a directory");
    Case::tar(&[Tar::new().hardlink("h", "h").finish()]).refused(1, "hardlink to itself");
    // A link to a file the next layer deletes still gets the old content...
    let c = Case::tar(&[
        Tar::new().file("f", b"old").finish(),
        Tar::new().hardlink("g", "f").finish(),
        Tar::new().whiteout("", "f").finish(),
    ]);
    assert_eq!(std::fs::read(c.unpacked().join("g")).unwrap(), b"old");
    // ...but a link to a file deleted *below* it has no target.
    Case::tar(&[
        Tar::new().file("f", b"old").finish(),
        Tar::new().whiteout("", "f").finish(),
        Tar::new().hardlink("g", "f").finish(),
    ])
    .refused(1, "hardlinks to it");
}

#[test]
fn duplicate_entries_last_wins() {
    let c = Case::tar(&[Tar::new()
        .file("dup", b"first")
        .file("dup", b"second")
        .dir("d")
        .file("d", b"file now")
        .finish()]);
    let root = c.unpacked();
    assert_eq!(std::fs::read(root.join("dup")).unwrap(), b"second");
    assert_eq!(std::fs::read(root.join("d")).unwrap(), b"file now");
}

#[test]
fn huge_and_negative_sizes_are_refused() {
    // A header claiming a terabyte, followed by ten bytes.
    let mut h = header(b"huge", b'0', 0o644, 0, b"");
    h[124..136].copy_from_slice(&[0x80, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0]); // base-256: 2^40
    set_checksum(&mut h);
    let mut t = Tar::new();
    t.raw(&h).raw(&[7u8; 10]);
    Case::tar(&[t.out.clone()]).refused(1, "truncated");
    // GNU base-256 negative size.
    let mut h = header(b"neg", b'0', 0o644, 0, b"");
    h[124..136].copy_from_slice(&[0xff; 12]);
    set_checksum(&mut h);
    Case::tar(&[Tar::new().raw(&h).finish()]).refused(1, "negative");
    // A GNU long name claiming 1 GiB.
    let mut t = Tar::new();
    t.raw(&header(b"././@LongLink", b'L', 0o644, 1 << 30, b""));
    Case::tar(&[t.finish()]).refused(1, "exceeds the limit");
    // A pax header claiming 100 MiB.
    let mut t = Tar::new();
    t.raw(&header(b"pax", b'x', 0o644, 100 << 20, b""));
    Case::tar(&[t.finish()]).refused(1, "exceeds the limit");
    // A uid beyond 32 bits, by pax.
    let mut t = Tar::new();
    let rec = pax_record(b"uid", b"99999999999999");
    t.raw(&header(b"pax", b'x', 0o644, rec.len() as u64, b""))
        .raw(&rec)
        .raw(&vec![0u8; 512 - rec.len()]);
    t.entry(&Entry::new("u", b'0'));
    Case::tar(&[t.finish()]).refused(1, "out of range");
}

#[test]
fn malformed_streams_are_refused() {
    let mut h = header(b"f", b'0', 0o644, 0, b"");
    h[148] = b'7';
    Case::tar(&[Tar::new().raw(&h).finish()]).refused(1, "checksum");
    // Truncated gzip (stored with its own, matching digest).
    let tar = Tar::new().file("f", &vec![b'z'; 100_000]).finish();
    let gz = gzip(&tar);
    let cut = gz[..gz.len() / 2].to_vec();
    let blob = LayerBlob {
        diff_id: sha256(&tar),
        bytes: cut,
        media_type: "application/vnd.oci.image.layer.v1.tar+gzip".into(),
    };
    Case::new(vec![blob]).refused(1, "truncated or corrupt");
    // PAX sparse files are not supported.
    let mut t = Tar::new();
    let rec = pax_record(b"GNU.sparse.major", b"1");
    t.raw(&header(b"pax", b'x', 0o644, rec.len() as u64, b""))
        .raw(&rec)
        .raw(&vec![0u8; 512 - rec.len()]);
    t.file("s", b"data");
    Case::tar(&[t.finish()]).refused(1, "pax sparse");
    // A whiteout of nothing.
    Case::tar(&[Tar::new().file(".wh..", b"").finish()]).refused(1, "whiteout of nothing");
    // A file below a file of the same layer.
    Case::tar(&[Tar::new().file("f", b"x").file("f/g", b"y").finish()]).refused(1, "lies below");
}

#[test]
fn non_layer_media_type_is_refused() {
    let blob = LayerBlob {
        bytes: b"{}".to_vec(),
        media_type: "application/vnd.in-toto+json".into(),
        diff_id: sha256(b"{}"),
    };
    Case::new(vec![blob]).refused(1, "not a filesystem layer");
}

#[test]
fn corrupt_layer_blob_is_refused() {
    // Uncompressed, so the damage reaches the digest check, not a decoder.
    let c = Case::new(vec![LayerBlob::plain(
        &Tar::new().file("f", &vec![b'q'; 50_000]).finish(),
    )]);
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(c.work.path().join("src/index.json")).unwrap())
            .unwrap();
    let m = index["manifests"][0]["digest"].as_str().unwrap();
    let manifest: serde_json::Value = serde_json::from_slice(
        &std::fs::read(c.work.path().join("src/blobs/sha256").join(&m[7..])).unwrap(),
    )
    .unwrap();
    let layer = manifest["layers"][0]["digest"].as_str().unwrap();
    let path = c.work.path().join("src/blobs/sha256").join(&layer[7..]);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[1000] ^= 1; // inside f's data: the tar still parses
    std::fs::write(&path, bytes).unwrap();
    c.refused(3, "corrupt");
}

#[test]
fn devices_are_kept_as_metadata() {
    let mut e = Entry::new("dev/sda", b'4');
    (e.major, e.minor) = (8, 0);
    let c = Case::tar(&[Tar::new().dir("dev").entry(&e).finish()]);
    let info = c.skiff.json(&[
        "inspect",
        &{
            c.skiff.ok(&["convert", &c.src(), &c.dst()]);
            c.dst()
        },
        "--tree",
    ]);
    let dev = info["tree"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["path"] == "/dev/sda")
        .unwrap()
        .clone();
    assert_eq!(dev["kind"], "block device");
}
