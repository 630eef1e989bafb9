//! The command line, one file per subcommand.

use std::path::Path;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::{Config, ConfigError};

mod init;
mod serve;
mod status;
mod verify;

/// Exit code for a config that does not load (sysexits EX_CONFIG).
const EXIT_CONFIG: u8 = 78;

#[derive(Parser)]
#[command(
    name = "hotpush-agent",
    version,
    about = "hotpush partner agent: receives, verifies and serves urgent-fix snapshots",
    after_help = "Running an agent: docs/PARTNERS.md. Exit codes: 0 success, 1 error, \
                  78 config does not load."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    Init(init::Args),
    Serve(serve::Args),
    Status(status::Args),
    Verify(verify::Args),
}

/// Runs the command line.
pub fn run() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Init(args) => init::run(args),
        Command::Serve(args) => serve::run(args),
        Command::Status(args) => status::run(args),
        Command::Verify(args) => verify::run(args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!(
                "hotpush-agent: error: {}",
                hotpush_shared::daemon::describe_error(e.as_ref())
            );
            if e.downcast_ref::<ConfigError>().is_some() {
                ExitCode::from(EXIT_CONFIG)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

fn load(path: &Path) -> anyhow::Result<Config> {
    Ok(Config::load(path)?)
}
