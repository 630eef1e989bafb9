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
use hotpush_shared::manifest::{Entry, ManifestError, RepoName};
use hotpush_shared::snapshot::Snapshot;
use hotpush_shared::store::{PartialBlob, Received, StoreError, free_bytes};
use tokio::sync::mpsc;

use crate::agent::{Agent, Newest};
use crate::failpoint::stage;
use crate::selfcheck;
use crate::swap::SwapError;
use crate::verify::{Freshness, Offered, Verdict, VerifyError, against_installed, verify_offer};

/// What the origin sends, decoded.
#[derive(Debug)]
pub enum Inbound {
    Offer(Offered),
    /// A whole manifest's length and signatures; its bytes follow in
    /// [`Inbound::ManifestPart`]s.
    OfferParts {
        len: u64,
        signatures: Vec<pb::Signature>,
    },
    ManifestPart(Bytes),
    Chunk {
        digest: Bytes,
        offset: u64,
        data: Bytes,
    },
    Commit,
    Flip,
    /// A message that does not decode or has no body.
    Malformed(String),
}

/// What the agent answers.
#[derive(Debug)]
pub enum Outbound {
    Want {
        blobs: Vec<(Sha256Digest, u64)>,
        /// The largest chunk payload accepted.
        max_chunk: usize,
    },
    /// Staged (repo, version, manifest digest): one rename away from live.
    Staged(RepoName, u64, Sha256Digest),
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
    #[error(
        "superseded: a newer push of {repo} (version {newer}) arrived while version {older} was in flight"
    )]
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
    #[error("too many Offers are being read at once (max_unverified_offer_bytes); retry")]
    OfferBudget,
    #[error(
        "the manifest declares {declared} bytes for blob {digest}, which this agent holds with {held} bytes"
    )]
    HeldSize {
        digest: Sha256Digest,
        declared: u64,
        held: u64,
    },
}

