//! What both daemons do the same way: logging, shutdown on SIGINT/SIGTERM,
//! and serving an HTTP router on several addresses.

use std::net::SocketAddr;
use std::process::ExitCode;

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

/// Exit code for a config that does not load (sysexits EX_CONFIG).
pub const EXIT_CONFIG: u8 = 78;

/// Prints `<prog>: error: …` with every cause once, and picks the exit
/// code: [`EXIT_CONFIG`] when the config did not load, else 1.
pub fn report_failure(prog: &str, error: &(dyn std::error::Error + 'static)) -> ExitCode {
    eprintln!("{prog}: error: {}", describe_error(error));
    if error.downcast_ref::<crate::config::ConfigError>().is_some() {
        ExitCode::from(EXIT_CONFIG)
    } else {
        ExitCode::FAILURE
    }
}

/// A daemon's running services: one shutdown token, and the tasks to wait for.
pub struct Services {
    shutdown: CancellationToken,
    tasks: tokio::task::JoinSet<()>,
}

impl Services {
    /// No services yet; each one added stops when `shutdown` is cancelled.
    pub fn new(shutdown: CancellationToken) -> Self {
        Self {
            shutdown,
            tasks: tokio::task::JoinSet::new(),
        }
    }

    /// The token services watch.
    pub fn token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Runs `service` until it ends.
    pub fn spawn(&mut self, service: impl std::future::Future<Output = ()> + Send + 'static) {
        self.tasks.spawn(service);
    }

    /// Asks every service to stop.
    pub fn shutdown(&self) {
        self.shutdown.cancel();
    }

    /// Waits until every service has stopped.
    pub async fn stopped(mut self) {
        while self.tasks.join_next().await.is_some() {}
    }
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
