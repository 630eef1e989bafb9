//! Sockets and TLS glue for tonic: dual-stack listeners, a TLS accept loop
//! that verifies peers with our own pinned verifier (tonic's built-in TLS
//! only knows CAs), gRPC channels over pinned TLS, and the local Unix socket.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream, UnixStream};
use tokio::sync::mpsc;
use tokio_rustls::server::TlsStream;
use tokio_rustls::{TlsAcceptor, TlsConnector};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::WaitForCancellationFutureOwned;
use tonic::transport::server::Connected;
use tonic::transport::{Channel, Endpoint, Uri};

use crate::admission::{Gate, Pass, PerKey, address_key};
use crate::daemon::LogThrottle;
use crate::identity::PeerId;
use crate::limits::ConnLimits;

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
/// handshake off the accept loop, yielding only verified streams, within
/// `limits`: handshakes are capped in total and per address (the oldest
/// pending one makes room for a new one), time out after
/// `tls_handshake_timeout_secs`, and each pinned peer holds at most
/// `max_connections_per_peer` established connections (a new one closes
/// its oldest). Refusals are logged, at most once a second.
pub fn tls_incoming(
    listeners: Vec<TcpListener>,
    acceptor: TlsAcceptor,
    limits: &ConnLimits,
) -> ReceiverStream<Result<Guarded<TlsStream<ReadAhead<TcpStream>>>, io::Error>> {
    let (tx, rx) = mpsc::channel(64);
    let handshakes = Gate::new(
        limits.max_tls_handshakes,
        limits.max_tls_handshakes_per_address,
        PerKey::Refuse,
    );
    // Only pinned peers get here, so the total is peers × per-peer.
    let peers = Gate::new(
        usize::MAX,
        limits.max_connections_per_peer,
        PerKey::EvictOldest,
    );
    let timeout = Duration::from_secs(limits.tls_handshake_timeout_secs.max(1));
    let throttle = Arc::new(LogThrottle::per_second(1));
    for listener in listeners {
        let (tx, acceptor) = (tx.clone(), acceptor.clone());
        let (handshakes, peers, throttle) = (handshakes.clone(), peers.clone(), throttle.clone());
        tokio::spawn(async move {
            loop {
                let (tcp, addr) = tokio::select! {
                    _ = tx.closed() => break,
                    accepted = crate::admission::accept(&listener) => accepted,
                };
                let Ok(pass) = handshakes.admit(address_key(addr.ip())) else {
                    if let Some(more) = throttle.allow() {
                        tracing::warn!(%addr, more, "refused a TLS connection: too many handshakes from this address");
                    }
                    continue;
                };
                let _ = tcp.set_nodelay(true);
                let (conn_tx, acceptor) = (tx.clone(), acceptor.clone());
                let (peers, throttle) = (peers.clone(), throttle.clone());
                tokio::spawn(async move {
                    let evicted = pass.evicted();
                    let handshake = tokio::select! {
                        done = tokio::time::timeout(timeout, acceptor.accept(ReadAhead::new(tcp))) => done,
                        _ = evicted.cancelled() => return,
                    };
                    drop(pass);
                    let mut tls = match handshake {
                        Ok(Ok(tls)) => tls,
                        Ok(Err(e)) => {
                            if let Some(more) = throttle.allow() {
                                tracing::warn!(%addr, error = %e, more, "TLS handshake refused");
                            }
                            return;
                        }
                        Err(_) => {
                            tracing::debug!(%addr, "TLS handshake timed out");
                            return;
                        }
                    };
                    let peer = tls
                        .get_ref()
                        .1
                        .peer_certificates()
                        .and_then(|certs| certs.first())
                        .and_then(|cert| PeerId::of_cert(cert).ok());
                    // The verifier admits only pinned certificates.
                    let Some(peer) = peer else { return };
                    let Ok(pass) = peers.admit(peer) else { return };
                    // Only now, for a pinned peer: batch reads, buffer more output.
                    let (io, session) = tls.get_mut();
                    io.arm();
                    session.set_buffer_limit(Some(TLS_SEND_BUFFER_BYTES));
                    let _ = conn_tx.send(Ok(Guarded::new(tls, pass))).await;
                });
            }
        });
    }
    ReceiverStream::new(rx)
}

