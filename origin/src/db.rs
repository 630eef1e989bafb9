//! The origin's embedded state (SQLite): agents, published versions, acks,
//! the audit log, and the hash cache that spares re-hashing unchanged files.
//!
//! Version numbers come from `MAX(version)+1` inside the same transaction
//! that stores the signed manifest, so a crash can never reuse one.

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use hotpush_shared::Limits;
use hotpush_shared::Sha256Digest;
use hotpush_shared::clock::now_unix;
use hotpush_shared::identity::PeerId;
use hotpush_shared::manifest::RepoName;
use hotpush_shared::name::AgentName;
use hotpush_shared::push::Target;
use hotpush_shared::repo::{FileKey, HashCache};
use hotpush_shared::snapshot::{Snapshot, SnapshotError};
use hotpush_shared::url::PublicUrl;
use rusqlite::blob::ZeroBlob;
use rusqlite::{Connection, MAIN_DB, OptionalExtension, params};

/// Why the database refused.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("database: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error("database lock poisoned")]
    Poisoned,
    #[error("no agent named {0:?}")]
    NoSuchAgent(String),
    #[error("an agent named {0:?} already exists")]
    AgentExists(String),
    #[error("writing the {what} into the database: {source}")]
    Write {
        what: &'static str,
        source: std::io::Error,
    },
    #[error("stored {what} {value:?} is invalid: {why}")]
    Corrupt {
        what: &'static str,
        value: String,
        why: String,
    },
}

/// Published versions, each with its signed manifest.
const VERSIONS: &str = r#"
CREATE TABLE IF NOT EXISTS versions (
    repo TEXT NOT NULL,
    version INTEGER NOT NULL,
    manifest_digest BLOB NOT NULL,
    repomd_timestamp INTEGER NOT NULL,
    created_unix INTEGER NOT NULL,
    publisher TEXT NOT NULL,
    -- Last: SQLite keeps a large value in a chain of overflow pages, and
    -- reading any column after it walks that whole chain (~10 MB at
    -- 100,000 files) even when the query does not ask for it.
    signed BLOB NOT NULL,
    PRIMARY KEY (repo, version)
);
"#;

const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS agents (
    name TEXT PRIMARY KEY,
    endpoint TEXT NOT NULL,
    peer_id TEXT NOT NULL,
    public_url TEXT NOT NULL,
    weight INTEGER NOT NULL,
    repos TEXT NOT NULL,           -- space-separated; empty = every repo
    added_unix INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS acks (
    agent TEXT NOT NULL,
    repo TEXT NOT NULL,
    version INTEGER NOT NULL,
    manifest_digest BLOB NOT NULL,
    acked_unix INTEGER NOT NULL,
    public_verified INTEGER NOT NULL,   -- the agent's public URL served this version
    public_detail TEXT NOT NULL,
    PRIMARY KEY (agent, repo)
);
CREATE TABLE IF NOT EXISTS audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at_unix INTEGER NOT NULL,
    who TEXT NOT NULL,
    action TEXT NOT NULL,
    repo TEXT NOT NULL,
    version INTEGER NOT NULL,
    manifest_digest TEXT NOT NULL,
    detail TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS drills (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at_unix INTEGER NOT NULL,
    repo TEXT NOT NULL,
    passed INTEGER NOT NULL,
    detail TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS hash_cache (
    path TEXT PRIMARY KEY,
    size INTEGER NOT NULL,
    mtime_ns TEXT NOT NULL,
    ino INTEGER NOT NULL,
    dev INTEGER NOT NULL,
    sha256 BLOB NOT NULL
);
"#;

/// A partner agent as registered with `hotpush-origin agent add`: where
/// to push ([`Target`]) and its share of client traffic.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AgentRecord {
    pub target: Target,
    /// Relative share of client traffic (partner capacity).
    pub weight: u32,
}

impl AgentRecord {
    pub fn name(&self) -> &AgentName {
        &self.target.name
    }

    /// True when the agent carries `repo`.
    pub fn carries(&self, repo: &RepoName) -> bool {
        self.target.carries(repo)
    }
}

/// A stored version.
#[derive(Clone, Debug)]
pub struct VersionRecord {
    pub repo: String,
    pub version: u64,
    pub manifest_digest: Sha256Digest,
    pub signed: Vec<u8>,
    pub repomd_timestamp: u64,
    pub created_unix: i64,
}

impl VersionRecord {
    /// The stored signed manifest, decoded: the one place the origin does it.
    pub fn snapshot(&self, limits: &Limits) -> Result<Snapshot, SnapshotError> {
        Snapshot::decode(&self.signed, limits)
    }

    pub fn info(&self) -> VersionInfo {
        VersionInfo {
            repo: self.repo.clone(),
            version: self.version,
            manifest_digest: self.manifest_digest,
            repomd_timestamp: self.repomd_timestamp,
            created_unix: self.created_unix,
        }
    }
}

/// A stored version without its signed manifest (which can be megabytes).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VersionInfo {
    pub repo: String,
    pub version: u64,
    pub manifest_digest: Sha256Digest,
    pub repomd_timestamp: u64,
    pub created_unix: i64,
}

