//! `skiff unpack`: writes an image's tree to a directory.
//!
//! Every entry is created with an `*at` call relative to a directory file
//! descriptor that this code opened on a directory it created, with
//! `O_NOFOLLOW`, so symlinks in the image are never followed and nothing is
//! written outside the destination. Ownership is applied before the mode
//! (chown clears setuid bits) and xattrs after both (chown drops
//! `security.capability`); directory times are set after their contents.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::File;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, FileType, Mode, OFlags, Timespec, Timestamps, XattrFlags};
use skiff_format::layout::ROOT_INO;
use skiff_format::{Attributes, InodeKind};
use skiff_store::{ChunkReader, StoreError};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum UnpackError {
    #[error("{0} already exists and is not an empty directory; choose a new or empty directory")]
    NotEmpty(PathBuf),
    #[error("{path}: {op} failed: {source}{}", hint.map(|h| format!(" ({h})")).unwrap_or_default())]
    Sys {
        path: String,
        op: &'static str,
        source: std::io::Error,
        hint: Option<&'static str>,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("corrupt metadata: {0}")]
    Format(#[from] skiff_format::FormatError),
}

type Result<T, E = UnpackError> = std::result::Result<T, E>;

impl UnpackError {
    /// Whether this means stored bytes do not match their digests.
    pub fn is_verification_failure(&self) -> bool {
        matches!(self, UnpackError::Store(s) if s.is_verification_failure())
    }
}

#[derive(Debug, Clone, Copy)]
pub struct UnpackOptions {
    /// Apply uids and gids (needs root). Otherwise files belong to the caller.
    pub ownership: bool,
    /// Create device nodes (needs root). Otherwise they are skipped with a warning.
    pub devices: bool,
}

impl Default for UnpackOptions {
    fn default() -> Self {
        let root = rustix::process::geteuid().is_root();
        Self {
            ownership: root,
            devices: root,
        }
    }
}

#[derive(Debug, Default, Clone, Copy, serde::Serialize)]
pub struct UnpackStats {
    pub directories: u64,
    pub files: u64,
    pub hardlinks: u64,
    pub symlinks: u64,
    pub special: u64,
    pub skipped_devices: u64,
    pub bytes: u64,
}

fn sys(path: &[u8], op: &'static str) -> impl FnOnce(rustix::io::Errno) -> UnpackError {
    let path = format!("/{}", String::from_utf8_lossy(path));
    move |e| {
        let hint = match e {
            rustix::io::Errno::PERM | rustix::io::Errno::ACCESS => {
                Some("run as root to keep owners, devices and capabilities")
            }
            rustix::io::Errno::NOSPC => Some("the destination's disk is full"),
            _ => None,
        };
        UnpackError::Sys {
            path,
            op,
            source: e.into(),
            hint,
        }
    }
}

fn timestamps(a: &Attributes) -> Timestamps {
    let t = Timespec {
        tv_sec: a.mtime,
        tv_nsec: a.mtime_nsec as _,
    };
    Timestamps {
        last_access: t,
        last_modification: t,
    }
}

struct Unpacker<'a> {
    reader: &'a ChunkReader<'a>,
    opts: UnpackOptions,
    dest: PathBuf,
    root: OwnedFd,
    /// First path of each multiply-linked inode already written.
    linked: HashMap<u32, Vec<u8>>,
    stats: UnpackStats,
}

impl Unpacker<'_> {
    fn owner(
        &self,
        dir: &OwnedFd,
        name: &[u8],
        path: &[u8],
        a: &Attributes,
        fd: Option<&OwnedFd>,
    ) -> Result<()> {
        if !self.opts.ownership {
            return Ok(());
        }
        let (uid, gid) = (
            Some(rustix::process::Uid::from_raw(a.uid)),
            Some(rustix::process::Gid::from_raw(a.gid)),
        );
        match fd {
            Some(fd) => rustix::fs::fchown(fd, uid, gid).map_err(sys(path, "chown")),
            None => rustix::fs::chownat(
                dir,
                OsStr::from_bytes(name),
                uid,
                gid,
                AtFlags::SYMLINK_NOFOLLOW,
            )
            .map_err(sys(path, "chown")),
        }
    }

    /// Without root, `security.*` and `trusted.*` cannot be set: skip them.
    fn settable(&self, name: &[u8], path: &[u8]) -> bool {
        let privileged = name.starts_with(b"security.") || name.starts_with(b"trusted.");
        if privileged && !self.opts.ownership {
            tracing::warn!(
                path = %String::from_utf8_lossy(path),
                xattr = %String::from_utf8_lossy(name),
                "skipping a privileged xattr (needs root)"
            );
            return false;
        }
        true
    }

    fn xattrs_on_fd(&self, fd: &OwnedFd, path: &[u8], ino: u32) -> Result<()> {
        for (name, value) in self.reader.image().metadata.xattrs(ino)? {
            if !self.settable(name, path) {
                continue;
            }
            rustix::fs::fsetxattr(fd, OsStr::from_bytes(name), value, XattrFlags::empty())
                .map_err(sys(path, "setxattr"))?;
        }
        Ok(())
    }

    fn xattrs_on_path(&self, path: &[u8], ino: u32) -> Result<()> {
        let xs = self.reader.image().metadata.xattrs(ino)?;
        if xs.is_empty() {
            return Ok(());
        }
        // Every component of `path` is a directory this unpacker created.
        let full = self.dest.join(OsStr::from_bytes(path));
        for (name, value) in xs {
            if !self.settable(name, path) {
                continue;
            }
            rustix::fs::lsetxattr(&full, OsStr::from_bytes(name), value, XattrFlags::empty())
                .map_err(sys(path, "setxattr"))?;
        }
        Ok(())
    }

    fn file(&mut self, dir: &OwnedFd, name: &[u8], path: &[u8], a: &Attributes) -> Result<()> {
        let fd = rustix::fs::openat(
            dir,
            OsStr::from_bytes(name),
            OFlags::CREATE | OFlags::EXCL | OFlags::WRONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        )
        .map_err(sys(path, "create"))?;
        let file = File::from(fd);
        let mut written = 0u64;
        self.reader.read_file(a.ino, |offset, bytes| {
            written += bytes.len() as u64;
            file.write_all_at(bytes, offset)
        })?;
        self.stats.bytes += written;
        file.set_len(a.size).map_err(|e| UnpackError::Sys {
            path: format!("/{}", String::from_utf8_lossy(path)),
            op: "truncate",
            source: e,
            hint: None,
        })?;
        let fd = OwnedFd::from(file);
        self.owner(dir, name, path, a, Some(&fd))?;
        rustix::fs::fchmod(&fd, Mode::from_raw_mode(a.mode & 0o7777))
            .map_err(sys(path, "chmod"))?;
        self.xattrs_on_fd(&fd, path, a.ino)?;
        rustix::fs::futimens(&fd, &timestamps(a)).map_err(sys(path, "utimens"))?;
        self.stats.files += 1;
        Ok(())
    }

    fn special(&mut self, dir: &OwnedFd, name: &[u8], path: &[u8], a: &Attributes) -> Result<()> {
        let n = OsStr::from_bytes(name);
        match a.kind() {
            InodeKind::Symlink => {
                let target = self.reader.image().metadata.symlink_target(a.ino)?;
                rustix::fs::symlinkat(OsStr::from_bytes(target), dir, n)
                    .map_err(sys(path, "symlink"))?;
                self.stats.symlinks += 1;
            }
            kind => {
                let (ft, is_dev) = match kind {
                    InodeKind::CharDevice => (FileType::CharacterDevice, true),
                    InodeKind::BlockDevice => (FileType::BlockDevice, true),
                    InodeKind::Fifo => (FileType::Fifo, false),
                    _ => (FileType::Socket, false),
                };
                if is_dev && !self.opts.devices {
                    tracing::warn!(path = %String::from_utf8_lossy(path), "skipping a device node (needs root)");
                    self.stats.skipped_devices += 1;
                    return Ok(());
                }
                let dev = rustix::fs::makedev(a.rdev_major, a.rdev_minor);
                rustix::fs::mknodat(dir, n, ft, Mode::from_raw_mode(0o600), dev)
                    .map_err(sys(path, "mknod"))?;
                self.stats.special += 1;
            }
        }
        self.owner(dir, name, path, a, None)?;
        if a.kind() != InodeKind::Symlink {
            rustix::fs::chmodat(
                dir,
                n,
                Mode::from_raw_mode(a.mode & 0o7777),
                AtFlags::empty(),
            )
            .map_err(sys(path, "chmod"))?;
        }
        self.xattrs_on_path(path, a.ino)?;
        rustix::fs::utimensat(dir, n, &timestamps(a), AtFlags::SYMLINK_NOFOLLOW)
            .map_err(sys(path, "utimens"))?;
        Ok(())
    }

    fn finish_dir(
        &self,
        fd: &OwnedFd,
        dir: &OwnedFd,
        name: &[u8],
        path: &[u8],
        a: &Attributes,
    ) -> Result<()> {
        self.owner(dir, name, path, a, Some(fd))?;
        rustix::fs::fchmod(fd, Mode::from_raw_mode(a.mode & 0o7777)).map_err(sys(path, "chmod"))?;
        self.xattrs_on_fd(fd, path, a.ino)?;
        rustix::fs::futimens(fd, &timestamps(a)).map_err(sys(path, "utimens"))?;
        Ok(())
    }

    fn run(&mut self) -> Result<()> {
        let md = &self.reader.image().metadata;
        struct Frame {
            ino: u32,
            fd: OwnedFd,
            next: usize,
            path_len: usize,
        }
        let root_fd = self.root.try_clone().map_err(|e| UnpackError::Sys {
            path: "/".into(),
            op: "dup",
            source: e,
            hint: None,
        })?;
        let mut stack = vec![Frame {
            ino: ROOT_INO,
            fd: root_fd,
            next: 0,
            path_len: 0,
        }];
        let mut path: Vec<u8> = Vec::new();
        let mut seen_dirs = vec![false; md.inode_count() as usize + 1];
        seen_dirs[ROOT_INO as usize] = true;
        while let Some(top) = stack.last_mut() {
            let entry = md.dir_entry(top.ino, top.next)?;
            top.next += 1;
            path.truncate(top.path_len);
            let Some(entry) = entry else {
                let frame = stack.pop().expect("non-empty");
                if stack.is_empty() {
                    // The root: `unpack` sets its attributes last.
                    continue;
                }
                let a = md.attributes(frame.ino)?;
                let name_start = path.iter().rposition(|&b| b == b'/').map_or(0, |i| i + 1);
                let name = path[name_start..].to_vec();
                let parent = stack.last().map(|f| &f.fd).unwrap_or(&self.root);
                self.finish_dir(&frame.fd, parent, &name, &path, &a)?;
                self.stats.directories += 1;
                continue;
            };
            if !path.is_empty() {
                path.push(b'/');
            }
            path.extend_from_slice(entry.name);
            let a = md.attributes(entry.ino)?;
            let dir_fd = top.fd.try_clone().map_err(|e| UnpackError::Sys {
                path: String::from_utf8_lossy(&path).into_owned(),
                op: "dup",
                source: e,
                hint: None,
            })?;
            let name = entry.name;
            match a.kind() {
                InodeKind::Directory => {
                    if std::mem::replace(&mut seen_dirs[entry.ino as usize], true) {
                        return Err(skiff_format::FormatError::Corrupt(format!(
                            "directory {} appears twice",
                            entry.ino
                        ))
                        .into());
                    }
                    let n = OsStr::from_bytes(name);
                    rustix::fs::mkdirat(&dir_fd, n, Mode::from_raw_mode(0o700))
                        .map_err(sys(&path, "mkdir"))?;
                    let fd = rustix::fs::openat(
                        &dir_fd,
                        n,
                        OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::RDONLY | OFlags::CLOEXEC,
                        Mode::empty(),
                    )
                    .map_err(sys(&path, "open"))?;
                    stack.push(Frame {
                        ino: entry.ino,
                        fd,
                        next: 0,
                        path_len: path.len(),
                    });
                }
                _ if a.nlink > 1 && self.linked.contains_key(&entry.ino) => {
                    let first = &self.linked[&entry.ino];
                    rustix::fs::linkat(
                        &self.root,
                        OsStr::from_bytes(first),
                        &dir_fd,
                        OsStr::from_bytes(name),
                        AtFlags::empty(),
                    )
                    .map_err(sys(&path, "link"))?;
                    self.stats.hardlinks += 1;
                }
                kind => {
                    if kind == InodeKind::File {
                        self.file(&dir_fd, name, &path, &a)?;
                    } else {
                        self.special(&dir_fd, name, &path, &a)?;
                    }
                    if a.nlink > 1 {
                        self.linked.insert(entry.ino, path.clone());
                    }
                }
            }
        }
        Ok(())
    }
}

