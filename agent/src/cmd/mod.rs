//! The command line, one file per subcommand.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::Config;

mod doctor;
mod init;
mod serve;
mod status;
mod verify;

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
    Doctor(doctor::Args),
    Serve(serve::Args),
    Status(status::Args),
    Verify(verify::Args),
}

/// Runs the command line.
pub fn run() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Init(args) => init::run(args),
        Command::Doctor(args) => doctor::run(args),
        Command::Serve(args) => serve::run(args),
        Command::Status(args) => status::run(args),
        Command::Verify(args) => verify::run(args),
    };
    result.unwrap_or_else(|e| hotpush_shared::daemon::report_failure("hotpush-agent", e.as_ref()))
}

/// The `-c/--config` option of every command that reads the agent's config.
#[derive(clap::Args)]
pub struct ConfigArg {
    /// Agent config file.
    #[arg(long, short, default_value = "/etc/hotpush-agent/agent.toml")]
    pub config: std::path::PathBuf,
}

impl ConfigArg {
    fn load(&self) -> anyhow::Result<Config> {
        Ok(Config::load(&self.config)?)
    }
}
