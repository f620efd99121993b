//! Unix sockets at paths of any length.
//!
//! `sun_path` holds 108 bytes, and a `--root` deep in a temporary
//! directory plus a 64-hex container ID goes past that. A long path is
//! reached through `/proc/self/fd/N/NAME`, where N is its directory opened
//! with O_PATH: the kernel resolves the magic link, so bind and connect see
//! the real directory. No crate does this; std refuses such paths.

use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

/// Longest path given to the kernel as is (sun_path less its NUL, with room).
const DIRECT_MAX: usize = 100;

/// Binds a listening socket at `path`.
pub fn bind(path: &Path) -> io::Result<UnixListener> {
    with_short_path(path, |p| UnixListener::bind(p))
}

/// Connects to the socket at `path`.
pub fn connect(path: &Path) -> io::Result<UnixStream> {
    with_short_path(path, |p| UnixStream::connect(p))
}

fn with_short_path<T>(path: &Path, f: impl FnOnce(&Path) -> io::Result<T>) -> io::Result<T> {
    if path.as_os_str().len() <= DIRECT_MAX {
        return f(path);
    }
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return f(path);
    };
    let dir = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(
            rustix::fs::OFlags::PATH.bits() as i32 | rustix::fs::OFlags::DIRECTORY.bits() as i32,
        )
        .open(dir)?;
    // `dir` stays open until f returns: the fd path is valid throughout.
    let short = PathBuf::from(format!("/proc/self/fd/{}", dir.as_raw_fd())).join(name);
    f(&short)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    #[test]
    fn a_socket_deeper_than_sun_path_binds_and_connects() {
        let tmp = tempfile::tempdir().unwrap();
        let deep = tmp.path().join("d".repeat(60)).join("e".repeat(60));
        std::fs::create_dir_all(&deep).unwrap();
        let path = deep.join("control.sock");
        assert!(path.as_os_str().len() > 108);
        assert!(UnixListener::bind(&path).is_err(), "std refuses it");
        let listener = bind(&path).unwrap();
        assert!(path.exists(), "the socket is in the real directory");
        let mut client = connect(&path).unwrap();
        client.write_all(b"ping").unwrap();
        let (mut server, _) = listener.accept().unwrap();
        let mut got = [0u8; 4];
        server.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"ping");
    }
}
