//! What a new user meets in the first hour (issue 15): closed pipes,
//! destructive look-alikes, leftovers, option checks, and Docker's
//! everyday verbs.

mod common;

use std::process::Stdio;

use common::containers::{code, err, layout, run};
use common::layers::{write_image, LayerBlob, Tar};
use common::{debian_image, Skiff};

/// Runs skiff with a stdout whose reader is already gone, so that every
/// write to it fails with EPIPE; returns (exit code, stderr).
fn with_closed_stdout(skiff: &Skiff, args: &[&str]) -> (Option<i32>, String) {
    let mut fds = [0; 2];
    // SAFETY: pipe() fills the two-element array it is given.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    // SAFETY: both descriptors are new and owned here alone.
    let (reader, writer) = unsafe {
        use std::os::fd::FromRawFd;
        (
            std::os::fd::OwnedFd::from_raw_fd(fds[0]),
            std::os::fd::OwnedFd::from_raw_fd(fds[1]),
        )
    };
    drop(reader);
    let out = skiff
        .cmd()
        .args(args)
        .stdin(Stdio::null())
        .stdout(writer)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_closed_stdout_ends_the_command_quietly() {
    let skiff = Skiff::new();
    let work = tempfile::tempdir().unwrap();
    let target = format!("oci:{}:conv", work.path().display());
    let source = format!("oci:{}:full", debian_image().display());
    let cases: Vec<Vec<&str>> = vec![
        vec!["inspect", "--tree", layout()],
        vec!["ps", "-a"],
        vec!["cache", "stats"],
        vec!["check", layout()],
        vec!["convert", "--json", "-q", &source, &target],
        vec!["images"],
    ];
    for args in &cases {
        let (code, stderr) = with_closed_stdout(&skiff, args);
        assert_eq!(code, Some(0), "skiff {args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "skiff {args:?}: {stderr}");
        assert!(!stderr.contains("Broken pipe"), "skiff {args:?}: {stderr}");
    }
    // The conversion finished and is whole: its work is not lost to the pipe.
    skiff.ok(&["check", &target]);
}

/// A one-file OCI image in a fresh layout, tagged `v1`.
fn small_layout(dir: &std::path::Path) -> String {
    let tar = Tar::new().file("hello.txt", b"hello\n").finish();
    write_image(dir, "v1", &[LayerBlob::gzip(&tar)], ("linux", "amd64"));
    format!("oci:{}:v1", dir.display())
}

#[test]
fn convert_refuses_to_overwrite_its_own_source() {
    let skiff = Skiff::new();
    let work = tempfile::tempdir().unwrap();
    let src = small_layout(&work.path().join("layout"));
    let index = std::fs::read(work.path().join("layout/index.json")).unwrap();
    // The same directory spelled another way is still the source.
    let same = format!("oci:{}/./layout:v1", work.path().display());
    for target in [&src, &same] {
        let (c, e) = skiff.fails(&["convert", "-q", &src, target]);
        assert_eq!(c, 1, "{e}");
        assert!(e.contains("names the source image itself"), "{e}");
        assert!(e.contains("--force"), "{e}");
    }
    assert_eq!(
        std::fs::read(work.path().join("layout/index.json")).unwrap(),
        index,
        "the source is untouched"
    );
    // Another tag of the same layout is fine, and --force does as told.
    let other = format!("oci:{}:v1-skiff", work.path().join("layout").display());
    skiff.ok(&["convert", "-q", &src, &other]);
    skiff.ok(&["convert", "-q", "--force", &src, &src]);
    skiff.ok(&["check", &src]);
}

#[test]
fn convert_json_names_tags_and_counts_what_it_wrote() {
    let skiff = Skiff::new();
    let work = tempfile::tempdir().unwrap();
    let src = small_layout(&work.path().join("layout"));
    let dst = format!("oci:{}:conv", work.path().join("out").display());
    let v: serde_json::Value =
        serde_json::from_str(&skiff.ok(&["convert", "-q", "--json", &src, &dst])).unwrap();
    assert_eq!(v["source"], src.as_str(), "{v}");
    assert_eq!(v["target"], dst.as_str(), "{v}");
    let write = &v["images"][0]["stats"]["write"];
    assert!(write["new_chunks"].as_u64().unwrap() >= 1, "{v}");
    // No counter that is never counted.
    assert!(write.get("chunks_submitted").is_none(), "{v}");
}

#[test]
fn option_checks_say_what_is_wrong() {
    let skiff = Skiff::new();
    let o = run(&skiff, &["--cpus", "1000"], &["true"]);
    assert_eq!(code(&o), 125, "{}", err(&o));
    assert!(err(&o).contains("this host has"), "{}", err(&o));
    let o = run(&skiff, &["-w", "/etc/passwd"], &["true"]);
    assert_ne!(code(&o), 0);
    assert!(err(&o).contains("not a directory"), "{}", err(&o));
    assert!(!err(&o).contains("File exists"), "{}", err(&o));
    let unlimited = skiff.json(&["--cache-size", "none", "cache", "stats"]);
    assert!(unlimited["limit"].is_null(), "{unlimited}");
    let limited = skiff.json(&["--cache-size", "1G", "cache", "stats"]);
    assert_eq!(limited["limit"], 1u64 << 30, "{limited}");
}
