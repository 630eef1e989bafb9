//! A client of the origin's Control service: publish and wait, and status.
//! The CLI renders what these return; tests call them directly.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use hotpush_proto as pb;
use hotpush_proto::control_client::ControlClient;
use hotpush_proto::publish_event::Event as Ev;
use hotpush_shared::identity::{Identity, IdentityError, PeerId, PinnedVerifier, client_config};
use hotpush_shared::push::Phase;
use hotpush_shared::transport::{tls_channel, unix_channel};
use serde::Serialize;
use tonic::transport::Channel;

use crate::status::Report;

/// Why a call to the daemon failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach the origin daemon at {path}: is `hotpush-origin serve` running? ({why})")]
    Unavailable { path: String, why: String },
    /// The control service did not answer (a remote origin, or a local
    /// daemon that went away after the connection was made).
    #[error(
        "cannot reach the origin's control service: {0} (is `hotpush-origin serve` running, its control_listen reachable from here, and, from another host, your publisher id listed as a [[publisher]] in origin.toml?)"
    )]
    Unreachable(String),
    #[error("publish refused: {0}")]
    Refused(String),
    #[error("origin daemon: {0}")]
    Daemon(String),
    #[error("the origin daemon closed the stream before confirming the publish")]
    Closed,
    #[error("the origin daemon sent a status report this client cannot read: {0}")]
    BadReport(serde_json::Error),
    #[error("--wait must be all, quorum or a number, not {0:?}")]
    BadWait(String),
    #[error(transparent)]
    Identity(#[from] IdentityError),
    #[error("{0}")]
    Transport(#[from] tonic::transport::Error),
}

/// Connects through the local control socket.
pub async fn connect_local(socket: &Path) -> Result<ControlClient<Channel>, ClientError> {
    let channel = unix_channel(socket.to_owned()).await.map_err(|e| {
        let mut why = hotpush_shared::daemon::describe_error(&e);
        if why.contains("Permission denied") {
            why.push_str(
                "; whoever may write to the control socket may publish: ask to be added to its group",
            );
        }
        ClientError::Unavailable {
            path: socket.display().to_string(),
            why,
        }
    })?;
    Ok(ControlClient::new(channel))
}

/// Connects to a remote origin's `control_listen` over mutual TLS, pinning
/// `origin_id` and presenting the publisher identity in `identity_dir`.
pub fn connect_remote(
    url: &str,
    origin_id: PeerId,
    identity_dir: &Path,
) -> Result<ControlClient<Channel>, ClientError> {
    let identity = Identity::load(
        &identity_dir.join("cert.pem"),
        &identity_dir.join("key.pem"),
    )?;
    let tls = client_config(&identity, PinnedVerifier::new([origin_id], "origin"))?;
    Ok(ControlClient::new(tls_channel(
        url,
        tls,
        &hotpush_shared::limits::ConnLimits::default(),
    )?))
}

/// When `publish` returns: `--wait all|quorum|N`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wait {
    All,
    Quorum,
    Count(usize),
}

impl std::str::FromStr for Wait {
    type Err = ClientError;
    fn from_str(s: &str) -> Result<Self, ClientError> {
        match s {
            "all" => Ok(Wait::All),
            "quorum" => Ok(Wait::Quorum),
            n => n
                .parse()
                .map(Wait::Count)
                .map_err(|_| ClientError::BadWait(n.to_owned())),
        }
    }
}

impl std::fmt::Display for Wait {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Wait::All => f.write_str("all"),
            Wait::Quorum => f.write_str("quorum"),
            Wait::Count(n) => write!(f, "{n}"),
        }
    }
}

