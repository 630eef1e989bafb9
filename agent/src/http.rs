//! The built-in HTTP server for the served tree, for partners without a
//! front end and for demos. Follows the `repodata` symlink like nginx does,
//! and writes one access-log line per request (target `access`).

use std::path::PathBuf;

use axum::Router;
use axum::middleware;
use hotpush_shared::limits::ConnLimits;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower_http::services::ServeDir;

/// Serves `root` on every listener until `shutdown`.
pub async fn serve(
    root: PathBuf,
    listeners: Vec<TcpListener>,
    limits: &ConnLimits,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let app = Router::new()
        .fallback_service(ServeDir::new(root))
        .layer(middleware::from_fn(hotpush_shared::daemon::access_log));
    hotpush_shared::http::serve(app, listeners, "the served tree", limits, shutdown).await
}
