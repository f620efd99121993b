//! Round trips through the writer and reader, and the reader against damage.

use crate::metadata::*;
use crate::writer::Counts;
use crate::*;

fn attrs(mode: u32, nlink: u32, size: u64) -> Attributes {
    Attributes {
        ino: 0,
        mode,
        uid: 1000,
        gid: 100,
        nlink,
        size,
        mtime: 1_700_000_000,
        mtime_nsec: 5,
        rdev_major: 0,
        rdev_minor: 0,
    }
}

/// /            (1)
/// ├── bin/     (2)
/// │   ├── sh   (4) file, 2 links
/// │   └── ash  (4)
/// ├── dev/     (3)
/// │   └── null (6) char 1:3
/// └── link     (5) -> bin/sh
pub(crate) fn sample() -> Vec<u8> {
    let mut w = MetadataWriter::new(
        DigestAlgorithm::Blake3,
        Compression::Zstd,
        Chunking::default(),
        Counts {
            inodes: 6,
            dirents: 6,
            chunk_refs: 2,
            chunks: 1,
            blobs: 1,
            xattrs: 2,
            pool_bytes: 256,
        },
    )
    .unwrap();
    let blob = w
        .add_blob(BlobInfo {
            digest: Digest([9; 32]),
            size: 1000,
            chunk_count: 1,
        })
        .unwrap();
    let chunk = w
        .add_chunk(ChunkInfo {
            digest: DigestAlgorithm::Blake3.digest(b"x"),
            blob,
            compression: Compression::Zstd,
            compressed_offset: 0,
            compressed_size: 10,
            uncompressed_size: 20,
        })
        .unwrap();
    let x: Vec<(Vec<u8>, Vec<u8>)> = vec![(b"user.k".to_vec(), b"v".to_vec())];
    let none: Vec<(Vec<u8>, Vec<u8>)> = vec![];
    let root = w
        .add_inode(InodeSpec {
            attrs: attrs(S_IFDIR | 0o755, 4, 0),
            parent: 1,
            xattrs: &none,
            content: Content::Directory(vec![(b"link", 5), (b"dev", 3), (b"bin", 2)]),
        })
        .unwrap();
    assert_eq!(root, 1);
    w.add_inode(InodeSpec {
        attrs: attrs(S_IFDIR | 0o755, 2, 0),
        parent: 1,
        xattrs: &x,
        content: Content::Directory(vec![(b"sh", 4), (b"ash", 4)]),
    })
    .unwrap();
    w.add_inode(InodeSpec {
        attrs: attrs(S_IFDIR | 0o755, 2, 0),
        parent: 1,
        xattrs: &none,
        content: Content::Directory(vec![(b"null", 6)]),
    })
    .unwrap();
    let refs = [
        ChunkRef {
            file_offset: 0,
            chunk: Some(chunk),
            chunk_offset: 5,
            length: 15,
        },
        ChunkRef {
            file_offset: 15,
            chunk: None,
            chunk_offset: 0,
            length: 100,
        },
    ];
    w.add_inode(InodeSpec {
        attrs: attrs(S_IFREG | 0o755, 2, 115),
        parent: 0,
        xattrs: &x,
        content: Content::File(&refs),
    })
    .unwrap();
    w.add_inode(InodeSpec {
        attrs: attrs(S_IFLNK | 0o777, 1, 6),
        parent: 0,
        xattrs: &none,
        content: Content::Symlink(b"bin/sh"),
    })
    .unwrap();
    let mut dev = attrs(S_IFCHR | 0o666, 1, 0);
    dev.rdev_major = 1;
    dev.rdev_minor = 3;
    w.add_inode(InodeSpec {
        attrs: dev,
        parent: 0,
        xattrs: &none,
        content: Content::Special,
    })
    .unwrap();
    w.set_prefetch(vec![0]);
    w.finish().unwrap()
}

