//! Output that never panics: `println!` panics when stdout is a closed
//! pipe (`skiff ps -a | head -1`), which would skip a command's cleanup.
//! [`outln!`] returns [`StdoutClosed`] instead; `main` ends such a command
//! quietly with its code unchanged, after everything has been dropped.

use std::fmt;
use std::io::Write;

/// Stdout's reader went away. Not a failure of the command.
#[derive(Debug)]
pub struct StdoutClosed;

impl fmt::Display for StdoutClosed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("stdout was closed")
    }
}

impl std::error::Error for StdoutClosed {}

/// Writes `args` and a newline to stdout.
pub fn line(args: fmt::Arguments) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_fmt(args)
        .and_then(|()| out.write_all(b"\n"))
        .map_err(closed_or)
}

/// Writes `args` to stdout, as is.
pub fn text(args: fmt::Arguments) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_fmt(args)
        .and_then(|()| out.flush())
        .map_err(closed_or)
}

/// A failed write to stdout as an error: a closed pipe is [`StdoutClosed`].
pub fn closed_or(e: std::io::Error) -> anyhow::Error {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        StdoutClosed.into()
    } else {
        anyhow::Error::new(e).context("writing to stdout")
    }
}

/// Whether an error is a closed stdout (anywhere in its chain).
pub fn is_stdout_closed(e: &anyhow::Error) -> bool {
    e.chain().any(|c| c.is::<StdoutClosed>())
}

/// `println!` that returns [`StdoutClosed`] rather than panicking.
macro_rules! outln {
    ($($arg:tt)*) => { $crate::out::line(format_args!($($arg)*)) };
}

/// `print!` that returns [`StdoutClosed`] rather than panicking.
macro_rules! out {
    ($($arg:tt)*) => { $crate::out::text(format_args!($($arg)*)) };
}

/// `eprintln!` that ignores a closed stderr.
macro_rules! errln {
    ($($arg:tt)*) => { $crate::exit::say(format_args!($($arg)*)) };
}

pub(crate) use {errln, out, outln};
