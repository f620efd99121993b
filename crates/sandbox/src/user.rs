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

/// Reads a file of the image, resolving every path component inside `root`.
/// A missing file is `None`.
pub fn read_in_root(root: &Path, path: &str) -> Result<Option<String>, SandboxError> {
    let dir = rustix::fs::open(
        root,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| SandboxError::io(format!("opening {}", root.display()), e.into()))?;
    let fd = match rustix::fs::openat2(
        &dir,
        path.trim_start_matches('/'),
        OFlags::RDONLY | OFlags::CLOEXEC,
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
    // Room up front, or the reader probes the file 32 bytes at a time.
    let mut s = String::with_capacity(64 << 10);
    // /etc/passwd of any sane size; a huge one is an attack, not a config.
    std::fs::File::from(fd)
        .take(16 << 20)
        .read_to_string(&mut s)
        .map_err(|e| SandboxError::io(format!("reading {path} in the image"), e))?;
    Ok(Some(s))
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
    let entry = passwd_entries(passwd).find(|e| match user_part.parse::<u32>() {
        Ok(uid) => e.uid == uid,
        Err(_) => e.name == user_part,
    });
    let (uid, mut gid, home, name) = match (entry, user_part.parse::<u32>()) {
        (Some(e), _) => (e.uid, e.gid, e.home.to_string(), Some(e.name.to_string())),
        (None, Ok(uid)) => (uid, 0, "/".to_string(), None),
        (None, Err(_)) => {
            return Err(SandboxError::Config(format!(
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
                    SandboxError::Config(format!(
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
}
