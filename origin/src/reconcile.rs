//! Reconcilers: one task per agent × repo that pushes the newest version
//! until the agent acks it, with backoff while it is unreachable. So an
//! agent that was down catches up by itself, a newer publish supersedes one
//! still streaming, and no agent or repo ever waits for another.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use hotpush_shared::identity::{Identity, PinnedVerifier, client_config};
use hotpush_shared::manifest::Manifest;
use hotpush_shared::sign::SignedManifest;
use hotpush_shared::transport::tls_channel;
use tokio::task::JoinHandle;
use tonic::transport::Channel;

use crate::db::AgentRecord;
use crate::origin::{Event, EventKind, Origin};
use crate::pusher;

/// First retry delay after a failed push; doubles up to [`MAX_BACKOFF`].
pub const MIN_BACKOFF: Duration = Duration::from_millis(500);
/// Longest wait between retries of an unreachable agent.
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// How often the agent list and repo list are re-read.
const RESCAN: Duration = Duration::from_secs(1);

/// Keeps one reconciler running per registered agent × published repo.
pub async fn supervise(origin: Arc<Origin>, identity: Identity) {
    let mut running: HashMap<(String, String), (AgentRecord, JoinHandle<()>)> = HashMap::new();
    let mut channels: HashMap<String, (AgentRecord, Channel)> = HashMap::new();
    loop {
        match (origin.db.agents(), origin.db.repos()) {
            (Ok(agents), Ok(repos)) => {
                // Stop reconcilers of removed or changed agents.
                running.retain(|(name, _), (record, task)| {
                    let keep = agents.iter().any(|a| a == record) && !task.is_finished();
                    if !keep {
                        tracing::info!(agent = %name, "stopping reconciler");
                        task.abort();
                    }
                    keep
                });
                channels.retain(|_, (record, _)| agents.contains(record));
                for agent in &agents {
                    let channel = match channels.get(&agent.name) {
                        Some((_, c)) => c.clone(),
                        None => match connect(&identity, agent) {
                            Ok(c) => {
                                channels.insert(agent.name.clone(), (agent.clone(), c.clone()));
                                c
                            }
                            Err(e) => {
                                tracing::warn!(agent = %agent.name, error = %e, "bad agent record");
                                continue;
                            }
                        },
                    };
                    for repo in repos.iter().filter(|r| agent.carries(r)) {
                        let key = (agent.name.clone(), repo.clone());
                        if running.contains_key(&key) {
                            continue;
                        }
                        let task = tokio::spawn(reconcile(
                            origin.clone(),
                            agent.clone(),
                            repo.clone(),
                            channel.clone(),
                        ));
                        running.insert(key, (agent.clone(), task));
                    }
                }
            }
            (Err(e), _) | (_, Err(e)) => tracing::error!(error = %e, "reading agents"),
        }
        tokio::select! {
            _ = tokio::time::sleep(RESCAN) => {}
            _ = origin.rescan.notified() => {}
        }
    }
}

/// A pinned mTLS channel to `agent` (connects lazily).
pub fn connect(identity: &Identity, agent: &AgentRecord) -> anyhow::Result<Channel> {
    let id = agent.peer_id.parse()?;
    let config = client_config(identity, PinnedVerifier::new([id], "agent"))?;
    Ok(tls_channel(&agent.endpoint, config)?)
}

