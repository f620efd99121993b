//! Token authentication against a real registry: credentials come from a
//! docker config file, and an expired token is refreshed on 401.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use common::layers::{write_image, LayerBlob, Tar};
use common::registry::Registry;
use common::{repo_root, sh, Skiff};

struct TokenServer {
    child: Child,
    port: u16,
    log: std::path::PathBuf,
    cert: std::path::PathBuf,
}

impl TokenServer {
    fn start(dir: &std::path::Path, lifetime: u32) -> Self {
        let cert = dir.join("token.pem");
        let log = dir.join("tokens.log");
        let mut child = Command::new("/usr/bin/python3")
            .arg(repo_root().join("tests/support/token_server.py"))
            .args([
                cert.to_str().unwrap(),
                log.to_str().unwrap(),
                "alice",
                "s3cret",
                &lifetime.to_string(),
            ])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        Self {
            child,
            port: line.trim().parse().expect("token server printed its port"),
            log,
            cert,
        }
    }

    fn issued(&self) -> usize {
        std::fs::read_to_string(&self.log)
            .map(|s| s.lines().count())
            .unwrap_or(0)
    }
}

impl Drop for TokenServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn auth_registry(dir: &std::path::Path, lifetime: u32) -> (TokenServer, Registry) {
    let tokens = TokenServer::start(dir, lifetime);
    let reg = Registry::start_with(&format!(
        "auth:\n  token:\n    realm: http://127.0.0.1:{}/token\n    service: skiff-test-registry\n    issuer: skiff-test\n    rootcertbundle: {}\n",
        tokens.port,
        tokens.cert.display()
    ));
    (tokens, reg)
}

fn push_small_image(dir: &std::path::Path, reg: &Registry) {
    let layer = Tar::new().file("hello", &vec![b'h'; 100_000]).finish();
    write_image(
        &dir.join("src"),
        "v1",
        &[LayerBlob::gzip(&layer)],
        ("linux", "amd64"),
    );
    sh(Command::new("skopeo").args([
        "copy",
        "--quiet",
        "--dest-tls-verify=false",
        "--dest-creds",
        "alice:s3cret",
        &format!("oci:{}:v1", dir.join("src").display()),
        &format!("docker://{}", reg.reference("private/app:v1")),
    ]));
}

#[test]
fn token_auth_with_docker_config() {
    let work = tempfile::tempdir().unwrap();
    let (tokens, reg) = auth_registry(work.path(), 300);
    push_small_image(work.path(), &reg);
    let src = reg.reference("private/app:v1");
    let dst = reg.reference("private/app:v1-skiff");

    // Without credentials: a clear refusal that says how to fix it.
    let skiff = Skiff::new();
    let empty = work.path().join("no-creds");
    std::fs::create_dir(&empty).unwrap();
    let out = skiff
        .cmd()
        .args(["convert", &src, &dst])
        .env("DOCKER_CONFIG", &empty)
        .env_remove("REGISTRY_AUTH_FILE")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("refused access") && err.contains("docker login"),
        "{err}"
    );

    // With a docker config entry ("alice:s3cret").
    let cfg = work.path().join("docker");
    std::fs::create_dir(&cfg).unwrap();
    std::fs::write(
        cfg.join("config.json"),
        format!(
            r#"{{"auths":{{"{}":{{"auth":"YWxpY2U6czNjcmV0"}}}}}}"#,
            reg.addr
        ),
    )
    .unwrap();
    for args in [vec!["convert", &src, &dst], vec!["check", &dst]] {
        let out = skiff
            .cmd()
            .args(&args)
            .env("DOCKER_CONFIG", &cfg)
            .env_remove("REGISTRY_AUTH_FILE")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert!(tokens.issued() >= 2);
}

#[test]
fn expired_token_is_refreshed() {
    use skiff_oci::{ImageRef, RegistryOptions};
    let work = tempfile::tempdir().unwrap();
    let (tokens, reg) = auth_registry(work.path(), 2);
    push_small_image(work.path(), &reg);
    let cfg = work.path().join("auth.json");
    std::fs::write(
        &cfg,
        format!(
            r#"{{"auths":{{"{}":{{"auth":"YWxpY2U6czNjcmV0"}}}}}}"#,
            reg.addr
        ),
    )
    .unwrap();
    // This test binary's own process reads the credentials file.
    std::env::set_var("REGISTRY_AUTH_FILE", &cfg);
    let opened = ImageRef::parse(&reg.reference("private/app:v1"))
        .unwrap()
        .open(&RegistryOptions::default())
        .unwrap();
    let resolved = skiff_oci::resolve(opened.repo.as_ref(), "v1", None).unwrap();
    let before = tokens.issued();
    assert!(before >= 1);
    std::thread::sleep(std::time::Duration::from_secs(4));
    let layer = &resolved.images[0].manifest.layers[0];
    let bytes = opened.repo.read_range(&layer.digest, 0, 10).unwrap();
    assert_eq!(bytes.len(), 10);
    assert!(
        tokens.issued() > before,
        "the expired token was not refreshed"
    );
}
