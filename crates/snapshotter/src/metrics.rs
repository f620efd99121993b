//! One Prometheus endpoint (`--metrics-address`) for the snapshotter and
//! every image mount it serves: the snapshotter's own counters, then each
//! mount daemon's metrics with an `image` label added. A minimal HTTP/1.0
//! responder: a scrape is one GET, and pulling in an HTTP server stack
//! for it would cost more than this file.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::snapshots::{Content, SnapshotKind, Snapshots};

pub async fn serve(listener: TcpListener, snapshots: Arc<Snapshots>) {
    loop {
        let Ok((mut conn, _)) = listener.accept().await else {
            continue;
        };
        let snapshots = snapshots.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            let n =
                match tokio::time::timeout(std::time::Duration::from_secs(5), conn.read(&mut buf))
                    .await
                {
                    Ok(Ok(n)) => n,
                    _ => return,
                };
            let request = String::from_utf8_lossy(&buf[..n]);
            let path = request.split_whitespace().nth(1).unwrap_or("");
            let (status, body) = if path == "/metrics" {
                let text = tokio::task::spawn_blocking(move || render(&snapshots))
                    .await
                    .unwrap_or_default();
                ("200 OK", text)
            } else {
                ("404 Not Found", "try /metrics\n".to_string())
            };
            let head = format!(
                "HTTP/1.0 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\n\r\n",
                body.len()
            );
            let _ = conn.write_all(head.as_bytes()).await;
            let _ = conn.write_all(body.as_bytes()).await;
        });
    }
}

/// The whole scrape, as Prometheus text.
pub fn render(snapshots: &Snapshots) -> String {
    let c = &snapshots.counters;
    let mut out = String::new();
    let mut counter = |name: &str, help: &str, v: u64| {
        out.push_str(&format!(
            "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}\n"
        ));
    };
    counter(
        "skiff_snapshotter_lazy_layers_total",
        "Layers served by skiff without a download.",
        c.lazy_layers.load(Ordering::Relaxed),
    );
    counter(
        "skiff_snapshotter_not_lazy_layers_total",
        "Layers containerd downloaded and unpacked (ordinary OCI layers).",
        c.not_lazy_layers.load(Ordering::Relaxed),
    );
    counter(
        "skiff_snapshotter_errors_total",
        "Prepares of skiff layers that failed.",
        c.errors.load(Ordering::Relaxed),
    );
    let all = snapshots.all();
    out.push_str("# HELP skiff_snapshotter_snapshots Snapshots by kind and content.\n# TYPE skiff_snapshotter_snapshots gauge\n");
    for kind in [
        SnapshotKind::View,
        SnapshotKind::Active,
        SnapshotKind::Committed,
    ] {
        for (content, name) in [("local", 0), ("blob", 1), ("image", 2)] {
            let n = all
                .iter()
                .filter(|(_, s)| {
                    s.kind == kind
                        && match &s.content {
                            Content::Local => name == 0,
                            Content::SkiffBlob => name == 1,
                            Content::SkiffImage { .. } => name == 2,
                        }
                })
                .count();
            out.push_str(&format!(
                "skiff_snapshotter_snapshots{{kind=\"{kind:?}\",content=\"{content}\"}} {n}\n"
            ));
        }
    }
    let mut seen = std::collections::HashSet::new();
    for (_, s) in &all {
        let Content::SkiffImage { reference, tree } = &s.content else {
            continue;
        };
        if !seen.insert(tree.clone()) {
            continue;
        }
        let Some(text) = snapshots.engine().image_mount_metrics(tree) else {
            continue;
        };
        out.push_str(&with_label(&text, "image", reference));
    }
    out
}

/// Adds `key="value"` to every sample line of Prometheus text.
fn with_label(text: &str, key: &str, value: &str) -> String {
    let value = value.replace('\\', "\\\\").replace('"', "\\\"");
    let mut out = String::new();
    for line in text.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            // HELP and TYPE lines repeat per image; Prometheus accepts
            // only one of each, so keep the samples alone.
            continue;
        }
        let (name, rest) = match line.find(['{', ' ']) {
            Some(i) => line.split_at(i),
            None => continue,
        };
        let sample = match rest.strip_prefix('{') {
            Some(r) => format!("{name}{{{key}=\"{value}\",{r}"),
            None => format!("{name}{{{key}=\"{value}\"}}{rest}"),
        };
        out.push_str(&sample);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn labels_are_added_to_samples() {
        let t = "# HELP a x\na 1\nb{le=\"5\"} 2\n";
        assert_eq!(
            super::with_label(t, "image", "r\"x"),
            "a{image=\"r\\\"x\"} 1\nb{image=\"r\\\"x\",le=\"5\"} 2\n"
        );
    }
}
