//! One Push exchange on the agent (docs/PROTOCOL.md), free of gRPC types:
//! Offer → verify ([`crate::verify`]) → Want → Chunk* → Commit → swap
//! ([`crate::swap`]) → public-URL check → Ack, or Reject.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use hotpush_proto as pb;
use hotpush_shared::Sha256Digest;
use hotpush_shared::ack::{Ack, Timings};
use hotpush_shared::manifest::RepoName;
use hotpush_shared::snapshot::Snapshot;
use hotpush_shared::store::{PartialBlob, StoreError};
use tokio::sync::mpsc;

use crate::agent::Agent;
use crate::failpoint::stage;
use crate::selfcheck;
use crate::swap::SwapError;
use crate::verify::{Freshness, Verdict, VerifyError, against_installed, verify_offer};

/// What the origin sends, decoded.
#[derive(Debug)]
pub enum Inbound {
    Offer(pb::SignedManifest),
    Chunk {
        digest: Bytes,
        offset: u64,
        data: Bytes,
    },
    Commit,
    /// A message that does not decode or has no body.
    Malformed(String),
}

/// What the agent answers.
#[derive(Debug)]
pub enum Outbound {
    Want(Vec<(Sha256Digest, u64)>),
    Ack(Ack),
    Reject(pb::RejectCode, String),
}

/// Why a push was refused. Each message names the problem for the origin's
/// operator; [`PushError::code`] classifies it on the wire.
#[derive(Debug, thiserror::Error)]
pub enum PushError {
    #[error(transparent)]
    Verify(#[from] VerifyError),
    #[error("chunk for blob {0}, which was not wanted")]
    Unwanted(String),
    #[error("chunk of {len} bytes is over the limit of {max}")]
    ChunkTooLarge { len: usize, max: usize },
    #[error(transparent)]
    Blob(#[from] StoreError),
    #[error("protocol error: {0}")]
    Protocol(String),
    #[error("superseded: version {newer} of {repo} was offered while {older} was in flight")]
    Superseded {
        repo: RepoName,
        older: u64,
        newer: u64,
    },
    #[error(
        "not enough disk space on {path}: need {need} bytes plus {reserve} reserve, {free} free"
    )]
    DiskFull {
        path: String,
        need: u64,
        reserve: u64,
        free: u64,
    },
    #[error("swap failed, old snapshot still live: {0}")]
    Swap(#[from] SwapError),
    #[error("blob {0} is being received by another push that did not let go")]
    Busy(Sha256Digest),
}

impl PushError {
    /// The wire code.
    pub fn code(&self) -> pb::RejectCode {
        use pb::RejectCode as C;
        match self {
            PushError::Verify(e) => e.code(),
            PushError::ChunkTooLarge { .. } => C::RejectLimit,
            PushError::Blob(StoreError::Io { source, .. }) if is_disk_full(source) => C::RejectDisk,
            PushError::Blob(_) => C::RejectBadBlob,
            PushError::Unwanted(_) | PushError::Protocol(_) | PushError::Busy(_) => {
                C::RejectProtocol
            }
            PushError::Superseded { .. } => C::RejectSuperseded,
            PushError::DiskFull { .. } => C::RejectDisk,
            PushError::Swap(e) if e.is_disk_full() => C::RejectDisk,
            PushError::Swap(_) => C::RejectInternal,
        }
    }
}

fn is_disk_full(e: &std::io::Error) -> bool {
    e.raw_os_error() == Some(28) || e.kind() == std::io::ErrorKind::StorageFull
}

fn ack_for(snapshot: &Snapshot, timings: Timings) -> Ack {
    Ack {
        repo: snapshot.repo().clone(),
        version: snapshot.version(),
        manifest_digest: snapshot.digest,
        // Every valid manifest lists repomd.xml (Manifest::decode checks).
        repomd_sha256: snapshot
            .repomd()
            .map_or(Sha256Digest([0; 32]), |e| e.sha256),
        timings,
        public: Default::default(),
    }
}

/// Free bytes on the filesystem holding `path`.
fn free_bytes(path: &std::path::Path) -> Option<u64> {
    let st = rustix::fs::statvfs(path).ok()?;
    Some(st.f_bavail.saturating_mul(st.f_frsize))
}

/// Runs one push to completion, sending the outcome on `out`.
pub async fn run<S>(agent: Arc<Agent>, mut inbound: S, out: mpsc::Sender<Outbound>)
where
    S: Stream<Item = Inbound> + Unpin,
{
    match session(&agent, &mut inbound, &out).await {
        Ok(Some(mut ack)) => {
            ack.public = selfcheck::check(
                &agent.http,
                agent.config.public_repomd_url(&ack.repo),
                ack.repomd_sha256,
            )
            .await;
            stage("push::before_ack");
            tracing::info!(repo = %ack.repo, version = ack.version, public_verified = ack.public.verified, "acked: snapshot is live");
            let repo = ack.repo.clone();
            let _ = out.send(Outbound::Ack(ack)).await;
            // Garbage collection after the ack: it never delays a publish.
            let collected =
                tokio::task::spawn_blocking(move || agent.tree.collect_garbage(&repo)).await;
            if let Ok(Err(e)) = collected {
                tracing::warn!(error = %e, "garbage collection failed");
            }
        }
        Ok(None) => tracing::info!(
            "push stream closed by the origin before Commit; partial blobs kept for resume"
        ),
        Err(e) => {
            tracing::warn!(code = ?e.code(), reason = %e, "push refused");
            let _ = out.send(Outbound::Reject(e.code(), e.to_string())).await;
        }
    }
}

/// Releases a claimed blob when the push ends, however it ends.
struct Claim<'a> {
    agent: &'a Agent,
    digest: Sha256Digest,
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        self.agent.release(&self.digest);
    }
}

