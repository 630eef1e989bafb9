//! Reconcilers: one task per target × repo that pushes the newest version
//! until the target acks it, with backoff while it is unreachable or
//! refuses. So a mirror that was down catches up by itself, a newer publish
//! supersedes a push still streaming, and no mirror or repo waits for another.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

use super::backoff::{Backoff, MAX_BACKOFF};
use super::{Event, EventKind, FailureKind, Phase, Source, Target, exchange};
use crate::identity::{Identity, IdentityError, PinnedVerifier, client_config};
use crate::limits::ConnLimits;
use crate::manifest::RepoName;
use crate::name::AgentName;
use crate::transport::tls_channel;

/// How often targets and repos are re-read even without a nudge.
const RESCAN: Duration = Duration::from_secs(1);

/// Keeps one reconciler running per target × repo until `shutdown`;
/// `limits` sets the connections' keepalive.
pub async fn supervise(
    source: Arc<dyn Source>,
    identity: Identity,
    limits: ConnLimits,
    shutdown: CancellationToken,
) {
    let mut running: HashMap<(AgentName, RepoName), (Target, JoinHandle<()>)> = HashMap::new();
    let mut channels: HashMap<AgentName, (Target, Channel)> = HashMap::new();
    loop {
        match (source.targets(), source.repos()) {
            (Ok(targets), Ok(repos)) => {
                // Stop reconcilers of removed or changed targets.
                running.retain(|(name, _), (target, task)| {
                    let keep = targets.contains(target) && !task.is_finished();
                    if !keep {
                        tracing::info!(agent = %name, "stopping reconciler");
                        task.abort();
                    }
                    keep
                });
                channels.retain(|_, (target, _)| targets.contains(target));
                for target in &targets {
                    let channel = match channels.get(&target.name) {
                        Some((_, c)) => c.clone(),
                        None => match connect(&identity, target, &limits) {
                            Ok(c) => {
                                channels.insert(target.name.clone(), (target.clone(), c.clone()));
                                c
                            }
                            Err(e) => {
                                tracing::warn!(agent = %target.name, error = %e, "cannot connect to this agent's endpoint");
                                continue;
                            }
                        },
                    };
                    for repo in repos.iter().filter(|r| target.carries(r)) {
                        let key = (target.name.clone(), repo.clone());
                        if running.contains_key(&key) {
                            continue;
                        }
                        let task = tokio::spawn(reconcile(
                            source.clone(),
                            target.clone(),
                            repo.clone(),
                            channel.clone(),
                        ));
                        running.insert(key, (target.clone(), task));
                    }
                }
            }
            (Err(e), _) | (_, Err(e)) => tracing::error!(error = %e, "reading targets and repos"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(RESCAN) => {}
            _ = source.announcements().roster_change() => {}
        }
    }
    for (_, (_, task)) in running {
        task.abort();
    }
}

/// Why no channel to a target could be made.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("TLS setup: {0}")]
    Tls(#[from] IdentityError),
    #[error("endpoint: {0}")]
    Endpoint(#[from] tonic::transport::Error),
}

/// A lazily connecting, pinned mTLS channel to `target`.
pub fn connect(
    identity: &Identity,
    target: &Target,
    limits: &ConnLimits,
) -> Result<Channel, ConnectError> {
    let config = client_config(identity, PinnedVerifier::new([target.peer_id], "agent"))?;
    Ok(tls_channel(&target.endpoint, config, limits)?)
}

/// Keeps `target` on the newest version of `repo`.
async fn reconcile(source: Arc<dyn Source>, target: Target, repo: RepoName, channel: Channel) {
    let mut latest = source.announcements().watch(&repo);
    let mut backoff = Backoff::default();
    loop {
        let snapshot = match source.latest(&repo) {
            Ok(Some(s)) => s,
            Ok(None) => {
                if latest.changed().await.is_err() {
                    return;
                }
                continue;
            }
            Err(e) => {
                tracing::error!(%repo, error = %e, "reading the newest version");
                tokio::time::sleep(MAX_BACKOFF).await;
                continue;
            }
        };
        let version = snapshot.version();
        let acked = source.acked(&target.name, &repo).ok().flatten();
        if acked.is_some_and(|v| v >= version) {
            // Nothing to do until a newer version is published.
            if latest.changed().await.is_err() {
                return;
            }
            continue;
        }
        let event = |kind| Event {
            target: target.name.clone(),
            repo: repo.clone(),
            version,
            kind,
        };
        let delta = acked.and_then(|base| source.delta(&repo, base, &snapshot));
        let push = exchange::push(
            channel.clone(),
            &snapshot,
            delta.as_deref(),
            source.blobs(),
            |phase: Phase, bytes_sent, bytes_wanted| {
                source.report(event(EventKind::Progress {
                    phase,
                    bytes_sent,
                    bytes_wanted,
                }));
            },
            source.may_flip(&target, &snapshot),
        );
        tokio::pin!(push);
        // A newer publish supersedes a push still in flight.
        let result = tokio::select! {
            r = &mut push => Some(r),
            _ = superseded(&mut latest, version) => None,
        };
        let (reason, kind) = match result {
            None => {
                tracing::info!(agent = %target.name, %repo, version, "superseded by a newer version");
                backoff.reset();
                continue;
            }
            Some(Ok(done)) => match source.record_ack(&target, &snapshot, &done.ack) {
                Ok(()) => {
                    tracing::info!(
                        agent = %target.name, %repo, version, bytes = done.bytes_sent,
                        offer_bytes = done.offer_bytes, ms = done.elapsed.as_millis() as u64,
                        repomd = %done.ack.repomd_sha256, "acked"
                    );
                    source.report(event(EventKind::Acked {
                        elapsed: done.elapsed,
                        bytes_sent: done.bytes_sent,
                        offer_bytes: done.offer_bytes,
                        ack: done.ack,
                    }));
                    backoff.reset();
                    continue;
                }
                Err(why) => (
                    format!("live on the agent, but clients do not see it: {why}"),
                    FailureKind::NotPublic,
                ),
            },
            Some(Err(failure)) => (failure.to_string(), failure.kind()),
        };
        let delay = backoff.next_delay();
        tracing::warn!(agent = %target.name, %repo, version, %reason, retry_in = ?delay, "push failed");
        source.report(event(EventKind::Failed {
            reason,
            kind,
            will_retry: true,
        }));
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = superseded(&mut latest, version) => {}
        }
    }
}

/// Resolves once a version newer than `version` is announced.
async fn superseded(latest: &mut watch::Receiver<u64>, version: u64) {
    loop {
        if *latest.borrow_and_update() > version {
            return;
        }
        if latest.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}
