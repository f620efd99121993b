//! `--log` and `--log-format`: where runc's callers look for the error.
//! containerd's runc shim reads the last `"level":"error"` line of a JSON
//! log to report why `create` failed, so each line must be one object.

use std::io::Write;
use std::path::Path;
use std::sync::Mutex;

use super::args::LogFormat;

pub struct Logger {
    file: Option<Mutex<std::fs::File>>,
    format: LogFormat,
}

impl Logger {
    pub fn error(&self, msg: &str) {
        self.write("error", msg);
    }

    fn write(&self, level: &str, msg: &str) {
        let Some(file) = &self.file else {
            return;
        };
        let time = skiff_engine::record::rfc3339(std::time::SystemTime::now());
        let line = match self.format {
            LogFormat::Json => {
                serde_json::json!({"level": level, "msg": msg, "time": time}).to_string()
            }
            LogFormat::Text => format!("{time} {level} {msg}"),
        };
        if let Ok(mut f) = file.lock() {
            let _ = writeln!(f, "{line}");
        }
    }
}

/// tracing's events go to the log file when there is one (never to
/// stderr: for `create` that is the container's own stream), at warn
/// (debug with `--debug`).
pub fn init(path: Option<&Path>, format: LogFormat, debug: bool) -> &'static Logger {
    let file = path.and_then(|p| {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(p)
            .ok()
    });
    let level = if debug {
        tracing::Level::DEBUG
    } else {
        tracing::Level::WARN
    };
    if let Some(f) = file.as_ref().and_then(|f| f.try_clone().ok()) {
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(level)
            .with_ansi(false)
            .with_target(false)
            .with_writer(Mutex::new(f));
        match format {
            LogFormat::Json => {
                let _ = subscriber.json().flatten_event(true).try_init();
            }
            LogFormat::Text => {
                let _ = subscriber.try_init();
            }
        }
    }
    Box::leak(Box::new(Logger {
        file: file.map(Mutex::new),
        format,
    }))
}
