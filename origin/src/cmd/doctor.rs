//! `hotpush-origin doctor`: is this origin ready for an emergency?

use std::path::Path;
use std::process::ExitCode;

use crate::doctor::examine;

/// Check keys, the daemon, every partner (id, clock, disk, repos) and every metalink.
#[derive(clap::Args)]
#[command(after_help = "Example:\n  hotpush-origin doctor --origin-url https://origin.example.org")]
pub struct Args {
    /// The metalink base URL clients use (default: public_url, else the first http_listen).
    #[arg(long)]
    origin_url: Option<String>,
}

#[tokio::main]
pub async fn run(config_path: &Path, args: Args) -> anyhow::Result<ExitCode> {
    let config = super::load(config_path)?;
    let base = super::origin_base_url(&config, args.origin_url);
    let findings = examine(&config, base).await;
    Ok(hotpush_shared::doctor::report(&findings))
}
