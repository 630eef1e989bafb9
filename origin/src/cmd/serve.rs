//! `hotpush-origin serve`: runs the daemon until SIGINT/SIGTERM.

use std::path::Path;
use std::process::ExitCode;

use tokio_util::sync::CancellationToken;

use crate::Origin;
use crate::daemon::Listeners;

/// Run the origin daemon (reconcilers, control socket, metalink HTTP).
#[derive(clap::Args)]
#[command(
    after_help = "Example:\n  hotpush-origin -c /etc/hotpush/origin.toml serve\n\
                        (deploy/systemd/hotpush-origin.service runs it as a service)"
)]
pub struct Args {}

#[tokio::main]
pub async fn run(config_path: &Path, _args: Args) -> anyhow::Result<ExitCode> {
    let fd_limit = hotpush_shared::daemon::raise_fd_limit();
    tracing::debug!(fd_limit, "descriptor limit");
    let config = super::load(config_path)?;
    let socket = config.control_socket.clone();
    let listeners = Listeners::bind(&config)?;
    let shutdown = CancellationToken::new();
    let handle = Origin::spawn(config, listeners, shutdown.clone()).await?;
    tracing::info!(control = %socket.display(), http = ?handle.http_addrs, "listening");
    hotpush_shared::daemon::shutdown_signal().await;
    shutdown.cancel();
    handle.stopped().await;
    let _ = std::fs::remove_file(&socket);
    tracing::info!("hotpush-origin stopped");
    Ok(ExitCode::SUCCESS)
}
