//! `hotpush-agent doctor`: is this mirror ready for an emergency?

use std::process::ExitCode;

/// Check identity, trust, directories, disk, descriptors, the public URL and the clock.
#[derive(clap::Args)]
#[command(after_help = "Example:\n  hotpush-agent doctor -c /etc/hotpush-agent/agent.toml")]
pub struct Args {
    #[command(flatten)]
    config: super::ConfigArg,
}

#[tokio::main]
pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let config = args.config.load()?;
    let findings = crate::doctor::examine(&config).await;
    Ok(hotpush_shared::doctor::report(&findings))
}