#[test]
fn round_trip() {
    let bytes = sample();
    let md = Metadata::parse(&bytes[..]).unwrap();
    md.validate().unwrap();
    assert_eq!(md.inode_count(), 6);
    let names: Vec<_> = md
        .dir_entries(1)
        .unwrap()
        .iter()
        .map(|e| e.name.to_vec())
        .collect();
    assert_eq!(
        names,
        vec![b"bin".to_vec(), b"dev".to_vec(), b"link".to_vec()]
    );
    assert_eq!(md.resolve(b"/bin/sh").unwrap(), Some(4));
    assert_eq!(md.resolve(b"bin/ash").unwrap(), Some(4));
    assert_eq!(md.resolve(b"/bin/zsh").unwrap(), None);
    assert_eq!(md.resolve(b"/").unwrap(), Some(1));
    assert!(md.resolve(b"/bin/../etc").is_err());
    assert_eq!(md.symlink_target(5).unwrap(), b"bin/sh");
    assert_eq!(md.attributes(6).unwrap().rdev_minor, 3);
    assert_eq!(md.attributes(6).unwrap().kind(), InodeKind::CharDevice);
    assert_eq!(md.xattrs(4).unwrap(), vec![(&b"user.k"[..], &b"v"[..])]);
    assert_eq!(md.parent(2).unwrap(), 1);
    assert_eq!(md.parent(1).unwrap(), 1);
    let refs = md.chunk_refs(4).unwrap();
    assert_eq!(refs.len(), 2);
    assert_eq!(refs[1].chunk, None);
    assert_eq!(md.chunk_refs_in(4, 20, 5).unwrap(), vec![refs[1]]);
    assert_eq!(md.chunk_refs_in(4, 10, 10).unwrap(), refs);
    assert_eq!(md.chunk_refs_in(4, 200, 10).unwrap(), vec![]);
    assert_eq!(md.prefetch().unwrap(), vec![0]);
    assert_eq!(md.dir_entry(1, 1).unwrap().unwrap().file_type, 4);
    assert!(matches!(
        md.symlink_target(4),
        Err(FormatError::WrongKind { .. })
    ));
    assert!(matches!(md.attributes(7), Err(FormatError::NoSuchInode(7))));
    assert!(matches!(md.attributes(0), Err(FormatError::NoSuchInode(0))));
}

#[test]
fn writer_is_deterministic() {
    assert_eq!(sample(), sample());
}

#[test]
fn writer_rejects_bad_trees() {
    let none: Vec<(Vec<u8>, Vec<u8>)> = vec![];
    let mut w = MetadataWriter::new(
        DigestAlgorithm::Blake3,
        Compression::Zstd,
        Chunking::default(),
        Counts {
            inodes: 1,
            dirents: 1,
            pool_bytes: 64,
            ..Default::default()
        },
    )
    .unwrap();
    w.add_inode(InodeSpec {
        attrs: attrs(S_IFDIR | 0o755, 2, 0),
        parent: 1,
        xattrs: &none,
        content: Content::Directory(vec![(b"missing", 2)]),
    })
    .unwrap();
    assert!(w.finish().is_err(), "dangling entry accepted");

    let mut w = MetadataWriter::new(
        DigestAlgorithm::Blake3,
        Compression::Zstd,
        Chunking::default(),
        Counts {
            inodes: 1,
            dirents: 1,
            pool_bytes: 64,
            ..Default::default()
        },
    )
    .unwrap();
    let r = w.add_inode(InodeSpec {
        attrs: attrs(S_IFDIR | 0o755, 2, 0),
        parent: 1,
        xattrs: &none,
        content: Content::Directory(vec![(b"..", 1)]),
    });
    assert!(r.is_err(), "'..' accepted as a name");

    // A file whose chunks do not add up to its size.
    let mut w = MetadataWriter::new(
        DigestAlgorithm::Blake3,
        Compression::Zstd,
        Chunking::default(),
        Counts {
            inodes: 2,
            dirents: 1,
            pool_bytes: 64,
            ..Default::default()
        },
    )
    .unwrap();
    w.add_inode(InodeSpec {
        attrs: attrs(S_IFDIR | 0o755, 2, 0),
        parent: 1,
        xattrs: &none,
        content: Content::Directory(vec![(b"f", 2)]),
    })
    .unwrap();
    w.add_inode(InodeSpec {
        attrs: attrs(S_IFREG | 0o644, 1, 10),
        parent: 0,
        xattrs: &none,
        content: Content::File(&[]),
    })
    .unwrap();
    assert!(w.finish().is_err(), "short file accepted");
}

