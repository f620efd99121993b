//! `skiff-oci`: the runc-compatible OCI runtime command. It is the `skiff`
//! binary under another name (a link, `skiff-oci -> skiff`): `main`
//! dispatches on the name it was called by, so one binary carries both
//! and Podman, conmon and containerd's runc shim call the link with
//! runc's command line.
//!
//! Only the command line lives here; the lifecycle is the engine's
//! (`skiff_engine::oci_runtime`).

mod args;
mod log;

use std::io::Write;
use std::path::PathBuf;

use clap::Parser;
use skiff_engine::oci_runtime::{self, CreateOptions, ExecOptions, ExecOutcome, OciRuntime};
use skiff_engine::EngineError;

use args::{Cli, Command};

/// The name the binary dispatches on.
pub const NAME: &str = "skiff-oci";

/// Exit codes, as runc's: 0, or 1 for any error; `exec` and `run` pass
/// the process's own code through.
const FAILURE: i32 = 1;

pub fn main() -> ! {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { 2 } else { 0 };
            let _ = e.print();
            std::process::exit(code);
        }
    };
    if cli.version {
        println!(
            "{NAME} version {}\nspec: {}",
            env!("CARGO_PKG_VERSION"),
            skiff_sandbox::hooks::OCI_VERSION
        );
        std::process::exit(0);
    }
    let logger = log::init(cli.log.as_deref(), cli.log_format, cli.debug);
    let code = match run(cli) {
        Ok(code) => code,
        Err(e) => {
            let text = e.to_string();
            logger.error(&text);
            let _ = writeln!(std::io::stderr(), "{NAME}: {text}");
            FAILURE
        }
    };
    std::process::exit(code)
}

fn run(cli: Cli) -> Result<i32, EngineError> {
    if cli.systemd_cgroup {
        return Err(EngineError::Invalid(
            "--systemd-cgroup is not supported: skiff's runtime drives cgroupfs only; use the cgroupfs driver (containerd: SystemdCgroup = false; podman: --cgroup-manager cgroupfs)".into(),
        ));
    }
    let Some(command) = cli.command else {
        return Err(EngineError::Invalid(format!(
            "no command given; see `{NAME} --help`"
        )));
    };
    if let Command::Features = command {
        print_json(&oci_runtime::features());
        return Ok(0);
    }
    let root = cli
        .root
        .unwrap_or_else(|| PathBuf::from(oci_runtime::DEFAULT_ROOT));
    let runtime = OciRuntime::new(&root)?;
    // Every kind, for commands on a container that exists; a new one's is
    // its bundle's annotation's, else the namespace kind.
    let all_kinds = oci_runtime::SANDBOX_KINDS
        .iter()
        .map(|k| runtime.sandbox_kind(k))
        .collect::<Result<Vec<_>, _>>()?;
    let kinds: Vec<&dyn skiff_sandbox::SandboxKind> = all_kinds.iter().map(|k| &**k).collect();
    let kind_for_bundle = |bundle: &std::path::Path| {
        let name = oci_runtime::bundle_sandbox(bundle).unwrap_or_else(|| "namespace".into());
        kinds
            .iter()
            .copied()
            .find(|k| k.name() == name)
            .ok_or_else(|| {
                EngineError::Invalid(format!(
                    "{}={name} in the bundle's config.json: skiff's runtime has the sandbox kinds {}",
                    oci_runtime::SANDBOX_ANNOTATION,
                    oci_runtime::SANDBOX_KINDS.join(", ")
                ))
            })
    };
    match command {
        Command::Create(a) => {
            let kind = kind_for_bundle(&a.bundle)?;
            runtime.create(kind, &a.id, &a.bundle, &create_options(&a))?;
            Ok(0)
        }
        Command::Run(a) => {
            let id = a.create.id.clone();
            let kind = kind_for_bundle(&a.create.bundle)?;
            runtime.create(kind, &id, &a.create.bundle, &create_options(&a.create))?;
            if let Err(e) = runtime.start(&id) {
                let _ = runtime.delete(&kinds, &id, true);
                return Err(e);
            }
            if a.detach {
                return Ok(0);
            }
            let code = runtime.wait_child(&id);
            runtime.delete(&kinds, &id, true)?;
            code
        }
        Command::Start { id } => {
            runtime.start(&id)?;
            Ok(0)
        }
        Command::State { id } => {
            print_json(&runtime.state(&id)?);
            Ok(0)
        }
        Command::Kill { all, id, signal } => {
            let signal = parse_signal(signal.as_deref().unwrap_or("SIGTERM"))?;
            runtime.kill(&id, signal, all)?;
            Ok(0)
        }
        Command::Delete { force, id } => {
            runtime.delete(&kinds, &id, force)?;
            Ok(0)
        }
        Command::Pause { id } => {
            runtime.set_paused(&id, true)?;
            Ok(0)
        }
        Command::Resume { id } => {
            runtime.set_paused(&id, false)?;
            Ok(0)
        }
        Command::Ps {
            format,
            id,
            ps_args,
        } => {
            let pids = runtime.pids(&id)?;
            ps(&pids, &format, &ps_args)?;
            Ok(0)
        }
        Command::List { format, quiet } => {
            let all = runtime.list()?;
            if quiet {
                for s in &all {
                    println!("{}", s.id);
                }
            } else if format == "json" {
                print_json(&all);
            } else {
                println!("ID\tPID\tSTATUS\tBUNDLE\tCREATED\tOWNER");
                for s in &all {
                    println!(
                        "{}\t{}\t{}\t{}\t{}\troot",
                        s.id, s.pid, s.status, s.bundle, s.created
                    );
                }
            }
            Ok(0)
        }
        Command::Update(a) => {
            let resources = args::update_resources(&a)?;
            runtime.update(&a.id, &resources)?;
            Ok(0)
        }
        Command::Exec(a) => {
            let options = exec_options(&a)?;
            let name = runtime.load(&a.id)?.sandbox;
            let kind = kinds
                .iter()
                .copied()
                .find(|k| k.name() == name)
                .ok_or_else(|| {
                    EngineError::Invalid(format!(
                        "container {} runs in an unknown sandbox kind {name:?}",
                        a.id
                    ))
                })?;
            match runtime.exec(kind, &a.id, &options)? {
                ExecOutcome::Started(_) => Ok(0),
                ExecOutcome::Exited(code) => Ok(code),
            }
        }
        Command::Features => unreachable!("handled above"),
    }
}

