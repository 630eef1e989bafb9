//! The built-in HTTP server for the served tree, for partners without a
//! front end and for demos. Follows the `repodata` symlink like nginx does,
//! and writes one access-log line per request (target `access`).

use std::net::SocketAddr;
use std::path::PathBuf;

use axum::Router;
use axum::middleware;
use tower_http::services::ServeDir;

/// Serves `root` on every address until the process ends.
pub async fn serve(root: PathBuf, addrs: Vec<SocketAddr>) -> anyhow::Result<()> {
    let app = Router::new()
        .fallback_service(ServeDir::new(root))
        .layer(middleware::from_fn(hotpush_shared::daemon::access_log));
    Ok(hotpush_shared::daemon::serve_http(app, addrs, "the served tree").await?)
}
