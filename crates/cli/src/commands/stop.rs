//! `skiff stop`

use std::time::{Duration, Instant};

use anyhow::Result;

use crate::containers::{self, Record, Status};
use crate::{exit, Global};

/// Stop running containers: the image's stop signal (default SIGTERM),
/// then SIGKILL after a grace period.
#[derive(clap::Args)]
pub struct Args {
    /// Seconds to wait before SIGKILL.
    #[arg(short, long, default_value_t = 10)]
    time: u64,
    /// Containers, by name or ID.
    #[arg(required = true)]
    containers: Vec<String>,
}

pub fn run(global: &Global, a: Args) -> Result<i32> {
    let mut code = exit::OK;
    for key in &a.containers {
        match containers::find(&global.root, key).and_then(|r| stop(global, r, a.time)) {
            Ok(()) => println!("{key}"),
            Err(e) => {
                exit::say(format_args!("skiff: error: {}", exit::render(&e)));
                code = exit::FAILURE;
            }
        }
    }
    Ok(code)
}

/// Signals the container and waits until its supervisor has recorded the
/// exit (or, if the supervisor is gone, until the process is).
pub fn stop(global: &Global, record: Record, grace_secs: u64) -> Result<()> {
    if !record.running() {
        return Ok(());
    }
    let pid = record.pid.expect("a running record has a pid");
    skiff_sandbox::container::signal(pid, record.stop_signal)?;
    if !wait_exit(global, &record, Duration::from_secs(grace_secs)) {
        tracing::info!(id = %record.id, "grace period over; sending SIGKILL");
        if still_same_process(&record) {
            skiff_sandbox::container::signal(pid, libc::SIGKILL)?;
        }
        if !wait_exit(global, &record, Duration::from_secs(10)) {
            anyhow::bail!(
                "container {} did not exit after SIGKILL (pid {pid}); check `dmesg`",
                record.name
            );
        }
    }
    Ok(())
}

fn still_same_process(r: &Record) -> bool {
    r.pid
        .is_some_and(|p| containers::process_start_time(p) == r.pid_start)
}

/// Whether the container exited within `limit`. A record whose supervisor
/// died is finished here instead.
pub fn wait_exit(global: &Global, record: &Record, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        let current = Record::load(&global.root, &record.id);
        match current {
            Ok(r) if r.status == Status::Exited => return true,
            Err(_) => return true, // removed (--rm)
            Ok(r) if !still_same_process(&r) => {
                // The process is gone; give a live supervisor a moment to record it.
                std::thread::sleep(Duration::from_millis(200));
                if let Ok(again) = Record::load(&global.root, &record.id) {
                    if again.status != Status::Exited {
                        let mut done = again;
                        done.status = Status::Exited;
                        done.pid = None;
                        done.finished = Some(containers::now());
                        let _ = done.save(&global.root);
                        super::run::cleanup(global, &done, false);
                    }
                }
                return true;
            }
            Ok(_) => {}
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
