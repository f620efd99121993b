//! `skiff logs`

use std::io::{Read, Write};
use std::time::Duration;

use anyhow::{Context, Result};

use skiff_engine::record::{self, Record};

use crate::{exit, Global};

/// Print a detached container's output (stdout and stderr, interleaved).
#[derive(clap::Args)]
pub struct Args {
    /// Keep printing new output until the container exits.
    #[arg(short, long)]
    follow: bool,
    /// The container, by name or ID.
    container: String,
}

pub fn run(global: &Global, a: Args) -> Result<i32> {
    let record = global.engine.find(&a.container)?;
    let path = record::log_path(&global.root, &record.id);
    let mut file = match std::fs::File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            anyhow::bail!(
                "container {} has no log: only detached (-d) containers keep one",
                record.name
            )
        }
        Err(e) => return Err(e).with_context(|| format!("opening {}", path.display())),
    };
    let mut out = std::io::stdout().lock();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = file.read(&mut buf)?;
        if n > 0 {
            out.write_all(&buf[..n]).map_err(crate::out::closed_or)?;
            continue;
        }
        out.flush().map_err(crate::out::closed_or)?;
        if !a.follow {
            break;
        }
        let running = Record::load(&global.root, &record.id).is_ok_and(|r| r.running());
        if !running {
            // Drain what was written between the last read and the exit.
            std::io::copy(&mut file, &mut out).map_err(|e| match e.kind() {
                std::io::ErrorKind::BrokenPipe => crate::out::StdoutClosed.into(),
                _ => anyhow::Error::new(e).context(format!("copying {}", path.display())),
            })?;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(exit::OK)
}
