//! Sockets and TLS glue for tonic: dual-stack listeners, a TLS accept loop
//! that verifies peers with our own pinned verifier (tonic's built-in TLS
//! only knows CAs), gRPC channels over pinned TLS, and the local Unix socket.

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream, UnixStream};
use tokio::sync::mpsc;
use tokio_rustls::server::TlsStream;
use tokio_rustls::{TlsAcceptor, TlsConnector};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Channel, Endpoint, Uri};

use crate::identity::PeerId;

/// How long a peer may take to finish the TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Binds a TCP listener. `[::]:port` accepts IPv4 and IPv6 alike (dual
/// stack, whatever the host's `bindv6only` says).
pub fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let domain = socket2::Domain::for_address(addr);
    let socket = socket2::Socket::new(domain, socket2::Type::STREAM, Some(socket2::Protocol::TCP))?;
    if addr.is_ipv6() {
        socket.set_only_v6(!addr.ip().is_unspecified())?;
    }
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    TcpListener::from_std(socket.into())
}

/// Accepts TCP connections on every listener and completes the TLS
/// handshake off the accept loop, yielding only verified streams. Refusals
/// are logged (the verifier has already named the fingerprint).
pub fn tls_incoming(
    listeners: Vec<TcpListener>,
    acceptor: TlsAcceptor,
) -> ReceiverStream<Result<TlsStream<TcpStream>, io::Error>> {
    let (tx, rx) = mpsc::channel(64);
    for listener in listeners {
        let (tx, acceptor) = (tx.clone(), acceptor.clone());
        tokio::spawn(async move {
            loop {
                let (tcp, peer) = match listener.accept().await {
                    Ok(conn) => conn,
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let _ = tcp.set_nodelay(true);
                let (conn_tx, acceptor) = (tx.clone(), acceptor.clone());
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                        Ok(Ok(tls)) => {
                            let _ = conn_tx.send(Ok(tls)).await;
                        }
                        Ok(Err(e)) => tracing::warn!(%peer, error = %e, "TLS handshake refused"),
                        Err(_) => tracing::warn!(%peer, "TLS handshake timed out"),
                    }
                });
                if tx.is_closed() {
                    break;
                }
            }
        });
    }
    ReceiverStream::new(rx)
}

/// The pinned id of the client behind a request served over [`tls_incoming`].
pub fn peer_id<T>(request: &tonic::Request<T>) -> Option<PeerId> {
    let certs = request.peer_certs()?;
    PeerId::of_cert(certs.first()?).ok()
}

/// A lazily connecting gRPC channel to `https://host:port` over pinned
/// mutual TLS. tonic reconnects it by itself after a failure.
pub fn tls_channel(
    url: &str,
    config: Arc<rustls::ClientConfig>,
) -> Result<Channel, tonic::transport::Error> {
    // tonic must not do TLS itself: we hand it an already-encrypted stream.
    let plain = url.replacen("https://", "http://", 1);
    let endpoint = Endpoint::from_shared(plain)?
        .connect_timeout(Duration::from_secs(10))
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(20))
        .keep_alive_timeout(Duration::from_secs(20))
        .keep_alive_while_idle(true)
        .initial_stream_window_size(8 << 20)
        .initial_connection_window_size(16 << 20);
    let connector = TlsConnector::from(config);
    Ok(
        endpoint.connect_with_connector_lazy(tower::service_fn(move |uri: Uri| {
            let connector = connector.clone();
            async move {
                let host = uri
                    .host()
                    .unwrap_or("localhost")
                    .trim_start_matches('[')
                    .trim_end_matches(']')
                    .to_owned();
                let port = uri.port_u16().unwrap_or(443);
                let tcp = TcpStream::connect((host.as_str(), port)).await?;
                tcp.set_nodelay(true)?;
                // Names are not checked: the verifier pins the key instead.
                let name = rustls::pki_types::ServerName::try_from("hotpush.invalid")
                    .map_err(io::Error::other)?;
                let tls = connector.connect(name, tcp).await?;
                Ok::<_, io::Error>(TokioIo::new(tls))
            }
        })),
    )
}

/// A gRPC channel over a local Unix socket.
pub async fn unix_channel(path: PathBuf) -> Result<Channel, tonic::transport::Error> {
    Endpoint::from_static("http://localhost")
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let path = path.clone();
            async move { Ok::<_, io::Error>(TokioIo::new(UnixStream::connect(path).await?)) }
        }))
        .await
}

/// Formats a tonic status with its whole cause chain (TLS alerts live deep in it).
pub fn describe_status(status: &tonic::Status) -> String {
    // Status's Display adds the code and details; the message alone reads better.
    crate::daemon::describe_chain(
        status.message().to_string(),
        std::error::Error::source(status),
    )
}

/// Adds the likely cause to a connection failure. With TLS 1.3 a refused
/// client certificate surfaces as whatever the connection did next (an
/// alert, a reset, a broken pipe), so the text alone is not enough.
pub fn explain_connect_error(text: String) -> String {
    let has = |s: &str| text.contains(s);
    let hint = if has("ApplicationVerificationFailure") || has("UnknownIssuer") {
        "the agent presented a TLS id other than the one registered with `agent add --id`"
    } else if has("AccessDenied")
        || has("CertificateRequired")
        || has("BadCertificate")
        || has("UnknownCA")
    {
        "the agent refused this origin's TLS id: add it to origin_ids in the agent's config"
    } else if has("Connection refused") {
        "nothing listens there: is `hotpush-agent serve` running, and is the endpoint right?"
    } else if has("broken pipe")
        || has("connection closed")
        || has("operation was canceled")
        || has("reset by peer")
    {
        "the agent closed the connection after the TLS handshake; most often it does not list this \
         origin's id in origin_ids (its log names the id it refused)"
    } else if has("timed out") || has("deadline") {
        "no answer in time: a firewall, or the host is down"
    } else {
        return text;
    };
    format!("{text} ({hint})")
}
