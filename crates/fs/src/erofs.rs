//! An EROFS image of a skiff metadata tree: the block-device view of an
//! image that a VM's guest kernel mounts (issue 18), and `skiff unpack
//! --erofs`.
//!
//! Only the metadata part is built in memory: the superblock, the inodes
//! with their xattrs and inline data, and the blocks of large directories
//! and symlinks. Each regular file's data has its own run of blocks after
//! it, in the plain (uncompressed) layout, so any block of the device maps
//! to one file and offset; the caller serves those reads from skiff's
//! verified chunks. Nothing here fetches data.
//!
//! Written by hand: no maintained crate writes EROFS, and Debian's
//! `mkfs.erofs` needs the files on disk. The format is the kernel's
//! (Documentation/filesystems/erofs.rst, fs/erofs/erofs_fs.h); what skiff
//! writes of it is in docs/vm.md.

use std::collections::HashMap;

use skiff_format::layout::ROOT_INO;
use skiff_format::metadata::{Attributes, InodeKind, Metadata};

pub const BLOCK_SIZE: u64 = 4096;
const BLOCK: usize = BLOCK_SIZE as usize;
const SUPERBLOCK_OFFSET: usize = 1024;
const MAGIC: u32 = 0xE0F5_E1E2;
/// The first inode slot after the superblock (nid 36, byte 1152).
const FIRST_INODE: usize = SUPERBLOCK_OFFSET + 128;
const INODE_SIZE: usize = 64;
const XATTR_HEADER: usize = 12;
const DIRENT_SIZE: usize = 12;
const LAYOUT_FLAT_PLAIN: u16 = 0;
const LAYOUT_FLAT_INLINE: u16 = 2;

#[derive(Debug)]
pub struct ErofsError(pub String);

impl std::fmt::Display for ErofsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ErofsError {}

fn err(e: impl std::fmt::Display) -> ErofsError {
    ErofsError(e.to_string())
}

/// One regular file's data on the device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extent {
    pub start_block: u64,
    pub ino: u32,
    pub size: u64,
}

impl Extent {
    pub fn blocks(&self) -> u64 {
        self.size.div_ceil(BLOCK_SIZE)
    }
}

/// The device: `meta` bytes first, then each file's data blocks.
pub struct ErofsImage {
    pub meta: Vec<u8>,
    /// Sorted by `start_block`.
    pub extents: Vec<Extent>,
    pub total_blocks: u64,
    /// Xattrs EROFS has no prefix for (only `user.`, `trusted.`,
    /// `security.` and POSIX ACLs are kept).
    pub dropped_xattrs: u64,
}

/// A piece of a device read: bytes of the metadata, zeros, or a file range.
#[derive(Debug, PartialEq, Eq)]
pub enum Piece {
    Meta { offset: u64, len: usize },
    Zero { len: usize },
    File { ino: u32, offset: u64, len: usize },
}

impl ErofsImage {
    pub fn size(&self) -> u64 {
        self.total_blocks * BLOCK_SIZE
    }

    /// Splits a read of `len` bytes at `offset` into what it covers.
    pub fn pieces(&self, mut offset: u64, len: usize) -> Vec<Piece> {
        let end = (offset + len as u64).min(self.size());
        let mut out = Vec::new();
        while offset < end {
            let want = (end - offset) as usize;
            if offset < self.meta.len() as u64 {
                let n = want.min(self.meta.len() - offset as usize);
                out.push(Piece::Meta { offset, len: n });
                offset += n as u64;
                continue;
            }
            let block = offset / BLOCK_SIZE;
            let i = self.extents.partition_point(|e| e.start_block <= block);
            let ext = i.checked_sub(1).map(|i| self.extents[i]);
            match ext {
                Some(e) if block < e.start_block + e.blocks() => {
                    let start = e.start_block * BLOCK_SIZE;
                    let in_file = offset - start;
                    let ext_end = start + e.blocks() * BLOCK_SIZE;
                    if in_file < e.size {
                        let n = want.min((e.size - in_file) as usize);
                        out.push(Piece::File {
                            ino: e.ino,
                            offset: in_file,
                            len: n,
                        });
                        offset += n as u64;
                    } else {
                        let n = want.min((ext_end - offset) as usize);
                        out.push(Piece::Zero { len: n });
                        offset += n as u64;
                    }
                }
                _ => {
                    let next = self
                        .extents
                        .get(i)
                        .map_or(end, |e| (e.start_block * BLOCK_SIZE).min(end));
                    let n = ((next - offset) as usize).min(want);
                    out.push(Piece::Zero { len: n });
                    offset += n as u64;
                }
            }
        }
        out
    }
}

