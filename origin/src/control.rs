//! The Control service (what `hotpush-origin publish` and `status` talk
//! to), over the local Unix socket, where file permissions decide who may
//! publish and the caller's uid is what the audit log records, or over
//! mutual TLS for pinned remote publishers. A thin edge: requests become
//! calls to [`crate::publish`], push events become wire events.

use std::collections::HashSet;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::Stream;
use hotpush_proto as pb;
use hotpush_proto::publish_event::Event as Ev;
use hotpush_shared::manifest::RepoName;
use hotpush_shared::push::{Event, EventKind};
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::origin::Origin;
use crate::publish::{Publication, PublishError, publish, resign_latest};
use crate::status::Report;

/// Events queued for one `publish` client; a slow client only slows its own stream.
const CLIENT_QUEUE: usize = 64;

/// The Control gRPC service.
pub struct ControlService {
    pub origin: Arc<Origin>,
}

/// Who is calling: the local user (uid from SO_PEERCRED on the Unix socket,
/// and its name) or the remote publisher (by its pinned TLS id).
fn caller<T>(origin: &Origin, request: &Request<T>) -> String {
    if let Some(cred) = request
        .extensions()
        .get::<tonic::transport::server::UdsConnectInfo>()
        .and_then(|info| info.peer_cred)
    {
        return local_user(cred.uid());
    }
    match hotpush_shared::transport::peer_id(request) {
        Some(id) => {
            let name = origin
                .config
                .publishers
                .iter()
                .find(|p| p.id == id)
                .map_or("?", |p| p.name.as_str());
            format!("publisher {name} ({})", &id.to_string()[..16])
        }
        None => "unknown".into(),
    }
}

/// A local user as the audit log names them: `alice (uid 1000)`.
pub fn local_user(uid: u32) -> String {
    match nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
        .ok()
        .flatten()
    {
        Some(user) => format!("{} (uid {uid})", user.name),
        None => format!("uid {uid}"),
    }
}

fn to_status(e: PublishError) -> Status {
    match e {
        PublishError::Db(_) | PublishError::Store { .. } => Status::internal(e.to_string()),
        _ => Status::failed_precondition(e.to_string()),
    }
}

/// The first event of a publish stream: what was published, to whom.
fn published(p: &Publication, agents: Vec<String>, settle: Duration) -> pb::PublishEvent {
    let m = &p.snapshot.manifest;
    pb::PublishEvent {
        event: Some(Ev::Published(pb::Published {
            settle_ms: settle.as_millis() as u64,
            repo: m.repo.to_string(),
            version: m.version,
            manifest_digest: Bytes::copy_from_slice(&p.snapshot.digest.0),
            entries: m.entries.len() as u64,
            total_bytes: m.total_bytes(),
            unreferenced_files: p.unreferenced.len() as u64,
            agents,
            new_blobs: p.new_blobs as u64,
            unchanged: p.unchanged,
        })),
    }
}

/// A push event as the wire's publish event.
fn to_wire(ev: Event) -> Ev {
    let agent = ev.target.to_string();
    match ev.kind {
        EventKind::Progress {
            phase,
            bytes_sent,
            bytes_wanted,
        } => Ev::Progress(pb::AgentProgress {
            agent,
            phase: pb::PushPhase::from(phase) as i32,
            bytes_sent,
            bytes_wanted,
        }),
        EventKind::Acked {
            elapsed,
            bytes_sent,
            offer_bytes,
            ..
        } => Ev::Acked(pb::AgentAcked {
            agent,
            version: ev.version,
            elapsed_ms: elapsed.as_millis() as u64,
            bytes_sent,
            offer_bytes,
        }),
        EventKind::Failed {
            reason, will_retry, ..
        } => Ev::Failed(pb::AgentFailed {
            agent,
            reason,
            will_retry,
        }),
    }
}

type EventStream = Pin<Box<dyn Stream<Item = Result<pb::PublishEvent, Status>> + Send>>;

