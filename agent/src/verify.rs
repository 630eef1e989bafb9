//! Verifying an Offer: the agent's checks, numbered as in docs/PROTOCOL.md
//! ("The agent's verification"), in that order, all in memory. Nothing
//! reaches `tmp/`, `objects/`, the served tree or the state before every
//! step has passed. Each push runs them once; only step 5, which depends on
//! what is installed at that moment, runs again under the swap lock.

use std::sync::Arc;

use hotpush_proto as pb;
use hotpush_shared::Sha256Digest;
use hotpush_shared::clock::now_unix;
use hotpush_shared::delta::{self, DeltaError};
use hotpush_shared::manifest::{ManifestError, RepoName};
use hotpush_shared::sign::{SignError, SignedManifest};
use hotpush_shared::snapshot::{Snapshot, SnapshotError};

use crate::config::Config;
use crate::state::Installed;

/// Why an Offer was refused.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("{0}")]
    Signature(#[from] SignError),
    #[error("{0}")]
    Delta(#[from] DeltaError),
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
}

impl VerifyError {
    /// The wire code.
    pub fn code(&self) -> pb::RejectCode {
        use pb::RejectCode as C;
        match self {
            VerifyError::Signature(SignError::UntrustedKey(_)) => C::RejectUntrustedKey,
            VerifyError::Signature(_) => C::RejectBadSignature,
            VerifyError::Delta(e) if e.wants_whole() => C::RejectDeltaBase,
            VerifyError::Delta(DeltaError::TooLarge { .. } | DeltaError::TooManyChanges { .. }) => {
                C::RejectLimit
            }
            VerifyError::Delta(_) => C::RejectBadManifest,
            VerifyError::Manifest(
                ManifestError::TooLarge { .. }
                | ManifestError::TooManyEntries { .. }
                | ManifestError::BlobTooLarge { .. }
                | ManifestError::TotalTooLarge { .. },
            ) => C::RejectLimit,
            VerifyError::Manifest(_)
            | VerifyError::ConflictingSizes { .. }
            | VerifyError::EmptyMismatch { .. } => C::RejectBadManifest,
            VerifyError::UnknownRepo(..) => C::RejectUnknownRepo,
            VerifyError::Rollback { .. } => C::RejectRollback,
            VerifyError::Replay { .. } => C::RejectReplay,
            VerifyError::Expired { .. } => C::RejectExpired,
        }
    }
}

/// What an Offer carries.
#[derive(Debug)]
pub enum Offered {
    /// The whole signed manifest.
    Whole(pb::SignedManifest),
    /// The same bytes as an edit of the live manifest ([`delta`]).
    Delta(pb::ManifestDelta),
}

/// What to do with a verified offer.
#[derive(Debug)]
pub enum Verdict {
    /// Newer than what is installed (`installed`, if anything): receive and
    /// install it.
    Install {
        snapshot: Arc<Snapshot>,
        installed: Option<Arc<Installed>>,
    },
    /// Exactly this snapshot is live already: ack at once (idempotent re-push).
    AlreadyLive(Snapshot),
}

/// Steps 0–6 over an Offer; `installed` is what serves a repo now (read at
/// most once, by the caller).
pub fn verify_offer(
    config: &Config,
    offer: Offered,
    mut installed: impl FnMut(&RepoName) -> Option<Arc<Installed>>,
) -> Result<Verdict, VerifyError> {
    // 0. A delta becomes the manifest bytes it stands for, rebuilt from the
    //    live snapshot it names; from here on both forms are checked alike.
    let (offer, live) = match offer {
        Offered::Whole(offer) => (offer, None),
        Offered::Delta(d) => {
            let repo = delta::repo_of(&d)?;
            let live = installed(&repo);
            let Some(base) = &live else {
                return Err(DeltaError::NoBase {
                    repo,
                    base_version: d.base_version,
                }
                .into());
            };
            (
                delta::rebuild(&base.snapshot, d, &config.limits)?,
                Some(live),
            )
        }
    };
    // 1. Size, before anything else looks at the bytes.
    if offer.manifest_bytes.len() > config.limits.max_manifest_bytes {
        return Err(ManifestError::TooLarge {
            len: offer.manifest_bytes.len(),
            max: config.limits.max_manifest_bytes,
        }
        .into());
    }
    // 2. A signature by a trusted key over the exact bytes, before decoding.
    let verified = config.origin_keys.accept(SignedManifest::from_pb(offer)?)?;
    // 3. Structure, paths and limits (Manifest::decode applies every rule),
    //    and one size per blob, empty files hashing to the empty digest.
    let snapshot = Snapshot::from_verified(verified, &config.limits).map_err(|e| match e {
        SnapshotError::Signed(e) => VerifyError::Signature(e),
        SnapshotError::Manifest(e) => VerifyError::Manifest(e),
    })?;
    check_blobs(&snapshot)?;
    // 4. A repo this agent carries.
    let repo = snapshot.repo().clone();
    if !config.carries(&repo) {
        let list = config
            .repos
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ");
        return Err(VerifyError::UnknownRepo(repo, list));
    }
    // 5. Not older than what is installed, and not other content under the
    //    same version (rollback and replay).
    let installed = live.unwrap_or_else(|| installed(&repo));
    if against_installed(&snapshot, installed.as_deref())? == Freshness::Same {
        return Ok(Verdict::AlreadyLive(snapshot));
    }
    // 6. Not expired: an old manifest may not be installed (freeze attacks).
    let now = now_unix();
    if snapshot.manifest.expires_unix <= now {
        return Err(VerifyError::Expired {
            repo,
            version: snapshot.version(),
            expires: snapshot.manifest.expires_unix,
            now,
        });
    }
    Ok(Verdict::Install {
        snapshot: Arc::new(snapshot),
        installed,
    })
}

/// How an offered snapshot compares with the installed one.
#[derive(Debug, PartialEq, Eq)]
pub enum Freshness {
    /// A newer version (or nothing installed).
    Newer,
    /// Exactly the installed snapshot.
    Same,
}

/// Step 5, alone: run by [`verify_offer`] and again under the swap lock,
/// since another push may have installed this or a newer version meanwhile.
pub fn against_installed(
    offered: &Snapshot,
    installed: Option<&Installed>,
) -> Result<Freshness, VerifyError> {
    let Some(installed) = installed else {
        return Ok(Freshness::Newer);
    };
    let (have, version) = (installed.version(), offered.version());
    if version < have {
        return Err(VerifyError::Rollback {
            repo: offered.repo().clone(),
            offered: version,
            installed: have,
        });
    }
    if version == have {
        if installed.snapshot.digest == offered.digest {
            return Ok(Freshness::Same);
        }
        return Err(VerifyError::Replay {
            repo: offered.repo().clone(),
            version,
            installed: installed.snapshot.digest,
            offered: offered.digest,
        });
    }
    Ok(Freshness::Newer)
}

/// Part of step 3: each blob has one size, and an empty file has the empty
/// digest (no chunk ever carries one, so nothing else would check it).
fn check_blobs(snapshot: &Snapshot) -> Result<(), VerifyError> {
    let empty = Sha256Digest::of(b"");
    let mut sizes = std::collections::HashMap::new();
    for e in &snapshot.manifest.entries {
        if let Some(&a) = sizes.get(&e.sha256)
            && a != e.size
        {
            return Err(VerifyError::ConflictingSizes {
                digest: e.sha256,
                a,
                b: e.size,
            });
        }
        sizes.insert(e.sha256, e.size);
        if e.size == 0 && e.sha256 != empty {
            return Err(VerifyError::EmptyMismatch {
                path: e.path.to_string(),
                digest: e.sha256,
            });
        }
    }
    Ok(())
}