/// A directory entry to write: name, inode, EROFS file type.
type Entry = (Vec<u8>, u32, u8);
/// A directory's entries, block by block.
type DirBlocks = Vec<Vec<Entry>>;

/// What an inode's record holds, decided before any nid is known.
struct Plan {
    attrs: Attributes,
    xattrs: Vec<u8>,
    /// Directory or symlink bytes; `None` for files and devices.
    data: Option<Vec<u8>>,
    inline: bool,
    /// Directory data: (names in order, child inos, file types) per block.
    dir: Option<DirBlocks>,
}

/// The xattr prefixes EROFS indexes: (index, prefix), longest first.
const XATTR_PREFIXES: [(u8, &[u8]); 5] = [
    (2, b"system.posix_acl_access"),
    (3, b"system.posix_acl_default"),
    (1, b"user."),
    (4, b"trusted."),
    (6, b"security."),
];

fn xattr_body(xattrs: &[(&[u8], &[u8])], dropped: &mut u64) -> Vec<u8> {
    let mut entries = Vec::new();
    for (name, value) in xattrs {
        let Some((index, prefix)) = XATTR_PREFIXES.iter().find(|(_, p)| name.starts_with(p)) else {
            *dropped += 1;
            continue;
        };
        let suffix = &name[prefix.len()..];
        if suffix.len() > u8::MAX as usize || value.len() > u16::MAX as usize {
            *dropped += 1;
            continue;
        }
        entries.push(suffix.len() as u8);
        entries.push(*index);
        entries.extend_from_slice(&(value.len() as u16).to_le_bytes());
        entries.extend_from_slice(suffix);
        entries.extend_from_slice(value);
        entries.resize(entries.len().next_multiple_of(4), 0);
    }
    if entries.is_empty() {
        return entries;
    }
    // The header: a reserved word (a name filter, unused here), no shared
    // xattrs, reserved bytes.
    let mut body = vec![0u8; XATTR_HEADER];
    body.extend_from_slice(&entries);
    body
}

/// The directory's entries, `.` and `..` included, in byte order, packed
/// into blocks; and its size (the last block is not padded).
fn pack_dir(mut entries: Vec<Entry>) -> (DirBlocks, u64) {
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    let mut blocks: DirBlocks = vec![Vec::new()];
    let mut used = 0;
    for e in entries {
        let need = DIRENT_SIZE + e.0.len();
        if used + need > BLOCK {
            blocks.push(Vec::new());
            used = 0;
        }
        used += need;
        blocks.last_mut().expect("never empty").push(e);
    }
    let size = (blocks.len() as u64 - 1) * BLOCK_SIZE + used as u64;
    (blocks, size)
}

fn erofs_file_type(kind: InodeKind) -> u8 {
    match kind {
        InodeKind::File => 1,
        InodeKind::Directory => 2,
        InodeKind::CharDevice => 3,
        InodeKind::BlockDevice => 4,
        InodeKind::Fifo => 5,
        InodeKind::Socket => 6,
        InodeKind::Symlink => 7,
    }
}

