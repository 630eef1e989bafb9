//! Starting the origin daemon: bound listeners and a shutdown token in, a
//! handle on the running services out. `hotpush-origin serve` binds what
//! the config names; tests bind port 0 and run several daemons in one process.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use hotpush_proto::control_server::ControlServer;
use hotpush_shared::daemon::{BindError, Services, bind_all};
use hotpush_shared::identity::{Identity, IdentityError, PinnedVerifier, server_config};
use hotpush_shared::sign::{SignError, SigningKey};
use hotpush_shared::store::{BlobStore, StoreError};
use hotpush_shared::transport::{grpc_server, tls_incoming};
use tokio::net::{TcpListener, UnixListener};
use tokio_stream::wrappers::UnixListenerStream;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::control::ControlService;
use crate::db::{Db, DbError};
use crate::origin::Origin;

/// Why the daemon could not start.
#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    #[error("{0} is in use: another origin daemon is running")]
    SocketInUse(PathBuf),
    #[error("control socket {path}: {source}")]
    Socket {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Bind(#[from] BindError),
    #[error("creating {path}: {source}")]
    DataDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Db(#[from] DbError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    #[error("signing key: {0}")]
    Key(#[from] SignError),
    #[error("TLS identity: {0}")]
    Identity(#[from] IdentityError),
}

/// The sockets the daemon serves on.
pub struct Listeners {
    /// The local control socket: its permissions decide who may publish.
    pub control: UnixListener,
    /// The control service over mutual TLS, for remote publishers.
    pub remote_control: Vec<TcpListener>,
    /// Metalink, status and metrics.
    pub http: Vec<TcpListener>,
}

impl Listeners {
    /// Binds what `config` names. A control socket left by a daemon that
    /// died is replaced; one a running daemon answers on is an error.
    pub fn bind(config: &Config) -> Result<Self, SpawnError> {
        Ok(Self {
            control: bind_control_socket(&config.control_socket)?,
            remote_control: bind_all(&config.control_listen)?,
            http: bind_all(&config.http_listen)?,
        })
    }
}

fn bind_control_socket(path: &Path) -> Result<UnixListener, SpawnError> {
    use std::os::unix::fs::PermissionsExt;
    let err = |source| SpawnError::Socket {
        path: path.to_owned(),
        source,
    };
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(SpawnError::SocketInUse(path.to_owned()));
        }
        std::fs::remove_file(path).map_err(err)?;
    }
    let listener = UnixListener::bind(path).map_err(err)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660)).map_err(err)?;
    Ok(listener)
}

/// A running origin.
pub struct OriginHandle {
    pub origin: Arc<Origin>,
    /// Where the HTTP listeners ended up (port 0 resolved).
    pub http_addrs: Vec<SocketAddr>,
    services: Services,
}

impl OriginHandle {
    /// Asks every service to stop.
    pub fn shutdown(&self) {
        self.services.shutdown();
    }

    /// Waits until every service has stopped (after [`OriginHandle::shutdown`]
    /// or the token given to [`Origin::spawn`]).
    pub async fn stopped(self) {
        self.services.stopped().await;
    }
}

/// Serves the Control service on `incoming` until `stop`.
async fn serve_control<S, IO, E>(
    origin: Arc<Origin>,
    incoming: S,
    stop: CancellationToken,
    what: &'static str,
) where
    S: futures_util::Stream<Item = Result<IO, E>> + Send + 'static,
    IO: tokio::io::AsyncRead
        + tokio::io::AsyncWrite
        + tonic::transport::server::Connected
        + Unpin
        + Send
        + 'static,
    E: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let limits = origin.config.connections.clone();
    let control = ControlServer::new(ControlService { origin });
    if let Err(e) = grpc_server(&limits)
        .add_service(control)
        .serve_with_incoming_shutdown(incoming, stop.cancelled())
        .await
    {
        tracing::error!(error = %e, "{what} failed");
    }
}

impl Origin {
    /// Opens the state, keys and identity that `config` names, and starts
    /// the control service, the HTTP server and the reconcilers on
    /// `listeners`, until `shutdown`.
    pub async fn spawn(
        mut config: Config,
        listeners: Listeners,
        shutdown: CancellationToken,
    ) -> Result<OriginHandle, SpawnError> {
        let needed = config
            .connections
            .descriptors_needed(config.publishers.len());
        // Connection caps never outgrow the descriptors this process may open.
        config.connections =
            hotpush_shared::daemon::fitted_limits(&config.connections, config.publishers.len());
        std::fs::create_dir_all(&config.data_dir).map_err(|source| SpawnError::DataDir {
            path: config.data_dir.clone(),
            source,
        })?;
        let db = Db::open(&config.data_dir)?;
        let store = BlobStore::open(&config.data_dir)?;
        let key = SigningKey::load(&config.signing_key)?;
        let identity = Identity::load(&config.tls_cert, &config.tls_key)?;
        let origin_id = identity.id()?;
        let metrics = crate::metrics::Metrics::new()?;
        let origin = Origin::new(config, db, store, key, origin_id, needed, metrics);
        // Reconcilers start from what was published before this start.
        for repo in origin.db.repos()? {
            if let Some(snapshot) = origin.latest(&repo)? {
                origin.announce(snapshot, None);
            }
        }
        let mut services = Services::new(shutdown);
        services.spawn(serve_control(
            origin.clone(),
            UnixListenerStream::new(listeners.control),
            services.token(),
            "control socket",
        ));

        if !listeners.remote_control.is_empty() {
            // Remote publishers: the same service, over mutual TLS with pinned ids.
            let ids = origin.config.publishers.iter().map(|p| p.id);
            let tls = server_config(&identity, PinnedVerifier::new(ids, "publisher"))?;
            let incoming = tls_incoming(
                listeners.remote_control,
                tokio_rustls::TlsAcceptor::from(tls),
                &origin.config.connections,
            );
            services.spawn(serve_control(
                origin.clone(),
                incoming,
                services.token(),
                "control listener",
            ));
            tracing::info!(
                publishers = origin.config.publishers.len(),
                "remote publishing enabled"
            );
        }

        let http_addrs = listeners
            .http
            .iter()
            .filter_map(|l| l.local_addr().ok())
            .collect();
        services.spawn(crate::metalink::Metalinks::run(
            origin.clone(),
            services.token(),
        ));
        // The first documents are ready before the first request.
        origin.metalinks.refreshed().await;
        if !listeners.http.is_empty() {
            let (o, stop) = (origin.clone(), services.token());
            services.spawn(async move {
                if let Err(e) = crate::web::serve(o, listeners.http, stop).await {
                    tracing::error!(error = %e, "HTTP server failed");
                }
            });
        }

        services.spawn(crate::crawl::Crawls::run(origin.clone(), services.token()));
        services.spawn(hotpush_shared::push::supervise(
            origin.clone(),
            identity,
            origin.config.connections.clone(),
            services.token(),
        ));
        tracing::info!(origin_id = %origin.origin_id, "hotpush-origin ready");
        Ok(OriginHandle {
            origin,
            http_addrs,
            services,
        })
    }
}
