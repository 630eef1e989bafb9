//! Turning a directory into a signed snapshot: validate → store blobs →
//! number → sign. Pushing is the reconcilers' job ([`crate::reconcile`]).

use std::path::Path;

use hotpush_shared::manifest::{Entry, Manifest, RepoName};
use hotpush_shared::relpath::{PathError, RelPath};
use hotpush_shared::repo::{RepoError, validate_repo};
use hotpush_shared::store::StoreError;

use crate::db::{DbError, VersionRecord, now_unix};
use crate::origin::Origin;
use hotpush_shared::sign::SignedManifest;

/// Why a publish was refused. Nothing is stored when this is returned.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("repo refused: {0}")]
    Repo(#[from] RepoError),
    #[error("storing {path}: {source}")]
    Store { path: String, source: StoreError },
    #[error(
        "{path} changed while it was being published (sha256 was {expected}, now {actual}); publish again"
    )]
    Changed {
        path: String,
        expected: String,
        actual: String,
    },
    #[error("path {0}")]
    Path(#[from] PathError),
    #[error("manifest refused: {0}")]
    Manifest(#[from] hotpush_shared::manifest::ManifestError),
    #[error("{0} has never been published: publish it with --from DIR first")]
    NothingPublished(RepoName),
    #[error("stored snapshot is unreadable: {0}")]
    Corrupt(String),
    #[error(transparent)]
    Db(#[from] DbError),
}

/// A stored, signed version.
#[derive(Debug)]
pub struct Publication {
    pub record: VersionRecord,
    pub manifest: Manifest,
    pub unreferenced: Vec<String>,
    /// Blobs the origin had not stored before.
    pub new_blobs: usize,
    /// Same files as the previous version.
    pub unchanged: bool,
}

/// Validates `dir` as a yum repo, stores its files, and records a new
/// signed version of `repo`.
pub fn publish(
    origin: &Origin,
    repo: &RepoName,
    dir: &Path,
    who: &str,
) -> Result<Publication, PublishError> {
    let limits = &origin.config.limits;
    let validated = validate_repo(dir, limits, &mut origin.db.hash_cache())?;
    let mut new_blobs = 0;
    let mut entries = Vec::with_capacity(validated.files.len());
    for f in &validated.files {
        if !origin.store.has(&f.sha256) {
            let source = dir.join(&f.path);
            let (actual, _) =
                origin
                    .store
                    .import_file(&source)
                    .map_err(|source| PublishError::Store {
                        path: f.path.clone(),
                        source,
                    })?;
            if actual != f.sha256 {
                return Err(PublishError::Changed {
                    path: f.path.clone(),
                    expected: f.sha256.to_hex(),
                    actual: actual.to_hex(),
                });
            }
            new_blobs += 1;
        }
        entries.push(Entry {
            path: RelPath::new(&f.path, limits.max_path_bytes)?,
            size: f.size,
            sha256: f.sha256,
        });
    }
    entries.sort_by(|a, b| a.path.cmp(&b.path));
    let repomd_timestamp = validated
        .repomd
        .max_timestamp()
        .unwrap_or(now_unix() as u64);
    let (record, manifest, unchanged) = sign_version(origin, repo, entries, repomd_timestamp, who)?;
    tracing::info!(
        repo = %repo, version = record.version, files = manifest.entries.len(), new_blobs,
        unreferenced = validated.unreferenced.len(), who, "published"
    );
    Ok(Publication {
        record,
        manifest,
        unreferenced: validated.unreferenced,
        new_blobs,
        unchanged,
    })
}

/// Signs the newest version's files again as the next version: a rehearsal
/// (`drill`) that exercises every partner without changing what clients get,
/// and the cure for an agent that was down past the manifest's expiry.
pub fn resign_latest(
    origin: &Origin,
    repo: &RepoName,
    who: &str,
) -> Result<Publication, PublishError> {
    let latest = origin
        .db
        .latest(repo.as_str())?
        .ok_or_else(|| PublishError::NothingPublished(repo.clone()))?;
    let manifest = SignedManifest::from_bytes(&latest.signed)
        .map_err(|e| PublishError::Corrupt(e.to_string()))
        .and_then(|s| {
            Manifest::decode(&s.manifest_bytes, &origin.config.limits)
                .map_err(|e| PublishError::Corrupt(e.to_string()))
        })?;
    let (record, manifest, _) =
        sign_version(origin, repo, manifest.entries, latest.repomd_timestamp, who)?;
    tracing::info!(repo = %repo, version = record.version, who, "re-signed the latest content");
    Ok(Publication {
        record,
        manifest,
        unreferenced: Vec::new(),
        new_blobs: 0,
        unchanged: true,
    })
}

/// Numbers, signs and stores a manifest of `entries` (sorted); also says
/// whether the files are the same as the previous version's.
fn sign_version(
    origin: &Origin,
    repo: &RepoName,
    entries: Vec<Entry>,
    repomd_timestamp: u64,
    who: &str,
) -> Result<(VersionRecord, Manifest, bool), PublishError> {
    let limits = &origin.config.limits;
    let previous = origin.db.latest(repo.as_str())?;
    let created = now_unix();
    let lifetime = origin.config.manifest_lifetime.as_secs() as i64;
    let mut manifest = Manifest {
        repo: repo.clone(),
        version: 0,
        created_unix: created,
        expires_unix: created + lifetime,
        entries,
    };
    let record = origin
        .db
        .insert_version::<PublishError>(repo.as_str(), who, |version| {
            manifest.version = version;
            manifest.check_entries(limits)?;
            let signed = origin.key.sign(manifest.encode());
            Ok((signed.to_bytes(), signed.digest(), repomd_timestamp))
        })??;
    let unchanged = previous.is_some_and(|p| {
        SignedManifest::from_bytes(&p.signed)
            .ok()
            .and_then(|s| Manifest::decode(&s.manifest_bytes, limits).ok())
            .is_some_and(|m| m.entries == manifest.entries)
    });
    Ok((record, manifest, unchanged))
}