fn dir_bytes(blocks: &[Vec<Entry>], nids: &HashMap<u32, u64>) -> Vec<u8> {
    let mut out = Vec::new();
    for (bi, block) in blocks.iter().enumerate() {
        let base = out.len();
        let mut nameoff = block.len() * DIRENT_SIZE;
        for (name, ino, ft) in block {
            out.extend_from_slice(&nids[ino].to_le_bytes());
            out.extend_from_slice(&(nameoff as u16).to_le_bytes());
            out.push(*ft);
            out.push(0);
            nameoff += name.len();
        }
        for (name, _, _) in block {
            out.extend_from_slice(name);
        }
        if bi + 1 < blocks.len() {
            out.resize(base + BLOCK, 0);
        }
    }
    out
}

/// The kernel's `new_encode_dev`.
fn encode_dev(major: u32, minor: u32) -> u32 {
    (minor & 0xff) | (major << 8) | ((minor & !0xff) << 12)
}

/// Lays out the EROFS image of `md`'s tree.
pub fn build<B: AsRef<[u8]>>(md: &Metadata<B>) -> Result<ErofsImage, ErofsError> {
    let count = md.inode_count();
    let root = ROOT_INO;
    let mut dropped = 0;
    // The root first keeps its nid small (the superblock holds 16 bits).
    let order: Vec<u32> = std::iter::once(root)
        .chain((1..=count).filter(|&i| i != root))
        .collect();
    let mut plans = Vec::with_capacity(order.len());
    for &ino in &order {
        let attrs = md.attributes(ino).map_err(err)?;
        let xattrs = xattr_body(&md.xattrs(ino).map_err(err)?, &mut dropped);
        let (data, dir, size) = match attrs.kind() {
            InodeKind::Directory => {
                let parent = md.parent(ino).map_err(err)?;
                let mut entries = vec![(b".".to_vec(), ino, 2), (b"..".to_vec(), parent, 2)];
                for e in md.dir_entries(ino).map_err(err)? {
                    let kind = md.attributes(e.ino).map_err(err)?.kind();
                    entries.push((e.name.to_vec(), e.ino, erofs_file_type(kind)));
                }
                let (blocks, size) = pack_dir(entries);
                (Some(Vec::new()), Some(blocks), size)
            }
            InodeKind::Symlink => {
                let t = md.symlink_target(ino).map_err(err)?.to_vec();
                let n = t.len() as u64;
                (Some(t), None, n)
            }
            _ => (None, None, attrs.size),
        };
        let inline = data.is_some() && INODE_SIZE + xattrs.len() + size as usize <= BLOCK;
        let mut attrs = attrs;
        attrs.size = size;
        plans.push(Plan {
            attrs,
            xattrs,
            data,
            inline,
            dir,
        });
    }
    // Place the inode records; none crosses a block boundary.
    let mut pos = FIRST_INODE;
    let mut nids = HashMap::with_capacity(plans.len());
    let mut offsets = Vec::with_capacity(plans.len());
    for p in &plans {
        let len = INODE_SIZE + p.xattrs.len() + if p.inline { p.attrs.size as usize } else { 0 };
        if pos % BLOCK + len > BLOCK {
            pos = pos.next_multiple_of(BLOCK);
        }
        nids.insert(p.attrs.ino, (pos / 32) as u64);
        offsets.push(pos);
        pos = (pos + len).next_multiple_of(32);
    }
    // Blocks of directories and symlinks too large to inline, then files.
    let mut next_block = pos.next_multiple_of(BLOCK) as u64 / BLOCK_SIZE;
    let mut blkaddr = vec![0u64; plans.len()];
    for (i, p) in plans.iter().enumerate() {
        if p.data.is_some() && !p.inline {
            blkaddr[i] = next_block;
            next_block += p.attrs.size.div_ceil(BLOCK_SIZE);
        }
    }
    let meta_blocks = next_block;
    let mut extents = Vec::new();
    for (i, p) in plans.iter().enumerate() {
        if p.attrs.kind() == InodeKind::File && p.attrs.size > 0 {
            blkaddr[i] = next_block;
            let e = Extent {
                start_block: next_block,
                ino: p.attrs.ino,
                size: p.attrs.size,
            };
            next_block += e.blocks();
            extents.push(e);
        }
    }
    if next_block > u32::MAX as u64 {
        return Err(ErofsError(format!(
            "the image needs {next_block} blocks of 4 KiB; EROFS addresses at most 2^32"
        )));
    }
    let root_nid = nids[&root];
    if root_nid > u16::MAX as u64 {
        return Err(ErofsError("the root inode's nid is over 16 bits".into()));
    }
    let mut meta = vec![0u8; meta_blocks as usize * BLOCK];
    for (i, p) in plans.iter().enumerate() {
        let data = match (&p.dir, &p.data) {
            (Some(blocks), _) => dir_bytes(blocks, &nids),
            (None, Some(d)) => d.clone(),
            (None, None) => Vec::new(),
        };
        let layout = if p.inline {
            LAYOUT_FLAT_INLINE
        } else {
            LAYOUT_FLAT_PLAIN
        };
        let a = &p.attrs;
        let i_u = match a.kind() {
            InodeKind::CharDevice | InodeKind::BlockDevice => {
                encode_dev(a.rdev_major, a.rdev_minor)
            }
            _ => blkaddr[i] as u32,
        };
        let icount = if p.xattrs.is_empty() {
            0
        } else {
            ((p.xattrs.len() - XATTR_HEADER) / 4 + 1) as u16
        };
        let at = offsets[i];
        let rec = &mut meta[at..at + INODE_SIZE];
        rec[0..2].copy_from_slice(&(1 | (layout << 1)).to_le_bytes());
        rec[2..4].copy_from_slice(&icount.to_le_bytes());
        rec[4..6].copy_from_slice(&(a.mode as u16).to_le_bytes());
        rec[8..16].copy_from_slice(&a.size.to_le_bytes());
        rec[16..20].copy_from_slice(&i_u.to_le_bytes());
        rec[20..24].copy_from_slice(&a.ino.to_le_bytes());
        rec[24..28].copy_from_slice(&a.uid.to_le_bytes());
        rec[28..32].copy_from_slice(&a.gid.to_le_bytes());
        rec[32..40].copy_from_slice(&(a.mtime as u64).to_le_bytes());
        rec[40..44].copy_from_slice(&a.mtime_nsec.to_le_bytes());
        rec[44..48].copy_from_slice(&a.nlink.to_le_bytes());
        let x = at + INODE_SIZE;
        meta[x..x + p.xattrs.len()].copy_from_slice(&p.xattrs);
        if p.inline {
            let d = x + p.xattrs.len();
            meta[d..d + data.len()].copy_from_slice(&data);
        } else if p.data.is_some() {
            let d = blkaddr[i] as usize * BLOCK;
            meta[d..d + data.len()].copy_from_slice(&data);
        }
    }
    let sb = &mut meta[SUPERBLOCK_OFFSET..SUPERBLOCK_OFFSET + 128];
    sb[0..4].copy_from_slice(&MAGIC.to_le_bytes());
    sb[12] = 12; // blkszbits: 4 KiB blocks
    sb[14..16].copy_from_slice(&(root_nid as u16).to_le_bytes());
    sb[16..24].copy_from_slice(&(count as u64).to_le_bytes());
    sb[36..40].copy_from_slice(&(next_block as u32).to_le_bytes());
    // meta_blkaddr, xattr_blkaddr and the uuid stay 0.
    sb[64..69].copy_from_slice(b"skiff");
    Ok(ErofsImage {
        meta,
        extents,
        total_blocks: next_block,
        dropped_xattrs: dropped,
    })
}

