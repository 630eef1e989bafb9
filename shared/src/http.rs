//! The HTTP server both daemons run (the origin's metalink, status and
//! metrics; an agent's built-in file server), with the bounds `axum::serve`
//! lacks: a header-read timeout that also closes idle kept-alive
//! connections, a cap on open connections (the oldest idle one closed to
//! make room), and a per-address cap ([`crate::admission`]).

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use crate::admission::{Busy, Gate, PerKey, accept, address_key};
use crate::limits::ConnLimits;

/// How long a connection that was asked to close may take to finish the
/// response it is writing.
const CLOSE_GRACE: Duration = Duration::from_secs(5);

/// Serves `app` on every listener until `shutdown` (or a listener fails).
pub async fn serve(
    app: axum::Router,
    listeners: Vec<TcpListener>,
    what: &'static str,
    limits: &ConnLimits,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let gate = Gate::new(
        limits.max_http_connections,
        limits.max_http_connections_per_address,
        PerKey::Refuse,
    );
    let header_timeout = Duration::from_secs(limits.http_header_timeout_secs.max(1));
    let mut tasks = tokio::task::JoinSet::new();
    for listener in listeners {
        if let Ok(addr) = listener.local_addr() {
            tracing::info!(%addr, "serving {what} over HTTP");
        }
        tasks.spawn(accept_loop(
            listener,
            app.clone(),
            gate.clone(),
            header_timeout,
            shutdown.clone(),
        ));
    }
    while let Some(done) = tasks.join_next().await {
        done.map_err(std::io::Error::other)??;
    }
    Ok(())
}

async fn accept_loop(
    listener: TcpListener,
    app: axum::Router,
    gate: Arc<Gate<std::net::IpAddr>>,
    header_timeout: Duration,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    loop {
        let (tcp, peer) = tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            accepted = accept(&listener) => accepted,
        };
        // Refused: dropping the socket closes it at once, so a flood costs
        // us one descriptor per connection for microseconds.
        let Ok(pass) = gate.admit(address_key(peer.ip())) else {
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let (app, shutdown) = (app.clone(), shutdown.clone());
        tokio::spawn(async move {
            let evicted = pass.evicted();
            let service = hyper::service::service_fn(move |request| {
                let busy = pass.busy();
                handle(app.clone(), request, busy, peer)
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(header_timeout)
                .keep_alive(true)
                .serve_connection(TokioIo::new(tcp), service);
            tokio::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                // Only idle connections are evicted: drop it, closing the socket now.
                _ = evicted.cancelled() => tracing::debug!(%peer, "closed an idle HTTP connection to make room"),
                _ = shutdown.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(CLOSE_GRACE, conn).await;
                }
            }
        });
    }
}

/// Runs one request; the connection counts as busy until the response body
/// has been sent.
async fn handle(
    app: axum::Router,
    request: hyper::Request<Incoming>,
    busy: Busy,
    peer: SocketAddr,
) -> Result<hyper::Response<Body>, std::convert::Infallible> {
    let mut request = request.map(Body::new);
    request
        .extensions_mut()
        .insert(axum::extract::ConnectInfo(peer));
    let response = app.oneshot(request).await?;
    Ok(response.map(|body| Body::new(WhileSending { body, _busy: busy })))
}

/// A response body that keeps its connection marked busy until it is done.
struct WhileSending {
    body: Body,
    _busy: Busy,
}

impl http_body::Body for WhileSending {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}
