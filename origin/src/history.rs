//! Which bytes each path had in a repo's recent snapshots, so that a
//! publish changing the bytes under a path is refused (docs/PROTOCOL.md,
//! "Changed paths"): a client holding the older metadata would get a
//! checksum mismatch for that package on every mirror.
//!
//! "Recent" is [`CHANGED_PATH_WINDOW_SECS`], dnf's default
//! `metadata_expire`. The history of a repo is built from the database on
//! first use, then kept up to date by each publish.

use std::collections::HashMap;
use std::sync::Mutex;

use hotpush_shared::Sha256Digest;
use hotpush_shared::clock::now_unix;
use hotpush_shared::manifest::{Entry, RepoName};
use hotpush_shared::relpath::RelPath;

use crate::config::CHANGED_PATH_WINDOW_SECS;
use crate::db::{Db, DbError};

/// How many stored versions are read to build a repo's history.
const LOOKBACK: usize = 64;

/// A path whose bytes a publish would change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChangedPath {
    pub path: RelPath,
    /// The version that last served the old bytes.
    pub version: u64,
    pub old: Sha256Digest,
    pub new: Sha256Digest,
}

/// Path → (digest, newest version with it, when that version was created).
type Paths = HashMap<RelPath, (Sha256Digest, u64, i64)>;

/// The recent path history of every repo.
#[derive(Default)]
pub struct PathHistory {
    repos: Mutex<HashMap<RepoName, Paths>>,
}

impl PathHistory {
    /// The entries of a new snapshot of `repo` whose path had other bytes
    /// in a snapshot published within the window. Repodata is not looked
    /// at: every version gets a repodata directory of its own on the
    /// mirrors, and repomd.xml changes by design.
    pub fn changed(
        &self,
        db: &Db,
        limits: &hotpush_shared::Limits,
        repo: &RepoName,
        entries: &[Entry],
    ) -> Result<Vec<ChangedPath>, DbError> {
        let mut repos = self.repos.lock().unwrap_or_else(|p| p.into_inner());
        if !repos.contains_key(repo) {
            repos.insert(repo.clone(), build(db, limits, repo)?);
        }
        let paths = &repos[repo];
        let oldest = now_unix() - CHANGED_PATH_WINDOW_SECS as i64;
        Ok(entries
            .iter()
            .filter(|e| !e.is_repodata())
            .filter_map(|e| {
                let &(old, version, seen) = paths.get(&e.path)?;
                (old != e.sha256 && seen >= oldest).then(|| ChangedPath {
                    path: e.path.clone(),
                    version,
                    old,
                    new: e.sha256,
                })
            })
            .collect())
    }

    /// A new version of `repo` was stored with `entries`.
    pub fn record(&self, repo: &RepoName, version: u64, created_unix: i64, entries: &[Entry]) {
        let mut repos = self.repos.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(paths) = repos.get_mut(repo) {
            for e in entries {
                let seen = (e.sha256, version, created_unix);
                // Updated in place: a publish repeats almost every path,
                // and cloning and re-inserting 100,000 keys each time was
                // 7 % of an incremental publish's CPU on the origin.
                match paths.get_mut(&e.path) {
                    Some(had) => *had = seen,
                    None => {
                        paths.insert(e.path.clone(), seen);
                    }
                }
            }
        }
    }
}

fn build(db: &Db, limits: &hotpush_shared::Limits, repo: &RepoName) -> Result<Paths, DbError> {
    let oldest = now_unix() - CHANGED_PATH_WINDOW_SECS as i64;
    let mut paths = Paths::new();
    // Listed without their manifests, then read one at a time: at 100,000
    // files a manifest is ~8 MB, and 64 of them at once was half a gigabyte.
    let mut versions = db.version_infos(repo.as_str(), LOOKBACK)?;
    versions.retain(|v| v.created_unix >= oldest);
    versions.sort_by_key(|v| v.version);
    for info in versions {
        // Pruned meanwhile: nothing to remember of it.
        let Some(v) = db.version(repo.as_str(), info.version)? else {
            continue;
        };
        let snapshot = v.snapshot(limits).map_err(|e| DbError::Corrupt {
            what: "signed manifest",
            value: format!("{repo} v{}", v.version),
            why: e.to_string(),
        })?;
        for e in snapshot.manifest.entries {
            paths.insert(e.path, (e.sha256, v.version, v.created_unix));
        }
    }
    Ok(paths)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use hotpush_shared::Limits;
    use hotpush_shared::manifest::Manifest;
    use hotpush_shared::sign::SigningKey;

    use super::*;

    fn entry(path: &str, bytes: &[u8]) -> Entry {
        Entry {
            path: RelPath::new(path, 1024).unwrap(),
            size: bytes.len() as u64,
            sha256: Sha256Digest::of(bytes),
        }
    }

    /// What an origin that restarts finds: versions in the database only.
    #[test]
    fn history_rebuilt_from_stored_versions_refuses_changed_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(dir.path()).unwrap();
        let key = SigningKey::generate().unwrap();
        let repo = RepoName::new("r/x86_64").unwrap();
        let versions = [
            vec![entry("Packages/a.rpm", b"a1")],
            vec![
                entry("Packages/a.rpm", b"a1"),
                entry("Packages/b.rpm", b"b1"),
            ],
            vec![entry("Packages/b.rpm", b"b1")],
        ];
        for mut entries in versions {
            entries.push(entry("repodata/repomd.xml", b"<repomd/>"));
            db.insert_version::<()>(repo.as_str(), "test", |version| {
                let manifest = Manifest {
                    repo: repo.clone(),
                    version,
                    created_unix: now_unix(),
                    expires_unix: now_unix() + 3600,
                    entries,
                };
                let signed = key.sign(manifest.encode());
                Ok((signed.to_byte_parts().to_vec(), signed.digest(), 0))
            })
            .unwrap()
            .unwrap();
        }

        let history = PathHistory::default();
        let next = [
            entry("Packages/a.rpm", b"a2"),
            entry("Packages/b.rpm", b"b1"),
            entry("Packages/c.rpm", b"c1"),
        ];
        let changed = history
            .changed(&db, &Limits::default(), &repo, &next)
            .unwrap();
        // a.rpm left in version 3 but version 1 and 2 served other bytes.
        assert_eq!(changed.len(), 1, "{changed:?}");
        assert_eq!(changed[0].path.as_str(), "Packages/a.rpm");
        assert_eq!(changed[0].version, 2);
        assert_eq!(changed[0].old, Sha256Digest::of(b"a1"));
    }
}