fn create_options(a: &args::CreateArgs) -> CreateOptions {
    CreateOptions {
        pid_file: a.pid_file.clone(),
        console_socket: a.console_socket.clone(),
        no_pivot: a.no_pivot,
    }
}

fn exec_options(a: &args::ExecArgs) -> Result<ExecOptions, EngineError> {
    if a.preserve_fds > 0 {
        return Err(EngineError::Invalid(
            "--preserve-fds is not supported by skiff's runtime; pass data through stdio".into(),
        ));
    }
    let process_json = match &a.process {
        None => None,
        Some(p) => Some(
            std::fs::read(p)
                .map_err(|e| EngineError::io(format!("reading --process {}", p.display()), e))?,
        ),
    };
    Ok(ExecOptions {
        process_json,
        args: a.command.clone(),
        env: a.env.clone(),
        cwd: a.cwd.clone(),
        user: a.user.clone(),
        additional_gids: a.additional_gids.clone(),
        tty: a.tty,
        caps: a.cap.clone(),
        no_new_privs: a.no_new_privs,
        detach: a.detach,
        pid_file: a.pid_file.clone(),
        console_socket: a.console_socket.clone(),
    })
}

fn print_json<T: serde::Serialize>(v: &T) {
    let mut out = std::io::stdout().lock();
    let _ = serde_json::to_writer_pretty(&mut out, v);
    let _ = writeln!(out);
}

/// `KILL`, `SIGKILL` or `9`.
fn parse_signal(s: &str) -> Result<i32, EngineError> {
    if let Ok(n) = s.parse::<i32>() {
        if (1..=64).contains(&n) {
            return Ok(n);
        }
    }
    let name = s.to_ascii_uppercase();
    let name = name.strip_prefix("SIG").unwrap_or(&name);
    let n = match name {
        "HUP" => libc::SIGHUP,
        "INT" => libc::SIGINT,
        "QUIT" => libc::SIGQUIT,
        "ILL" => libc::SIGILL,
        "TRAP" => libc::SIGTRAP,
        "ABRT" | "IOT" => libc::SIGABRT,
        "BUS" => libc::SIGBUS,
        "FPE" => libc::SIGFPE,
        "KILL" => libc::SIGKILL,
        "USR1" => libc::SIGUSR1,
        "SEGV" => libc::SIGSEGV,
        "USR2" => libc::SIGUSR2,
        "PIPE" => libc::SIGPIPE,
        "ALRM" => libc::SIGALRM,
        "TERM" => libc::SIGTERM,
        "STKFLT" => libc::SIGSTKFLT,
        "CHLD" => libc::SIGCHLD,
        "CONT" => libc::SIGCONT,
        "STOP" => libc::SIGSTOP,
        "TSTP" => libc::SIGTSTP,
        "TTIN" => libc::SIGTTIN,
        "TTOU" => libc::SIGTTOU,
        "URG" => libc::SIGURG,
        "XCPU" => libc::SIGXCPU,
        "XFSZ" => libc::SIGXFSZ,
        "VTALRM" => libc::SIGVTALRM,
        "PROF" => libc::SIGPROF,
        "WINCH" => libc::SIGWINCH,
        "IO" | "POLL" => libc::SIGIO,
        "PWR" => libc::SIGPWR,
        "SYS" => libc::SIGSYS,
        _ => {
            return Err(EngineError::Invalid(format!(
                "unknown signal {s:?}: give a name (TERM, SIGKILL) or a number"
            )))
        }
    };
    Ok(n)
}

/// `ps`: JSON (the pids, what containerd reads), or ps(1)'s table for
/// the container's processes, with the caller's ps options (runc's way).
fn ps(pids: &[i32], format: &str, ps_args: &[String]) -> Result<(), EngineError> {
    if format == "json" {
        print_json(&pids);
        return Ok(());
    }
    let args: Vec<String> = if ps_args.is_empty() {
        vec!["-ef".into()]
    } else {
        ps_args.to_vec()
    };
    let out = std::process::Command::new("ps")
        .args(&args)
        .output()
        .map_err(|e| EngineError::io("running ps(1)", e))?;
    if !out.status.success() {
        return Err(EngineError::Invalid(format!(
            "ps {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let mut lines = text.lines();
    let Some(header) = lines.next() else {
        return Ok(());
    };
    let Some(pid_col) = header.split_whitespace().position(|c| c == "PID") else {
        return Err(EngineError::Invalid(
            "the ps options give no PID column".into(),
        ));
    };
    println!("{header}");
    for line in lines {
        let pid = line
            .split_whitespace()
            .nth(pid_col)
            .and_then(|p| p.parse::<i32>().ok());
        if pid.is_some_and(|p| pids.contains(&p)) {
            println!("{line}");
        }
    }
    Ok(())
}
