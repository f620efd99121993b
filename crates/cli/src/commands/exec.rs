//! `skiff exec CONTAINER CMD [ARG...]`

use std::io::IsTerminal;

use anyhow::{bail, Result};
use skiff_engine::container::exec::ExecRequest;
use skiff_engine::Launch;

use super::run::{exit_code_for, RUN_FAILED};
use crate::{exit, Global};

/// Run a command in a running container: in all its namespaces and its
/// cgroup, with its capability set, seccomp policy and limits.
///
/// The exit code is the command's; 125 means skiff could not run it, 126
/// that it is not executable, 127 that it was not found.
#[derive(clap::Args)]
pub struct Args {
    /// Keep stdin open and connect it to the command.
    #[arg(short = 'i', long)]
    interactive: bool,
    /// Give the command a pseudo-terminal (from the container's devpts).
    #[arg(short = 't', long)]
    tty: bool,
    /// Set an environment variable (NAME=VALUE).
    #[arg(short = 'e', long = "env", value_name = "NAME=VALUE")]
    env: Vec<String>,
    /// Working directory inside the container (default: the container's).
    #[arg(short = 'w', long, value_name = "DIR")]
    workdir: Option<String>,
    /// Run as USER[:GROUP] (names from the container's files, or IDs).
    #[arg(
        short = 'u',
        long,
        value_name = "USER[:GROUP]",
        allow_hyphen_values = true
    )]
    user: Option<String>,
    /// The container, by name or ID.
    container: String,
    /// The command and its arguments.
    #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
    command: Vec<String>,
}

pub fn run(global: &Global, a: Args) -> Result<i32> {
    match exec(global, a) {
        Ok(code) => Ok(code),
        Err(e) => {
            exit::say(format_args!("skiff: error: {}", exit::render(&e)));
            Ok(exit_code_for(&e).unwrap_or(RUN_FAILED))
        }
    }
}

fn exec(global: &Global, a: Args) -> Result<i32> {
    if a.tty && a.interactive && !std::io::stdin().is_terminal() {
        bail!("-it needs a terminal on stdin; drop -t to pipe input");
    }
    let launch = Launch::from_this_process(a.tty, a.interactive)?;
    let req = ExecRequest {
        command: a.command,
        env: a.env,
        workdir: a.workdir,
        user: a.user,
        tty: a.tty,
    };
    Ok(global.engine.exec(&a.container, &req, launch)?)
}
