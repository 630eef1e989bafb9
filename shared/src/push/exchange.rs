//! The pushing side of one Push exchange (docs/PROTOCOL.md): Offer → Want →
//! Chunk* → Commit → Staged → (the flip gate opens) → Flip → Ack, or Reject.
//! The agent is not trusted either: every answer is checked against what
//! was offered, and every wait is bounded.

use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hotpush_proto as pb;
use hotpush_proto::agent_client::AgentClient;
use hotpush_proto::offer::Form;
use hotpush_proto::push_request::Msg as Out;
use hotpush_proto::push_response::Msg as In;
use prost::Message;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;

use super::Phase;
use crate::ack::Ack;
use crate::delta::Delta;
use crate::digest::Sha256Digest;
use crate::limits::{CHUNK_BYTES, OLD_AGENT_CHUNK_BYTES};
use crate::snapshot::Snapshot;
use crate::store::BlobStore;
use crate::transport::{describe_status, explain_connect_error};

/// How long the agent may take to answer an Offer (verify + compute Want).
pub const OFFER_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the agent may take to stage after Commit, and to flip and ack
/// after Flip.
pub const COMMIT_TIMEOUT: Duration = Duration::from_secs(600);
/// Largest answer accepted from an agent (a Want for 200,000 blobs fits).
pub const MAX_RESPONSE_BYTES: usize = 16 << 20;

/// Why a push did not end in an ack. The text is what the operator sees.
#[derive(Debug, thiserror::Error)]
pub enum PushFailure {
    #[error("unreachable or refused the connection: {0}")]
    Connect(String),
    #[error("refused the snapshot ({code}): {reason}")]
    Rejected { code: String, reason: String },
    #[error("asked for blob {0}, which this snapshot does not contain")]
    UnknownWant(String),
    #[error("asked to resume blob {digest} at {offset}, past its {size} bytes")]
    BadOffset {
        digest: Sha256Digest,
        offset: u64,
        size: u64,
    },
    #[error("acked {got}, but {expected} was offered")]
    WrongAck { expected: String, got: String },
    #[error("gave no answer within {0:?}")]
    Timeout(Duration),
    #[error("staged, but not told to flip: {0}")]
    NotFlipped(String),
    #[error("closed the stream without an answer")]
    Closed,
    #[error("sent an unexpected message: {0}")]
    Protocol(String),
    #[error("reading blob {digest} from the store: {source}")]
    Blob {
        digest: Sha256Digest,
        source: std::io::Error,
    },
}

impl PushFailure {
    /// What kind of trouble this is, for the status page and metrics.
    pub fn kind(&self) -> FailureKind {
        match self {
            PushFailure::Connect(_) | PushFailure::Timeout(_) | PushFailure::Closed => {
                FailureKind::Unreachable
            }
            PushFailure::Rejected { code, .. } => FailureKind::Refused(code.clone()),
            _ => FailureKind::Other,
        }
    }
}

/// Why a mirror is not live, in one word.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FailureKind {
    /// No connection, or no answer.
    Unreachable,
    /// The agent refused the snapshot (its reject code, e.g. `disk`).
    Refused(String),
    /// Live on the agent, but its public URL did not serve it.
    NotPublic,
    Other,
}

/// A completed push.
#[derive(Debug)]
pub struct Pushed {
    pub ack: Ack,
    pub bytes_sent: u64,
    /// Bytes of Offer sent: a delta's, plus the whole manifest's if the
    /// agent refused the delta.
    pub offer_bytes: u64,
    pub elapsed: Duration,
}

fn reject_name(code: i32) -> String {
    pb::RejectCode::try_from(code)
        .map(|c| c.as_str_name().trim_start_matches("REJECT_").to_lowercase())
        .unwrap_or_else(|_| code.to_string())
}

async fn answer(
    responses: &mut tonic::Streaming<pb::PushResponse>,
    limit: Duration,
) -> Result<In, PushFailure> {
    match tokio::time::timeout(limit, responses.message()).await {
        Err(_) => Err(PushFailure::Timeout(limit)),
        Ok(Err(status)) => Err(PushFailure::Connect(explain_connect_error(
            describe_status(&status),
        ))),
        Ok(Ok(None)) => Err(PushFailure::Closed),
        Ok(Ok(Some(pb::PushResponse { msg: None }))) => {
            Err(PushFailure::Protocol("empty response".into()))
        }
        Ok(Ok(Some(pb::PushResponse { msg: Some(m) }))) => Ok(m),
    }
}

/// The ack, if it is for exactly the snapshot offered.
fn check_ack(ack: pb::Ack, snapshot: &Snapshot) -> Result<Ack, PushFailure> {
    if ack.repo != snapshot.repo().as_str()
        || ack.version != snapshot.version()
        || ack.manifest_digest[..] != snapshot.digest.0
    {
        return Err(PushFailure::WrongAck {
            expected: format!("{} v{}", snapshot.repo(), snapshot.version()),
            got: format!("{} v{}", ack.repo, ack.version),
        });
    }
    Ack::try_from(ack).map_err(|e| PushFailure::Protocol(e.to_string()))
}

