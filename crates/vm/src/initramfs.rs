//! The guest's initramfs: a cpio (newc) archive of the agent as `/init`,
//! `/dev/console` (the kernel opens it for init's stdio), the mount points
//! the agent uses, and the kernel modules with their load order. Built
//! once per content and cached.

use std::io::Write;
use std::path::{Path, PathBuf};

use cpio::newc::Builder;

use crate::{io_err, GuestAssets, Result, VmError};

const DIRS: [&str; 8] = [
    "dev",
    "proc",
    "sys",
    "rootfs",
    "overlay",
    "newroot",
    "modules",
    "modules/9p",
];

/// The module sets: the ones every boot loads, and 9p's, loaded by the
/// agent only for a run with volumes (a set without an `order` is empty).
const MODULE_SETS: [&str; 2] = ["", "9p/"];

/// The initramfs for `assets`, built into `cache_dir` unless a build of
/// the same content is there; returns its path.
pub fn ensure(assets: &GuestAssets, cache_dir: &Path) -> Result<PathBuf> {
    let read =
        |p: &Path| std::fs::read(p).map_err(|e| io_err(format!("reading {}", p.display()), e));
    let agent = read(&assets.agent)?;
    let mut modules = Vec::new();
    let mut orders = Vec::new();
    let mut key = blake3::Hasher::new();
    key.update(b"skiff-initramfs-2\0");
    key.update(&agent);
    for set in MODULE_SETS {
        let order_path = assets.modules.join(format!("{set}order"));
        if !set.is_empty() && !order_path.exists() {
            continue;
        }
        let order = String::from_utf8(read(&order_path)?)
            .map_err(|_| VmError(format!("{} is not text", order_path.display())))?;
        for name in order.lines().map(str::trim).filter(|l| !l.is_empty()) {
            if name.contains('/') || name.starts_with('.') {
                return Err(VmError(format!(
                    "module name {name:?} in {} is not a file name",
                    order_path.display()
                )));
            }
            let data = read(&assets.modules.join(set).join(name))?;
            key.update(set.as_bytes());
            key.update(name.as_bytes());
            key.update(&data);
            modules.push((format!("{set}{name}"), data));
        }
        key.update(order.as_bytes());
        orders.push((format!("{set}order"), order));
    }
    let out = cache_dir.join(format!("initramfs-{}.cpio", &key.finalize().to_hex()[..16]));
    if out.is_file() {
        return Ok(out);
    }
    std::fs::create_dir_all(cache_dir)
        .map_err(|e| io_err(format!("creating {}", cache_dir.display()), e))?;
    let tmp = cache_dir.join(format!(".initramfs-{}.tmp", std::process::id()));
    let file = std::fs::File::create(&tmp)
        .map_err(|e| io_err(format!("creating {}", tmp.display()), e))?;
    let written = write(std::io::BufWriter::new(file), &agent, &orders, &modules)
        .and_then(|w| w.into_inner().map_err(|e| e.into_error()))
        .and_then(|f| f.sync_all());
    if let Err(e) = written.and_then(|()| std::fs::rename(&tmp, &out)) {
        let _ = std::fs::remove_file(&tmp);
        return Err(io_err(format!("writing {}", out.display()), e));
    }
    Ok(out)
}

fn write<W: Write>(
    mut w: W,
    agent: &[u8],
    orders: &[(String, String)],
    modules: &[(String, Vec<u8>)],
) -> std::io::Result<W> {
    let mut ino = 1;
    let mut entry = |w: W, name: &str, mode: u32, data: &[u8], rdev: Option<(u32, u32)>| {
        let mut b = Builder::new(name).ino(ino).mode(mode).nlink(1);
        if let Some((major, minor)) = rdev {
            b = b.rdev_major(major).rdev_minor(minor);
        }
        ino += 1;
        let mut out = b.write(w, data.len() as u32);
        out.write_all(data)?;
        out.finish()
    };
    for d in DIRS {
        w = entry(w, d, 0o040755, &[], None)?;
    }
    w = entry(w, "dev/console", 0o020600, &[], Some((5, 1)))?;
    w = entry(w, "init", 0o100755, agent, None)?;
    for (name, order) in orders {
        w = entry(
            w,
            &format!("modules/{name}"),
            0o100644,
            order.as_bytes(),
            None,
        )?;
    }
    for (name, data) in modules {
        w = entry(w, &format!("modules/{name}"), 0o100644, data, None)?;
    }
    cpio::newc::trailer(w)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_once_per_content_and_lists_every_part() {
        let d = tempfile::tempdir().unwrap();
        let modules = d.path().join("modules");
        std::fs::create_dir(&modules).unwrap();
        std::fs::write(modules.join("a.ko"), b"module a").unwrap();
        std::fs::write(modules.join("order"), "a.ko\n").unwrap();
        std::fs::write(d.path().join("agent"), b"\x7fELF agent").unwrap();
        let assets = GuestAssets {
            kernel: d.path().join("vmlinux"),
            modules,
            agent: d.path().join("agent"),
        };
        let out = ensure(&assets, &d.path().join("cache")).unwrap();
        assert_eq!(ensure(&assets, &d.path().join("cache")).unwrap(), out);
        let mut r = std::fs::File::open(&out).unwrap();
        let mut names = Vec::new();
        loop {
            let rd = cpio::newc::Reader::new(r).unwrap();
            if rd.entry().is_trailer() {
                break;
            }
            names.push((
                rd.entry().name().to_string(),
                rd.entry().mode(),
                rd.entry().file_size(),
            ));
            r = rd.finish().unwrap();
        }
        assert!(names.contains(&("init".into(), 0o100755, 10)));
        assert!(names.contains(&("dev/console".into(), 0o020600, 0)));
        assert!(names.contains(&("modules/a.ko".into(), 0o100644, 8)));
        // Other content, another archive.
        std::fs::write(d.path().join("agent"), b"\x7fELF agent 2").unwrap();
        assert_ne!(ensure(&assets, &d.path().join("cache")).unwrap(), out);
        // A module name that climbs out is refused.
        std::fs::write(assets.modules.join("order"), "../x.ko\n").unwrap();
        assert!(ensure(&assets, &d.path().join("cache")).is_err());
    }
}
