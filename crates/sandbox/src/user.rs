//! Resolves `-u`/`User` (`name`, `uid`, `name:group`, `uid:gid`) against the
//! image's `/etc/passwd` and `/etc/group`, read inside the container's root
//! so a symlink in the image cannot point the lookup at the host.

use std::io::Read;
use std::path::Path;

use rustix::fs::{Mode, OFlags, ResolveFlags};

use crate::{ProcessUser, SandboxError};

/// The resolved user, and the home directory for `HOME`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedUser {
    pub user: ProcessUser,
    pub home: String,
}

/// The largest user or group ID skiff accepts. Above it an ID may be read
/// as `-1` (`(uid_t)-1`), which `setresuid` and friends take as "leave
/// unchanged": a container asked to run as 4294967295 would stay root.
pub const MAX_ID: u32 = i32::MAX as u32;

/// Checks that `id` (named `what` in the error) is a usable user or group ID.
pub fn check_id(id: u32, what: &str) -> Result<u32, SandboxError> {
    if id > MAX_ID {
        return Err(SandboxError::Invalid(format!(
            "{what} {id} is out of range: user and group IDs go from 0 to {MAX_ID} (4294967295 is -1, which the kernel reads as \"unchanged\")"
        )));
    }
    Ok(id)
}

/// The most of a user or group file skiff reads: /etc/passwd of any sane
/// size; a huge one is an attack, not a config.
const MAX_ACCOUNT_FILE: u64 = 16 << 20;

/// Reads a file of the image, resolving every path component inside `root`.
/// A missing file is `None`. Only a regular file is read, and nothing else
/// is even opened: the file is reached with `O_PATH` and its type checked
/// first. A FIFO planted at /etc/passwd would otherwise hang the caller,
/// and a device node (a container may `mknod` one in its own layer, which
/// `skiff exec -u` reads through /proc/PID/root) would be opened on the
/// host's device, as root: opening a watchdog arms it. Anything else is
/// an error naming it.
pub fn read_in_root(root: &Path, path: &str) -> Result<Option<String>, SandboxError> {
    let dir = rustix::fs::open(
        root,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| SandboxError::io(format!("opening {}", root.display()), e.into()))?;
    let fd = match crate::init::sys::openat2_retrying(
        &dir,
        path.trim_start_matches('/'),
        OFlags::PATH | OFlags::CLOEXEC,
        Mode::empty(),
        ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
    ) {
        Ok(fd) => fd,
        Err(rustix::io::Errno::NOENT) => return Ok(None),
        Err(e) => {
            return Err(SandboxError::io(
                format!("opening {path} in the image"),
                e.into(),
            ))
        }
    };
    let st = rustix::fs::fstat(&fd)
        .map_err(|e| SandboxError::io(format!("stat {path} in the image"), e.into()))?;
    let kind = rustix::fs::FileType::from_raw_mode(st.st_mode);
    if kind != rustix::fs::FileType::RegularFile {
        return Err(SandboxError::Invalid(format!(
            "{path} in the image is {}, not a regular file; skiff reads users and groups only from regular files (fix the image, or give numeric IDs to -u and an image without {path})",
            describe(kind)
        )));
    }
    // The file itself, not its path again, which could be swapped meanwhile.
    let file = rustix::fs::open(
        format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&fd)),
        OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NONBLOCK | OFlags::NOCTTY,
        Mode::empty(),
    )
    .map_err(|e| SandboxError::io(format!("opening {path} in the image"), e.into()))?;
    // Room up front, or the reader probes the file 32 bytes at a time.
    let mut s = String::with_capacity(64 << 10);
    std::fs::File::from(file)
        .take(MAX_ACCOUNT_FILE)
        .read_to_string(&mut s)
        .map_err(|e| SandboxError::io(format!("reading {path} in the image"), e))?;
    Ok(Some(s))
}

fn describe(kind: rustix::fs::FileType) -> &'static str {
    use rustix::fs::FileType;
    match kind {
        FileType::Fifo => "a FIFO",
        FileType::Directory => "a directory",
        FileType::CharacterDevice => "a character device",
        FileType::BlockDevice => "a block device",
        FileType::Socket => "a socket",
        _ => "not a file",
    }
}