/// A connection admitted by a [`Gate`]: reads and writes fail once the gate
/// closes it to make room, so the server drops it; dropping it frees its place.
pub struct Guarded<IO> {
    inner: IO,
    evicted: Pin<Box<WaitForCancellationFutureOwned>>,
    _pass: Pass<PeerId>,
}

impl<IO> Guarded<IO> {
    fn new(inner: IO, pass: Pass<PeerId>) -> Self {
        Self {
            inner,
            evicted: Box::pin(pass.evicted().cancelled_owned()),
            _pass: pass,
        }
    }

    fn check(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        match self.evicted.as_mut().poll(cx) {
            Poll::Ready(()) => Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "closed to make room for a newer connection from the same peer",
            )),
            Poll::Pending => Ok(()),
        }
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Guarded<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.check(cx)?;
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Guarded<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.check(cx)?;
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    // Without these h2 writes each frame header as a record of its own.
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.check(cx)?;
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

impl<IO: Connected> Connected for Guarded<IO> {
    type ConnectInfo = IO::ConnectInfo;
    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

/// A socket whose reads, once [`ReadAhead::arm`]ed, fetch up to
/// [`READ_AHEAD_BYTES`] at a time. rustls asks its socket for one TLS
/// record (at most ~16 KiB) per read, so a 1 GB push cost ~65,000 `recv`
/// calls and as many wake-ups per agent; batched, ~14 times fewer per byte
/// (strace on an agent during a cold push). Armed
/// only after the handshake, for a pinned peer, so the buffer is never
/// allocated for a stranger's connection. (tokio's `BufReader` allocates
/// its buffer up front, which a handshake flood would multiply.)
pub struct ReadAhead<IO> {
    io: IO,
    buf: Vec<u8>,
    pos: usize,
    end: usize,
    armed: bool,
}

/// Bytes one batched read may fetch.
pub const READ_AHEAD_BYTES: usize = 256 << 10;
/// How much encrypted output rustls may hold before a write: each write to
/// the socket carries up to this much (rustls's default, 64 KiB, made a
/// 256 KiB chunk four `writev` calls).
pub const TLS_SEND_BUFFER_BYTES: usize = 256 << 10;

impl<IO> ReadAhead<IO> {
    /// Unbuffered until armed.
    pub fn new(io: IO) -> Self {
        Self {
            io,
            buf: Vec::new(),
            pos: 0,
            end: 0,
            armed: false,
        }
    }

