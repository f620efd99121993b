//! `skiff volume ls|rm`

use crate::out::outln;
use anyhow::Result;

use super::print_json;
use crate::{exit, Global};

/// List or remove named volumes: `-v NAME:/path` makes one under --root
/// on first use; it outlives its containers until removed here.
#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(clap::Subcommand)]
enum Cmd {
    /// The named volumes, their host paths and the containers using them.
    Ls {
        #[arg(long)]
        json: bool,
    },
    /// Remove volumes and their files (refused while a container, running
    /// or not, mounts one).
    Rm {
        #[arg(required = true, value_name = "VOLUME")]
        names: Vec<String>,
    },
}

pub fn run(global: &Global, a: Args) -> Result<i32> {
    match a.command {
        Cmd::Ls { json } => {
            let volumes = global.engine.volumes()?;
            if json {
                print_json(&volumes)?;
                return Ok(exit::OK);
            }
            if global.quiet_flag {
                for v in &volumes {
                    outln!("{}", v.name)?;
                }
                return Ok(exit::OK);
            }
            outln!("{:<24}  {:<10}  PATH", "VOLUME", "CONTAINERS")?;
            for v in &volumes {
                outln!(
                    "{:<24}  {:<10}  {}",
                    v.name,
                    v.containers.len(),
                    v.path.display()
                )?;
            }
            Ok(exit::OK)
        }
        Cmd::Rm { names } => {
            let mut code = exit::OK;
            for n in &names {
                match global.engine.remove_volume(n) {
                    Ok(()) => outln!("{n}")?,
                    Err(e) => {
                        crate::out::errln!("skiff: {e}");
                        code = exit::FAILURE;
                    }
                }
            }
            Ok(code)
        }
    }
}
