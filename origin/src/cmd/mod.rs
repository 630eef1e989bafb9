//! The command line, one file per subcommand (tuftool's `cmd/` layout): one
//! obvious command per step, errors that say what to do next, and exit
//! codes a script can branch on.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use hotpush_proto::control_client::ControlClient;
use tonic::transport::Channel;

use crate::client::{self, ClientError};
use crate::config::Config;

mod agent;
mod audit;
mod doctor;
mod drill;
mod init;
mod publish;
mod publisher;
mod repo;
mod repo_file;
mod serve;
mod status;

/// The wait condition did not hold before `--timeout`.
const EXIT_NOT_LIVE: u8 = 3;
/// The daemon is not running (sysexits EX_UNAVAILABLE).
const EXIT_UNAVAILABLE: u8 = 69;

#[derive(Parser)]
#[command(
    name = "hotpush-origin",
    version,
    about = "hotpush origin: publish urgent fixes to partner mirrors in minutes",
    after_help = "The emergency procedure: docs/SOP.md. Exit codes: 0 success, 1 error, \
                  3 publish wait condition not met, 69 origin daemon not running, \
                  78 config does not load."
)]
struct Cli {
    /// Origin config file.
    #[arg(long, short, global = true, default_value = "/etc/hotpush/origin.toml")]
    config: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    Init(init::Args),
    Serve(serve::Args),
    #[command(subcommand)]
    Agent(agent::Command),
    #[command(subcommand)]
    Repo(repo::Command),
    Publish(publish::Args),
    Status(status::Args),
    #[command(subcommand)]
    Publisher(publisher::Command),
    Doctor(doctor::Args),
    Drill(drill::Args),
    Audit(audit::Args),
    RepoFile(repo_file::Args),
}

/// Runs the command line.
pub fn run() -> ExitCode {
    let cli = Cli::parse();
    let config = cli.config.as_path();
    let result = match cli.command {
        Command::Init(args) => init::run(args),
        Command::Serve(args) => serve::run(config, args),
        Command::Agent(cmd) => agent::run(config, cmd),
        Command::Repo(cmd) => repo::run(cmd),
        Command::Publish(args) => publish::run(config, args),
        Command::Status(args) => status::run(config, args),
        Command::Publisher(cmd) => publisher::run(cmd),
        Command::Doctor(args) => doctor::run(config, args),
        Command::Drill(args) => drill::run(config, args),
        Command::Audit(args) => audit::run(config, args),
        Command::RepoFile(args) => repo_file::run(config, args),
    };
    result.unwrap_or_else(|e| {
        let code = hotpush_shared::daemon::report_failure("hotpush-origin", e.as_ref());
        match e.downcast_ref::<ClientError>() {
            Some(ClientError::Unavailable { .. } | ClientError::Unreachable(_)) => {
                ExitCode::from(EXIT_UNAVAILABLE)
            }
            _ => code,
        }
    })
}

fn load(path: &Path) -> anyhow::Result<Config> {
    Ok(Config::load(path)?)
}

/// Where the control service is: the local socket (default) or, for
/// publishers on other hosts, the origin's `control_listen` over mutual TLS.
#[derive(clap::Args, Clone, Default)]
struct Remote {
    /// The origin's control_listen URL, e.g. https://origin.example.org:7444
    #[arg(long, requires_all = ["origin_id", "identity"])]
    remote: Option<String>,
    /// The origin's id (printed by `hotpush-origin init`), pinned for --remote.
    #[arg(long)]
    origin_id: Option<String>,
    /// Directory with this publisher's cert.pem and key.pem (`publisher init`).
    #[arg(long)]
    identity: Option<PathBuf>,
}

impl Remote {
    /// A client of the control service: over mutual TLS with `--remote`,
    /// else through the local socket named in the config.
    async fn client(&self, config_path: &Path) -> anyhow::Result<ControlClient<Channel>> {
        if let (Some(url), Some(origin_id), Some(dir)) =
            (&self.remote, &self.origin_id, &self.identity)
        {
            return Ok(client::connect_remote(url, origin_id.parse()?, dir)?);
        }
        let config = load(config_path)?;
        Ok(client::connect_local(&config.control_socket).await?)
    }
}

/// Where clients reach this origin's HTTP: `--origin-url`, else
/// `public_url`, else the first `http_listen` address.
fn origin_base_url(config: &Config, given: Option<String>) -> Option<String> {
    given
        .or_else(|| config.public_url.clone())
        .or_else(|| {
            config
                .http_listen
                .first()
                .map(|a| hotpush_shared::url::PublicUrl::of_listener(*a).to_string())
        })
        .map(|u| u.trim_end_matches('/').to_owned())
}
