//! Turning a directory into a signed snapshot: validate → store blobs →
//! number → sign. Pushing it is the reconcilers' job.

use std::path::Path;
use std::sync::Arc;

use hotpush_shared::clock::now_unix;
use hotpush_shared::manifest::{Entry, Manifest, ManifestError, RepoName};
use hotpush_shared::repo::{RepoError, validate_repo_since};
use hotpush_shared::snapshot::Snapshot;
use hotpush_shared::store::{Import, StoreError};

use crate::db::{DbError, VersionInfo};
use crate::origin::Origin;

/// Why a publish was refused. Nothing is stored when this is returned.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("repo refused: {0}")]
    Repo(#[from] RepoError),
    #[error("storing the files of {path}: {source}")]
    Store { path: String, source: StoreError },
    #[error("manifest refused: {0}")]
    Manifest(#[from] ManifestError),
    #[error("{0} has never been published: publish it with --from DIR first")]
    NothingPublished(RepoName),
    #[error(
        "{} would change bytes that version {} served{}: clients holding that metadata would get a \
         checksum mismatch on every mirror. Bump the package's release so the fix gets a new file \
         name, or publish with --allow-changed-paths (see docs/PROTOCOL.md, \"Changed paths\")",
        .0[0].path, .0[0].version,
        if .0.len() > 1 { format!(" (and {} more paths)", .0.len() - 1) } else { String::new() }
    )]
    ChangedPaths(Vec<crate::history::ChangedPath>),
    #[error(transparent)]
    Db(#[from] DbError),
}

/// A stored, signed version.
#[derive(Debug)]
pub struct Publication {
    pub record: VersionInfo,
    pub snapshot: Arc<Snapshot>,
    pub unreferenced: Vec<String>,
    /// Blobs the origin had not stored before.
    pub new_blobs: usize,
    /// Same files as the previous version.
    pub unchanged: bool,
}

/// Validates `dir` as a yum repo (every path checked, every file read at
/// most once and never through a symlink), stores the files the store
/// lacks, and records a new signed version of `repo`. A refused publish
/// stores nothing.
pub fn publish(
    origin: &Origin,
    repo: &RepoName,
    dir: &Path,
    who: &str,
    allow_changed_paths: bool,
) -> Result<Publication, PublishError> {
    let limits = &origin.config.limits;
    let started = std::time::Instant::now();
    let mut import = Import::new(&origin.store);
    let published = origin.latest(repo)?;
    let known = published
        .as_ref()
        .and_then(|s| origin.known_packages(repo, s.version()));
    let mut hashes = origin.db.hash_cache(dir, published.is_none())?;
    let validated = validate_repo_since(
        dir,
        limits,
        &mut hashes,
        Some(&mut import),
        published.as_deref().map(|s| &s.manifest),
        known.as_deref(),
    )?;
    let validate_ms = started.elapsed().as_millis() as u64;
    // validate_repo returns the files sorted by path, as a manifest lists them.
    let entries: Vec<Entry> = validated
        .files
        .into_iter()
        .map(|f| Entry {
            path: f.path,
            size: f.size,
            sha256: f.sha256,
        })
        .collect();
    let changed = origin.history.changed(&origin.db, limits, repo, &entries)?;
    if !changed.is_empty() {
        if !allow_changed_paths {
            return Err(PublishError::ChangedPaths(changed));
        }
        for c in &changed {
            tracing::warn!(%repo, path = %c.path, old = %c.old, new = %c.new, "publishing changed bytes under an existing path (--allow-changed-paths)");
        }
    }
    // Durable before the version that names them is recorded.
    let new_blobs = import.commit().map_err(|source| PublishError::Store {
        path: dir.display().to_string(),
        source,
    })?;
    // Only now: an entry vouches that the store holds the blob.
    if let Err(e) = origin.db.save_hash_cache(hashes) {
        tracing::warn!(error = %e, "hash cache not saved: the next publish hashes these files again");
    }
    let repomd_timestamp = validated
        .repomd
        .max_timestamp()
        .unwrap_or(now_unix() as u64);
    let stored_ms = started.elapsed().as_millis() as u64;
    let (record, snapshot, unchanged) = sign_version(origin, repo, entries, repomd_timestamp, who)?;
    origin.remember_packages(repo, record.version, validated.listings);
    // Where a publish's time went, for an operator wondering why it is slow.
    tracing::info!(
        repo = %repo, version = record.version, files = snapshot.manifest.entries.len(), new_blobs,
        recognised = validated.recognised, unreferenced = validated.unreferenced.len(), who,
        validate_ms, stored_ms,
        total_ms = started.elapsed().as_millis() as u64, "published"
    );
    Ok(Publication {
        record,
        snapshot,
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
        .latest(repo)?
        .ok_or_else(|| PublishError::NothingPublished(repo.clone()))?;
    let record = origin
        .db
        .version_infos(repo.as_str(), 1)?
        .pop()
        .ok_or_else(|| PublishError::NothingPublished(repo.clone()))?;
    let (record, snapshot, _) = sign_version(
        origin,
        repo,
        latest.manifest.entries.clone(),
        record.repomd_timestamp,
        who,
    )?;
    tracing::info!(repo = %repo, version = record.version, who, "re-signed the latest content");
    Ok(Publication {
        record,
        snapshot,
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
) -> Result<(VersionInfo, Arc<Snapshot>, bool), PublishError> {
    let limits = &origin.config.limits;
    let previous = origin.latest(repo)?;
    let created = now_unix();
    let lifetime = origin.config.manifest_lifetime.as_secs() as i64;
    let mut manifest = Manifest {
        repo: repo.clone(),
        version: 0,
        created_unix: created,
        expires_unix: created + lifetime,
        entries,
    };
    let mut signed = None;
    let record = origin
        .db
        .insert_version::<PublishError>(repo.as_str(), who, |version| {
            manifest.version = version;
            manifest.check_entries(limits)?;
            let s = origin.key.sign(manifest.encode());
            let out = (s.to_byte_parts().to_vec(), s.digest(), repomd_timestamp);
            signed = Some(s);
            Ok(out)
        })??;
    let signed = signed.ok_or_else(|| DbError::Corrupt {
        what: "new version",
        value: repo.to_string(),
        why: "stored without a signature".into(),
    })?;
    let snapshot = Arc::new(Snapshot::new(signed, manifest));
    origin.announce(snapshot.clone(), previous.as_deref());
    // After the announcement, so the mirrors do not wait for them: at
    // 100,000 files the comparison and the history update take ~18 ms.
    let entries = &snapshot.manifest.entries;
    let unchanged = previous
        .as_ref()
        .is_some_and(|p| p.manifest.entries == *entries);
    origin
        .history
        .record(repo, record.version, record.created_unix, entries);
    Ok((record, snapshot, unchanged))
}
