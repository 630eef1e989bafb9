//! `hotpush-agent serve`: runs the agent until SIGINT/SIGTERM.

use std::process::ExitCode;

use tokio_util::sync::CancellationToken;

use crate::Agent;
use crate::daemon::Listeners;

/// Run the agent.
#[derive(clap::Args)]
#[command(
    after_help = "Example:\n  hotpush-agent serve -c /etc/hotpush-agent/agent.toml\n\
                        (deploy/systemd/hotpush-agent.service runs it as a service)"
)]
pub struct Args {
    #[command(flatten)]
    config: super::ConfigArg,
}

#[tokio::main]
pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    // Reads FAILPOINTS; with it unset every failpoint is a no-op.
    let _failpoints = fail::FailScenario::setup();
    let fd_limit = hotpush_shared::daemon::raise_fd_limit();
    tracing::debug!(fd_limit, "descriptor limit");
    let config = args.config.load()?;
    let listeners = Listeners::bind(&config)?;
    let shutdown = CancellationToken::new();
    let handle = Agent::spawn(config, listeners, shutdown.clone()).await?;
    hotpush_shared::daemon::shutdown_signal().await;
    shutdown.cancel();
    handle.stopped().await;
    tracing::info!("hotpush-agent stopped");
    Ok(ExitCode::SUCCESS)
}
