//! Progress bars on stderr (hidden when stderr is not a terminal).

use std::sync::Mutex;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use skiff_builder::Progress;

pub fn bytes_bar(multi: &MultiProgress, total: u64, prefix: &str) -> ProgressBar {
    let bar = multi.add(ProgressBar::new(total));
    bar.set_style(
        ProgressStyle::with_template(
            "{prefix:>12.bold} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} {msg}",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    bar.set_prefix(prefix.to_string());
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

pub fn multi(quiet: bool) -> MultiProgress {
    if quiet {
        MultiProgress::with_draw_target(ProgressDrawTarget::hidden())
    } else {
        MultiProgress::with_draw_target(ProgressDrawTarget::stderr())
    }
}

/// Bars for `skiff convert`.
pub struct ConvertBars {
    multi: MultiProgress,
    current: Mutex<Option<ProgressBar>>,
}

impl ConvertBars {
    pub fn new(multi: MultiProgress) -> Self {
        Self {
            multi,
            current: Mutex::new(None),
        }
    }

    fn replace(&self, bar: Option<ProgressBar>) {
        if let Ok(mut cur) = self.current.lock() {
            if let Some(old) = cur.take() {
                old.finish_and_clear();
            }
            *cur = bar;
        }
    }
}

fn short(digest: &str) -> &str {
    let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
    &hex[..hex.len().min(12)]
}

impl Progress for ConvertBars {
    fn layer_started(&self, position: usize, count: usize, digest: &str, size: u64) {
        let bar = bytes_bar(&self.multi, size, &format!("layer {position}/{count}"));
        bar.set_message(short(digest).to_string());
        self.replace(Some(bar));
    }

    fn layer_read(&self, bytes: u64) {
        if let Ok(cur) = self.current.lock() {
            if let Some(b) = cur.as_ref() {
                b.inc(bytes);
            }
        }
    }

    fn layer_finished(&self) {
        self.replace(None);
    }

    fn upload_started(&self, what: &str, size: u64) {
        let bar = self.multi.add(ProgressBar::new_spinner());
        bar.set_style(
            ProgressStyle::with_template("{prefix:>12.bold} {spinner} {msg}")
                .expect("valid template"),
        );
        bar.set_prefix("upload");
        bar.set_message(format!("{} ({})", short(what), indicatif::HumanBytes(size)));
        bar.enable_steady_tick(Duration::from_millis(150));
        self.replace(Some(bar));
    }

    fn upload_finished(&self) {
        self.replace(None);
    }

    fn note(&self, message: &str) {
        let _ = self.multi.println(message);
    }
}