struct PasswdEntry<'a> {
    name: &'a str,
    uid: u32,
    gid: u32,
    home: &'a str,
}

fn passwd_entries(text: &str) -> impl Iterator<Item = PasswdEntry<'_>> {
    text.lines().filter_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        if f.len() < 7 {
            return None;
        }
        Some(PasswdEntry {
            name: f[0],
            uid: f[2].parse().ok()?,
            gid: f[3].parse().ok()?,
            home: f[5],
        })
    })
}

/// (name, gid, members) of each /etc/group line.
fn group_entries(text: &str) -> impl Iterator<Item = (&str, u32, Vec<&str>)> {
    text.lines().filter_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        if f.len() < 4 {
            return None;
        }
        let members = f[3].split(',').filter(|m| !m.is_empty()).collect();
        Some((f[0], f[2].parse().ok()?, members))
    })
}

/// Resolves `spec` (empty means root) the way Docker does: names must
/// exist; numeric IDs need not.
pub fn resolve(root: &Path, spec: &str) -> Result<ResolvedUser, SandboxError> {
    let passwd = read_in_root(root, "/etc/passwd")?.unwrap_or_default();
    let group = read_in_root(root, "/etc/group")?.unwrap_or_default();
    resolve_from(spec, &passwd, &group)
}

