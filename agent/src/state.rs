//! What is installed, as persisted under `<data>/state/`:
//!
//! - `<repo>.signed`: the signed manifest that is live (what `status` reports);
//! - `<repo>.signed.new`: written just before the swap, promoted just after;
//! - `<repo>.retained/<version>.signed`: replaced manifests, whose files stay
//!   reachable for `retain_for` after their mtime (the time they were replaced);
//! - `<repo>.retained/<version>.gone`: the entries of that version its
//!   successor did not have (one `sha256 size path` line each), written at
//!   the replacement. Garbage collection and the repodata carry-over read
//!   these short lists, never the retained manifests: their work and memory
//!   follow what changed, not the size of the tree times the number of
//!   versions kept.
//!
//! `<repo>` is the repo name with `/` written as `%2F`. The live and staged
//! snapshots are also kept decoded in memory, read from disk once.

use std::collections::HashMap;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use hotpush_shared::Limits;
use hotpush_shared::Sha256Digest;
use hotpush_shared::manifest::{Entry, Manifest, RepoName};
use hotpush_shared::relpath::RelPath;
use hotpush_shared::snapshot::{Snapshot, SnapshotError};
use hotpush_shared::store::sync_dir;

/// Why persisted state could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("{path}: {source}")]
    Snapshot {
        path: PathBuf,
        source: SnapshotError,
    },
    #[error("{path} line {line}: {what}")]
    Gone {
        path: PathBuf,
        line: usize,
        what: String,
    },
}

pub(crate) fn io_err<'a>(
    op: &'static str,
    path: &'a Path,
) -> impl FnOnce(io::Error) -> StateError + 'a {
    move |source| StateError::Io {
        op,
        path: path.to_owned(),
        source,
    }
}

/// An installed (or staged) snapshot.
#[derive(Clone, Debug)]
pub struct Installed {
    pub snapshot: Arc<Snapshot>,
    /// When it went live (or was staged).
    pub since: SystemTime,
}

impl Installed {
    pub fn version(&self) -> u64 {
        self.snapshot.version()
    }
}

/// A replaced snapshot, as far as what it still keeps on disk goes.
#[derive(Clone, Debug)]
pub struct Retained {
    pub version: u64,
    /// When it was replaced: the start of its retention window.
    pub since: SystemTime,
    /// Its entries that its successor does not have.
    pub gone: Vec<Entry>,
}

/// The entries of `old` whose (path, content) `new` does not have: one
/// walk over both sorted lists.
pub fn gone_between(old: &Manifest, new: &Manifest) -> Vec<Entry> {
    let mut gone = Vec::new();
    let mut theirs = new.entries.iter().peekable();
    for e in &old.entries {
        while theirs.next_if(|n| n.path < e.path).is_some() {}
        match theirs.peek() {
            Some(n) if n.path == e.path && n.sha256 == e.sha256 => {}
            _ => gone.push(e.clone()),
        }
    }
    gone
}

/// The live and staged snapshots, decoded once.
#[derive(Debug, Default)]
struct Memo {
    current: HashMap<RepoName, Arc<Installed>>,
    staged: HashMap<RepoName, Arc<Installed>>,
}

/// The state directory.
#[derive(Clone, Debug)]
pub struct StateDir {
    dir: PathBuf,
    limits: Limits,
    memo: Arc<Mutex<Memo>>,
}

impl StateDir {
    /// Opens (creating) `<data>/state`.
    pub fn open(data_dir: &Path, limits: Limits) -> Result<Self, StateError> {
        let dir = data_dir.join("state");
        fs::create_dir_all(&dir).map_err(io_err("create", &dir))?;
        Ok(Self {
            dir,
            limits,
            memo: Arc::default(),
        })
    }

    fn memo(&self) -> std::sync::MutexGuard<'_, Memo> {
        self.memo.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn current_path(&self, repo: &RepoName) -> PathBuf {
        self.dir.join(format!("{}.signed", repo.file_stem()))
    }

