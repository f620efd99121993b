//! `/dev`: the device nodes Docker gives every container, and the pty
//! under `-t`.

use super::channel::send_fd;
use super::rootfs::{resolve_in_root, Create};
use super::sys::{fail, fd_path, mount, Step};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

/// The device nodes Docker gives every container, made in the `/dev`
/// tmpfs; in a user namespace (where mknod is not allowed) the host's are
/// bind-mounted instead. Then the usual links.
pub(crate) fn make_devices(root: &OwnedFd, user_namespace: bool) -> Step {
    use rustix::fs::{Mode, OFlags};
    let dev = resolve_in_root(root, "/dev", Create::Dir)?;
    for (name, major, minor) in [
        ("null", 1, 3),
        ("zero", 1, 5),
        ("full", 1, 7),
        ("random", 1, 8),
        ("urandom", 1, 9),
        ("tty", 5, 0),
    ] {
        if user_namespace {
            match rustix::fs::openat(
                &dev,
                name,
                OFlags::CREATE | OFlags::WRONLY | OFlags::CLOEXEC | OFlags::NOFOLLOW,
                Mode::from_raw_mode(0o666),
            ) {
                Ok(_) => {}
                Err(e) => return Err(fail(format!("creating /dev/{name}: {e}"))),
            }
            let node = rustix::fs::openat(
                &dev,
                name,
                OFlags::PATH | OFlags::CLOEXEC | OFlags::NOFOLLOW,
                Mode::empty(),
            )
            .map_err(|e| fail(format!("opening /dev/{name}: {e}")))?;
            mount(
                Some(&format!("/dev/{name}")),
                &fd_path(&node),
                None,
                libc::MS_BIND,
                None,
            )?;
        } else {
            match rustix::fs::mknodat(
                &dev,
                name,
                rustix::fs::FileType::CharacterDevice,
                Mode::from_raw_mode(0o666),
                rustix::fs::makedev(major, minor),
            ) {
                Ok(()) | Err(rustix::io::Errno::EXIST) => {}
                Err(e) => return Err(fail(format!("creating /dev/{name}: {e}"))),
            }
        }
    }
    for (name, target) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
        ("ptmx", "pts/ptmx"),
        ("core", "/proc/kcore"),
    ] {
        match rustix::fs::symlinkat(target, &dev, name) {
            Ok(()) | Err(rustix::io::Errno::EXIST) => {}
            Err(e) => return Err(fail(format!("linking /dev/{name}: {e}"))),
        }
    }
    Ok(())
}

/// A pty from the container's own devpts: the master goes to the parent,
/// the slave is kept (and bound over `/dev/console`).
pub(crate) fn make_console(
    root: &OwnedFd,
    sock: BorrowedFd<'_>,
    size: Option<(u16, u16)>,
) -> Step<OwnedFd> {
    let slave = open_pty(root, sock, size)?;
    let console = resolve_in_root(root, "/dev/console", Create::File)?;
    mount(
        Some(&fd_path(&slave)),
        &fd_path(&console),
        None,
        libc::MS_BIND,
        None,
    )?;
    Ok(slave)
}

/// A new pty from the container's devpts: the master is handed to the
/// parent, the slave returned (an exec'd process's terminal).
pub(crate) fn open_pty(
    root: &OwnedFd,
    sock: BorrowedFd<'_>,
    size: Option<(u16, u16)>,
) -> Step<OwnedFd> {
    use rustix::fs::{Mode, OFlags};
    let ptmx = resolve_in_root(root, "/dev/pts/ptmx", Create::Dir)?;
    let master = rustix::fs::open(
        fd_path(&ptmx),
        OFlags::RDWR | OFlags::NOCTTY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| fail(format!("opening the container's /dev/pts/ptmx: {e}")))?;
    rustix::pty::unlockpt(&master).map_err(|e| fail(format!("unlocking the pty: {e}")))?;
    // The peer, opened from the master itself: no path to race on.
    let slave = rustix::pty::ioctl_tiocgptpeer(
        &master,
        rustix::pty::OpenptFlags::RDWR | rustix::pty::OpenptFlags::NOCTTY,
    )
    .map_err(|e| fail(format!("opening the pty's terminal side: {e}")))?;
    if let Some((rows, cols)) = size {
        let ws = rustix::termios::Winsize {
            ws_row: rows,
            ws_col: cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        rustix::termios::tcsetwinsize(&slave, ws)
            .map_err(|e| fail(format!("setting the pty's size (process.consoleSize): {e}")))?;
    }
    send_fd(sock, master.as_fd())?;
    Ok(slave)
}

/// `linux.devices`: each node made in the container's `/dev` with its
/// mode and owner; in a user namespace (no mknod) the host's node of the
/// same path is bound instead, as runc does.
pub(crate) fn make_spec_devices(root: &OwnedFd, plan: &super::plan::Plan) -> Step {
    use rustix::fs::{Mode, OFlags};
    for d in &plan.devices {
        let rel = d.path.trim_start_matches("/dev/");
        let (parent, name) = match rel.rsplit_once('/') {
            Some((p, n)) => (format!("/dev/{p}"), n),
            None => ("/dev".to_string(), rel),
        };
        let dir = resolve_in_root(root, &parent, Create::Dir)?;
        if plan.user_namespace {
            let target = resolve_in_root(root, &d.path, Create::File)?;
            mount(Some(&d.path), &fd_path(&target), None, libc::MS_BIND, None)?;
            continue;
        }
        let _ = rustix::fs::unlinkat(&dir, name, rustix::fs::AtFlags::empty());
        rustix::fs::mknodat(
            &dir,
            name,
            d.file_type,
            Mode::from_raw_mode(d.mode),
            rustix::fs::makedev(d.major, d.minor),
        )
        .map_err(|e| {
            fail(format!(
                "creating the device {} (linux.devices): {e}",
                d.path
            ))
        })?;
        let node = rustix::fs::openat(
            &dir,
            name,
            OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| fail(format!("opening the device {}: {e}", d.path)))?;
        // The umask is 0 here, but mknod's mode cannot hold setuid bits.
        rustix::fs::chmod(fd_path(&node).as_str(), Mode::from_raw_mode(d.mode))
            .map_err(|e| fail(format!("setting the mode of {}: {e}", d.path)))?;
        rustix::fs::chown(
            fd_path(&node).as_str(),
            Some(rustix::fs::Uid::from_raw(d.uid)),
            Some(rustix::fs::Gid::from_raw(d.gid)),
        )
        .map_err(|e| fail(format!("setting the owner of {}: {e}", d.path)))?;
    }
    Ok(())
}