async fn claim(agent: &Agent, digest: Sha256Digest) -> Result<Claim<'_>, PushError> {
    // A superseded push lets go within moments; wait for it rather than fail.
    for _ in 0..200 {
        if agent.claim(digest) {
            return Ok(Claim { agent, digest });
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err(PushError::Busy(digest))
}

/// The installed snapshot of `repo`, for step 5 (an unreadable state
/// counts as nothing installed only if it is absent; a read error refuses).
fn installed(agent: &Agent, repo: &RepoName) -> Result<Option<crate::state::Installed>, PushError> {
    Ok(agent.tree.state.current(repo).map_err(SwapError::from)?)
}

async fn session<S>(
    agent: &Agent,
    inbound: &mut S,
    out: &mpsc::Sender<Outbound>,
) -> Result<Option<Ack>, PushError>
where
    S: Stream<Item = Inbound> + Unpin,
{
    let started = Instant::now();
    let offer = match inbound.next().await {
        None => return Ok(None),
        Some(Inbound::Offer(offer)) => offer,
        Some(Inbound::Malformed(why)) => return Err(PushError::Protocol(why)),
        Some(_) => {
            return Err(PushError::Protocol(
                "the first message must be an Offer".into(),
            ));
        }
    };
    let mut state_error = None;
    let verdict = verify_offer(&agent.config, offer, |repo| {
        installed(agent, repo).unwrap_or_else(|e| {
            state_error = Some(e);
            None
        })
    });
    if let Some(e) = state_error {
        return Err(e);
    }
    let snapshot = match verdict? {
        Verdict::AlreadyLive(s) => return Ok(Some(ack_for(&s, Timings::default()))),
        Verdict::Install(s) => s,
    };
    let verify_ms = started.elapsed().as_millis() as u64;
    let (repo, version) = (snapshot.repo().clone(), snapshot.version());
    tracing::info!(%repo, version, entries = snapshot.manifest.entries.len(), "offer verified");

    // A newer offer for this repo stops older pushes still in flight.
    let offered = agent
        .offered
        .get(&repo)
        .ok_or_else(|| PushError::Protocol("repo not configured".into()))?;
    offered.send_if_modified(|latest| {
        let newer = version > *latest;
        if newer {
            *latest = version;
        }
        newer
    });
    let mut superseded = offered.subscribe();
    let check_superseded = |latest: u64| {
        if latest > version {
            Err(PushError::Superseded {
                repo: repo.clone(),
                older: version,
                newer: latest,
            })
        } else {
            Ok(())
        }
    };
    check_superseded(*superseded.borrow())?;

    // Blobs to fetch, and where each resumes.
    let store = &agent.tree.store;
    let mut sizes: HashMap<Sha256Digest, u64> = HashMap::new();
    for e in &snapshot.manifest.entries {
        sizes.insert(e.sha256, e.size);
        // No chunk ever carries an empty file: store it here, after verification.
        if e.size == 0 && !store.has(&e.sha256) {
            tokio::task::block_in_place(|| store.import_bytes(b""))?;
        }
    }
    let wanted: Vec<(Sha256Digest, u64)> = sizes
        .iter()
        .filter(|(d, _)| !store.has(d))
        .map(|(d, size)| (*d, store.partial_len(d).min(*size)))
        .collect();
    let need: u64 = wanted.iter().map(|(d, off)| sizes[d] - off).sum();
    let data_dir = &agent.config.data_dir;
    if let Some(free) = free_bytes(data_dir)
        && free < need.saturating_add(agent.config.min_free_bytes)
    {
        return Err(PushError::DiskFull {
            path: data_dir.display().to_string(),
            need,
            reserve: agent.config.min_free_bytes,
            free,
        });
    }
    let mut pending: HashSet<Sha256Digest> = wanted.iter().map(|(d, _)| *d).collect();
    tracing::info!(%repo, version, blobs = wanted.len(), bytes = need, "wanting blobs");
    if out.send(Outbound::Want(wanted)).await.is_err() {
        return Ok(None);
    }

    // Receive.
    let max_chunk = agent.config.limits.max_chunk_bytes;
    let mut current: Option<(PartialBlob, Claim<'_>)> = None;
    loop {
        let msg = tokio::select! {
            msg = inbound.next() => msg,
            Ok(()) = superseded.changed() => {
                check_superseded(*superseded.borrow())?;
                continue;
            }
        };
        match msg {
            None => return Ok(None),
            Some(Inbound::Malformed(why)) => return Err(PushError::Protocol(why)),
            Some(Inbound::Offer(_)) => {
                return Err(PushError::Protocol(
                    "a second Offer in the middle of a push".into(),
                ));
            }
            Some(Inbound::Commit) => {
                if !pending.is_empty() {
                    return Err(PushError::Protocol(format!(
                        "Commit before all blobs arrived ({} still missing)",
                        pending.len()
                    )));
                }
                stage("receive::all_blobs");
                break;
            }
            Some(Inbound::Chunk {
                digest,
                offset,
                data,
            }) => {
                if data.len() > max_chunk {
                    return Err(PushError::ChunkTooLarge {
                        len: data.len(),
                        max: max_chunk,
                    });
                }
                let digest =
                    Sha256Digest::from_slice(&digest).map_err(|e| PushError::Unwanted(e.0))?;
                if !pending.contains(&digest) {
                    return Err(PushError::Unwanted(digest.to_hex()));
                }
                let switching = current.as_ref().is_none_or(|(p, _)| p.digest() != digest);
                if switching {
                    if let Some((p, _)) = &current {
                        return Err(PushError::Protocol(format!(
                            "chunk for {digest} while {} is incomplete",
                            p.digest()
                        )));
                    }
                    let guard = claim(agent, digest).await?;
                    let partial = tokio::task::block_in_place(|| {
                        store.begin(digest, sizes[&digest], offset)
                    })?;
                    current = Some((partial, guard));
                }
                let Some((partial, _)) = current.as_mut() else {
                    continue;
                };
                tokio::task::block_in_place(|| {
                    partial.write_chunk(offset, &data)?;
                    stage("receive::chunk_written");
                    Ok::<_, StoreError>(())
                })?;
                if partial.is_complete()
                    && let Some((partial, _guard)) = current.take()
                {
                    tokio::task::block_in_place(|| partial.finish(store))?;
                    stage("receive::blob_done");
                    pending.remove(&digest);
                }
            }
        }
    }
    let receive_ms = started.elapsed().as_millis() as u64 - verify_ms;

    // Swap, one per repo at a time, and only if nothing newer arrived.
    let lock = agent
        .swap_locks
        .get(&repo)
        .ok_or_else(|| PushError::Protocol("repo not configured".into()))?;
    let _swap = lock.lock().await;
    check_superseded(*superseded.borrow())?;
    // Step 5 again: another push may have installed this or a newer version meanwhile.
    if against_installed(&snapshot, installed(agent, &repo)?.as_ref())? == Freshness::Same {
        return Ok(Some(ack_for(&snapshot, Timings::default())));
    }
    let swap_started = Instant::now();
    tokio::task::block_in_place(|| agent.tree.install(&snapshot))?;
    let swap_ms = swap_started.elapsed().as_millis() as u64;
    Ok(Some(ack_for(
        &snapshot,
        Timings {
            verify_ms,
            receive_ms,
            swap_ms,
        },
    )))
}
