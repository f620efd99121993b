//! A registry on a non-loopback address speaks HTTPS by default; with
//! `--plain-http` skiff talks plain HTTP to it. Runs in a network namespace
//! of its own, so nothing on the host changes.

mod common;

use std::process::{Command, Stdio};

use common::layers::{write_image, LayerBlob, Tar};
use common::{sh, Skiff};

struct Netns(String);

impl Netns {
    fn new() -> Self {
        let name = format!("skiff-test-{}", std::process::id());
        sh(Command::new("ip").args(["netns", "add", &name]));
        let ns = Netns(name);
        ns.run(&["ip", "link", "set", "lo", "up"]);
        ns.run(&["ip", "addr", "add", "10.231.0.1/32", "dev", "lo"]);
        ns
    }

    fn cmd(&self, argv: &[&str]) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.0]).args(argv);
        c
    }

    fn run(&self, argv: &[&str]) -> String {
        sh(&mut self.cmd(argv))
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

#[test]
fn plain_http_is_opt_in_off_loopback() {
    let ns = Netns::new();
    let work = tempfile::tempdir().unwrap();
    let config = work.path().join("registry.yml");
    std::fs::write(
        &config,
        format!(
            "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 10.231.0.1:5000\n",
            work.path().join("data").display()
        ),
    )
    .unwrap();
    let mut registry = ns
        .cmd(&["docker-registry", "serve", config.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let up = (0..100).any(|_| {
        std::thread::sleep(std::time::Duration::from_millis(100));
        ns.cmd(&["bash", "-c", "exec 3<>/dev/tcp/10.231.0.1/5000"])
            .status()
            .is_ok_and(|s| s.success())
    });
    assert!(up, "registry did not start in the namespace");

    let layer = Tar::new().file("hello", b"over plain http").finish();
    write_image(
        &work.path().join("src"),
        "v1",
        &[LayerBlob::gzip(&layer)],
        ("linux", "amd64"),
    );
    let skiff = Skiff::new();
    let bin = env!("CARGO_BIN_EXE_skiff");
    let root = skiff.root.path().to_str().unwrap();
    let src = format!("oci:{}:v1", work.path().join("src").display());
    let dst = "10.231.0.1:5000/app:v1";
    let https = ns
        .cmd(&[bin, "--root", root, "convert", &src, dst])
        .output()
        .unwrap();
    assert_eq!(
        https.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&https.stderr)
    );
    assert!(String::from_utf8_lossy(&https.stderr).contains("https://10.231.0.1:5000"));
    ns.run(&[bin, "--root", root, "--plain-http", "convert", &src, dst]);
    let out = ns.run(&[bin, "--root", root, "--plain-http", "check", dst]);
    assert!(out.starts_with("ok:"), "{out}");
    let _ = registry.kill();
    let _ = registry.wait();
}
