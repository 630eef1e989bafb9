//! What is installed, as persisted under `<data>/state/`:
//!
//! - `<repo>.signed`: the signed manifest that is live (what `status` reports);
//! - `<repo>.signed.new`: written just before the swap, promoted just after;
//! - `<repo>.retained/<version>.signed`: replaced manifests, whose files stay
//!   reachable for `retain_for` after their mtime (the time they were replaced).
//!
//! `<repo>` is the repo name with `/` written as `%2F`.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use hotpush_shared::Limits;
use hotpush_shared::manifest::RepoName;
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

/// An installed (or retained) snapshot.
#[derive(Clone, Debug)]
pub struct Installed {
    pub snapshot: Snapshot,
    /// When it went live (current) or was replaced (retained).
    pub since: SystemTime,
}

impl Installed {
    pub fn version(&self) -> u64 {
        self.snapshot.version()
    }
}

/// The state directory.
#[derive(Clone, Debug)]
pub struct StateDir {
    dir: PathBuf,
    limits: Limits,
}

impl StateDir {
    /// Opens (creating) `<data>/state`.
    pub fn open(data_dir: &Path, limits: Limits) -> Result<Self, StateError> {
        let dir = data_dir.join("state");
        fs::create_dir_all(&dir).map_err(io_err("create", &dir))?;
        Ok(Self { dir, limits })
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

    fn read(&self, path: &Path) -> Result<Option<Installed>, StateError> {
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
        Ok(Some(Installed { snapshot, since }))
    }

    /// The live snapshot of `repo`, if any.
    pub fn current(&self, repo: &RepoName) -> Result<Option<Installed>, StateError> {
        self.read(&self.current_path(repo))
    }

    /// A snapshot written by [`StateDir::stage`] but not yet promoted.
    pub fn staged(&self, repo: &RepoName) -> Result<Option<Installed>, StateError> {
        self.read(&self.new_path(repo))
    }

    /// Replaced snapshots, newest first, with the time they were replaced.
    pub fn retained(&self, repo: &RepoName) -> Result<Vec<Installed>, StateError> {
        let dir = self.retained_dir(repo);
        let entries = match fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_err("list", &dir)(e)),
        };
        let mut out = Vec::new();
        for entry in entries {
            let entry = entry.map_err(io_err("list", &dir))?;
            if let Some(installed) = self.read(&entry.path())? {
                out.push(installed);
            }
        }
        out.sort_by_key(|i| std::cmp::Reverse(i.version()));
        Ok(out)
    }

    /// Step 1 of a swap: persist the incoming manifest beside the current one.
    pub fn stage(&self, snapshot: &Snapshot) -> Result<(), StateError> {
        let path = self.new_path(snapshot.repo());
        let mut f = fs::File::create(&path).map_err(io_err("create", &path))?;
        f.write_all(&snapshot.signed.to_bytes())
            .map_err(io_err("write", &path))?;
        f.sync_all().map_err(io_err("fsync", &path))?;
        sync_dir(&self.dir).map_err(io_err("fsync", &self.dir))
    }

    /// Step 3 of a swap (after the symlink flip): retire the old manifest and
    /// make the staged one current.
    pub fn promote(&self, repo: &RepoName) -> Result<(), StateError> {
        let current = self.current_path(repo);
        if let Some(old) = self.current(repo)? {
            let dir = self.retained_dir(repo);
            fs::create_dir_all(&dir).map_err(io_err("create", &dir))?;
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
        sync_dir(&self.dir).map_err(io_err("fsync", &self.dir))
    }

    /// Drops a staged manifest whose swap never happened.
    pub fn unstage(&self, repo: &RepoName) -> Result<(), StateError> {
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
        let path = self.retained_dir(repo).join(format!("{version}.signed"));
        match fs::remove_file(&path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(io_err("remove", &path)(e)),
            _ => Ok(()),
        }
    }
}

/// True when a snapshot replaced at `since` is still inside the window.
pub fn within(since: SystemTime, retain_for: Duration, now: SystemTime) -> bool {
    now.duration_since(since)
        .map(|age| age < retain_for)
        .unwrap_or(true)
}