impl Serialize for Wait {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl Wait {
    /// How many of `n` agents must be live: at least one, since a
    /// publish no mirror serves reached no client.
    pub fn needed(self, n: usize) -> usize {
        match self {
            Wait::All => n,
            Wait::Quorum => n / 2 + 1,
            Wait::Count(k) => k,
        }
        .max(1)
    }
}

/// What the daemon published.
#[derive(Clone, Debug, Serialize)]
pub struct Published {
    pub repo: String,
    pub version: u64,
    pub manifest_digest: String,
    pub entries: u64,
    pub total_bytes: u64,
    pub new_blobs: u64,
    pub unreferenced_files: u64,
    /// Same content as the previous version.
    pub unchanged: bool,
    /// Milliseconds between every mirror staging and the flip.
    pub settle_ms: u64,
    /// Agents that carry the repo.
    #[serde(skip)]
    pub agents: Vec<String>,
}

impl From<pb::Published> for Published {
    fn from(p: pb::Published) -> Self {
        Self {
            repo: p.repo,
            version: p.version,
            manifest_digest: hex::encode(&p.manifest_digest),
            entries: p.entries,
            total_bytes: p.total_bytes,
            new_blobs: p.new_blobs,
            unreferenced_files: p.unreferenced_files,
            unchanged: p.unchanged,
            settle_ms: p.settle_ms,
            agents: p.agents,
        }
    }
}

/// Where one agent stands, as `publish` sees it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// Nothing heard yet.
    #[default]
    Pending,
    Pushing,
    /// Serves the new version.
    Live,
    /// The last attempt failed (the daemon retries).
    Failed,
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Outcome::Pending => "pending",
            Outcome::Pushing => "pushing",
            Outcome::Live => "live",
            Outcome::Failed => "failed",
        })
    }
}

/// One agent's outcome.
#[derive(Clone, Debug, Default, Serialize)]
pub struct AgentOutcome {
    pub state: Outcome,
    pub bytes_sent: u64,
    /// Bytes of manifest offered: a delta's, or the whole manifest's.
    pub offer_bytes: u64,
    pub elapsed_ms: u64,
    pub reason: String,
}

/// Something `publish` reports as it happens.
#[derive(Debug)]
pub enum Update<'a> {
    Published(&'a Published),
    Progress {
        agent: &'a str,
        phase: Phase,
        bytes_sent: u64,
        bytes_wanted: u64,
    },
    Acked {
        agent: &'a str,
        outcome: &'a AgentOutcome,
    },
    Failed {
        agent: &'a str,
        reason: &'a str,
        will_retry: bool,
    },
}

/// How a publish ended.
#[derive(Debug, Serialize)]
pub struct Summary {
    #[serde(flatten)]
    pub published: Published,
    pub wait: Wait,
    pub needed: usize,
    pub live: usize,
    pub ok: bool,
    pub agents: BTreeMap<String, AgentOutcome>,
}

/// How to publish, beyond what and where.
#[derive(Clone, Copy, Debug, Default)]
pub struct Options {
    /// Publish even if paths the recent snapshots serve get other bytes.
    pub allow_changed_paths: bool,
}