/// Writes the image's tree into `dest`, which must not exist or be empty.
pub fn unpack(reader: &ChunkReader<'_>, dest: &Path, opts: UnpackOptions) -> Result<UnpackStats> {
    let existed = match std::fs::read_dir(dest) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(UnpackError::NotEmpty(dest.to_path_buf()));
            }
            true
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
        Err(e) => {
            return Err(UnpackError::Sys {
                path: dest.display().to_string(),
                op: "open",
                source: e,
                hint: None,
            })
        }
    };
    let dest = if existed {
        dest.canonicalize().map_err(|e| UnpackError::Sys {
            path: dest.display().to_string(),
            op: "open",
            source: e,
            hint: None,
        })?
    } else {
        dest.to_path_buf()
    };
    let mkdir = |p: &Path, all: bool| {
        let made = if all {
            std::fs::create_dir_all(p)
        } else {
            std::fs::create_dir(p)
        };
        made.map_err(|e| UnpackError::Sys {
            path: p.display().to_string(),
            op: "mkdir",
            source: e,
            hint: None,
        })
    };
    // A failed unpack must never leave a tree that looks complete: write
    // into a staging directory beside DEST and rename it into place. An
    // existing DEST that is a mount point cannot be renamed onto, so there
    // the tree is written in place and its entries removed on failure.
    let parent = dest
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .to_path_buf();
    if !existed {
        mkdir(&parent, true)?;
    }
    let same_fs = |a: &Path, b: &Path| {
        use std::os::unix::fs::MetadataExt;
        matches!((std::fs::metadata(a), std::fs::metadata(b)), (Ok(x), Ok(y)) if x.dev() == y.dev())
    };
    if existed && !same_fs(&dest, &parent) {
        let result = unpack_into(reader, &dest, opts);
        if result.is_err() {
            if let Ok(entries) = std::fs::read_dir(&dest) {
                for e in entries.flatten() {
                    let p = e.path();
                    let _ = if e.file_type().is_ok_and(|t| t.is_dir()) {
                        std::fs::remove_dir_all(&p)
                    } else {
                        std::fs::remove_file(&p)
                    };
                }
            }
        }
        return result;
    }
    let name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let staging = parent.join(format!(".{name}.skiff-unpack-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&staging);
    mkdir(&staging, false)?;
    let result = unpack_into(reader, &staging, opts).and_then(|stats| {
        // rename(2) replaces an empty directory in one step.
        std::fs::rename(&staging, &dest).map_err(|e| UnpackError::Sys {
            path: dest.display().to_string(),
            op: "rename",
            source: e,
            hint: None,
        })?;
        Ok(stats)
    });
    if result.is_err() {
        // std's remove_dir_all does not follow symlinks the image made.
        let _ = std::fs::remove_dir_all(&staging);
    }
    result
}

fn unpack_into(reader: &ChunkReader<'_>, dest: &Path, opts: UnpackOptions) -> Result<UnpackStats> {
    let root = rustix::fs::open(
        dest,
        OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::RDONLY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(sys(dest.as_os_str().as_bytes(), "open"))?;
    let mut u = Unpacker {
        reader,
        opts,
        dest: dest.to_path_buf(),
        root,
        linked: HashMap::new(),
        stats: UnpackStats::default(),
    };
    u.run()?;
    // The root directory's own attributes, last.
    let a = reader.image().metadata.attributes(ROOT_INO)?;
    let root_fd = u.root.try_clone().map_err(|e| UnpackError::Sys {
        path: "/".into(),
        op: "dup",
        source: e,
        hint: None,
    })?;
    if opts.ownership {
        rustix::fs::fchown(
            &root_fd,
            Some(rustix::process::Uid::from_raw(a.uid)),
            Some(rustix::process::Gid::from_raw(a.gid)),
        )
        .map_err(sys(b"", "chown"))?;
    }
    rustix::fs::fchmod(&root_fd, Mode::from_raw_mode(a.mode & 0o7777))
        .map_err(sys(b"", "chmod"))?;
    u.xattrs_on_fd(&root_fd, b"", ROOT_INO)?;
    rustix::fs::futimens(&root_fd, &timestamps(&a)).map_err(sys(b"", "utimens"))?;
    Ok(u.stats)
}