    /// Batches reads from now on.
    pub fn arm(&mut self) {
        self.armed = true;
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for ReadAhead<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.pos == this.end {
            if !this.armed || out.remaining() >= READ_AHEAD_BYTES {
                return Pin::new(&mut this.io).poll_read(cx, out);
            }
            if this.buf.is_empty() {
                this.buf = vec![0; READ_AHEAD_BYTES];
            }
            let mut fill = ReadBuf::new(&mut this.buf);
            std::task::ready!(Pin::new(&mut this.io).poll_read(cx, &mut fill))?;
            (this.pos, this.end) = (0, fill.filled().len());
        }
        let n = out.remaining().min(this.end - this.pos);
        out.put_slice(&this.buf[this.pos..this.pos + n]);
        this.pos += n;
        Poll::Ready(Ok(()))
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for ReadAhead<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

impl<IO: Connected> Connected for ReadAhead<IO> {
    type ConnectInfo = IO::ConnectInfo;
    fn connect_info(&self) -> Self::ConnectInfo {
        self.io.connect_info()
    }
}

/// The largest HTTP/2 frame a server accepts: a whole chunk fits in one
/// DATA frame, so the sender writes it in a few large writes rather than
/// 16 KiB frames (h2's default), each a TLS record and a system call of
/// its own. Flow-control windows, not frames, bound what a peer can make
/// the server buffer.
pub const H2_FRAME_BYTES: u32 = 1 << 20;
/// HTTP/2 flow-control window per stream: 8 MiB keeps a 1 Gbit/s push at
/// 50 ms round trips streaming.
pub const H2_WINDOW_BYTES: u32 = 8 << 20;
/// Per connection, twice that: one big push can never take the whole
/// window from a small one to another repo on the same connection, and
/// what one connection can make the server buffer stays bounded.
pub const H2_CONNECTION_WINDOW_BYTES: u32 = 2 * H2_WINDOW_BYTES;
/// Pings on an idle or stalled connection, and how long an answer may take.
fn keepalive(limits: &ConnLimits) -> Duration {
    Duration::from_secs(limits.keepalive_secs.max(1))
}

/// A gRPC server with the bounds of `limits`: streams per connection,
/// flow-control windows, keepalive pings that close dead connections.
pub fn grpc_server(limits: &ConnLimits) -> tonic::transport::Server {
    tonic::transport::Server::builder()
        .max_concurrent_streams(limits.max_streams_per_connection)
        .max_frame_size(H2_FRAME_BYTES)
        .initial_stream_window_size(H2_WINDOW_BYTES)
        .initial_connection_window_size(H2_CONNECTION_WINDOW_BYTES)
        .http2_keepalive_interval(Some(keepalive(limits)))
        .http2_keepalive_timeout(Some(keepalive(limits)))
        .http2_max_pending_accept_reset_streams(Some(32))
        .tcp_nodelay(true)
}

/// The pinned id of the client behind a request served over [`tls_incoming`].
pub fn peer_id<T>(request: &tonic::Request<T>) -> Option<PeerId> {
    let certs = request.peer_certs()?;
    PeerId::of_cert(certs.first()?).ok()
}

/// A lazily connecting gRPC channel to `https://host:port` over pinned
/// mutual TLS, pinging every `keepalive_secs` of `limits` so a dead peer
/// is noticed. tonic reconnects it by itself after a failure.
pub fn tls_channel(
    url: &str,
    config: Arc<rustls::ClientConfig>,
    limits: &ConnLimits,
) -> Result<Channel, tonic::transport::Error> {
    // tonic must not do TLS itself: we hand it an already-encrypted stream.
    let plain = url.replacen("https://", "http://", 1);
    let endpoint = Endpoint::from_shared(plain)?
        .connect_timeout(Duration::from_secs(10))
        .tcp_nodelay(true)
        .http2_keep_alive_interval(keepalive(limits))
        .keep_alive_timeout(keepalive(limits))
        .keep_alive_while_idle(true)
        .initial_stream_window_size(H2_WINDOW_BYTES)
        .initial_connection_window_size(H2_CONNECTION_WINDOW_BYTES);
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
                let mut tls = connector.connect(name, ReadAhead::new(tcp)).await?;
                let (io, session) = tls.get_mut();
                io.arm();
                session.set_buffer_limit(Some(TLS_SEND_BUFFER_BYTES));
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

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// Reads `total` bytes from `r` in reads of at most `ask` bytes.
    async fn read_all(
        r: &mut ReadAhead<tokio::io::DuplexStream>,
        ask: usize,
        total: usize,
    ) -> Vec<u8> {
        let mut got = Vec::new();
        let mut buf = vec![0u8; ask];
        while got.len() < total {
            let n = r.read(&mut buf).await.unwrap();
            assert!(n > 0, "early EOF");
            got.extend_from_slice(&buf[..n]);
        }
        got
    }

    #[tokio::test]
    async fn read_ahead_passes_bytes_through_and_buffers_only_once_armed() {
        let data: Vec<u8> = (0..3 * READ_AHEAD_BYTES + 123)
            .map(|i| (i % 251) as u8)
            .collect();
        let (mut tx, rx) = tokio::io::duplex(4 * READ_AHEAD_BYTES);
        tx.write_all(&data).await.unwrap();
        let mut r = ReadAhead::new(rx);

        // As a handshake reads: straight through, nothing allocated.
        let head = read_all(&mut r, 5, 1000).await;
        assert_eq!(head, data[..1000]);
        assert_eq!(
            r.buf.capacity(),
            0,
            "a stranger's connection gets no buffer"
        );

        // Armed: small reads are served from one buffer of bounded size.
        r.arm();
        let rest = read_all(&mut r, 16 << 10, data.len() - 1000).await;
        assert_eq!(rest, data[1000..]);
        assert_eq!(r.buf.len(), READ_AHEAD_BYTES);

        // Writes pass through untouched.
        r.write_all(b"pong").await.unwrap();
        let mut back = [0u8; 4];
        tx.read_exact(&mut back).await.unwrap();
        assert_eq!(&back, b"pong");
    }
}