/// Reads each wanted blob from `offset` and sends it in chunks of `chunk`
/// bytes (on a blocking thread); returns the bytes sent. Ends early when
/// the stream is gone (the agent refused, or a newer push took over).
fn send_blobs(
    plan: &[(Sha256Digest, u64, u64)],
    chunk: usize,
    blobs: &BlobStore,
    tx: &mpsc::Sender<pb::PushRequest>,
    counter: &AtomicU64,
) -> Result<u64, PushFailure> {
    let mut sent = 0u64;
    for (d, offset, size) in plan {
        let blob_err = |source| PushFailure::Blob { digest: *d, source };
        let mut file = std::fs::File::open(blobs.path(d)).map_err(blob_err)?;
        file.seek(SeekFrom::Start(*offset)).map_err(blob_err)?;
        let mut pos = *offset;
        while pos < *size {
            let len = chunk.min((size - pos) as usize).max(1);
            let mut buf = Vec::with_capacity(len);
            (&mut file)
                .take(len as u64)
                .read_to_end(&mut buf)
                .map_err(blob_err)?;
            if buf.len() != len {
                return Err(blob_err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "the stored blob is shorter than the manifest says",
                )));
            }
            let message = pb::Chunk {
                digest: Bytes::copy_from_slice(&d.0),
                offset: pos,
                data: Bytes::from(buf),
            };
            tx.blocking_send(pb::PushRequest {
                msg: Some(Out::Chunk(message)),
            })
            .map_err(|_| PushFailure::Closed)?;
            pos += len as u64;
            sent += len as u64;
            counter.store(sent, Ordering::Relaxed);
        }
    }
    Ok(sent)
}

/// (digest, resume offset, size) of each wanted blob, in the agent's order.
type Plan = Vec<(Sha256Digest, u64, u64)>;

/// What to send for a Want: each wanted blob with its resume offset and
/// size, checked against the snapshot, and the chunk size the agent takes.
/// Takes the Want by value so that it, and the lookup built from it, are
/// freed before the blobs stream: in a first push of 100,000 files they
/// are ~16 MB per agent, and a push lives for minutes.
fn plan(wanted: pb::Want, snapshot: &Snapshot) -> Result<(Plan, usize), PushFailure> {
    // The agent's own limit: 64 KiB from agents too old to say.
    let chunk = match wanted.max_chunk_bytes {
        0 => OLD_AGENT_CHUNK_BYTES,
        max => CHUNK_BYTES.min(usize::try_from(max).unwrap_or(usize::MAX)),
    };
    // Sizes of the wanted blobs only, in one pass over the manifest: a map
    // of every entry per push was O(tree) memory for an O(change) answer.
    let mut sizes: HashMap<Sha256Digest, Option<u64>> = HashMap::with_capacity(wanted.blobs.len());
    let mut order = Vec::with_capacity(wanted.blobs.len());
    for w in wanted.blobs {
        let d = Sha256Digest::from_slice(&w.digest).map_err(|e| PushFailure::UnknownWant(e.0))?;
        sizes.insert(d, None);
        order.push((d, w.offset));
    }
    for e in &snapshot.manifest.entries {
        if let Some(size) = sizes.get_mut(&e.sha256) {
            *size = Some(e.size);
        }
    }
    let mut plan = Vec::with_capacity(order.len());
    for (d, offset) in order {
        let size = sizes
            .get(&d)
            .copied()
            .flatten()
            .ok_or_else(|| PushFailure::UnknownWant(d.to_hex()))?;
        if offset > size {
            return Err(PushFailure::BadOffset {
                digest: d,
                offset,
                size,
            });
        }
        plan.push((d, offset, size));
    }
    Ok((plan, chunk))
}

fn rejected(r: pb::Reject) -> PushFailure {
    PushFailure::Rejected {
        code: reject_name(r.code),
        reason: r.reason,
    }
}

/// The first answer to an Offer, with the stream it arrived on.
struct Opened {
    tx: mpsc::Sender<pb::PushRequest>,
    responses: tonic::Streaming<pb::PushResponse>,
    first: In,
}

/// How a snapshot's manifest is offered.
#[derive(Clone, Copy, Debug)]
enum OfferForm<'a> {
    /// Its change against the agent's live manifest.
    Delta(&'a Delta),
    /// The whole manifest, in [`CHUNK_BYTES`] ManifestParts after the Offer.
    Parts,
    /// The whole manifest in the Offer itself, for agents that predate
    /// ManifestParts.
    Single,
}

