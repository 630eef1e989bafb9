//! The built-in HTTP server for the served tree, for partners without a
//! front end and for demos. Follows the `repodata` symlink like nginx does,
//! and writes one access-log line per request (target `access`).

use std::net::SocketAddr;
use std::path::PathBuf;

use axum::Router;
use axum::extract::Request;
use axum::middleware::{self, Next};
use axum::response::Response;
use tower_http::services::ServeDir;

async fn access_log(request: Request, next: Next) -> Response {
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let response = next.run(request).await;
    tracing::info!(target: "access", "{method} {path} {}", response.status().as_u16());
    response
}

/// Serves `root` on every address until the process ends.
pub async fn serve(root: PathBuf, addrs: Vec<SocketAddr>) -> anyhow::Result<()> {
    let app = Router::new()
        .fallback_service(ServeDir::new(root))
        .layer(middleware::from_fn(access_log));
    Ok(hotpush_shared::daemon::serve_http(app, addrs, "the served tree").await?)
}
