//! Test images built from layers, shared by several test files.

use super::layers::{write_image, Entry, LayerBlob, Tar};

/// Three layers exercising whiteouts, opaque directories, hardlinks across
/// layers, long and non-UTF-8 names, devices, fifos, xattrs, setuid bits and
/// ownership; tagged `edge` in the layout at `dir`.
pub fn edge_image(dir: &std::path::Path) {
    let long_name = "n".repeat(255);
    let non_utf8: &[u8] = b"bad\xff\xfename";
    let mut l1 = Tar::new();
    l1.dir("a")
        .file("a/keep", b"keep me")
        .file("a/del", b"delete me");
    l1.dir("a/sub")
        .file("a/sub/x", b"inside a dir that becomes a file");
    l1.dir("opq")
        .file("opq/old1", b"hidden by opaque")
        .file("opq/old2", b"also hidden");
    l1.dir("hl")
        .file("hl/orig", b"original content")
        .hardlink("hl/link1", "hl/orig");
    l1.file("empty", b"");
    l1.entry(&Entry::new("fifo1", b'6'));
    let mut chr = Entry::new("dev-null", b'3');
    (chr.major, chr.minor, chr.mode) = (1, 3, 0o666);
    l1.entry(&chr);
    let mut blk = Entry::new("dev-loop", b'4');
    (blk.major, blk.minor, blk.mode) = (7, 0, 0o660);
    l1.entry(&blk);
    l1.file(&long_name, b"a name of 255 bytes");
    l1.file(non_utf8, b"a name that is not UTF-8");
    let mut x = Entry::new("xattr-file", b'0');
    x.data = b"has xattrs".to_vec();
    x.xattrs = vec![
        (b"user.skiff".to_vec(), b"hello".to_vec()),
        (b"user.bin".to_vec(), vec![0, 1, 2, 255]),
    ];
    l1.entry(&x);
    let mut suid = Entry::new("suid-bin", b'0');
    (suid.mode, suid.data) = (0o4755, b"#!/bin/sh\n".to_vec());
    l1.entry(&suid);
    let mut owned = Entry::new("owned", b'0');
    (owned.uid, owned.gid, owned.mode, owned.data) = (1000, 1001, 0o600, b"mine".to_vec());
    l1.entry(&owned);
    l1.symlink("ln", "a/keep").symlink("absln", "/etc/passwd");
    let big: Vec<u8> = (0..300_000u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 7) as u8)
        .collect();
    l1.file("big", &big);

    let mut l2 = Tar::new();
    l2.whiteout("a", "del");
    l2.dir("opq").opaque("opq").file("opq/new", b"after opaque");
    // A link to a lower-layer file taken before this layer rewrites it.
    l2.hardlink("hl/link2", "hl/orig")
        .file("hl/orig", b"rewritten in layer 2");
    l2.file("a/sub", b"a file where a directory was");
    l2.file("big", &big[..200_000]);

    let mut l3 = Tar::new();
    l3.file("a/del", b"re-added in layer 3");
    l3.whiteout("", "absln");
    let mut chr2 = Entry::new("dev-zero", b'3');
    (chr2.major, chr2.minor) = (1, 5);
    l3.entry(&chr2);
    l3.hardlink("hl/link3", "big");

    write_image(
        dir,
        "edge",
        &[
            LayerBlob::gzip(&l1.finish()),
            LayerBlob::plain(&l2.finish()),
            LayerBlob::gzip(&l3.finish()),
        ],
        ("linux", "amd64"),
    );
}
