//! skiff-agent: PID 1 of a VM sandbox's guest. See README.md.

use std::ffi::{CString, OsStr};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::io::AsRawFd;
use std::process::Command;
use std::time::{Duration, Instant};

/// Printed before the process's exit code: the host reads it off the
/// console.
const EXIT_MARKER: &str = "skiff-agent: exit ";
const ROOT_DEVICE: &str = "/dev/vda";

fn main() {
    let code = match run() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("skiff-agent: {e}");
            125
        }
    };
    println!("{EXIT_MARKER}{code}");
    power_off();
}

fn run() -> Result<i32, String> {
    mount(
        "proc",
        "/proc",
        "proc",
        libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
        "",
    )?;
    mount(
        "sysfs",
        "/sys",
        "sysfs",
        libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
        "",
    )?;
    mount("devtmpfs", "/dev", "devtmpfs", libc::MS_NOSUID, "mode=0755")?;
    load_modules("/modules")?;
    wait_for(ROOT_DEVICE, Duration::from_secs(10))?;
    mount(ROOT_DEVICE, "/rootfs", "erofs", libc::MS_RDONLY, "")?;
    mount("tmpfs", "/overlay", "tmpfs", 0, "mode=0755")?;
    for d in ["/overlay/upper", "/overlay/work"] {
        std::fs::create_dir(d).map_err(|e| format!("creating {d}: {e}"))?;
    }
    mount(
        "overlay",
        "/newroot",
        "overlay",
        0,
        "lowerdir=/rootfs,upperdir=/overlay/upper,workdir=/overlay/work",
    )?;
    for (src, dir, fs) in [
        ("proc", "/newroot/proc", "proc"),
        ("devtmpfs", "/newroot/dev", "devtmpfs"),
    ] {
        if std::path::Path::new(dir).is_dir() {
            mount(src, dir, fs, libc::MS_NOSUID, "")?;
        }
    }
    let argv = argv_from_cmdline()?;
    let mut cmd = Command::new(&argv[0]);
    cmd.args(&argv[1..])
        .env_clear()
        .env(
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        )
        .current_dir("/");
    // SAFETY: chroot and chdir are async-signal-safe and touch no memory
    // of the parent; they run in the child between fork and exec.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut cmd, || {
            let root = CString::new("/newroot").expect("no NUL");
            if libc::chroot(root.as_ptr()) != 0 || libc::chdir(c"/".as_ptr()) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    match cmd.status() {
        Ok(s) => Ok(s.code().unwrap_or_else(|| {
            128 + std::os::unix::process::ExitStatusExt::signal(&s).unwrap_or(0)
        })),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            eprintln!("skiff-agent: {}: command not found", argv[0]);
            Ok(127)
        }
        Err(e) => Err(format!("starting {}: {e}", argv[0])),
    }
}

/// `skiff_argv=HEX` on the kernel command line reaches PID 1 as an
/// environment variable (a name with a dot would be taken for a module
/// parameter and kept from init):
/// the arguments, NUL-separated, hex-encoded.
fn argv_from_cmdline() -> Result<Vec<String>, String> {
    let hex = std::env::var("skiff_argv")
        .map_err(|_| "no skiff_argv on the kernel command line".to_string())?;
    if hex.len() % 2 != 0 {
        return Err("skiff_argv is not hex".into());
    }
    let bytes: Vec<u8> = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16))
        .collect::<Result<_, _>>()
        .map_err(|_| "skiff_argv is not hex".to_string())?;
    let argv: Vec<String> = bytes
        .split(|&b| b == 0)
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    if argv.first().is_none_or(|a| a.is_empty()) {
        return Err("skiff_argv names no command".into());
    }
    Ok(argv)
}

fn mount(
    src: &str,
    target: &str,
    fstype: &str,
    flags: libc::c_ulong,
    data: &str,
) -> Result<(), String> {
    let _ = std::fs::create_dir_all(target);
    let c = |s: &str| CString::new(s).map_err(|_| format!("{s:?} holds a NUL"));
    let (s, t, f, d) = (c(src)?, c(target)?, c(fstype)?, c(data)?);
    // SAFETY: every pointer is a NUL-terminated string that outlives the call.
    let rc = unsafe { libc::mount(s.as_ptr(), t.as_ptr(), f.as_ptr(), flags, d.as_ptr().cast()) };
    if rc != 0 {
        return Err(format!(
            "mounting {src} ({fstype}) at {target}: {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}

/// Loads `DIR/NAME` for each NAME listed in `DIR/order`, in that order.
fn load_modules(dir: &str) -> Result<(), String> {
    let order = match std::fs::read_to_string(format!("{dir}/order")) {
        Ok(o) => o,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(format!("reading {dir}/order: {e}")),
    };
    for name in order.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let path = format!("{dir}/{name}");
        let f = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_CLOEXEC)
            .open(&path)
            .map_err(|e| format!("opening {path}: {e}"))?;
        // SAFETY: the fd is open for the call; the parameter string is a
        // valid empty C string.
        let rc = unsafe { libc::syscall(libc::SYS_finit_module, f.as_raw_fd(), c"".as_ptr(), 0) };
        if rc != 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EEXIST) {
                return Err(format!(
                    "loading {}: {e}",
                    OsStr::new(name).as_bytes().escape_ascii()
                ));
            }
        }
    }
    Ok(())
}

fn wait_for(path: &str, limit: Duration) -> Result<(), String> {
    let deadline = Instant::now() + limit;
    while !std::path::Path::new(path).exists() {
        if Instant::now() > deadline {
            return Err(format!(
                "{path} did not appear within {limit:?}: is the image's block device attached?"
            ));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(())
}

fn power_off() -> ! {
    // SAFETY: sync and reboot take no pointers; PID 1 may power off.
    unsafe {
        libc::sync();
        libc::reboot(libc::RB_POWER_OFF);
    }
    loop {
        std::thread::sleep(Duration::from_secs(1));
    }
}
