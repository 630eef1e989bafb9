//! What both daemons do the same way: logging, exit codes, shutdown on
//! SIGINT/SIGTERM, binding listeners, and the set of running services.

use std::net::SocketAddr;
use std::process::ExitCode;

use tokio_util::sync::CancellationToken;

use crate::limits::ConnLimits;

/// Logs to stderr, filtered by `RUST_LOG` (default `info`), coloured only
/// on a terminal. Every line goes through [`OneLine`], so no value a peer
/// sent (a repo name, a path, a reason) can start a forged line.
pub fn init_logging() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(|| OneLine(std::io::stderr()))
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

/// A command whose output is piped into `head` (or any reader that stops
/// early) ends quietly with the shell's code for SIGPIPE, 141, instead of
/// panicking with a backtrace. Rust ignores SIGPIPE, so the write fails
/// with EPIPE and `println!` panics; resetting the signal would need
/// `unsafe` and would also kill a client writing to a closed socket
/// without a word. Other panics go to the default hook.
pub fn quiet_on_closed_stdout() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let message = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or("");
        if message.starts_with("failed printing to stdout") && message.contains("Broken pipe") {
            std::process::exit(141);
        }
        default(info);
    }));
}

/// A writer for one formatted log event: control characters other than the
/// event's final newline (and the escape that starts a colour code) are
/// written as `\xNN`, so an event is always exactly one line.
pub struct OneLine<W>(pub W);

impl<W: std::io::Write> std::io::Write for OneLine<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.write_all(buf)?;
        Ok(buf.len())
    }

    fn write_all(&mut self, buf: &[u8]) -> std::io::Result<()> {
        let body = buf.strip_suffix(b"\n").unwrap_or(buf);
        if !body.iter().any(|&b| is_escaped(b)) {
            return self.0.write_all(buf);
        }
        let mut out = Vec::with_capacity(buf.len() + 16);
        for &b in body {
            if is_escaped(b) {
                out.extend_from_slice(format!("\\x{b:02x}").as_bytes());
            } else {
                out.push(b);
            }
        }
        if body.len() < buf.len() {
            out.push(b'\n');
        }
        self.0.write_all(&out)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

/// Control characters a log line must not carry raw (ESC stays: colours).
fn is_escaped(b: u8) -> bool {
    (b < 0x20 && b != b'\t' && b != 0x1b) || b == 0x7f
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

/// A cap on log lines for events a peer can repeat at will (refused
/// handshakes, say): the lines over it are counted, and the count goes into
/// the next line that is written.
#[derive(Debug)]
pub struct LogThrottle {
    max_per_second: u32,
    /// (start of the current second, lines in it, lines suppressed since the last one written)
    state: std::sync::Mutex<(std::time::Instant, u32, u64)>,
}

impl LogThrottle {
    /// At most `max_per_second` lines a second.
    pub fn per_second(max_per_second: u32) -> Self {
        Self {
            max_per_second,
            state: std::sync::Mutex::new((std::time::Instant::now(), 0, 0)),
        }
    }

    /// `Some(lines suppressed since the last one)` when a line may be written now.
    pub fn allow(&self) -> Option<u64> {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let now = std::time::Instant::now();
        if now.duration_since(s.0) >= std::time::Duration::from_secs(1) {
            s.0 = now;
            s.1 = 0;
        }
        if s.1 >= self.max_per_second {
            s.2 += 1;
            return None;
        }
        s.1 += 1;
        Some(std::mem::take(&mut s.2))
    }
}

/// Raises the soft descriptor limit to the hard one (what systemd's
/// `LimitNOFILE` sets), and returns the soft limit now in force.
pub fn raise_fd_limit() -> usize {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut limit = getrlimit(Resource::Nofile);
    if limit.current != limit.maximum {
        limit.current = limit.maximum;
        if let Err(e) = setrlimit(Resource::Nofile, limit) {
            tracing::warn!(error = %e, "could not raise the descriptor limit");
        }
    }
    fd_limit()
}

/// The soft descriptor limit in force (unlimited reads as `usize::MAX`).
pub fn fd_limit() -> usize {
    rustix::process::getrlimit(rustix::process::Resource::Nofile)
        .current
        .map_or(usize::MAX, |n| usize::try_from(n).unwrap_or(usize::MAX))
}

/// `limits`, shrunk to fit this process's descriptor limit, with a warning
/// in the log when they had to be.
pub fn fitted_limits(limits: &ConnLimits, peers: usize) -> ConnLimits {
    let (fitted, warning) = limits.fit(fd_limit(), peers);
    if let Some(w) = warning {
        tracing::warn!("{w}");
    }
    fitted
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
/// `GET /path?query 200 1234 "user agent"` (status, then body bytes or
/// `-`, then the User-Agent, so that dnf, the origin's crawler and a
/// monitoring probe can be told apart).
pub async fn access_log(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let method = request.method().clone();
    let uri = request.uri().clone();
    let agent = request
        .headers()
        .get(axum::http::header::USER_AGENT)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).replace('"', "'"))
        .unwrap_or_else(|| "-".into());
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
    tracing::info!(target: "access", "{method} {uri} {} {bytes} \"{agent}\"", response.status().as_u16());
    response
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

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn a_log_event_is_always_one_line() {
        let mut w = OneLine(Vec::new());
        w.write_all(b"WARN metalink not served repo=x\r\nINFO forged line\n")
            .unwrap();
        w.write_all(b"INFO plain\n").unwrap();
        assert_eq!(
            String::from_utf8(w.0).unwrap(),
            "WARN metalink not served repo=x\\x0d\\x0aINFO forged line\nINFO plain\n"
        );
    }
}