    fn new_path(&self, repo: &RepoName) -> PathBuf {
        self.dir.join(format!("{}.signed.new", repo.file_stem()))
    }

    fn retained_dir(&self, repo: &RepoName) -> PathBuf {
        self.dir.join(format!("{}.retained", repo.file_stem()))
    }

    /// `<repo>.retained/<version>.signed`.
    pub fn retained_signed_path(&self, repo: &RepoName, version: u64) -> PathBuf {
        self.retained_dir(repo).join(format!("{version}.signed"))
    }

    fn read(&self, path: &Path) -> Result<Option<Installed>, StateError> {
        let Some((snapshot, since)) = self.read_snapshot(path)? else {
            return Ok(None);
        };
        Ok(Some(Installed {
            snapshot: Arc::new(snapshot),
            since,
        }))
    }

    fn read_snapshot(&self, path: &Path) -> Result<Option<(Snapshot, SystemTime)>, StateError> {
        let bytes = match fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_err("read", path)(e)),
        };
        let since = fs::metadata(path)
            .and_then(|m| m.modified())
            .map_err(io_err("stat", path))?;
        // Verified when it was installed; the key may since have been rotated out.
        let snapshot =
            Snapshot::decode(&bytes, &self.limits).map_err(|source| StateError::Snapshot {
                path: path.into(),
                source,
            })?;
        Ok(Some((snapshot, since)))
    }

    /// The live snapshot of `repo`, if any (read from disk once).
    pub fn current(&self, repo: &RepoName) -> Result<Option<Arc<Installed>>, StateError> {
        if let Some(c) = self.memo().current.get(repo) {
            return Ok(Some(c.clone()));
        }
        let Some(installed) = self.read(&self.current_path(repo))? else {
            return Ok(None);
        };
        let installed = Arc::new(installed);
        self.memo().current.insert(repo.clone(), installed.clone());
        Ok(Some(installed))
    }

    /// A snapshot written by [`StateDir::stage`] but not yet promoted.
    pub fn staged(&self, repo: &RepoName) -> Result<Option<Arc<Installed>>, StateError> {
        if let Some(s) = self.memo().staged.get(repo) {
            return Ok(Some(s.clone()));
        }
        Ok(self.read(&self.new_path(repo))?.map(Arc::new))
    }

    /// Replaced snapshots, newest first, with the time they were replaced
    /// and what their successors dropped. A retained manifest from before
    /// `.gone` files existed is compared with its successor once, and its
    /// list written.
    pub fn retained(&self, repo: &RepoName) -> Result<Vec<Retained>, StateError> {
        let dir = self.retained_dir(repo);
        let listing = match fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_err("list", &dir)(e)),
        };
        let mut versions = Vec::new();
        for entry in listing {
            let entry = entry.map_err(io_err("list", &dir))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some(v) = name
                .strip_suffix(".signed")
                .and_then(|v| v.parse::<u64>().ok())
            {
                versions.push(v);
            }
        }
        versions.sort_unstable_by(|a, b| b.cmp(a));
        let mut out = Vec::with_capacity(versions.len());
        for (i, &version) in versions.iter().enumerate() {
            let signed = dir.join(format!("{version}.signed"));
            let since = fs::metadata(&signed)
                .and_then(|m| m.modified())
                .map_err(io_err("stat", &signed))?;
            let gone_path = dir.join(format!("{version}.gone"));
            let gone = match self.read_gone(&gone_path)? {
                Some(gone) => gone,
                None => {
                    let successor = match i.checked_sub(1) {
                        Some(newer) => dir.join(format!("{}.signed", versions[newer])),
                        None => self.current_path(repo),
                    };
                    self.migrate_gone(&signed, &successor, &gone_path)?
                }
            };
            out.push(Retained {
                version,
                since,
                gone,
            });
        }
        Ok(out)
    }

    fn read_gone(&self, path: &Path) -> Result<Option<Vec<Entry>>, StateError> {
        let text = match fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_err("read", path)(e)),
        };
        let bad = |line: usize, what: String| StateError::Gone {
            path: path.to_owned(),
            line,
            what,
        };
        let mut gone = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let mut parts = line.splitn(3, ' ');
            let (Some(sha), Some(size), Some(rel)) = (parts.next(), parts.next(), parts.next())
            else {
                return Err(bad(i + 1, "not `sha256 size path`".into()));
            };
            gone.push(Entry {
                sha256: sha
                    .parse::<Sha256Digest>()
                    .map_err(|e| bad(i + 1, e.to_string()))?,
                size: size.parse().map_err(|_| bad(i + 1, "bad size".into()))?,
                path: RelPath::new(rel, self.limits.max_path_bytes)
                    .map_err(|e| bad(i + 1, e.to_string()))?,
            });
        }
        Ok(Some(gone))
    }

    fn write_gone(&self, path: &Path, gone: &[Entry]) -> Result<(), StateError> {
        let mut text = String::new();
        for e in gone {
            text.push_str(&format!("{} {} {}\n", e.sha256.to_hex(), e.size, e.path));
        }
        let tmp = path.with_extension("gone.tmp");
        let mut f = fs::File::create(&tmp).map_err(io_err("create", &tmp))?;
        f.write_all(text.as_bytes())
            .map_err(io_err("write", &tmp))?;
        f.sync_all().map_err(io_err("fsync", &tmp))?;
        fs::rename(&tmp, path).map_err(io_err("rename", path))
    }

    /// The `.gone` list of a retained manifest written before they existed.
    fn migrate_gone(
        &self,
        signed: &Path,
        successor: &Path,
        gone_path: &Path,
    ) -> Result<Vec<Entry>, StateError> {
        let (Some((old, _)), Some((new, _))) =
            (self.read_snapshot(signed)?, self.read_snapshot(successor)?)
        else {
            // Without a successor everything it had counts as gone.
            return Ok(self
                .read_snapshot(signed)?
                .map(|(s, _)| s.manifest.entries)
                .unwrap_or_default());
        };
        let gone = gone_between(&old.manifest, &new.manifest);
        self.write_gone(gone_path, &gone)?;
        Ok(gone)
    }

    /// Step 1 of a swap: persist the incoming manifest beside the current one.
    pub fn stage(&self, snapshot: &Arc<Snapshot>) -> Result<(), StateError> {
        let path = self.new_path(snapshot.repo());
        let mut f = fs::File::create(&path).map_err(io_err("create", &path))?;
        f.write_all(&snapshot.signed.to_bytes())
            .map_err(io_err("write", &path))?;
        f.sync_all().map_err(io_err("fsync", &path))?;
        sync_dir(&self.dir).map_err(io_err("fsync", &self.dir))?;
        self.memo().staged.insert(
            snapshot.repo().clone(),
            Arc::new(Installed {
                snapshot: snapshot.clone(),
                since: SystemTime::now(),
            }),
        );
        Ok(())
    }

    /// Step 3 of a swap (after the symlink flip): retire the old manifest,
    /// with the list of what the new one dropped, and make the staged one
    /// current.
    pub fn promote(&self, repo: &RepoName) -> Result<(), StateError> {
        let current = self.current_path(repo);
        let Some(incoming) = self.staged(repo)? else {
            return Err(io_err("promote", &self.new_path(repo))(io::Error::new(
                io::ErrorKind::NotFound,
                "nothing staged",
            )));
        };
        if let Some(old) = self.current(repo)? {
            let dir = self.retained_dir(repo);
            fs::create_dir_all(&dir).map_err(io_err("create", &dir))?;
            let gone = gone_between(&old.snapshot.manifest, &incoming.snapshot.manifest);
            self.write_gone(&dir.join(format!("{}.gone", old.version())), &gone)?;
            let dest = dir.join(format!("{}.signed", old.version()));
            fs::rename(&current, &dest).map_err(io_err("rename", &dest))?;
            // The mtime records when it was replaced: the start of its retention.
            let f = fs::File::options()
                .write(true)
                .open(&dest)
                .map_err(io_err("open", &dest))?;
            f.set_modified(SystemTime::now())
                .map_err(io_err("touch", &dest))?;
            sync_dir(&dir).map_err(io_err("fsync", &dir))?;
        }
        let staged = self.new_path(repo);
        fs::rename(&staged, &current).map_err(io_err("rename", &current))?;
        let f = fs::File::options()
            .write(true)
            .open(&current)
            .map_err(io_err("open", &current))?;
        f.set_modified(SystemTime::now())
            .map_err(io_err("touch", &current))?;
        sync_dir(&self.dir).map_err(io_err("fsync", &self.dir))?;
        let mut memo = self.memo();
        memo.staged.remove(repo);
        memo.current.insert(
            repo.clone(),
            Arc::new(Installed {
                snapshot: incoming.snapshot.clone(),
                since: SystemTime::now(),
            }),
        );
        Ok(())
    }

    /// Drops a staged manifest whose swap never happened.
    pub fn unstage(&self, repo: &RepoName) -> Result<(), StateError> {
        self.memo().staged.remove(repo);
        let path = self.new_path(repo);
        match fs::remove_file(&path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(io_err("remove", &path)(e)),
            _ => Ok(()),
        }
    }

    fn journal_path(&self, repo: &RepoName) -> PathBuf {
        self.dir.join(format!("{}.placing", repo.file_stem()))
    }

    /// S1's journal: the package paths a swap to `version` is about to
    /// place, durable before the first is placed.
    pub fn write_journal<'a>(
        &self,
        repo: &RepoName,
        version: u64,
        paths: impl Iterator<Item = &'a str>,
    ) -> Result<(), StateError> {
        let path = self.journal_path(repo);
        let mut text = format!("{version}\n");
        for p in paths {
            text.push_str(p);
            text.push('\n');
        }
        let mut f = fs::File::create(&path).map_err(io_err("create", &path))?;
        f.write_all(text.as_bytes())
            .map_err(io_err("write", &path))?;
        f.sync_all().map_err(io_err("fsync", &path))?;
        sync_dir(&self.dir).map_err(io_err("fsync", &self.dir))
    }

    /// The journal of an unfinished swap: its version and paths.
    pub fn journal(&self, repo: &RepoName) -> Result<Option<(u64, Vec<String>)>, StateError> {
        let path = self.journal_path(repo);
        let text = match fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_err("read", &path)(e)),
        };
        let mut lines = text.lines();
        let Some(version) = lines.next().and_then(|v| v.parse().ok()) else {
            // A journal cut short by a crash before its fsync: nothing was placed yet.
            return Ok(None);
        };
        // Only paths that pass the manifest rules are ever written here.
        let paths = lines
            .filter(|p| RelPath::new(p, usize::MAX).is_ok())
            .map(str::to_owned)
            .collect();
        Ok(Some((version, paths)))
    }

    /// Removes the journal once its swap finished or was undone.
    pub fn clear_journal(&self, repo: &RepoName) -> Result<(), StateError> {
        let path = self.journal_path(repo);
        match fs::remove_file(&path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(io_err("remove", &path)(e)),
            _ => Ok(()),
        }
    }

    /// Forgets a retained manifest whose window has passed.
    pub fn forget(&self, repo: &RepoName, version: u64) -> Result<(), StateError> {
        for ext in ["signed", "gone"] {
            let path = self.retained_dir(repo).join(format!("{version}.{ext}"));
            match fs::remove_file(&path) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => {
                    return Err(io_err("remove", &path)(e));
                }
                _ => {}
            }
        }
        Ok(())
    }
}

/// True when a snapshot replaced at `since` is still inside the window.
pub fn within(since: SystemTime, retain_for: Duration, now: SystemTime) -> bool {
    now.duration_since(since)
        .map(|age| age < retain_for)
        .unwrap_or(true)
}