/// Walks everything a reader can reach; must never panic.
fn exercise(bytes: &[u8]) {
    let Ok(md) = Metadata::parse(bytes) else {
        return;
    };
    let _ = md.validate();
    for ino in 0..md.inode_count().saturating_add(2).min(64) {
        let _ = md.attributes(ino);
        let _ = md.dir_entries(ino);
        let _ = md.lookup(ino, b"bin");
        let _ = md.chunk_refs(ino);
        let _ = md.chunk_refs_in(ino, 3, 50);
        let _ = md.symlink_target(ino);
        let _ = md.xattrs(ino);
        let _ = md.parent(ino);
    }
    for c in 0..md.chunk_count().min(64) {
        let _ = md.chunk(c);
    }
    let _ = md.resolve(b"/bin/sh");
    let _ = md.prefetch();
}

#[test]
fn damaged_metadata_never_panics() {
    let good = sample();
    // Every single-byte change, with a few values.
    for i in 0..good.len() {
        for v in [0u8, 1, 0x7f, 0xff] {
            let mut b = good.clone();
            b[i] = v;
            exercise(&b);
        }
    }
    // Every truncation.
    for n in 0..good.len() {
        exercise(&good[..n]);
    }
}

#[test]
fn detects_directory_cycle() {
    // Point /dev's entry "null" at /bin's inode 2: 2 gains a second parent.
    let good = sample();
    let md = Metadata::parse(&good[..]).unwrap();
    let dirents_off = {
        // find the dirent for "null" by scanning for ino 6 records
        let raw = md.as_bytes();
        let hdr = &raw[48 + 16..48 + 32];
        u64::from_le_bytes(hdr[..8].try_into().unwrap()) as usize
    };
    let mut b = good.clone();
    // Dirents are sorted per directory: root(bin,dev,link), bin(ash,sh), dev(null).
    let null_entry = dirents_off + 5 * 12;
    b[null_entry..null_entry + 4].copy_from_slice(&2u32.to_le_bytes());
    b[null_entry + 10] = 4;
    let md = Metadata::parse(&b[..]).unwrap();
    assert!(md.validate().is_err());
}

#[test]
fn walk_visits_every_path_once() {
    let bytes = sample();
    let md = Metadata::parse(&bytes[..]).unwrap();
    let mut seen = Vec::new();
    md.walk(|p, e| {
        seen.push((String::from_utf8(p.to_vec()).unwrap(), e.ino));
        Ok(())
    })
    .unwrap();
    let want: Vec<(String, u32)> = [
        ("bin", 2),
        ("bin/ash", 4),
        ("bin/sh", 4),
        ("dev", 3),
        ("dev/null", 6),
        ("link", 5),
    ]
    .iter()
    .map(|(p, i)| (p.to_string(), *i))
    .collect();
    assert_eq!(seen, want);
}

#[test]
fn declared_counts_are_enforced() {
    let none: Vec<(Vec<u8>, Vec<u8>)> = vec![];
    let root = |w: &mut MetadataWriter| {
        w.add_inode(InodeSpec {
            attrs: attrs(S_IFDIR | 0o755, 2, 0),
            parent: 1,
            xattrs: &none,
            content: Content::Directory(vec![]),
        })
    };
    let counts = Counts {
        inodes: 1,
        pool_bytes: 8,
        ..Default::default()
    };
    let mut w = MetadataWriter::new(
        DigestAlgorithm::Blake3,
        Compression::Zstd,
        Chunking::default(),
        counts,
    )
    .unwrap();
    root(&mut w).unwrap();
    assert!(
        root(&mut w).is_err(),
        "a second inode beyond the declared one"
    );
    let counts = Counts {
        inodes: 2,
        pool_bytes: 8,
        ..Default::default()
    };
    let mut w = MetadataWriter::new(
        DigestAlgorithm::Blake3,
        Compression::Zstd,
        Chunking::default(),
        counts,
    )
    .unwrap();
    root(&mut w).unwrap();
    assert!(w.finish().is_err(), "fewer inodes than declared");
    // A pool bound that is too small still works (the buffer grows).
    let counts = Counts {
        inodes: 1,
        pool_bytes: 0,
        ..Default::default()
    };
    let mut w = MetadataWriter::new(
        DigestAlgorithm::Blake3,
        Compression::Zstd,
        Chunking::default(),
        counts,
    )
    .unwrap();
    root(&mut w).unwrap();
    Metadata::parse(w.finish().unwrap())
        .unwrap()
        .validate()
        .unwrap();
}