/// An agent's latest ack for a repo.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AckRecord {
    pub agent: String,
    pub repo: String,
    pub version: u64,
    pub manifest_digest: Sha256Digest,
    pub acked_unix: i64,
    /// Clients reach this version through the agent's public URL.
    pub public_verified: bool,
    pub public_detail: String,
}

/// One drill's outcome.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct DrillRecord {
    pub at_unix: i64,
    pub repo: String,
    pub passed: bool,
    /// What failed, or what was verified.
    pub detail: String,
}

/// One audit log line.
#[derive(Clone, Debug, serde::Serialize)]
pub struct AuditRecord {
    pub id: i64,
    pub at_unix: i64,
    pub who: String,
    pub action: String,
    pub repo: String,
    pub version: u64,
    pub manifest_digest: String,
    pub detail: String,
}

fn corrupt(what: &'static str, value: &str, why: impl ToString) -> DbError {
    DbError::Corrupt {
        what,
        value: value.to_owned(),
        why: why.to_string(),
    }
}

fn digest_col(bytes: Vec<u8>) -> Result<Sha256Digest, rusqlite::Error> {
    Sha256Digest::from_slice(&bytes)
        .map_err(|e| rusqlite::Error::InvalidColumnType(0, e.0, rusqlite::types::Type::Blob))
}

/// Moves `versions.signed` to the end of the row in a database made before
/// it was there ([`VERSIONS`] says why), once, in one transaction.
fn signed_last(conn: &Connection) -> Result<(), DbError> {
    let last: Option<String> = conn
        .query_row(
            "SELECT name FROM pragma_table_info('versions') ORDER BY cid DESC LIMIT 1",
            [],
            |r| r.get(0),
        )
        .optional()?;
    if last.as_deref() == Some("signed") {
        return Ok(());
    }
    tracing::info!("moving the signed manifests to the end of their rows (once)");
    const COLUMNS: &str =
        "repo, version, manifest_digest, repomd_timestamp, created_unix, publisher, signed";
    conn.execute_batch(&format!(
        "BEGIN IMMEDIATE;
         ALTER TABLE versions RENAME TO versions_before;
         {VERSIONS}
         INSERT INTO versions ({COLUMNS}) SELECT {COLUMNS} FROM versions_before;
         DROP TABLE versions_before;
         COMMIT;"
    ))?;
    Ok(())
}

/// A shared connection. Queries are short, so one mutex is enough.
#[derive(Clone)]
pub struct Db {
    conn: Arc<Mutex<Connection>>,
}