/// Writes the whole EROFS image of `reader`'s image into `out`, every
/// file's bytes verified; holes stay sparse.
pub fn write(
    reader: &skiff_store::ChunkReader<'_>,
    out: &std::fs::File,
) -> Result<ErofsImage, ErofsError> {
    use std::os::unix::fs::FileExt;
    let img = build(&reader.image().metadata)?;
    let io = |what: &str, e: std::io::Error| ErofsError(format!("{what}: {e}"));
    out.write_all_at(&img.meta, 0)
        .map_err(|e| io("writing the metadata", e))?;
    for e in &img.extents {
        let base = e.start_block * BLOCK_SIZE;
        reader
            .read_file(e.ino, |off, bytes| out.write_all_at(bytes, base + off))
            .map_err(|x| {
                ErofsError(format!("{}: {x}", path_of(&reader.image().metadata, e.ino)))
            })?;
    }
    out.set_len(img.size())
        .map_err(|e| io("sizing the image", e))?;
    Ok(img)
}

/// A path of inode `ino`, for messages (the first found; "inode N" if none).
fn path_of<B: AsRef<[u8]>>(md: &Metadata<B>, ino: u32) -> String {
    let mut found = None;
    let _ = md.walk(|path, e| {
        if found.is_none() && e.ino == ino {
            found = Some(format!("/{}", String::from_utf8_lossy(path)));
        }
        Ok(())
    });
    found.unwrap_or_else(|| format!("inode {ino}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directories_pack_sorted_and_fill_blocks() {
        let names: Vec<Entry> = (0..400)
            .map(|i| (format!("file-{i:04}").into_bytes(), i + 2, 1))
            .collect();
        let (blocks, size) = pack_dir(names);
        assert!(blocks.len() > 1);
        for b in &blocks {
            assert!(b.iter().map(|e| DIRENT_SIZE + e.0.len()).sum::<usize>() <= BLOCK);
        }
        let all: Vec<&[u8]> = blocks.iter().flatten().map(|e| e.0.as_slice()).collect();
        assert!(all.windows(2).all(|w| w[0] < w[1]));
        let last: usize = blocks
            .last()
            .unwrap()
            .iter()
            .map(|e| DIRENT_SIZE + e.0.len())
            .sum();
        assert_eq!(size, (blocks.len() as u64 - 1) * BLOCK_SIZE + last as u64);
    }

    #[test]
    fn reads_split_into_metadata_file_data_and_zeros() {
        let img = ErofsImage {
            meta: vec![0; BLOCK],
            extents: vec![
                Extent {
                    start_block: 1,
                    ino: 5,
                    size: 5000,
                },
                Extent {
                    start_block: 3,
                    ino: 6,
                    size: 10,
                },
            ],
            total_blocks: 4,
            dropped_xattrs: 0,
        };
        assert_eq!(
            img.pieces(4000, 9000),
            vec![
                Piece::Meta {
                    offset: 4000,
                    len: 96
                },
                Piece::File {
                    ino: 5,
                    offset: 0,
                    len: 5000
                },
                Piece::Zero { len: 3192 },
                Piece::File {
                    ino: 6,
                    offset: 0,
                    len: 10
                },
                Piece::Zero { len: 702 },
            ]
        );
        // Past the end of the device: nothing.
        assert!(img.pieces(img.size(), 10).is_empty());
    }

    #[test]
    fn xattrs_keep_known_prefixes_only() {
        let mut dropped = 0;
        let body = xattr_body(
            &[(b"security.capability", b"\x01\x02"), (b"odd.name", b"x")],
            &mut dropped,
        );
        assert_eq!(dropped, 1);
        assert_eq!(
            body.len(),
            XATTR_HEADER + (4 + "capability".len() + 2).next_multiple_of(4)
        );
        assert_eq!(&body[XATTR_HEADER..XATTR_HEADER + 4], &[10, 6, 2, 0]);
    }
}