#[tonic::async_trait]
impl pb::control_server::Control for ControlService {
    type PublishStream = EventStream;

    async fn publish(
        &self,
        request: Request<pb::PublishRequest>,
    ) -> Result<Response<EventStream>, Status> {
        let who = caller(&self.origin, &request);
        let req = request.into_inner();
        let repo = RepoName::new(&req.repo).map_err(|e| Status::invalid_argument(e.to_string()))?;
        let dir = PathBuf::from(&req.from_dir);
        let allow_changed_paths = req.allow_changed_paths;
        // Subscribe first, so no ack can slip past between publish and stream.
        let mut events = self.origin.events.subscribe();
        let origin = self.origin.clone();
        let (r, w) = (repo.clone(), who.clone());
        // No directory: sign the latest content again (a drill, or fresh expiry).
        let publication = tokio::task::spawn_blocking(move || {
            if dir.as_os_str().is_empty() {
                resign_latest(&origin, &r, &w)
            } else {
                publish(&origin, &r, &dir, &w, allow_changed_paths)
            }
        })
        .await
        .map_err(|e| Status::internal(e.to_string()))?;
        let publication = match publication {
            Ok(p) => p,
            Err(e) => {
                let _ = self.origin.db.audit(
                    &who,
                    "publish-refused",
                    repo.as_str(),
                    0,
                    "",
                    &e.to_string(),
                );
                tracing::warn!(%repo, %who, error = %e, "publish refused");
                return Err(to_status(e));
            }
        };
        let version = publication.snapshot.version();
        let agents: Vec<String> = self
            .origin
            .db
            .agents()
            .map_err(|e| Status::internal(e.to_string()))?
            .into_iter()
            .filter(|a| a.carries(&repo))
            .map(|a| a.name().to_string())
            .collect();
        let (tx, rx) = mpsc::channel(CLIENT_QUEUE);
        let settle = crate::flip::settle_for(
            self.origin.metalinks.served_repomd(&repo),
            publication.snapshot.repomd().map(|e| e.sha256),
            self.origin.config.settle,
        );
        let _ = tx
            .send(Ok(published(&publication, agents.clone(), settle)))
            .await;
        let mut latest = self.origin.announcements.watch(&repo);
        tokio::spawn(async move {
            let mut waiting: HashSet<String> = agents.into_iter().collect();
            while !waiting.is_empty() {
                let received = tokio::select! {
                    ev = events.recv() => ev,
                    newer = async { latest.wait_for(|v| *v > version).await.map(|v| *v) } => {
                        // A newer publish replaces this one: say so instead of waiting out --timeout.
                        let Ok(newer) = newer else { break };
                        for agent in waiting.drain() {
                            let reason = format!("superseded by version {newer} before this agent acked");
                            let event = Ev::Failed(pb::AgentFailed { agent, reason, will_retry: false });
                            let _ = tx.send(Ok(pb::PublishEvent { event: Some(event) })).await;
                        }
                        break;
                    }
                };
                let ev = match received {
                    Ok(ev) => ev,
                    Err(broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(broadcast::error::RecvError::Closed) => break,
                };
                if ev.repo != repo || ev.version != version || !waiting.contains(ev.target.as_str())
                {
                    continue;
                }
                if matches!(ev.kind, EventKind::Acked { .. }) {
                    waiting.remove(ev.target.as_str());
                }
                let event = Some(to_wire(ev));
                if tx.send(Ok(pb::PublishEvent { event })).await.is_err() {
                    break; // the caller hung up
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn status(
        &self,
        _request: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::OriginStatus>, Status> {
        let origin = self.origin.clone();
        let report = tokio::task::spawn_blocking(move || Report::collect(&origin))
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            .map_err(|e| Status::internal(e.to_string()))?;
        let report_json = serde_json::to_vec(&report)
            .map_err(|e| Status::internal(e.to_string()))?
            .into();
        Ok(Response::new(pb::OriginStatus { report_json }))
    }
}
