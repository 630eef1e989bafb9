//! What both daemons do the same way: logging, shutdown on SIGINT/SIGTERM,
//! and serving an HTTP router on several addresses.

use std::net::SocketAddr;

use tokio_util::sync::CancellationToken;

/// Logs to stderr, filtered by `RUST_LOG` (default `info`), coloured only on a terminal.
pub fn init_logging() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

/// An error and its causes on one line, each cause once (messages often
/// already quote their source, as `reading x: No such file` does).
pub fn describe_error(error: &(dyn std::error::Error + 'static)) -> String {
    describe_chain(error.to_string(), error.source())
}

/// `head` followed by each cause in `source`'s chain not already in the text.
pub fn describe_chain(
    head: String,
    mut source: Option<&(dyn std::error::Error + 'static)>,
) -> String {
    let mut text = head;
    while let Some(cause) = source {
        let part = cause.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = cause.source();
    }
    text
}

/// Resolves on Ctrl-C or SIGTERM (what systemd sends).
pub async fn shutdown_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

/// Middleware: one line per request, target `access`:
/// `GET /path?query 200 1234` (status, then body bytes or `-`).
pub async fn access_log(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let method = request.method().clone();
    let uri = request.uri().clone();
    let response = next.run(request).await;
    let bytes = response
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .or_else(|| {
            axum::body::HttpBody::size_hint(response.body())
                .exact()
                .map(|n| n.to_string())
        })
        .unwrap_or_else(|| "-".into());
    tracing::info!(target: "access", "{method} {uri} {} {bytes}", response.status().as_u16());
    response
}

/// Serves `app` on every listener until `shutdown` (or one fails).
pub async fn serve_http(
    app: axum::Router,
    listeners: Vec<tokio::net::TcpListener>,
    what: &'static str,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let mut tasks = tokio::task::JoinSet::new();
    for listener in listeners {
        if let Ok(addr) = listener.local_addr() {
            tracing::info!(%addr, "serving {what} over HTTP");
        }
        let stop = shutdown.clone();
        tasks.spawn(
            axum::serve(listener, app.clone())
                .with_graceful_shutdown(async move { stop.cancelled().await })
                .into_future(),
        );
    }
    while let Some(done) = tasks.join_next().await {
        done.map_err(std::io::Error::other)??;
    }
    Ok(())
}

/// Binds every address (dual-stack for `[::]`), naming the one that fails.
pub fn bind_all(addrs: &[SocketAddr]) -> Result<Vec<tokio::net::TcpListener>, BindError> {
    addrs
        .iter()
        .map(|a| crate::transport::bind(*a).map_err(|source| BindError { addr: *a, source }))
        .collect()
}

/// A listener that could not be bound.
#[derive(Debug, thiserror::Error)]
#[error("binding {addr}: {source}")]
pub struct BindError {
    pub addr: SocketAddr,
    pub source: std::io::Error,
}