/// The loop for one agent × repo.
async fn reconcile(origin: Arc<Origin>, agent: AgentRecord, repo: String, channel: Channel) {
    let mut latest = origin.watch_latest(&repo);
    let mut backoff = MIN_BACKOFF;
    loop {
        let target = match origin.db.latest(&repo) {
            Ok(Some(v)) => v,
            Ok(None) => {
                let _ = latest.changed().await;
                continue;
            }
            Err(e) => {
                tracing::error!(error = %e, "reading versions");
                tokio::time::sleep(MAX_BACKOFF).await;
                continue;
            }
        };
        let acked = origin
            .db
            .acks(&repo)
            .ok()
            .and_then(|acks| acks.into_iter().find(|a| a.agent == agent.name))
            .is_some_and(|a| a.version >= target.version);
        if acked {
            // Nothing to do until a newer version is published.
            if latest.changed().await.is_err() {
                return;
            }
            continue;
        }
        let decoded = SignedManifest::from_bytes(&target.signed)
            .map_err(|e| e.to_string())
            .and_then(|s| {
                Manifest::decode(&s.manifest_bytes, &origin.config.limits)
                    .map(|m| (s, m))
                    .map_err(|e| e.to_string())
            });
        let (signed, manifest) = match decoded {
            Ok(pair) => pair,
            Err(e) => {
                tracing::error!(%repo, version = target.version, error = %e, "stored manifest is unreadable");
                let _ = latest.changed().await;
                continue;
            }
        };
        let version = target.version;
        let event = |kind| Event {
            agent: agent.name.clone(),
            repo: repo.clone(),
            version,
            kind,
        };
        let push = pusher::push(
            channel.clone(),
            &signed,
            &manifest,
            &origin.store,
            |phase, sent, wanted| {
                origin.emit(event(EventKind::Progress {
                    phase,
                    bytes_sent: sent,
                    bytes_wanted: wanted,
                }));
            },
        );
        tokio::pin!(push);
        // A newer publish supersedes a push still in flight.
        let result = tokio::select! {
            r = &mut push => Some(r),
            _ = superseded(&mut latest, version) => None,
        };
        match result {
            None => {
                tracing::info!(agent = %agent.name, %repo, version, "superseded by a newer version");
                backoff = MIN_BACKOFF;
            }
            Some(Ok(done)) => {
                let (verified, detail) = public_check(&agent, &repo, &done.ack);
                let digest = signed.digest();
                if let Err(e) =
                    origin
                        .db
                        .record_ack(&agent.name, &repo, version, &digest, verified, &detail)
                {
                    tracing::error!(error = %e, "recording ack");
                }
                if !verified {
                    let reason = format!("live on the agent, but clients do not see it: {detail}");
                    tracing::warn!(agent = %agent.name, %repo, version, %reason, retry_in = ?backoff, "public URL check failed");
                    backoff =
                        fail_and_wait(&origin, event(failed(reason)), &mut latest, backoff).await;
                    continue;
                }
                tracing::info!(agent = %agent.name, %repo, version, bytes = done.bytes_sent, ms = done.elapsed.as_millis() as u64, repomd = %hex::encode(&done.ack.repomd_sha256), "acked");
                origin.emit(event(EventKind::Acked {
                    elapsed_ms: done.elapsed.as_millis() as u64,
                    bytes_sent: done.bytes_sent,
                }));
                backoff = MIN_BACKOFF;
            }
            Some(Err(failure)) => {
                let reason = failure.to_string();
                tracing::warn!(agent = %agent.name, %repo, version, %reason, retry_in = ?backoff, "push failed");
                backoff = fail_and_wait(&origin, event(failed(reason)), &mut latest, backoff).await;
            }
        }
    }
}

/// Whether the agent's own check of its public URL counts: it must have
/// fetched the URL this origin lists in the metalink.
fn public_check(agent: &AgentRecord, repo: &str, ack: &hotpush_proto::Ack) -> (bool, String) {
    let listed = format!(
        "{}repodata/repomd.xml",
        crate::metalink::join_url(&agent.public_url, repo)
    );
    if !ack.public_verified {
        let detail = if ack.public_detail.is_empty() {
            "not checked".to_owned()
        } else {
            ack.public_detail.clone()
        };
        return (false, format!("{}: {detail}", ack.public_url));
    }
    if ack.public_url != listed {
        return (
            false,
            format!(
                "the agent checked {} but is registered with {listed}: fix --public-url or the agent's public_url",
                ack.public_url
            ),
        );
    }
    (true, String::new())
}

fn failed(reason: String) -> EventKind {
    EventKind::Failed {
        reason,
        will_retry: true,
    }
}

/// Reports a failed push, then waits out `backoff` (cut short by a newer
/// version); returns the next, longer backoff.
async fn fail_and_wait(
    origin: &Origin,
    event: Event,
    latest: &mut tokio::sync::watch::Receiver<u64>,
    backoff: std::time::Duration,
) -> std::time::Duration {
    let version = event.version;
    origin.emit(event);
    tokio::select! {
        _ = tokio::time::sleep(backoff) => {}
        _ = superseded(latest, version) => {}
    }
    (backoff * 2).min(MAX_BACKOFF)
}

/// Resolves once a version newer than `version` is announced.
async fn superseded(latest: &mut tokio::sync::watch::Receiver<u64>, version: u64) {
    loop {
        if *latest.borrow_and_update() > version {
            return;
        }
        if latest.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}