impl PushError {
    /// The wire code.
    pub fn code(&self) -> pb::RejectCode {
        use pb::RejectCode as C;
        match self {
            PushError::Verify(e) => e.code(),
            PushError::HeldSize { .. } => C::RejectBadManifest,
            PushError::OfferBudget => C::RejectBusy,
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

/// How long a staged push waits for the Flip: past the origin's stage wait
/// and settle delay with room to spare (a dead origin is noticed sooner,
/// by the keepalive).
const FLIP_WAIT: Duration = Duration::from_secs(600);

/// How long a push waits for its share of the unverified-Offer budget.
const OFFER_BUDGET_WAIT: Duration = Duration::from_secs(30);

/// A permit of the unverified-Offer budget (or of the one-rebuild-at-a-time
/// semaphore), waited for at most [`OFFER_BUDGET_WAIT`].
async fn budget_permit(
    acquire: impl std::future::Future<
        Output = Result<tokio::sync::OwnedSemaphorePermit, tokio::sync::AcquireError>,
    >,
) -> Result<tokio::sync::OwnedSemaphorePermit, PushError> {
    tokio::time::timeout(OFFER_BUDGET_WAIT, acquire)
        .await
        .map_err(|_| PushError::OfferBudget)?
        .map_err(|_| PushError::OfferBudget)
}

/// Reads the ManifestPart messages of a split Offer into the whole signed
/// manifest: exactly `len` bytes, refused over `max` before any is read (the
/// Offer's budget share covers them). `None` when the stream ends first.
async fn read_parts<S>(
    inbound: &mut S,
    idle: Duration,
    len: u64,
    signatures: Vec<pb::Signature>,
    max: usize,
) -> Result<Option<Offered>, PushError>
where
    S: Stream<Item = Inbound> + Unpin,
{
    let len = match usize::try_from(len) {
        Ok(len) if len <= max => len,
        _ => {
            return Err(VerifyError::Manifest(ManifestError::TooLarge {
                len: usize::try_from(len).unwrap_or(usize::MAX),
                max,
            })
            .into());
        }
    };
    let mut bytes = Vec::with_capacity(len);
    while bytes.len() < len {
        match next_within(inbound, idle).await {
            None => return Ok(None),
            Some(Inbound::ManifestPart(data)) if data.is_empty() => {
                return Err(PushError::Protocol("an empty ManifestPart".into()));
            }
            Some(Inbound::ManifestPart(data)) if data.len() > len - bytes.len() => {
                return Err(PushError::Protocol(format!(
                    "ManifestParts longer than the {len} bytes the Offer declared"
                )));
            }
            Some(Inbound::ManifestPart(data)) => bytes.extend_from_slice(&data),
            Some(Inbound::Malformed(why)) => return Err(PushError::Protocol(why)),
            Some(_) => {
                return Err(PushError::Protocol(format!(
                    "the Offer declared {len} bytes of ManifestParts, {} arrived before another message",
                    bytes.len()
                )));
            }
        }
    }
    Ok(Some(Offered::Whole(pb::SignedManifest {
        manifest_bytes: Bytes::from(bytes),
        signatures,
    })))
}

/// Refuses a push that would leave less than `min_free_bytes` free, after
/// first reclaiming the received blobs no push wants (abandoned pushes).
/// `ours` is every blob this push uses: those it still wants and those
/// already verified in `tmp/`, waiting for its Commit.
fn check_disk(
    agent: &Agent,
    ours: &HashMap<Sha256Digest, u64>,
    need: u64,
) -> Result<(), PushError> {
    let data_dir = &agent.config.data_dir;
    let short = |free: u64| free < need.saturating_add(agent.config.min_free_bytes);
    let Some(mut free) = free_bytes(data_dir) else {
        return Ok(());
    };
    if short(free) {
        let (files, bytes) = agent.tree.store.reclaim_tmp(Duration::ZERO, |d| {
            ours.contains_key(d) || agent.is_claimed(d)
        });
        if files > 0 {
            tracing::info!(
                files,
                bytes,
                "disk short: reclaimed partial blobs no push wants"
            );
            free = free_bytes(data_dir).unwrap_or(free);
        }
    }
    if short(free) {
        return Err(PushError::DiskFull {
            path: data_dir.display().to_string(),
            need,
            reserve: agent.config.min_free_bytes,
            free,
        });
    }
    Ok(())
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
            let _ = stage("push::before_ack");
            tracing::info!(repo = %ack.repo, version = ack.version, public_verified = ack.public.verified, "acked: snapshot is live");
            let repo = ack.repo.clone();
            agent.metrics.acked(&ack);
            let _ = out.send(Outbound::Ack(ack)).await;
            // Garbage collection after the ack: it never delays a publish.
            let collected = tokio::task::spawn_blocking(move || {
                let collected = agent.tree.collect_garbage(&repo);
                let (files, bytes) = agent
                    .tree
                    .store
                    .reclaim_tmp(agent.config.retain_partials_for, |d| agent.is_claimed(d));
                if files > 0 {
                    tracing::info!(
                        files,
                        bytes,
                        "reclaimed partial blobs past retain_partials_for"
                    );
                }
                collected
            })
            .await;
            if let Ok(Err(e)) = collected {
                tracing::warn!(error = %e, "garbage collection failed");
            }
        }
        Ok(None) => tracing::info!(
            "push ended before Commit (stream closed, or idle past push_idle_timeout_secs); partial blobs kept for resume"
        ),
        Err(e) => {
            tracing::warn!(code = ?e.code(), reason = %e, "push refused");
            agent.metrics.refused(
                e.code()
                    .as_str_name()
                    .trim_start_matches("REJECT_")
                    .to_lowercase()
                    .as_str(),
            );
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
fn installed(
    agent: &Agent,
    repo: &RepoName,
) -> Result<Option<Arc<crate::state::Installed>>, PushError> {
    Ok(agent.tree.state.current(repo).map_err(SwapError::from)?)
}

/// The next message, or `None` when the stream ended or stayed silent past
/// `idle`: a partition without a reset must not hold a blob claim forever.
async fn next_within<S>(inbound: &mut S, idle: Duration) -> Option<Inbound>
where
    S: Stream<Item = Inbound> + Unpin,
{
    match tokio::time::timeout(idle, inbound.next()).await {
        Ok(msg) => msg,
        Err(_) => {
            tracing::warn!(idle_secs = idle.as_secs(), "push idle too long: ending it");
            None
        }
    }
}

async fn session<S>(
    agent: &Agent,
    inbound: &mut S,
    out: &mpsc::Sender<Outbound>,
) -> Result<Option<Ack>, PushError>
where
    S: Stream<Item = Inbound> + Unpin,
{
    let idle = Duration::from_secs(agent.config.connections.push_idle_timeout_secs.max(1));
    // Reading an Offer may buffer a manifest-sized message: charge the
    // shared budget before reading, give it back once verified.
    let budget = budget_permit(
        agent
            .offer_budget
            .clone()
            .acquire_many_owned(agent.offer_cost_kib()),
    )
    .await?;
    let started = Instant::now();
    let offer = match next_within(inbound, idle).await {
        None => return Ok(None),
        Some(Inbound::Offer(offer)) => offer,
        Some(Inbound::OfferParts { len, signatures }) => {
            match read_parts(
                inbound,
                idle,
                len,
                signatures,
                agent.config.limits.max_manifest_bytes,
            )
            .await?
            {
                Some(offer) => offer,
                None => return Ok(None),
            }
        }
        Some(Inbound::Malformed(why)) => return Err(PushError::Protocol(why)),
        Some(_) => {
            return Err(PushError::Protocol(
                "the first message must be an Offer".into(),
            ));
        }
    };
    // A delta rebuilds up to a manifest's worth of bytes beside its message:
    // one at a time ([`Agent::rebuilding`]); a rebuild takes milliseconds.
    let rebuilding = match offer {
        Offered::Delta(_) => Some(budget_permit(agent.rebuilding.clone().acquire_owned()).await?),
        Offered::Whole(_) => None,
    };
    let mut state_error = None;
    let verdict = verify_offer(&agent.config, offer, |repo| {
        installed(agent, repo).unwrap_or_else(|e| {
            state_error = Some(e);
            None
        })
    });
    drop((budget, rebuilding));
    if let Some(e) = state_error {
        return Err(e);
    }
    let (snapshot, installed_now) = match verdict? {
        Verdict::AlreadyLive(s) => return Ok(Some(ack_for(&s, Timings::default()))),
        Verdict::Install {
            snapshot,
            installed,
        } => (snapshot, installed),
    };
    let verify_ms = started.elapsed().as_millis() as u64;
    let (repo, version) = (snapshot.repo().clone(), snapshot.version());
    tracing::info!(%repo, version, entries = snapshot.manifest.entries.len(), "offer verified");

    // The newest push of this repo wins: an older version, or an earlier
    // push of this version that stalled, stops and lets go of its blob.
    let newest = agent
        .newest
        .get(&repo)
        .ok_or_else(|| PushError::Protocol("repo not configured".into()))?;
    let me = Newest {
        version,
        push: agent.push_number(),
    };
    newest.send_if_modified(|n| {
        let take = version >= n.version;
        if take {
            *n = me;
        }
        take
    });
    let mut superseded = newest.subscribe();
    let check_superseded = |n: Newest| {
        if n != me {
            Err(PushError::Superseded {
                repo: repo.clone(),
                older: version,
                newer: n.version,
            })
        } else {
            Ok(())
        }
    };
    check_superseded(*superseded.borrow())?;

    // Blobs to fetch, and where each resumes. Paths the live snapshot
    // already serves with the same content were checked when it was
    // installed: only what changed is looked at (repodata is rebuilt
    // from the store on every swap, so its blobs are always checked).
    let store = &agent.tree.store;
    let live: &[Entry] = installed_now
        .as_ref()
        .map_or(&[], |i| &i.snapshot.manifest.entries);
    let entries = &snapshot.manifest.entries;
    let sizes: HashMap<Sha256Digest, u64> = crate::swap::differing(live, entries)
        .map(|(e, _)| e)
        .chain(entries.iter().filter(|e| e.is_repodata()))
        .map(|e| (e.sha256, e.size))
        .collect();
    let mut wanted: Vec<(Sha256Digest, u64)> = Vec::new();
    // Received in full by an earlier push that never got to its Commit:
    // hashed again here, installed with this push's blobs.
    let mut received: Vec<Received> = Vec::new();
    for (digest, &size) in &sizes {
        match store.blob_len(digest) {
            Some(held) if held == size => {}
            Some(held) => {
                return Err(PushError::HeldSize {
                    digest: *digest,
                    declared: size,
                    held,
                });
            }
            // No chunk ever carries an empty file: store it here, after verification.
            None if size == 0 => {
                tokio::task::block_in_place(|| store.import_bytes(b""))?;
            }
            None => {
                let offset = store.partial_len(digest).min(size);
                if offset == size {
                    // Not while another push writes it.
                    let _guard = claim(agent, *digest).await?;
                    let verified =
                        tokio::task::block_in_place(|| store.complete_partial(*digest, size));
                    if let Some(r) = verified {
                        received.push(r);
                        continue;
                    }
                }
                wanted.push((*digest, if offset == size { 0 } else { offset }));
            }
        }
    }
    let need: u64 = wanted.iter().map(|(d, off)| sizes[d] - off).sum();
    check_disk(agent, &sizes, need)?;
    let mut pending: HashSet<Sha256Digest> = wanted.iter().map(|(d, _)| *d).collect();
    tracing::info!(%repo, version, blobs = wanted.len(), bytes = need, "wanting blobs");
    let want = Outbound::Want {
        blobs: wanted,
        max_chunk: agent.config.limits.max_chunk_bytes,
    };
    if out.send(want).await.is_err() {
        return Ok(None);
    }

    // Receive.
    let max_chunk = agent.config.limits.max_chunk_bytes;
    let mut current: Option<(PartialBlob, Claim<'_>)> = None;
    loop {
        let msg = tokio::select! {
            msg = next_within(inbound, idle) => msg,
            Ok(()) = superseded.changed() => {
                check_superseded(*superseded.borrow())?;
                continue;
            }
        };
        match msg {
            None => return Ok(None),
            Some(Inbound::Malformed(why)) => return Err(PushError::Protocol(why)),
            Some(Inbound::Offer(_) | Inbound::OfferParts { .. }) => {
                return Err(PushError::Protocol(
                    "a second Offer in the middle of a push".into(),
                ));
            }
            Some(Inbound::ManifestPart(_)) => {
                return Err(PushError::Protocol(
                    "a ManifestPart after the manifest was complete".into(),
                ));
            }
            Some(Inbound::Flip) => {
                return Err(PushError::Protocol("Flip before Commit".into()));
            }
            Some(Inbound::Commit) => {
                if !pending.is_empty() {
                    return Err(PushError::Protocol(format!(
                        "Commit before all blobs arrived ({} still missing)",
                        pending.len()
                    )));
                }
                stage("receive::all_blobs").map_err(|e| PushError::Protocol(e.to_string()))?;
                // Durable before anything names them: two flushes in all.
                tokio::task::block_in_place(|| store.install(std::mem::take(&mut received)))?;
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
                    stage("receive::chunk_written").map_err(|source| StoreError::Io {
                        op: "failpoint",
                        path: "receive::chunk_written".into(),
                        source,
                    })?;
                    Ok::<_, StoreError>(())
                })?;
                if partial.is_complete()
                    && let Some((partial, _guard)) = current.take()
                {
                    received.push(tokio::task::block_in_place(|| partial.finish())?);
                    stage("receive::blob_done").map_err(|e| PushError::Protocol(e.to_string()))?;
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
    if against_installed(&snapshot, installed(agent, &repo)?.as_deref())? == Freshness::Same {
        return Ok(Some(ack_for(&snapshot, Timings::default())));
    }
    let stage_started = Instant::now();
    let staged = tokio::task::block_in_place(|| agent.tree.stage(&snapshot))?;
    let stage_ms = stage_started.elapsed().as_millis() as u64;
    tracing::info!(%repo, version, "staged: waiting for the flip");
    if out
        .send(Outbound::Staged(repo.clone(), version, snapshot.digest))
        .await
        .is_err()
    {
        tokio::task::block_in_place(|| agent.tree.abandon(&repo));
        return Ok(None);
    }

    // Staged, the swap lock held: wait for the Flip. The origin sends it once
    // the metalink accepts the new repomd.xml; a dead origin is noticed by
    // the connection's keepalive, which ends the stream.
    let waiting = Instant::now();
    let flip = loop {
        tokio::select! {
            msg = next_within(inbound, FLIP_WAIT) => break msg,
            Ok(()) = superseded.changed() => {
                if let Err(e) = check_superseded(*superseded.borrow()) {
                    tokio::task::block_in_place(|| agent.tree.abandon(&repo));
                    return Err(e);
                }
            }
        }
    };
    match flip {
        Some(Inbound::Flip) => {}
        None => {
            tracing::info!(%repo, version, "push ended while staged: taking the staging away");
            tokio::task::block_in_place(|| agent.tree.abandon(&repo));
            return Ok(None);
        }
        Some(_) => {
            tokio::task::block_in_place(|| agent.tree.abandon(&repo));
            return Err(PushError::Protocol("only a Flip may follow Staged".into()));
        }
    }
    let flip_wait_ms = waiting.elapsed().as_millis() as u64;
    let flip_started = Instant::now();
    tokio::task::block_in_place(|| agent.tree.flip(staged))?;
    let flipped_unix_ms = hotpush_shared::clock::now_unix_ms();
    let swap_ms = stage_ms + flip_started.elapsed().as_millis() as u64;
    Ok(Some(ack_for(
        &snapshot,
        Timings {
            verify_ms,
            receive_ms,
            swap_ms,
            flip_wait_ms,
            flipped_unix_ms,
        },
    )))
}
