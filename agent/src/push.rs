//! One Push exchange (DESIGN §5), free of gRPC types:
//! Offer → verify → Want → Chunk* → Commit → swap → Ack, or Reject.
//!
//! Verification comes first and is done in memory: nothing reaches `tmp/`,
//! `objects/`, the served tree or the state before the signature, trust,
//! limits, paths, rollback and expiry checks pass.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use hotpush_proto as pb;
use hotpush_shared::Sha256Digest;
use hotpush_shared::manifest::{Manifest, ManifestError, RepoName};
use hotpush_shared::sign::{SignError, SignedManifest};
use hotpush_shared::store::{PartialBlob, StoreError};
use tokio::sync::{mpsc, watch};

use crate::config::Config;
use crate::selfcheck;
use crate::swap::{SwapError, Tree};

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
    Ack(pb::Ack),
    Reject(pb::RejectCode, String),
}

/// Why a push was refused. Each message names the problem for the origin's
/// operator; [`PushError::code`] classifies it on the wire.
#[derive(Debug, thiserror::Error)]
pub enum PushError {
    #[error("{0}")]
    Signature(SignError),
    #[error("invalid manifest: {0}")]
    Manifest(#[from] ManifestError),
    #[error("repo {0} is not carried by this agent (its config lists: {1})")]
    UnknownRepo(RepoName, String),
    #[error(
        "rollback refused: offered version {offered} of {repo} is older than installed version {installed}"
    )]
    Rollback {
        repo: RepoName,
        offered: u64,
        installed: u64,
    },
    #[error(
        "replay refused: version {version} of {repo} is installed with manifest {installed}, offered {offered}"
    )]
    Replay {
        repo: RepoName,
        version: u64,
        installed: Sha256Digest,
        offered: Sha256Digest,
    },
    #[error(
        "manifest for {repo} version {version} expired at unix {expires} (now {now}): re-publish to re-sign"
    )]
    Expired {
        repo: RepoName,
        version: u64,
        expires: i64,
        now: i64,
    },
    #[error("blob {digest} is listed with sizes {a} and {b}")]
    ConflictingSizes {
        digest: Sha256Digest,
        a: u64,
        b: u64,
    },
    #[error("{path} is declared empty but with sha256 {digest}")]
    EmptyMismatch { path: String, digest: Sha256Digest },
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
            PushError::Signature(SignError::UntrustedKey(_)) => C::RejectUntrustedKey,
            PushError::Signature(_) => C::RejectBadSignature,
            PushError::Manifest(
                ManifestError::TooLarge { .. }
                | ManifestError::TooManyEntries { .. }
                | ManifestError::BlobTooLarge { .. }
                | ManifestError::TotalTooLarge { .. },
            )
            | PushError::ChunkTooLarge { .. } => C::RejectLimit,
            PushError::Manifest(_)
            | PushError::ConflictingSizes { .. }
            | PushError::EmptyMismatch { .. } => C::RejectBadManifest,
            PushError::UnknownRepo(..) => C::RejectUnknownRepo,
            PushError::Rollback { .. } => C::RejectRollback,
            PushError::Replay { .. } => C::RejectReplay,
            PushError::Expired { .. } => C::RejectExpired,
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

/// The agent's shared state across pushes.
pub struct Agent {
    pub config: Config,
    pub tree: Tree,
    pub agent_id: String,
    /// Newest version offered per repo; older pushes in flight watch it and stop.
    offered: HashMap<RepoName, watch::Sender<u64>>,
    /// One swap per repo at a time.
    swap_locks: HashMap<RepoName, tokio::sync::Mutex<()>>,
    /// Blobs some push is writing right now: two pushes never write one partial file.
    receiving: Mutex<HashSet<Sha256Digest>>,
    /// For checking the public URL after a swap.
    http: reqwest::Client,
}

impl Agent {
    /// Builds the shared state for the configured repos.
    pub fn new(config: Config, tree: Tree, agent_id: String, http: reqwest::Client) -> Self {
        let offered = config
            .repos
            .iter()
            .map(|r| (r.clone(), watch::channel(0).0))
            .collect();
        let swap_locks = config
            .repos
            .iter()
            .map(|r| (r.clone(), tokio::sync::Mutex::new(())))
            .collect();
        Self {
            config,
            tree,
            agent_id,
            offered,
            swap_locks,
            receiving: Mutex::new(HashSet::new()),
            http,
        }
    }

    fn claim(&self, digest: Sha256Digest) -> bool {
        self.receiving
            .lock()
            .map(|mut set| set.insert(digest))
            .unwrap_or(false)
    }

    fn release(&self, digest: &Sha256Digest) {
        if let Ok(mut set) = self.receiving.lock() {
            set.remove(digest);
        }
    }
}

/// A verified offer, ready to receive blobs for.
struct Verified {
    signed: SignedManifest,
    manifest: Manifest,
    digest: Sha256Digest,
}

fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn ack_for(manifest: &Manifest, digest: Sha256Digest, timings: pb::Timings) -> pb::Ack {
    pb::Ack {
        repo: manifest.repo.to_string(),
        version: manifest.version,
        manifest_digest: Bytes::copy_from_slice(&digest.0),
        repomd_sha256: manifest
            .repomd()
            .map(|e| Bytes::copy_from_slice(&e.sha256.0))
            .unwrap_or_default(),
        timings: Some(timings),
        ..Default::default()
    }
}

