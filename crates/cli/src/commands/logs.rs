//! `skiff logs`

use std::io::Write;
use std::time::Duration;

use anyhow::Result;

use skiff_engine::container_log::{LogReader, Stream};
use skiff_engine::record::Record;

use crate::{exit, Global};

/// Print a container's output: what it wrote to stdout on stdout, and to
/// stderr on stderr, in the order it wrote them. Every container keeps its
/// log until it is removed, foreground ones included, except a foreground
/// `--rm` one whose output goes to a pipe or a file. A `-t` container's
/// terminal is one stream, on stdout.
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
    let Some((path, _)) = skiff_engine::container_log::location(&global.root, &record) else {
        anyhow::bail!(
            "container {} runs in the foreground with --rm, its output going to a pipe or a file: it keeps no log (run it without --rm, or with -d, to keep one)",
            record.name
        )
    };
    let Some(mut log) = LogReader::open(&path)? else {
        anyhow::bail!(
            "container {} has no log: its streams were given to the program that started it",
            record.name
        )
    };
    let mut out = std::io::stdout().lock();
    let mut err = std::io::stderr().lock();
    let out_closed = std::cell::Cell::new(false);
    let mut print = |stream: Stream, bytes: &[u8]| -> std::io::Result<()> {
        match stream {
            Stream::Stdout => out.write_all(bytes).inspect_err(|_| out_closed.set(true)),
            Stream::Stderr => {
                // In order with what stdout got before it.
                out.flush().inspect_err(|_| out_closed.set(true))?;
                let _ = err.write_all(bytes);
                Ok(())
            }
        }
    };
    let mut finishing = false;
    loop {
        match log.read(&mut print) {
            Ok(true) => continue,
            Ok(false) => {}
            Err(_) if out_closed.get() => return Err(crate::out::StdoutClosed.into()),
            Err(e) => return Err(e.into()),
        }
        if !a.follow || finishing {
            break;
        }
        let running = Record::load(&global.root, &record.id).is_ok_and(|r| r.running());
        if !running {
            // One more pass drains what came between the last read and the exit.
            finishing = true;
            continue;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    std::io::stdout().flush().map_err(crate::out::closed_or)?;
    Ok(exit::OK)
}