/// Publishes `from` as the next version of `repo` (with `None`: the latest
/// content, signed again), then follows every agent until `wait` holds or
/// `timeout` passes. `on` sees each update as it happens.
pub async fn publish(
    client: &mut ControlClient<Channel>,
    repo: &str,
    from: Option<PathBuf>,
    wait: Wait,
    timeout: Duration,
    options: Options,
    mut on: impl FnMut(Update<'_>),
) -> Result<Summary, ClientError> {
    let request = pb::PublishRequest {
        repo: repo.to_owned(),
        from_dir: from.map(|p| p.display().to_string()).unwrap_or_default(),
        allow_changed_paths: options.allow_changed_paths,
    };
    let mut events = client
        .publish(request)
        .await
        .map_err(|s| call_failed(s, ClientError::Refused))?
        .into_inner();
    let deadline = tokio::time::Instant::now() + timeout;
    let mut agents: BTreeMap<String, AgentOutcome> = BTreeMap::new();
    let mut published: Option<Published> = None;
    let mut needed = usize::MAX;
    let live = |agents: &BTreeMap<String, AgentOutcome>| {
        agents.values().filter(|o| o.state == Outcome::Live).count()
    };
    while live(&agents) < needed {
        let event = match tokio::time::timeout_at(deadline, events.message()).await {
            Err(_) | Ok(Ok(None)) => break,
            Ok(Err(status)) => return Err(ClientError::Daemon(status.message().to_owned())),
            Ok(Ok(Some(pb::PublishEvent { event: Some(e) }))) => e,
            Ok(Ok(Some(_))) => continue,
        };
        match event {
            Ev::Published(p) => {
                let p = Published::from(p);
                needed = wait.needed(p.agents.len());
                for a in &p.agents {
                    agents.insert(a.clone(), AgentOutcome::default());
                }
                on(Update::Published(&p));
                let nobody = p.agents.is_empty();
                published = Some(p);
                if nobody {
                    // Nothing will ever ack: say so now, not at the timeout.
                    break;
                }
            }
            Ev::Progress(p) => {
                let o = agents.entry(p.agent.clone()).or_default();
                // A retry after a failure stays "failed" (with its reason) until it acks.
                if matches!(o.state, Outcome::Pending | Outcome::Pushing) {
                    o.state = Outcome::Pushing;
                    o.bytes_sent = p.bytes_sent;
                }
                if let Ok(phase) = Phase::try_from(p.phase()) {
                    on(Update::Progress {
                        agent: &p.agent,
                        phase,
                        bytes_sent: p.bytes_sent,
                        bytes_wanted: p.bytes_wanted,
                    });
                }
            }
            Ev::Acked(a) => {
                let o = agents.entry(a.agent.clone()).or_default();
                *o = AgentOutcome {
                    state: Outcome::Live,
                    bytes_sent: a.bytes_sent,
                    offer_bytes: a.offer_bytes,
                    elapsed_ms: a.elapsed_ms,
                    reason: String::new(),
                };
                on(Update::Acked {
                    agent: &a.agent,
                    outcome: o,
                });
            }
            Ev::Failed(f) => {
                let o = agents.entry(f.agent.clone()).or_default();
                o.state = Outcome::Failed;
                o.reason = f.reason.clone();
                on(Update::Failed {
                    agent: &f.agent,
                    reason: &f.reason,
                    will_retry: f.will_retry,
                });
            }
        }
    }
    let published = published.ok_or(ClientError::Closed)?;
    let live = live(&agents);
    Ok(Summary {
        published,
        wait,
        needed,
        live,
        ok: live >= needed,
        agents,
    })
}

/// A call's error: no connection at all, or what the daemon answered.
fn call_failed(s: tonic::Status, answered: fn(String) -> ClientError) -> ClientError {
    // A status the daemon sent has no source; one made on this side from
    // a failed connection has. An origin that refuses an unpinned
    // publisher closes the connection after the TLS handshake, which the
    // call sees as Unavailable, Cancelled or Unknown ("transport error")
    // depending on timing.
    let from_transport = std::error::Error::source(&s).is_some();
    match s.code() {
        tonic::Code::Unavailable | tonic::Code::Cancelled => {
            ClientError::Unreachable(s.message().to_owned())
        }
        tonic::Code::Unknown if from_transport => {
            ClientError::Unreachable(hotpush_shared::daemon::describe_error(&s))
        }
        _ => answered(s.message().to_owned()),
    }
}

/// The daemon's status report.
pub async fn status(client: &mut ControlClient<Channel>) -> Result<Report, ClientError> {
    let reply = client
        .status(pb::StatusRequest {})
        .await
        .map_err(|s| call_failed(s, ClientError::Daemon))?
        .into_inner();
    serde_json::from_slice(&reply.report_json).map_err(ClientError::BadReport)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;

    #[test]
    fn wait_targets() {
        let w = |s: &str| s.parse::<Wait>().unwrap();
        assert_eq!(w("all").needed(3), 3);
        assert_eq!(w("quorum").needed(3), 2);
        assert_eq!(w("quorum").needed(4), 3);
        assert_eq!(w("2").needed(3), 2);
        assert_eq!(w("all").needed(0), 1, "no partner is never success");
        assert_eq!(w("0").needed(3), 1);
        assert!("most".parse::<Wait>().is_err());
    }
}
