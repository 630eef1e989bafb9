//! Starting the agent daemon: bound listeners and a shutdown token in, a
//! handle on the running services out. `hotpush-agent serve` binds what
//! the config names; tests bind port 0 and run several agents in one process.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use hotpush_proto::agent_server::AgentServer;
use hotpush_shared::daemon::{BindError, Services, bind_all};
use hotpush_shared::identity::{self, Identity, IdentityError, PinnedVerifier};
use hotpush_shared::store::{BlobStore, StoreError};
use hotpush_shared::transport;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use crate::agent::Agent;
use crate::config::Config;
use crate::service::AgentService;
use crate::state::{StateDir, StateError};
use crate::swap::{SwapError, Tree};

/// Why the agent could not start.
#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    #[error(transparent)]
    Bind(#[from] BindError),
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    #[error("creating serve_root {path}: {source}")]
    ServeRoot {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error("recovering an interrupted swap: {0}")]
    Recover(#[from] SwapError),
    #[error("TLS identity: {0}")]
    Identity(#[from] IdentityError),
    #[error("building the HTTP client for the public-URL check: {0}")]
    Http(#[from] reqwest::Error),
}

/// The sockets the agent serves on.
pub struct Listeners {
    /// Push and Status over mutual TLS.
    pub push: Vec<TcpListener>,
    /// The built-in HTTP server for the served tree (optional).
    pub http: Vec<TcpListener>,
    /// Metrics (optional).
    pub admin: Vec<TcpListener>,
}

impl Listeners {
    /// Binds what `config` names.
    pub fn bind(config: &Config) -> Result<Self, SpawnError> {
        Ok(Self {
            push: bind_all(&config.listen)?,
            http: bind_all(&config.http_listen)?,
            admin: bind_all(&config.admin_listen)?,
        })
    }
}

/// Opens the blob store, state and served tree that `config` names.
pub fn open_tree(config: &Config) -> Result<Tree, SpawnError> {
    Ok(Tree {
        store: BlobStore::open(&config.data_dir)?,
        state: StateDir::open(&config.data_dir, config.limits.clone())?,
        serve_root: config.serve_root.clone(),
        retain_for: config.retain_for,
    })
}

/// A running agent.
pub struct AgentHandle {
    pub agent: Arc<Agent>,
    /// Where the push listeners ended up (port 0 resolved).
    pub push_addrs: Vec<SocketAddr>,
    /// Where the built-in HTTP server listens.
    pub http_addrs: Vec<SocketAddr>,
    services: Services,
}

impl AgentHandle {
    /// Asks every service to stop.
    pub fn shutdown(&self) {
        self.services.shutdown();
    }

    /// Waits until every service has stopped.
    pub async fn stopped(self) {
        self.services.stopped().await;
    }
}

fn addrs(listeners: &[TcpListener]) -> Vec<SocketAddr> {
    listeners
        .iter()
        .filter_map(|l| l.local_addr().ok())
        .collect()
}

impl Agent {
    /// Opens the tree `config` names, finishes any swap a crash interrupted,
    /// and serves Push/Status (and the built-in HTTP server) on `listeners`
    /// until `shutdown`.
    pub async fn spawn(
        mut config: Config,
        listeners: Listeners,
        shutdown: CancellationToken,
    ) -> Result<AgentHandle, SpawnError> {
        // Connection caps never outgrow the descriptors this process may open.
        config.connections =
            hotpush_shared::daemon::fitted_limits(&config.connections, config.origin_ids.len());
        let identity = Identity::load(&config.tls_cert, &config.tls_key)?;
        let agent_id = identity.id()?;
        let tree = open_tree(&config)?;
        std::fs::create_dir_all(&config.serve_root).map_err(|source| SpawnError::ServeRoot {
            path: config.serve_root.clone(),
            source,
        })?;
        for repo in &config.repos {
            tree.recover(repo)?;
        }
        let tls = identity::server_config(
            &identity,
            PinnedVerifier::new(config.origin_ids.clone(), "origin"),
        )?;
        // Room for the largest message the limits allow, plus framing.
        let max_message = config
            .limits
            .max_manifest_bytes
            .max(config.limits.max_chunk_bytes)
            + (1 << 20);
        let serve_root = config.serve_root.clone();
        let http = crate::selfcheck::client()?;
        let metrics = crate::metrics::Metrics::new()?;
        let agent = Arc::new(Agent::new(config, tree, agent_id, http, metrics));
        for repo in &agent.config.repos {
            if let Ok(Some(live)) = agent.tree.state.current(repo) {
                agent.metrics.serving(repo, live.version());
            }
        }
        let (push_addrs, http_addrs) = (addrs(&listeners.push), addrs(&listeners.http));
        let mut services = Services::new(shutdown);

        if !listeners.http.is_empty() {
            let (stop, limits) = (services.token(), agent.config.connections.clone());
            services.spawn(async move {
                if let Err(e) = crate::http::serve(serve_root, listeners.http, &limits, stop).await
                {
                    tracing::error!(error = %e, "HTTP server failed");
                }
            });
        }

        if !listeners.admin.is_empty() {
            let (stop, limits, a) = (
                services.token(),
                agent.config.connections.clone(),
                agent.clone(),
            );
            services.spawn(async move {
                if let Err(e) = crate::http::serve_admin(a, listeners.admin, &limits, stop).await {
                    tracing::error!(error = %e, "admin listener failed");
                }
            });
        }

        let service = AgentServer::new(AgentService {
            agent: agent.clone(),
        })
        .max_decoding_message_size(max_message);
        let limits = agent.config.connections.clone();
        let incoming = transport::tls_incoming(listeners.push, TlsAcceptor::from(tls), &limits);
        let stop = services.token();
        services.spawn(async move {
            if let Err(e) = transport::grpc_server(&limits)
                .add_service(service)
                .serve_with_incoming_shutdown(incoming, stop.cancelled())
                .await
            {
                tracing::error!(error = %e, "push listener failed");
            }
        });
        tracing::info!(agent_id = %agent.agent_id, listen = ?push_addrs, "hotpush-agent ready");
        Ok(AgentHandle {
            agent,
            push_addrs,
            http_addrs,
            services,
        })
    }
}