impl OfferForm<'_> {
    /// What the form is called in the log.
    fn name(&self) -> &'static str {
        match self {
            OfferForm::Delta(_) => "delta",
            OfferForm::Parts => "manifest in parts",
            OfferForm::Single => "manifest in one message",
        }
    }
}

/// The forms to try, in order: each next one after a refusal that
/// [`try_next_form`] accepts. Whole manifests always go in parts,
/// however small: one path for every size.
fn offer_forms<'a>(snapshot: &Snapshot, delta: Option<&'a Delta>) -> Vec<OfferForm<'a>> {
    let mut forms: Vec<OfferForm<'a>> = delta
        .filter(|d| d.leads_to(snapshot))
        .map(OfferForm::Delta)
        .into_iter()
        .collect();
    forms.extend([OfferForm::Parts, OfferForm::Single]);
    forms
}

/// The Offer message of `form`, and the ManifestParts that follow it.
fn offer_messages(snapshot: &Snapshot, form: OfferForm<'_>) -> (pb::Offer, Vec<Bytes>) {
    let signed = &snapshot.signed;
    match form {
        OfferForm::Delta(d) => (
            pb::Offer {
                form: Some(Form::Delta(d.to_pb())),
            },
            Vec::new(),
        ),
        OfferForm::Single => (
            pb::Offer {
                form: Some(Form::Manifest(signed.to_pb())),
            },
            Vec::new(),
        ),
        OfferForm::Parts => {
            let bytes = &signed.manifest_bytes;
            // Slices of the signed bytes: nothing is copied until encoded.
            let parts = (0..bytes.len())
                .step_by(CHUNK_BYTES)
                .map(|at| bytes.slice(at..bytes.len().min(at + CHUNK_BYTES)))
                .collect();
            let offer = pb::Offer {
                form: Some(Form::Parts(pb::ManifestParts {
                    manifest_len: bytes.len() as u64,
                    signatures: signed.to_pb().signatures,
                })),
            };
            (offer, parts)
        }
    }
}

/// Opens a Push stream with `offer` and its `parts`, and reads the agent's
/// first answer (a Reject comes back as the error). Returns the bytes
/// offered too.
async fn open(
    client: &mut AgentClient<Channel>,
    offer: pb::Offer,
    parts: Vec<Bytes>,
) -> (u64, Result<Opened, PushFailure>) {
    let mut offered = offer.encoded_len() as u64;
    // Bounded: chunks are produced only as fast as HTTP/2 flow control drains them.
    // Four chunks in flight per push (16 measured no faster).
    let (tx, rx) = mpsc::channel::<pb::PushRequest>(4);
    let offer = pb::PushRequest {
        msg: Some(Out::Offer(offer)),
    };
    if tx.send(offer).await.is_err() {
        return (offered, Err(PushFailure::Closed));
    }
    let mut responses = match client.push(ReceiverStream::new(rx)).await {
        Ok(r) => r.into_inner(),
        Err(s) => {
            let e = PushFailure::Connect(explain_connect_error(describe_status(&s)));
            return (offered, Err(e));
        }
    };
    for data in parts {
        let part = pb::PushRequest {
            msg: Some(Out::Part(pb::ManifestPart { data })),
        };
        offered += part.encoded_len() as u64;
        // A closed stream means the agent refused: its answer says why.
        if tx.send(part).await.is_err() {
            break;
        }
    }
    let first = match answer(&mut responses, OFFER_TIMEOUT).await {
        Ok(In::Reject(r)) => Err(rejected(r)),
        Ok(first) => Ok(Opened {
            tx,
            responses,
            first,
        }),
        Err(e) => Err(e),
    };
    (offered, first)
}

/// True when a refused Offer should be sent again in the next form: the
/// agent has another base for a delta or could not rebuild it
/// (`delta_base`), or predates the form and saw an Offer without a
/// manifest (`protocol`). Anything else would refuse every form.
fn try_next_form(failure: &PushFailure) -> bool {
    matches!(failure, PushFailure::Rejected { code, .. } if code == "delta_base" || code == "protocol")
}

