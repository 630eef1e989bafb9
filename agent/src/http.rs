//! The agent's HTTP servers: the built-in server for the served tree, for
//! partners without a front end and for demos (it follows the `repodata`
//! symlink like nginx does, and writes one access-log line per request,
//! target `access`), and the admin listener with `/metrics`.

use std::path::PathBuf;
use std::sync::Arc;

use axum::Router;
use axum::http::{StatusCode, header};
use axum::middleware;
use axum::response::IntoResponse;
use axum::routing::get;
use hotpush_shared::limits::ConnLimits;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower_http::services::ServeDir;

use crate::agent::Agent;

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

/// Serves `/metrics` on every admin listener until `shutdown`.
pub async fn serve_admin(
    agent: Arc<Agent>,
    listeners: Vec<TcpListener>,
    limits: &ConnLimits,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let app = Router::new().route(
        "/metrics",
        get(move || {
            let agent = agent.clone();
            async move {
                match agent.metrics.encode() {
                    Ok((text, content_type)) => {
                        ([(header::CONTENT_TYPE, content_type)], text).into_response()
                    }
                    Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
                }
            }
        }),
    );
    hotpush_shared::http::serve(app, listeners, "admin (metrics)", limits, shutdown).await
}
