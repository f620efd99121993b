//! `skiff ps`

use crate::out::outln;
use anyhow::Result;

use skiff_engine::record;
use skiff_engine::Status;

use crate::{exit, Global};

/// List containers (running ones; -a for all; -q for IDs only).
#[derive(clap::Args)]
pub struct Args {
    /// Show exited containers too.
    #[arg(short, long)]
    all: bool,
    /// Print JSON (the full records).
    #[arg(long)]
    json: bool,
}

pub fn run(global: &Global, a: Args) -> Result<i32> {
    let mut list = global.engine.containers()?;
    list.retain(|r| a.all || r.status != Status::Exited);
    if a.json {
        super::print_json(&list)?;
        return Ok(exit::OK);
    }
    if global.quiet_flag {
        for r in &list {
            outln!("{}", r.short_id())?;
        }
        return Ok(exit::OK);
    }
    outln!(
        "{:<12}  {:<20}  {:<30}  {:<24}  STATUS",
        "CONTAINER ID",
        "NAME",
        "IMAGE",
        "COMMAND"
    )?;
    let now = record::now();
    for r in &list {
        let status = match r.status {
            Status::Running => format!("Up {}", ago(now.saturating_sub(r.created))),
            Status::Created => "Created".into(),
            Status::Exited => match r.exit_code {
                Some(c) => format!(
                    "Exited ({c}) {} ago{}",
                    ago(now.saturating_sub(r.finished.unwrap_or(r.created))),
                    if r.oom_killed { ", OOM-killed" } else { "" }
                ),
                None => "Exited (unknown: its supervisor died)".into(),
            },
        };
        outln!(
            "{:<12}  {:<20}  {:<30}  {:<24}  {}",
            r.short_id(),
            clip(&r.name, 20),
            clip(&r.image, 30),
            clip(&format!("{:?}", r.command.join(" ")), 24),
            status
        )?;
    }
    Ok(exit::OK)
}

fn clip(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(n - 1).collect();
        t.push('…');
        t
    }
}

fn ago(secs: u64) -> String {
    match secs {
        0..=59 => format!("{secs} seconds"),
        60..=3599 => format!("{} minutes", secs / 60),
        3600..=86399 => format!("{} hours", secs / 3600),
        _ => format!("{} days", secs / 86400),
    }
}
