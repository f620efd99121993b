//! Snapshots of directory trees, compared field by field.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use sha2::{Digest, Sha256};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub kind: &'static str,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: Option<u64>,
    pub mtime: Option<(i64, i64)>,
    pub sha256: Option<String>,
    pub target: Option<Vec<u8>>,
    pub rdev: Option<(u32, u32)>,
    pub xattrs: BTreeMap<Vec<u8>, Vec<u8>>,
}

pub struct Tree {
    pub nodes: BTreeMap<Vec<u8>, Node>,
    /// Sets of paths that share an inode (only sets of two or more).
    pub links: BTreeSet<Vec<Vec<u8>>>,
}

fn xattrs(path: &Path) -> BTreeMap<Vec<u8>, Vec<u8>> {
    let c = CString::new(path.as_os_str().as_bytes()).unwrap();
    let mut out = BTreeMap::new();
    // SAFETY: c is a valid NUL-terminated path; the buffers are sized by the
    // kernel's own answer and their lengths are passed alongside.
    unsafe {
        let n = libc::llistxattr(c.as_ptr(), std::ptr::null_mut(), 0);
        if n <= 0 {
            return out;
        }
        let mut names = vec![0u8; n as usize];
        let n = libc::llistxattr(
            c.as_ptr(),
            names.as_mut_ptr() as *mut libc::c_char,
            names.len(),
        );
        if n <= 0 {
            return out;
        }
        for name in names[..n as usize]
            .split(|&b| b == 0)
            .filter(|s| !s.is_empty())
        {
            let cn = CString::new(name).unwrap();
            let len = libc::lgetxattr(c.as_ptr(), cn.as_ptr(), std::ptr::null_mut(), 0);
            if len < 0 {
                continue;
            }
            let mut v = vec![0u8; len as usize];
            let len = libc::lgetxattr(
                c.as_ptr(),
                cn.as_ptr(),
                v.as_mut_ptr() as *mut libc::c_void,
                v.len(),
            );
            if len >= 0 {
                v.truncate(len as usize);
                out.insert(name.to_vec(), v);
            }
        }
    }
    out
}

fn node(path: &Path, dir_mtime: bool) -> (Node, (u64, u64)) {
    let m = std::fs::symlink_metadata(path).unwrap();
    let ft = m.file_type();
    let kind = if ft.is_dir() {
        "dir"
    } else if ft.is_file() {
        "file"
    } else if ft.is_symlink() {
        "symlink"
    } else if ft.is_char_device() {
        "char"
    } else if ft.is_block_device() {
        "block"
    } else if ft.is_fifo() {
        "fifo"
    } else {
        "socket"
    };
    let mtime = (m.mtime(), m.mtime_nsec());
    let n = Node {
        kind,
        mode: m.mode(),
        uid: m.uid(),
        gid: m.gid(),
        size: ft.is_file().then_some(m.len()),
        mtime: match kind {
            "symlink" => None,
            "dir" if !dir_mtime => None,
            _ => Some(mtime),
        },
        sha256: ft.is_file().then(|| {
            let mut h = Sha256::new();
            std::io::copy(&mut std::fs::File::open(path).unwrap(), &mut h).unwrap();
            format!("{:x}", h.finalize())
        }),
        target: ft.is_symlink().then(|| {
            std::fs::read_link(path)
                .unwrap()
                .as_os_str()
                .as_bytes()
                .to_vec()
        }),
        rdev: (ft.is_char_device() || ft.is_block_device())
            .then(|| (libc::major(m.rdev()), libc::minor(m.rdev()))),
        xattrs: xattrs(path),
    };
    (n, (m.dev(), m.ino()))
}

/// Walks `root` without following symlinks. Directory mtimes are recorded
/// only if `dir_mtime`.
pub fn snapshot(root: &Path, dir_mtime: bool) -> Tree {
    let mut nodes = BTreeMap::new();
    let mut inodes: BTreeMap<(u64, u64), Vec<Vec<u8>>> = BTreeMap::new();
    let mut stack = vec![(root.to_path_buf(), b"/".to_vec())];
    while let Some((path, rel)) = stack.pop() {
        let (n, id) = node(&path, dir_mtime);
        if n.kind == "dir" {
            for e in std::fs::read_dir(&path).unwrap() {
                let e = e.unwrap();
                let mut child = rel.clone();
                if child.len() > 1 {
                    child.push(b'/');
                }
                child.extend_from_slice(e.file_name().as_bytes());
                stack.push((e.path(), child));
            }
        } else {
            inodes.entry(id).or_default().push(rel.clone());
        }
        nodes.insert(rel, n);
    }
    let links = inodes
        .into_values()
        .filter(|v| v.len() > 1)
        .map(|mut v| {
            v.sort();
            v
        })
        .collect();
    Tree { nodes, links }
}

/// Asserts two trees are equal, listing the first differences.
pub fn assert_same(a: &Tree, b: &Tree, what: &str) {
    let mut diffs = Vec::new();
    for (p, na) in &a.nodes {
        match b.nodes.get(p) {
            None => diffs.push(format!("only in first: {}", String::from_utf8_lossy(p))),
            Some(nb) if nb != na => {
                diffs.push(format!("{}: {na:?} != {nb:?}", String::from_utf8_lossy(p)))
            }
            _ => {}
        }
    }
    for p in b.nodes.keys().filter(|p| !a.nodes.contains_key(*p)) {
        diffs.push(format!("only in second: {}", String::from_utf8_lossy(p)));
    }
    if a.links != b.links {
        diffs.push(format!(
            "hardlink groups differ: {:?} != {:?}",
            a.links, b.links
        ));
    }
    assert!(
        diffs.is_empty(),
        "{what}: {} differences, first ones:\n{}",
        diffs.len(),
        diffs
            .iter()
            .take(15)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
}
