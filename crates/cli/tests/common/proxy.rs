//! A counting, fault-injecting HTTP proxy in front of a real registry.
//!
//! Clients use the proxy's address as the registry. It relays one request
//! per connection (asking the registry to close after answering), counts the
//! bytes it relays back, and can answer with a 503, cut a response short,
//! or swallow requests entirely.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Debug, Clone, Copy, Default)]
pub struct Faults {
    /// Answer every Nth request with a 503 (0: never).
    pub fail_every: u64,
    /// Cut every Nth relayed response after its headers and a little body.
    pub reset_every: u64,
    /// Hold every request without answering.
    pub blackhole: bool,
}

#[derive(Default)]
pub struct Counters {
    pub requests: AtomicU64,
    /// Response bytes relayed to clients (headers included).
    pub bytes: AtomicU64,
    pub injected_503: AtomicU64,
    pub injected_resets: AtomicU64,
    /// Request lines of GETs for blobs, e.g. "GET /v2/r/blobs/sha256:… Range: bytes=0-9".
    pub blob_gets: Mutex<Vec<String>>,
}

pub struct Proxy {
    pub addr: String,
    pub counters: Arc<Counters>,
    faults: Arc<Mutex<Faults>>,
    stop: Arc<AtomicBool>,
}

fn read_head(s: &mut TcpStream) -> Option<Vec<u8>> {
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match s.read(&mut b) {
            Ok(1) => head.push(b[0]),
            _ => return None,
        }
        if head.len() > 64 * 1024 {
            return None;
        }
    }
    Some(head)
}

fn serve(
    mut client: TcpStream,
    upstream: String,
    faults: Arc<Mutex<Faults>>,
    c: Arc<Counters>,
    stop: Arc<AtomicBool>,
) {
    let Some(head) = read_head(&mut client) else {
        return;
    };
    let n = c.requests.fetch_add(1, Ordering::SeqCst) + 1;
    let f = *faults.lock().unwrap();
    let text = String::from_utf8_lossy(&head).to_string();
    let request_line = text.lines().next().unwrap_or("").to_string();
    if request_line.starts_with("GET") && request_line.contains("/blobs/") {
        let range = text
            .lines()
            .find(|l| l.to_ascii_lowercase().starts_with("range:"))
            .unwrap_or("")
            .to_string();
        c.blob_gets
            .lock()
            .unwrap()
            .push(format!("{request_line} {range}"));
    }
    if f.blackhole {
        while !stop.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(50));
        }
        return;
    }
    if f.fail_every > 0 && n % f.fail_every == 0 {
        c.injected_503.fetch_add(1, Ordering::SeqCst);
        let _ = client.write_all(
            b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        );
        return;
    }
    let Ok(mut up) = TcpStream::connect(&upstream) else {
        return;
    };
    // Forward the head with "Connection: close", then any request body.
    let mut body_len = 0usize;
    let mut out = String::new();
    for line in text.split("\r\n") {
        let lower = line.to_ascii_lowercase();
        if lower.starts_with("connection:") {
            continue;
        }
        if let Some(v) = lower.strip_prefix("content-length:") {
            body_len = v.trim().parse().unwrap_or(0);
        }
        if line.is_empty() {
            break;
        }
        out.push_str(line);
        out.push_str("\r\n");
    }
    out.push_str("Connection: close\r\n\r\n");
    if up.write_all(out.as_bytes()).is_err() {
        return;
    }
    if body_len > 0 {
        let _ = std::io::copy(&mut (&mut client).take(body_len as u64), &mut up);
    }
    let cut = f.reset_every > 0 && n % f.reset_every == 0 && request_line.starts_with("GET");
    let mut buf = [0u8; 16 * 1024];
    let mut relayed = 0usize;
    loop {
        let k = match up.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(k) => k,
        };
        let k = if cut {
            k.min(600usize.saturating_sub(relayed))
        } else {
            k
        };
        if k == 0 {
            break;
        }
        // Counted before it is sent: once the client holds the bytes, the
        // counter includes them (counted after, a test reading the counter
        // right after its read could still see the old value).
        c.bytes.fetch_add(k as u64, Ordering::SeqCst);
        if client.write_all(&buf[..k]).is_err() {
            break;
        }
        relayed += k;
        if cut && relayed >= 600 {
            c.injected_resets.fetch_add(1, Ordering::SeqCst);
            let _ = client.shutdown(Shutdown::Both);
            return;
        }
    }
}

impl Proxy {
    pub fn start(upstream: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let counters = Arc::new(Counters::default());
        let faults = Arc::new(Mutex::new(Faults::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let (c, f, s, up) = (
            counters.clone(),
            faults.clone(),
            stop.clone(),
            upstream.to_string(),
        );
        listener.set_nonblocking(true).unwrap();
        std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((client, _)) => {
                        client.set_nonblocking(false).unwrap();
                        let (c, f, s, up) = (c.clone(), f.clone(), s.clone(), up.clone());
                        std::thread::spawn(move || serve(client, up, f, c, s));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Self {
            addr,
            counters,
            faults,
            stop,
        }
    }

    pub fn set_faults(&self, f: Faults) {
        *self.faults.lock().unwrap() = f;
    }

    pub fn bytes(&self) -> u64 {
        self.counters.bytes.load(Ordering::SeqCst)
    }

    pub fn reference(&self, repo_tag: &str) -> String {
        format!("{}/{repo_tag}", self.addr)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}