fn resolve_from(spec: &str, passwd: &str, group: &str) -> Result<ResolvedUser, SandboxError> {
    let (user_part, group_part) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let user_part = if user_part.is_empty() { "0" } else { user_part };
    for (part, what) in [(Some(user_part), "user ID"), (group_part, "group ID")] {
        // `-1` or a number past u32 would otherwise be taken for a name.
        if let Some(n) = part.and_then(|p| p.parse::<i128>().ok()) {
            if !(0..=MAX_ID as i128).contains(&n) {
                return Err(SandboxError::Invalid(format!(
                    "{what} {n} is out of range: user and group IDs go from 0 to {MAX_ID}"
                )));
            }
        }
    }
    let entry = passwd_entries(passwd).find(|e| match user_part.parse::<u32>() {
        Ok(uid) => e.uid == uid,
        Err(_) => e.name == user_part,
    });
    let (uid, mut gid, home, name) = match (entry, user_part.parse::<u32>()) {
        (Some(e), _) => (e.uid, e.gid, e.home.to_string(), Some(e.name.to_string())),
        (None, Ok(uid)) => (uid, 0, "/".to_string(), None),
        (None, Err(_)) => {
            return Err(SandboxError::Invalid(format!(
                "user {user_part:?} is not in the image's /etc/passwd; give a numeric UID instead"
            )))
        }
    };
    if let Some(g) = group_part.filter(|g| !g.is_empty()) {
        gid = match g.parse::<u32>() {
            Ok(n) => n,
            Err(_) => group_entries(group)
                .find(|(n, _, _)| *n == g)
                .map(|(_, id, _)| id)
                .ok_or_else(|| {
                    SandboxError::Invalid(format!(
                        "group {g:?} is not in the image's /etc/group; give a numeric GID instead"
                    ))
                })?,
        };
    }
    let mut additional_gids: Vec<u32> = match (&name, group_part) {
        (Some(n), None) => group_entries(group)
            .filter(|(_, _, members)| members.contains(&n.as_str()))
            .map(|(_, id, _)| id)
            .filter(|id| *id != gid)
            .collect(),
        _ => Vec::new(),
    };
    additional_gids.sort_unstable();
    additional_gids.dedup();
    // IDs from the image's own files are checked as well: a hostile
    // /etc/passwd may map a name to 4294967295.
    let who = name.as_deref().unwrap_or(user_part);
    check_id(uid, &format!("the user ID of {who:?}"))?;
    check_id(gid, &format!("the group ID of {who:?}"))?;
    for g in &additional_gids {
        check_id(*g, &format!("a supplementary group ID of {who:?}"))?;
    }
    Ok(ResolvedUser {
        user: ProcessUser {
            uid,
            gid,
            additional_gids,
        },
        home,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/bash\n\
        daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n\
        nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n\
        app:x:1000:1000::/home/app:/bin/sh\n";
    const GROUP: &str = "root:x:0:\nstaff:x:50:app\napp:x:1000:\naudio:x:29:app,daemon\n";

    #[test]
    fn resolves_like_docker() {
        let r = resolve_from("", PASSWD, GROUP).unwrap();
        assert_eq!((r.user.uid, r.user.gid, r.home.as_str()), (0, 0, "/root"));
        let r = resolve_from("app", PASSWD, GROUP).unwrap();
        assert_eq!((r.user.uid, r.user.gid), (1000, 1000));
        assert_eq!(r.user.additional_gids, [29, 50]);
        assert_eq!(r.home, "/home/app");
        let r = resolve_from("app:staff", PASSWD, GROUP).unwrap();
        assert_eq!((r.user.uid, r.user.gid), (1000, 50));
        assert!(r.user.additional_gids.is_empty());
        let r = resolve_from("4242:7", PASSWD, GROUP).unwrap();
        assert_eq!((r.user.uid, r.user.gid, r.home.as_str()), (4242, 7, "/"));
        assert!(resolve_from("ghost", PASSWD, GROUP).is_err());
        for out_of_range in ["4294967295", "-1", "2147483648", "0:4294967295", "app:-1"] {
            let e = resolve_from(out_of_range, PASSWD, GROUP).unwrap_err();
            assert!(
                e.to_string().contains("out of range"),
                "{out_of_range}: {e}"
            );
        }
        assert_eq!(
            resolve_from("2147483647", PASSWD, GROUP).unwrap().user.uid,
            2147483647
        );
        let hostile = "evil:x:4294967295:0::/:/bin/sh\n";
        assert!(resolve_from("evil", hostile, "").is_err());
        assert!(resolve_from("app:ghosts", PASSWD, GROUP).is_err());
    }

    #[test]
    fn lookups_stay_inside_the_root() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("etc")).unwrap();
        // An absolute symlink resolves inside the root, not on the host.
        std::os::unix::fs::symlink("/etc/hostname", dir.path().join("etc/passwd")).unwrap();
        std::os::unix::fs::symlink("../../../../etc/shadow", dir.path().join("etc/group")).unwrap();
        assert_eq!(read_in_root(dir.path(), "/etc/passwd").unwrap(), None);
        assert_eq!(read_in_root(dir.path(), "/etc/group").unwrap(), None);
        std::fs::write(dir.path().join("etc/hostname"), "inside").unwrap();
        assert_eq!(
            read_in_root(dir.path(), "/etc/passwd").unwrap().as_deref(),
            Some("inside")
        );
    }

    #[test]
    fn a_fifo_or_directory_is_refused_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("etc")).unwrap();
        rustix::fs::mknodat(
            rustix::fs::CWD,
            dir.path().join("etc/passwd"),
            rustix::fs::FileType::Fifo,
            Mode::from_raw_mode(0o644),
            0,
        )
        .unwrap();
        // Opening a FIFO for reading with no writer would block forever.
        let e = read_in_root(dir.path(), "/etc/passwd").unwrap_err();
        assert!(e.to_string().contains("not a regular file"), "{e}");
        std::os::unix::fs::symlink("/etc", dir.path().join("etc/group")).unwrap();
        assert!(read_in_root(dir.path(), "/etc/group").is_err());
    }

    #[test]
    fn a_device_node_is_never_opened() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("etc")).unwrap();
        // 240:0 is in the range for local use, with no driver here: an
        // open would fail with ENXIO, so the error says whether it was
        // tried. (Opening a real device, a watchdog, would act on it.)
        rustix::fs::mknodat(
            rustix::fs::CWD,
            dir.path().join("etc/passwd"),
            rustix::fs::FileType::CharacterDevice,
            Mode::from_raw_mode(0o644),
            rustix::fs::makedev(240, 0),
        )
        .unwrap();
        let e = read_in_root(dir.path(), "/etc/passwd").unwrap_err();
        assert!(
            e.to_string()
                .contains("a character device, not a regular file"),
            "{e}"
        );
    }
}