/// The numbered checks of an Offer. Returns `Ok(Err(ack))` when exactly
/// this snapshot is already live (an idempotent re-push).
fn verify_offer(
    agent: &Agent,
    offer: pb::SignedManifest,
) -> Result<Result<Verified, pb::Ack>, PushError> {
    let config = &agent.config;
    // 1. Size before anything else looks at the bytes.
    if offer.manifest_bytes.len() > config.limits.max_manifest_bytes {
        return Err(ManifestError::TooLarge {
            len: offer.manifest_bytes.len(),
            max: config.limits.max_manifest_bytes,
        }
        .into());
    }
    // 2. Signature by a trusted key over the exact bytes, before decoding.
    let signed = SignedManifest::from_pb(offer).map_err(PushError::Signature)?;
    config
        .origin_keys
        .verify(&signed)
        .map_err(PushError::Signature)?;
    // 3. Structure, paths and limits.
    let manifest = Manifest::decode(&signed.manifest_bytes, &config.limits)?;
    // 4. A repo this agent carries.
    if !config.carries(&manifest.repo) {
        let list = config
            .repos
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ");
        return Err(PushError::UnknownRepo(manifest.repo, list));
    }
    let digest = signed.digest();
    // 5. Rollback and replay against what is installed.
    if let Some(installed) = agent
        .tree
        .state
        .current(&manifest.repo)
        .map_err(SwapError::from)?
    {
        let (have, offered) = (installed.manifest.version, manifest.version);
        if offered < have {
            return Err(PushError::Rollback {
                repo: manifest.repo,
                offered,
                installed: have,
            });
        }
        if offered == have {
            let installed_digest = installed.signed.digest();
            if installed_digest == digest {
                return Ok(Err(ack_for(&manifest, digest, pb::Timings::default())));
            }
            return Err(PushError::Replay {
                repo: manifest.repo,
                version: offered,
                installed: installed_digest,
                offered: digest,
            });
        }
    }
    // 6. Freshness: an expired manifest may not be installed (freeze attacks).
    let now = now_unix();
    if manifest.expires_unix <= now {
        return Err(PushError::Expired {
            repo: manifest.repo,
            version: manifest.version,
            expires: manifest.expires_unix,
            now,
        });
    }
    Ok(Ok(Verified {
        signed,
        manifest,
        digest,
    }))
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
            let repo = RepoName::new(&ack.repo);
            if let (Ok(repo), Ok(expected)) = (&repo, Sha256Digest::from_slice(&ack.repomd_sha256))
            {
                let check =
                    selfcheck::check(&agent.http, agent.config.public_repomd_url(repo), expected)
                        .await;
                ack.public_url = check.url;
                ack.public_verified = check.verified;
                ack.public_detail = check.detail;
            }
            crate::swap::stage("push::before_ack");
            tracing::info!(repo = %ack.repo, version = ack.version, public_verified = ack.public_verified, "acked: snapshot is live");
            let _ = out.send(Outbound::Ack(ack)).await;
            // Garbage collection after the ack: it never delays a publish.
            if let Ok(repo) = repo {
                let collected =
                    tokio::task::spawn_blocking(move || agent.tree.collect_garbage(&repo)).await;
                if let Ok(Err(e)) = collected {
                    tracing::warn!(error = %e, "garbage collection failed");
                }
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

async fn session<S>(
    agent: &Agent,
    inbound: &mut S,
    out: &mpsc::Sender<Outbound>,
) -> Result<Option<pb::Ack>, PushError>
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
    let v = match verify_offer(agent, offer)? {
        Ok(v) => v,
        Err(ack) => return Ok(Some(ack)),
    };
    let verify_ms = started.elapsed().as_millis() as u64;
    let (repo, version) = (v.manifest.repo.clone(), v.manifest.version);
    tracing::info!(%repo, version, entries = v.manifest.entries.len(), "offer verified");

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
    for e in &v.manifest.entries {
        if let Some(&a) = sizes.get(&e.sha256)
            && a != e.size
        {
            return Err(PushError::ConflictingSizes {
                digest: e.sha256,
                a,
                b: e.size,
            });
        }
        sizes.insert(e.sha256, e.size);
        // No chunk ever carries an empty file: store it here, after verification.
        if e.size == 0 && !agent.tree.store.has(&e.sha256) {
            if e.sha256 != Sha256Digest::of(b"") {
                return Err(PushError::EmptyMismatch {
                    path: e.path.to_string(),
                    digest: e.sha256,
                });
            }
            tokio::task::block_in_place(|| agent.tree.store.import_bytes(b""))?;
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
                crate::swap::stage("receive::all_blobs");
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
                    crate::swap::stage("receive::chunk_written");
                    Ok::<_, StoreError>(())
                })?;
                if partial.is_complete()
                    && let Some((partial, _guard)) = current.take()
                {
                    tokio::task::block_in_place(|| partial.finish(store))?;
                    crate::swap::stage("receive::blob_done");
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
    // Another push may have installed this or a newer version meanwhile.
    if let Err(ack) = verify_offer(agent, v.signed.to_pb())? {
        return Ok(Some(ack));
    }
    let swap_started = Instant::now();
    tokio::task::block_in_place(|| agent.tree.install(&v.signed, &v.manifest))?;
    let swap_ms = swap_started.elapsed().as_millis() as u64;
    let timings = pb::Timings {
        verify_ms,
        receive_ms,
        swap_ms,
    };
    Ok(Some(ack_for(&v.manifest, v.digest, timings)))
}