impl Db {
    /// Opens (creating) `<data>/origin.sqlite`.
    pub fn open(data_dir: &Path) -> Result<Self, DbError> {
        let conn = Connection::open(data_dir.join("origin.sqlite"))?;
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.execute_batch(SCHEMA)?;
        conn.execute_batch(VERSIONS)?;
        signed_last(&conn)?;
        Ok(Self {
            conn: Arc::new(Mutex::new(conn)),
        })
    }

    fn lock(&self) -> Result<MutexGuard<'_, Connection>, DbError> {
        self.conn.lock().map_err(|_| DbError::Poisoned)
    }

    /// Registers an agent.
    pub fn add_agent(&self, a: &AgentRecord) -> Result<(), DbError> {
        let conn = self.lock()?;
        let exists: Option<String> = conn
            .query_row(
                "SELECT name FROM agents WHERE name = ?1",
                [a.name().as_str()],
                |r| r.get(0),
            )
            .optional()?;
        if exists.is_some() {
            return Err(DbError::AgentExists(a.name().to_string()));
        }
        let t = &a.target;
        let repos: Vec<&str> = t.repos.iter().map(RepoName::as_str).collect();
        conn.execute(
            "INSERT INTO agents (name, endpoint, peer_id, public_url, weight, repos, added_unix) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![t.name.as_str(), t.endpoint, t.peer_id.to_string(), t.public_url.as_str(), a.weight, repos.join(" "), now_unix()],
        )?;
        Ok(())
    }

    /// Unregisters an agent and forgets its acks.
    pub fn remove_agent(&self, name: &str) -> Result<(), DbError> {
        let conn = self.lock()?;
        if conn.execute("DELETE FROM agents WHERE name = ?1", [name])? == 0 {
            return Err(DbError::NoSuchAgent(name.to_owned()));
        }
        conn.execute("DELETE FROM acks WHERE agent = ?1", [name])?;
        Ok(())
    }

    /// Every registered agent, by name.
    pub fn agents(&self) -> Result<Vec<AgentRecord>, DbError> {
        let conn = self.lock()?;
        let mut stmt = conn.prepare_cached(
            "SELECT name, endpoint, peer_id, public_url, weight, repos FROM agents ORDER BY name",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, u32>(4)?,
                r.get::<_, String>(5)?,
            ))
        })?;
        let mut agents = Vec::new();
        for row in rows {
            let (name, endpoint, peer_id, public_url, weight, repos) = row?;
            let repos = repos
                .split_whitespace()
                .map(|r| RepoName::new(r).map_err(|e| corrupt("repo", r, e)))
                .collect::<Result<_, _>>()?;
            agents.push(AgentRecord {
                target: Target {
                    name: AgentName::new(&name).map_err(|e| corrupt("agent name", &name, e))?,
                    endpoint,
                    peer_id: peer_id
                        .parse::<PeerId>()
                        .map_err(|e| corrupt("agent id", &peer_id, e))?,
                    public_url: PublicUrl::parse(&public_url)
                        .map_err(|e| corrupt("public URL", &public_url, e))?,
                    repos,
                },
                weight,
            });
        }
        Ok(agents)
    }

    /// Stores a new version with the next number, in one transaction with
    /// its audit line. `make` receives the number and returns the signed
    /// manifest bytes, its digest and repomd timestamp.
    pub fn insert_version<E>(
        &self,
        repo: &str,
        publisher: &str,
        make: impl FnOnce(u64) -> Result<(Vec<Bytes>, Sha256Digest, u64), E>,
    ) -> Result<Result<VersionInfo, E>, DbError> {
        let mut conn = self.lock()?;
        let tx = conn.transaction()?;
        let latest: Option<u64> = tx.query_row(
            "SELECT MAX(version) FROM versions WHERE repo = ?1",
            [repo],
            |r| r.get(0),
        )?;
        let version = latest.unwrap_or(0) + 1;
        let (signed, digest, repomd_timestamp) = match make(version) {
            Ok(v) => v,
            Err(e) => return Ok(Err(e)),
        };
        let created_unix = now_unix();
        // The signed manifest (~10 MB at 100,000 files) is written in its
        // pieces through SQLite's blob I/O: binding it would copy it whole,
        // twice (our concatenation, then SQLite's own).
        let len: usize = signed.iter().map(Bytes::len).sum();
        tx.execute(
            "INSERT INTO versions (repo, version, manifest_digest, signed, repomd_timestamp, created_unix, publisher) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![repo, version, &digest.0[..], ZeroBlob(len as u64), repomd_timestamp, created_unix, publisher],
        )?;
        let mut blob =
            tx.blob_open(MAIN_DB, "versions", "signed", tx.last_insert_rowid(), false)?;
        for part in &signed {
            blob.write_all(part).map_err(|e| DbError::Write {
                what: "signed manifest",
                source: e,
            })?;
        }
        blob.close()?;
        tx.execute(
            "INSERT INTO audit (at_unix, who, action, repo, version, manifest_digest, detail) VALUES (?1, ?2, 'publish', ?3, ?4, ?5, '')",
            params![created_unix, publisher, repo, version, digest.to_hex()],
        )?;
        tx.commit()?;
        Ok(Ok(VersionInfo {
            repo: repo.to_owned(),
            version,
            manifest_digest: digest,
            repomd_timestamp,
            created_unix,
        }))
    }

    /// The newest `limit` versions of `repo`, newest first, without their
    /// signed manifests.
    pub fn version_infos(&self, repo: &str, limit: usize) -> Result<Vec<VersionInfo>, DbError> {
        let conn = self.lock()?;
        let mut stmt = conn.prepare_cached(
            "SELECT repo, version, manifest_digest, repomd_timestamp, created_unix FROM versions WHERE repo = ?1 ORDER BY version DESC LIMIT ?2",
        )?;
        let rows = stmt.query_map(params![repo, limit as i64], |r| {
            Ok(VersionInfo {
                repo: r.get(0)?,
                version: r.get(1)?,
                manifest_digest: digest_col(r.get(2)?)?,
                repomd_timestamp: r.get(3)?,
                created_unix: r.get(4)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// One stored version with its signed manifest.
    pub fn version(&self, repo: &str, version: u64) -> Result<Option<VersionRecord>, DbError> {
        let conn = self.lock()?;
        let mut stmt = conn.prepare_cached(
            "SELECT rowid, repo, version, manifest_digest, repomd_timestamp, created_unix FROM versions WHERE repo = ?1 AND version = ?2",
        )?;
        let found = stmt
            .query_row(params![repo, version], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    VersionRecord {
                        repo: r.get(1)?,
                        version: r.get(2)?,
                        manifest_digest: digest_col(r.get(3)?)?,
                        signed: Vec::new(),
                        repomd_timestamp: r.get(4)?,
                        created_unix: r.get(5)?,
                    },
                ))
            })
            .optional()?;
        let Some((rowid, mut record)) = found else {
            return Ok(None);
        };
        // Read in place through blob I/O, page by page, not as a column
        // value: SQLite would first copy the whole manifest (~10 MB at
        // 100,000 files) into a buffer of its own, from the C allocator,
        // whose per-thread arenas kept ~8 MiB more of the origin's RSS
        // after each publish handled on another thread.
        let blob = conn.blob_open(MAIN_DB, "versions", "signed", rowid, true)?;
        record.signed = vec![0; blob.len()];
        blob.read_at_exact(&mut record.signed, 0)?;
        Ok(Some(record))
    }

    /// Every repo that has at least one version.
    pub fn repos(&self) -> Result<Vec<RepoName>, DbError> {
        let conn = self.lock()?;
        let mut stmt = conn.prepare_cached("SELECT DISTINCT repo FROM versions ORDER BY repo")?;
        let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
        rows.map(|r| {
            let name = r?;
            RepoName::new(&name).map_err(|e| corrupt("repo", &name, e))
        })
        .collect()
    }

    /// Records that `agent` serves `version` of `repo`. An ack never moves
    /// an agent backwards.
    pub fn record_ack(
        &self,
        agent: &str,
        repo: &str,
        version: u64,
        digest: &Sha256Digest,
        public_verified: bool,
        public_detail: &str,
    ) -> Result<(), DbError> {
        let conn = self.lock()?;
        conn.execute(
            "INSERT INTO acks (agent, repo, version, manifest_digest, acked_unix, public_verified, public_detail) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
             ON CONFLICT (agent, repo) DO UPDATE SET version = excluded.version, manifest_digest = excluded.manifest_digest,
                 acked_unix = excluded.acked_unix, public_verified = excluded.public_verified, public_detail = excluded.public_detail
             WHERE excluded.version >= acks.version",
            params![agent, repo, version, &digest.0[..], now_unix(), public_verified, public_detail],
        )?;
        Ok(())
    }

    /// Latest acks for `repo`, one per agent.
    pub fn acks(&self, repo: &str) -> Result<Vec<AckRecord>, DbError> {
        let conn = self.lock()?;
        let mut stmt =
            conn.prepare_cached("SELECT agent, repo, version, manifest_digest, acked_unix, public_verified, public_detail FROM acks WHERE repo = ?1 ORDER BY agent")?;
        let rows = stmt.query_map([repo], |r| {
            Ok(AckRecord {
                agent: r.get(0)?,
                repo: r.get(1)?,
                version: r.get(2)?,
                manifest_digest: digest_col(r.get(3)?)?,
                acked_unix: r.get(4)?,
                public_verified: r.get(5)?,
                public_detail: r.get(6)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Appends to the audit log.
    pub fn audit(
        &self,
        who: &str,
        action: &str,
        repo: &str,
        version: u64,
        digest: &str,
        detail: &str,
    ) -> Result<(), DbError> {
        let conn = self.lock()?;
        conn.execute(
            "INSERT INTO audit (at_unix, who, action, repo, version, manifest_digest, detail) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![now_unix(), who, action, repo, version, digest, detail],
        )?;
        Ok(())
    }

    /// The audit log, oldest first.
    pub fn audit_log(&self) -> Result<Vec<AuditRecord>, DbError> {
        let conn = self.lock()?;
        let mut stmt =
            conn.prepare_cached("SELECT id, at_unix, who, action, repo, version, manifest_digest, detail FROM audit ORDER BY id")?;
        let rows = stmt.query_map([], |r| {
            Ok(AuditRecord {
                id: r.get(0)?,
                at_unix: r.get(1)?,
                who: r.get(2)?,
                action: r.get(3)?,
                repo: r.get(4)?,
                version: r.get(5)?,
                manifest_digest: r.get(6)?,
                detail: r.get(7)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Records the outcome of a drill.
    pub fn record_drill(&self, repo: &str, passed: bool, detail: &str) -> Result<(), DbError> {
        let conn = self.lock()?;
        conn.execute(
            "INSERT INTO drills (at_unix, repo, passed, detail) VALUES (?1, ?2, ?3, ?4)",
            params![now_unix(), repo, passed, detail],
        )?;
        Ok(())
    }

    /// The latest drill, and when a drill last passed.
    pub fn drills(&self) -> Result<(Option<DrillRecord>, Option<i64>), DbError> {
        let conn = self.lock()?;
        let last = conn
            .query_row(
                "SELECT at_unix, repo, passed, detail FROM drills ORDER BY id DESC LIMIT 1",
                [],
                |r| {
                    Ok(DrillRecord {
                        at_unix: r.get(0)?,
                        repo: r.get(1)?,
                        passed: r.get(2)?,
                        detail: r.get(3)?,
                    })
                },
            )
            .optional()?;
        let last_passed = conn.query_row(
            "SELECT MAX(at_unix) FROM drills WHERE passed = 1",
            [],
            |r| r.get::<_, Option<i64>>(0),
        )?;
        Ok((last, last_passed))
    }

    /// The hash cache for one publish from `dir`, written at once by
    /// [`Db::save_hash_cache`]. With `whole`, every entry under `dir` is
    /// read in one query (a first publish looks at every file); otherwise
    /// entries are looked up one by one (only files the latest snapshot
    /// does not vouch for are).
    pub fn hash_cache(&self, dir: &Path, whole: bool) -> Result<PublishHashCache<'_>, DbError> {
        let mut preloaded = None;
        if whole {
            // Keys are `<dir>/<rel>`: the range of paths with that prefix.
            let prefix = format!("{}/", dir.display().to_string().trim_end_matches('/'));
            let end = format!("{}0", prefix.trim_end_matches('/'));
            let conn = self.lock()?;
            let mut stmt = conn.prepare_cached(
                "SELECT path, size, mtime_ns, ino, dev, sha256 FROM hash_cache WHERE path >= ?1 AND path < ?2",
            )?;
            let rows = stmt.query_map([&prefix, &end], |r| {
                let key = FileKey {
                    path: r.get(0)?,
                    size: r.get::<_, i64>(1)? as u64,
                    mtime_ns: r.get::<_, String>(2)?.parse().unwrap_or(-1),
                    ino: r.get::<_, i64>(3)? as u64,
                    dev: r.get::<_, i64>(4)? as u64,
                };
                Ok((key, digest_col(r.get(5)?)?))
            })?;
            preloaded = Some(rows.collect::<Result<HashMap<_, _>, _>>()?);
        }
        Ok(PublishHashCache {
            db: self,
            preloaded,
            new: Vec::new(),
        })
    }

    /// Remembers what a publish hashed, in one transaction. Called only
    /// once the blobs are durable in the store, so that an entry also means
    /// "the store holds it" (the origin never deletes blobs).
    pub fn save_hash_cache(&self, cache: PublishHashCache<'_>) -> Result<(), DbError> {
        if cache.new.is_empty() {
            return Ok(());
        }
        let mut conn = self.lock()?;
        let tx = conn.transaction()?;
        {
            let mut stmt = tx.prepare_cached(
                "INSERT OR REPLACE INTO hash_cache (path, size, mtime_ns, ino, dev, sha256) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?;
            for (key, sha256) in &cache.new {
                stmt.execute(params![
                    key.path,
                    key.size as i64,
                    key.mtime_ns.to_string(),
                    key.ino as i64,
                    key.dev as i64,
                    &sha256.0[..]
                ])?;
            }
        }
        tx.commit()?;
        Ok(())
    }
}

/// The sha256 of source files by (path, size, mtime, inode, device), as
/// far as earlier publishes stored them, plus what this publish hashed.
pub struct PublishHashCache<'a> {
    db: &'a Db,
    preloaded: Option<HashMap<FileKey, Sha256Digest>>,
    new: Vec<(FileKey, Sha256Digest)>,
}

impl HashCache for PublishHashCache<'_> {
    fn get(&self, key: &FileKey) -> Option<Sha256Digest> {
        if let Some(map) = &self.preloaded {
            return map.get(key).copied();
        }
        let conn = self.db.lock().ok()?;
        let mut stmt = conn
            .prepare_cached(
                "SELECT sha256 FROM hash_cache WHERE path = ?1 AND size = ?2 AND mtime_ns = ?3 AND ino = ?4 AND dev = ?5",
            )
            .ok()?;
        let sha: Vec<u8> = stmt
            .query_row(
                params![
                    key.path,
                    key.size as i64,
                    key.mtime_ns.to_string(),
                    key.ino as i64,
                    key.dev as i64
                ],
                |r| r.get(0),
            )
            .optional()
            .ok()??;
        Sha256Digest::from_slice(&sha).ok()
    }

    fn put(&mut self, key: FileKey, sha256: Sha256Digest) {
        self.new.push((key, sha256));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_database_with_the_signed_manifest_mid_row_is_moved_to_the_new_layout() {
        let dir = tempfile::tempdir().unwrap();
        {
            let conn = Connection::open(dir.path().join("origin.sqlite")).unwrap();
            conn.execute_batch(
                "CREATE TABLE versions (repo TEXT NOT NULL, version INTEGER NOT NULL,
                     manifest_digest BLOB NOT NULL, signed BLOB NOT NULL,
                     repomd_timestamp INTEGER NOT NULL, created_unix INTEGER NOT NULL,
                     publisher TEXT NOT NULL, PRIMARY KEY (repo, version));
                 INSERT INTO versions VALUES ('r', 1, x'00', x'0102', 5, 6, 'alice');",
            )
            .unwrap();
        }
        let last_column = |db: &Db| -> String {
            db.lock()
                .unwrap()
                .query_row(
                    "SELECT name FROM pragma_table_info('versions') ORDER BY cid DESC LIMIT 1",
                    [],
                    |r| r.get(0),
                )
                .unwrap()
        };
        for _ in 0..2 {
            let db = Db::open(dir.path()).unwrap();
            assert_eq!(last_column(&db), "signed");
            let (signed, publisher, created): (Vec<u8>, String, i64) = db
                .lock()
                .unwrap()
                .query_row(
                    "SELECT signed, publisher, created_unix FROM versions WHERE repo = 'r' AND version = 1",
                    [],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                )
                .unwrap();
            assert_eq!(
                (signed, publisher.as_str(), created),
                (vec![1, 2], "alice", 6)
            );
        }
        let fresh = tempfile::tempdir().unwrap();
        assert_eq!(last_column(&Db::open(fresh.path()).unwrap()), "signed");
    }

    #[test]
    fn versions_never_repeat_and_acks_never_go_back() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(dir.path()).unwrap();
        let d = Sha256Digest::of(b"m");
        let v1 = db
            .insert_version::<()>("r", "alice", |v| {
                Ok((vec![Bytes::from(vec![v as u8])], d, 5))
            })
            .unwrap()
            .unwrap();
        let failed = db.insert_version("r", "alice", |_| Err("invalid")).unwrap();
        assert!(failed.is_err());
        let v2 = db
            .insert_version::<()>("r", "bob", |v| Ok((vec![Bytes::from(vec![v as u8])], d, 6)))
            .unwrap()
            .unwrap();
        assert_eq!((v1.version, v2.version), (1, 2));
        assert_eq!(db.version_infos("r", 1).unwrap()[0].version, 2);
        db.record_ack("a1", "r", 2, &d, true, "").unwrap();
        db.record_ack("a1", "r", 1, &d, true, "").unwrap();
        assert_eq!(db.acks("r").unwrap()[0].version, 2);
        let log = db.audit_log().unwrap();
        assert_eq!(log.len(), 2);
        assert_eq!(log[1].who, "bob");
    }

    #[test]
    fn agents_add_list_remove() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(dir.path()).unwrap();
        let a = AgentRecord {
            target: Target {
                name: AgentName::new("m1").unwrap(),
                endpoint: "https://[::1]:7443".into(),
                peer_id: "ab".repeat(32).parse().unwrap(),
                public_url: PublicUrl::parse("http://[::1]:8081/").unwrap(),
                repos: vec![],
            },
            weight: 100,
        };
        db.add_agent(&a).unwrap();
        assert!(matches!(db.add_agent(&a), Err(DbError::AgentExists(_))));
        assert_eq!(db.agents().unwrap(), vec![a.clone()]);
        assert!(a.carries(&RepoName::new("anything").unwrap()));
        db.remove_agent("m1").unwrap();
        assert!(matches!(
            db.remove_agent("m1"),
            Err(DbError::NoSuchAgent(_))
        ));
    }
}