/// Pushes one snapshot; `delta`, when given, takes the version the agent
/// last acked to this one and is offered first (O(change) bytes instead of
/// the whole manifest), with the whole manifest as the fallback (in parts,
/// then in one message for agents that predate parts). `progress` is told
/// each phase with (bytes sent, bytes wanted). Once the agent has staged
/// it, the push waits for `may_flip` before it tells the agent to flip.
pub async fn push(
    channel: Channel,
    snapshot: &Snapshot,
    delta: Option<&Delta>,
    blobs: &BlobStore,
    mut progress: impl FnMut(Phase, u64, u64),
    may_flip: impl std::future::Future<Output = Result<(), String>>,
) -> Result<Pushed, PushFailure> {
    let started = Instant::now();
    let mut client = AgentClient::new(channel).max_decoding_message_size(MAX_RESPONSE_BYTES);
    progress(Phase::Connecting, 0, 0);
    let mut offer_bytes = 0;
    let mut forms = offer_forms(snapshot, delta).into_iter().peekable();
    let opened = loop {
        let Some(form) = forms.next() else {
            return Err(PushFailure::Closed);
        };
        let (offer, parts) = offer_messages(snapshot, form);
        let (offered, opened) = open(&mut client, offer, parts).await;
        offer_bytes += offered;
        match (&opened, forms.peek()) {
            (Err(failure), Some(next)) if try_next_form(failure) => {
                tracing::info!(
                    repo = %snapshot.repo(), version = snapshot.version(), reason = %failure,
                    "{} refused: offering the {}", form.name(), next.name()
                );
            }
            _ => break opened,
        }
    };
    let Opened {
        tx,
        mut responses,
        first,
    } = opened?;
    let wanted = match first {
        In::Ack(ack) => {
            return Ok(Pushed {
                ack: check_ack(ack, snapshot)?,
                bytes_sent: 0,
                offer_bytes,
                elapsed: started.elapsed(),
            });
        }
        In::Reject(r) => return Err(rejected(r)),
        In::Want(w) => w,
        In::Staged(_) => return Err(PushFailure::Protocol("Staged before any blob".into())),
    };
    let (plan, chunk) = plan(wanted, snapshot)?;
    let bytes_wanted: u64 = plan.iter().map(|(_, off, size)| size - off).sum();
    progress(Phase::Sending, 0, bytes_wanted);

    // Send while listening: an agent may refuse mid-stream (disk full).
    // One blocking thread reads the blobs in large chunks straight into the
    // request stream: no per-chunk hop to the blocking pool.
    let (reply, bytes_sent) = {
        let counter = Arc::new(AtomicU64::new(0));
        let mut reader = tokio::task::spawn_blocking({
            let (tx, blobs, counter) = (tx.clone(), blobs.clone(), counter.clone());
            move || send_blobs(&plan, chunk, &blobs, &tx, &counter)
        });
        let send = async {
            let mut tick = tokio::time::interval(Duration::from_millis(250));
            let sent = loop {
                tokio::select! {
                    done = &mut reader => {
                        break done.map_err(|e| PushFailure::Protocol(format!("blob reader failed: {e}")))??;
                    }
                    _ = tick.tick() => {
                        progress(Phase::Sending, counter.load(Ordering::Relaxed), bytes_wanted);
                    }
                }
            };
            progress(Phase::Committing, sent, bytes_wanted);
            tx.send(pb::PushRequest {
                msg: Some(Out::Commit(pb::Commit {})),
            })
            .await
            .map_err(|_| PushFailure::Closed)?;
            Ok::<u64, PushFailure>(sent)
        };
        tokio::pin!(send);
        tokio::select! {
            sent = &mut send => {
                let sent = sent?;
                (answer(&mut responses, COMMIT_TIMEOUT).await?, sent)
            }
            early = answer(&mut responses, COMMIT_TIMEOUT) => (early?, 0),
        }
    };
    match reply {
        In::Staged(staged) => check_staged(&staged, snapshot)?,
        In::Reject(r) => return Err(rejected(r)),
        In::Want(_) => return Err(PushFailure::Protocol("a second Want".into())),
        In::Ack(_) => return Err(PushFailure::Protocol("an Ack before the Flip".into())),
    }
    progress(Phase::Staged, bytes_sent, bytes_wanted);
    may_flip.await.map_err(PushFailure::NotFlipped)?;
    progress(Phase::Flipping, bytes_sent, bytes_wanted);
    tx.send(pb::PushRequest {
        msg: Some(Out::Flip(pb::Flip {})),
    })
    .await
    .map_err(|_| PushFailure::Closed)?;
    match answer(&mut responses, COMMIT_TIMEOUT).await? {
        In::Ack(ack) => Ok(Pushed {
            ack: check_ack(ack, snapshot)?,
            bytes_sent,
            offer_bytes,
            elapsed: started.elapsed(),
        }),
        In::Reject(r) => Err(rejected(r)),
        In::Want(_) | In::Staged(_) => Err(PushFailure::Protocol("a second Want or Staged".into())),
    }
}

/// The Staged answer, if it is for exactly the snapshot offered.
fn check_staged(staged: &pb::Staged, snapshot: &Snapshot) -> Result<(), PushFailure> {
    if staged.repo != snapshot.repo().as_str()
        || staged.version != snapshot.version()
        || staged.manifest_digest[..] != snapshot.digest.0
    {
        return Err(PushFailure::WrongAck {
            expected: format!("{} v{}", snapshot.repo(), snapshot.version()),
            got: format!("staged {} v{}", staged.repo, staged.version),
        });
    }
    Ok(())
}
