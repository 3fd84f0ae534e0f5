//! The `vpcbox` binary: CLI → config → runtime → dashboard or headless.
//! Thin on purpose: config is loaded and validated before anything binds,
//! and every failure leaves through a typed exit code (see `exit.rs`).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Parser;
use vpcbox::cli::{Cli, Command, ConfigArg, DbCommand, RunArgs};
use vpcbox::config::Config;
use vpcbox::exit::{self, Exit};

const SYSTEM_CONFIG: &str = "/etc/vpcbox/config.toml";

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() {
                exit::USAGE
            } else {
                exit::OK
            };
            let _ = e.print();
            return code_of(code);
        }
    };
    match dispatch(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vpcbox: {e}");
            code_of(e.code)
        }
    }
}

fn code_of(code: i32) -> ExitCode {
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}

fn dispatch(cli: Cli) -> Result<(), Exit> {
    match cli.command {
        None => run(cli.run),
        Some(Command::Run(args)) => run(merge(cli.run, args)),
        Some(Command::Check(c)) => {
            let (config, origin) = load(&c.config)?;
            let origin = origin.map_or("embedded defaults".into(), |p| p.display().to_string());
            eprintln!("vpcbox: {origin}: ok");
            match c.diff {
                None => emit(&config.to_toml()),
                Some(running) => {
                    let running = Config::load(&running)?;
                    let changes = vpcbox::config::diff::changes(&running.raw, &config.raw);
                    emit(&vpcbox::config::diff::render(&changes))
                }
            }
        }
        Some(Command::Db(cmd)) => db(cmd),
        Some(Command::Cluster(cmd)) => {
            let out = vpcbox::app::cluster::run(cmd, |c| Ok(load(c)?.0), runtime)?;
            emit(&out)
        }
        Some(Command::Replay(mut args)) => {
            args.config = cli.run.config.config.clone();
            vpcbox::replay::run(*args)
        }
        Some(Command::Admin(cmd)) => {
            let (config, _) = load(&cli.run.config)?;
            vpcbox::admin_cli::run(cmd, &config)
        }
    }
}

/// `vpcbox --demo run` and `vpcbox run --demo` mean the same.
fn merge(top: RunArgs, sub: RunArgs) -> RunArgs {
    RunArgs {
        config: ConfigArg {
            config: sub.config.config.or(top.config.config),
        },
        headless: top.headless || sub.headless,
        demo: top.demo || sub.demo,
        log_format: if sub.log_format == Default::default() {
            top.log_format
        } else {
            sub.log_format
        },
    }
}

/// The config named by `--config`, else ./config.toml, else the system one,
/// else the embedded defaults. Returns the file it came from, if any.
fn load(arg: &ConfigArg) -> Result<(Config, Option<PathBuf>), Exit> {
    let candidates: Vec<PathBuf> = match &arg.config {
        Some(p) => vec![p.clone()],
        None => vec![PathBuf::from("config.toml"), PathBuf::from(SYSTEM_CONFIG)],
    };
    if let Some(path) = candidates
        .iter()
        .find(|p| arg.config.is_some() || Path::exists(p))
    {
        return Ok((Config::load(path)?, Some(path.clone())));
    }
    Ok((Config::embedded()?, None))
}

/// `vpcbox db export|import` (see `app::db`).
fn db(cmd: DbCommand) -> Result<(), Exit> {
    match cmd {
        DbCommand::Export(c) => emit(&vpcbox::app::db::export(&load(&c)?.0)?),
        DbCommand::Import {
            config,
            file,
            force,
        } => vpcbox::app::db::import(&runtime()?, &load(&config)?.0, &file, force),
    }
}

/// Writes to stdout; a closed pipe (`| head`) is not an error.
fn emit(text: &str) -> Result<(), Exit> {
    use std::io::Write;
    match std::io::stdout().lock().write_all(text.as_bytes()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(Exit::software(format!("cannot write to stdout: {e}")))
        }
        _ => Ok(()),
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, Exit> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("vpcbox")
        .build()
        .map_err(|e| Exit::unavailable(format!("cannot start the runtime: {e}")))
}

fn run(args: RunArgs) -> Result<(), Exit> {
    let (config, config_path) = load(&args.config)?;
    let runtime = runtime()?;
    let opts = vpcbox::app::RunOptions {
        config_path,
        headless: args.headless,
        demo: args.demo,
        log_format: args.log_format,
    };
    runtime.block_on(vpcbox::app::run(config, opts))
}
