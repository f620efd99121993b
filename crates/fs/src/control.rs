//! A mount daemon's control socket: HTTP/1.0 on a unix socket, serving
//! `/stats` (JSON) and `/metrics` (Prometheus text).
//!
//! Hand-written: two read-only routes, one request per connection; an HTTP
//! framework would outweigh the daemon it serves.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use skiff_store::{ChunkCache, Fetcher, Snapshot};

#[derive(Serialize, Clone)]
pub struct MountInfo {
    pub image: String,
    pub mountpoint: String,
    pub root_digest: String,
    pub pid: u32,
}

#[derive(Serialize)]
struct Stats<'a> {
    #[serde(flatten)]
    info: &'a MountInfo,
    metrics: Snapshot,
    cache_corrupt_entries: u64,
}

fn respond(stream: &mut UnixStream, status: &str, content_type: &str, body: &[u8]) {
    let head = format!(
        "HTTP/1.0 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    let _ = stream.write_all(head.as_bytes());
    let _ = stream.write_all(body);
}

fn handle(mut stream: UnixStream, info: &MountInfo, fetcher: &Fetcher, cache: Option<&ChunkCache>) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let mut line = String::new();
    if BufReader::new(&stream)
        .take(8192)
        .read_line(&mut line)
        .is_err()
    {
        return;
    }
    let path = line.split_whitespace().nth(1).unwrap_or("");
    let snapshot = fetcher.metrics().snapshot();
    match path {
        "/stats" => {
            let s = Stats {
                info,
                metrics: snapshot,
                cache_corrupt_entries: cache
                    .map_or(0, |c| c.corrupt.load(std::sync::atomic::Ordering::Relaxed)),
            };
            let body = serde_json::to_vec_pretty(&s).unwrap_or_default();
            respond(&mut stream, "200 OK", "application/json", &body);
        }
        "/metrics" => respond(
            &mut stream,
            "200 OK",
            "text/plain; version=0.0.4",
            snapshot.prometheus().as_bytes(),
        ),
        _ => respond(
            &mut stream,
            "404 Not Found",
            "text/plain",
            b"try /stats or /metrics\n",
        ),
    }
}

/// Serves the control socket on a background thread.
pub fn serve(
    socket: &Path,
    info: MountInfo,
    fetcher: Arc<Fetcher>,
    cache: Option<Arc<ChunkCache>>,
) -> std::io::Result<()> {
    let _ = std::fs::remove_file(socket);
    let listener = crate::socket::bind(socket)?;
    std::thread::Builder::new()
        .name("skiff-control".into())
        .spawn(move || {
            for stream in listener.incoming().flatten() {
                handle(stream, &info, &fetcher, cache.as_deref());
            }
        })?;
    Ok(())
}

/// Asks a daemon's control socket for `path`; returns the body.
pub fn query(socket: &Path, path: &str) -> std::io::Result<String> {
    let mut s = crate::socket::connect(socket)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.write_all(format!("GET {path} HTTP/1.0\r\n\r\n").as_bytes())?;
    let mut resp = String::new();
    s.read_to_string(&mut resp)?;
    let (head, body) = resp.split_once("\r\n\r\n").unwrap_or((&resp, ""));
    if !head.starts_with("HTTP/1.0 200") {
        return Err(std::io::Error::other(format!(
            "control socket answered: {}",
            head.lines().next().unwrap_or("")
        )));
    }
    Ok(body.to_string())
}
