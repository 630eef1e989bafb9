//! The swap: put a verified snapshot live so that no reader ever sees a mix
//! of two snapshots. The steps are docs/PROTOCOL.md's S1–S5:
//!
//! - S1. Packages are hard-linked from `objects/` into `<serve_root>/<repo>/`,
//!   each through a temporary name and one `rename(2)`, so a path whose
//!   content changes is replaced whole. New paths are invisible to clients
//!   until repodata names them. Unchanged paths are not touched: the cost
//!   is O(what changed).
//! - S2. `.repodata/<version>/` is built beside the live one. It also carries
//!   the hash-named files of snapshots still inside `retain_for`, so a
//!   client holding an older repomd.xml still finds what it names.
//! - S3. The manifest is staged in the state directory.
//! - S4. `repodata` is switched by renaming a new symlink over the old one:
//!   repomd.xml and its .asc change together, in one step.
//! - S5. The staged manifest becomes current.
//!
//! A crash anywhere leaves the old or the new snapshot live;
//! [`Tree::recover`] finishes or undoes S5 at start-up.

use std::collections::{BTreeSet, HashSet};
use std::fs;
use std::io;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use hotpush_shared::Sha256Digest;
use hotpush_shared::manifest::{Entry, RepoName};
use hotpush_shared::snapshot::Snapshot;
use hotpush_shared::store::{BlobStore, sync_dir};

use crate::failpoint::stage;
use crate::state::{Installed, Retained, StateDir, StateError, io_err, within};

/// A named stage of the swap (see [`stage`]); a failure injected there is a
/// swap failure like any other.
fn at(name: &'static str) -> Result<(), SwapError> {
    Ok(stage(name).map_err(io_err("failpoint", Path::new(name)))?)
}

/// Directory holding one repodata directory per version.
const VERSIONS_DIR: &str = ".repodata";
/// The symlink clients go through.
const REPODATA_LINK: &str = "repodata";
/// The new symlink's name before it is renamed over [`REPODATA_LINK`].
const LINK_TMP: &str = ".repodata.link-tmp";

/// Why a swap failed. The old snapshot is still live whenever this is returned.
#[derive(Debug, thiserror::Error)]
pub enum SwapError {
    #[error(transparent)]
    State(#[from] StateError),
    #[error("blob {digest} for {path} is missing from the store")]
    MissingBlob { path: String, digest: Sha256Digest },
    #[error("{0} exists and is not a symlink: move it away so hotpush can manage the repo")]
    NotALink(PathBuf),
}

impl SwapError {
    /// True when the failure is a full disk.
    pub fn is_disk_full(&self) -> bool {
        matches!(self, SwapError::State(StateError::Io { source, .. })
            if source.raw_os_error() == Some(28) || source.kind() == io::ErrorKind::StorageFull)
    }
}

/// A snapshot staged by [`Tree::stage`], one rename away from live.
#[derive(Debug)]
pub struct StagedSwap {
    pub repo: RepoName,
    pub version: u64,
    /// Paths whose content changes, placed at the flip.
    changed: Vec<(Sha256Digest, hotpush_shared::relpath::RelPath)>,
}

/// Where a repo's files go and what to keep.
#[derive(Clone, Debug)]
pub struct Tree {
    pub store: BlobStore,
    pub state: StateDir,
    pub serve_root: PathBuf,
    pub retain_for: Duration,
}

impl Tree {
    /// `<serve_root>/<repo>`.
    pub fn repo_dir(&self, repo: &RepoName) -> PathBuf {
        self.serve_root.join(repo.as_str())
    }

    /// Stages and flips at once (a snapshot no metalink needs to wait for).
    pub fn install(&self, snapshot: &Arc<Snapshot>) -> Result<(), SwapError> {
        let staged = self.stage(snapshot)?;
        self.flip(staged)
    }

    /// S1–S3: puts `snapshot` beside the live one, diffing against it (only
    /// what changed is touched) and carrying over the repodata files of the
    /// snapshots still inside `retain_for`. Nothing a client sees changes:
    /// new package paths are not named by any live repodata, and paths whose
    /// content changes are only replaced at the flip. If it fails, what it
    /// placed is taken away again.
    pub fn stage(&self, snapshot: &Arc<Snapshot>) -> Result<StagedSwap, SwapError> {
        let result = self.stage_steps(snapshot);
        if let Err(e) = &result {
            tracing::warn!(repo = %snapshot.repo(), version = snapshot.version(), error = %e, "staging failed: removing what it placed");
            self.abandon(snapshot.repo());
        }
        result
    }

    /// S4–S5: replaces the paths whose content changed, switches `repodata`
    /// (one rename) and promotes the staged manifest: the snapshot is live.
    /// A failure before the switch takes the staging away again.
    pub fn flip(&self, staged: StagedSwap) -> Result<(), SwapError> {
        let repo = staged.repo.clone();
        let result = self.flip_steps(&staged);
        match &result {
            Ok(()) => self.state.clear_journal(&repo)?,
            Err(e) => {
                tracing::warn!(%repo, version = staged.version, error = %e, "flip failed");
                self.abandon(&repo);
            }
        }
        result
    }

    /// Takes away a staging that will not be flipped (the origin went away,
    /// or a newer push took over): what it placed, its repodata directory,
    /// its staged manifest. A swap that already flipped is left alone.
    pub fn abandon(&self, repo: &RepoName) {
        match self.undo_unflipped(repo) {
            Ok(()) => {
                if let Err(e) = self.state.clear_journal(repo) {
                    tracing::warn!(%repo, error = %e, "could not clear the swap journal");
                }
            }
            Err(undo) => {
                tracing::warn!(%repo, error = %undo, "could not remove what an unfinished swap placed; the next start retries")
            }
        }
    }

    fn stage_steps(&self, snapshot: &Arc<Snapshot>) -> Result<StagedSwap, SwapError> {
        let manifest = &snapshot.manifest;
        let repo = &manifest.repo;
        let repo_dir = self.repo_dir(repo);
        fs::create_dir_all(&repo_dir).map_err(io_err("create", &repo_dir))?;
        let current = self.state.current(repo)?;
        let now = SystemTime::now();
        let kept: Vec<Retained> = self
            .state
            .retained(repo)?
            .into_iter()
            .filter(|r| within(r.since, self.retain_for, now))
            .collect();

        at("swap::start")?;
        // S1. Packages, skipping those already live with the same content
        // (the live tree is trusted here; `hotpush-agent verify` re-checks
        // it). What will be placed is journalled first, so that a failed or
        // abandoned swap can take it away again. New paths are placed now;
        // paths that get other content wait for the flip.
        // One walk over both sorted lists: what the live snapshot lacks.
        let live: &[Entry] = current
            .as_ref()
            .map_or(&[], |c| &c.snapshot.manifest.entries);
        let to_place: Vec<(&Entry, bool)> = differing(live, &manifest.entries)
            .filter(|(e, _)| !e.is_repodata())
            .collect();
        self.state.write_journal(
            repo,
            manifest.version,
            to_place.iter().map(|(e, _)| e.path.as_str()),
        )?;
        let mut touched_dirs = BTreeSet::new();
        let mut changed = Vec::new();
        for (e, path_is_live) in to_place {
            let dest = repo_dir.join(e.path.as_str());
            if path_is_live {
                changed.push((e.sha256, e.path.clone()));
                continue;
            }
            self.place_new(&e.sha256, e.path.as_str(), &dest)?;
            at("swap::placed_package")?;
            touched_dirs.insert(dest.parent().map(Path::to_path_buf).unwrap_or_default());
        }
        for dir in &touched_dirs {
            sync_dir(dir).map_err(io_err("fsync", dir))?;
        }

        // S2. The new repodata directory, built under a temporary name.
        let versions = repo_dir.join(VERSIONS_DIR);
        let vdir = versions.join(manifest.version.to_string());
        let building = versions.join(format!("{}.building", manifest.version));
        for stale in [&vdir, &building] {
            if stale.exists() {
                fs::remove_dir_all(stale).map_err(io_err("remove", stale))?;
            }
        }
        fs::create_dir_all(&building).map_err(io_err("create", &building))?;
        let mut names = HashSet::new();
        for e in manifest.entries.iter().filter(|e| e.is_repodata()) {
            names.insert(e.path.file_name().to_owned());
            self.place_new(
                &e.sha256,
                e.path.as_str(),
                &building.join(e.path.file_name()),
            )?;
        }
        // The snapshot being replaced enters its retention window at the
        // flip (unless there is none); older ones only while inside theirs.
        // Every repodata file a kept snapshot names is in the live one or in
        // the list of what a kept snapshot's successor dropped.
        let replaced = current
            .iter()
            .filter(|_| !self.retain_for.is_zero())
            .flat_map(|c| c.snapshot.manifest.entries.iter());
        let kept_gone = kept.iter().flat_map(|r| r.gone.iter());
        {
            for e in replaced.chain(kept_gone).filter(|e| e.is_repodata()) {
                let name = e.path.file_name();
                // repomd.xml and its signature are per-version; never carry them.
                if name.starts_with("repomd.xml") || !names.insert(name.to_owned()) {
                    continue;
                }
                if self.store.has(&e.sha256) {
                    self.place_new(&e.sha256, e.path.as_str(), &building.join(name))?;
                }
            }
        }
        sync_dir(&building).map_err(io_err("fsync", &building))?;
        fs::rename(&building, &vdir).map_err(io_err("rename", &vdir))?;
        sync_dir(&versions).map_err(io_err("fsync", &versions))?;

        // S3. Stage the manifest.
        at("swap::before_stage")?;
        self.state.stage(snapshot)?;
        at("swap::staged")?;
        Ok(StagedSwap {
            repo: repo.clone(),
            version: manifest.version,
            changed,
        })
    }

    fn flip_steps(&self, staged: &StagedSwap) -> Result<(), SwapError> {
        let repo_dir = self.repo_dir(&staged.repo);
        // S4. Paths whose content changes (only with --allow-changed-paths),
        // each by one rename, then repodata by one rename.
        let mut touched_dirs = BTreeSet::new();
        for (digest, path) in &staged.changed {
            let dest = repo_dir.join(path.as_str());
            self.place(digest, path.as_str(), &dest)?;
            touched_dirs.insert(dest.parent().map(Path::to_path_buf).unwrap_or_default());
        }
        for dir in &touched_dirs {
            sync_dir(dir).map_err(io_err("fsync", dir))?;
        }
        at("swap::before_flip")?;
        self.switch(&repo_dir, staged.version)?;
        at("swap::after_flip")?;
        // S5. Promote.
        self.state.promote(&staged.repo)?;
        at("swap::done")?;
        Ok(())
    }

    /// Links a verified blob to `dest`, a path no client can be reading
    /// (a new package path, a file in a repodata directory being built):
    /// one `link(2)`. Anything already there (left by a crash) is replaced
    /// through a temporary name.
    fn place_new(&self, digest: &Sha256Digest, path: &str, dest: &Path) -> Result<(), SwapError> {
        let src = self.store.path(digest);
        let linked = fs::hard_link(&src, dest).or_else(|e| {
            if e.kind() == io::ErrorKind::NotFound && src.is_file() {
                // The first file in this directory.
                let dir = dest.parent().unwrap_or(dest);
                fs::create_dir_all(dir)?;
                fs::hard_link(&src, dest)
            } else {
                Err(e)
            }
        });
        match linked {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(SwapError::MissingBlob {
                path: path.to_owned(),
                digest: *digest,
            }),
            // Left over, another filesystem (EXDEV), no hard links: the general way.
            Err(_) => self.place(digest, path, dest),
        }
    }

    /// Puts a verified blob at `dest` through a temporary name: one
    /// `rename(2)` over whatever clients may be reading there.
    fn place(&self, digest: &Sha256Digest, path: &str, dest: &Path) -> Result<(), SwapError> {
        let src = self.store.path(digest);
        if !src.is_file() {
            return Err(SwapError::MissingBlob {
                path: path.to_owned(),
                digest: *digest,
            });
        }
        let dir = dest
            .parent()
            .ok_or_else(|| SwapError::NotALink(dest.to_owned()))?;
        fs::create_dir_all(dir).map_err(io_err("create", dir))?;
        let name = dest
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let tmp = dir.join(format!(".{name}.hotpush-tmp"));
        let _ = fs::remove_file(&tmp);
        if let Err(e) = fs::hard_link(&src, &tmp) {
            // Different filesystems (EXDEV) or no hard links: copy instead.
            if e.raw_os_error() != Some(18) && e.kind() != io::ErrorKind::Unsupported {
                return Err(io_err("link", &tmp)(e).into());
            }
            fs::copy(&src, &tmp).map_err(io_err("copy", &tmp))?;
            fs::File::open(&tmp)
                .and_then(|f| f.sync_all())
                .map_err(io_err("fsync", &tmp))?;
        }
        fs::rename(&tmp, dest).map_err(io_err("rename", dest))?;
        Ok(())
    }

    /// Points `repodata` at `.repodata/<version>` with one rename.
    fn switch(&self, repo_dir: &Path, version: u64) -> Result<(), SwapError> {
        let link = repo_dir.join(REPODATA_LINK);
        if let Ok(meta) = fs::symlink_metadata(&link)
            && !meta.file_type().is_symlink()
        {
            return Err(SwapError::NotALink(link));
        }
        let tmp = repo_dir.join(LINK_TMP);
        let _ = fs::remove_file(&tmp);
        symlink(format!("{VERSIONS_DIR}/{version}"), &tmp).map_err(io_err("symlink", &tmp))?;
        fs::rename(&tmp, &link).map_err(io_err("rename", &link))?;
        sync_dir(repo_dir).map_err(io_err("fsync", repo_dir))?;
        Ok(())
    }

    /// The version `repodata` points at, if any.
    pub fn live_version(&self, repo: &RepoName) -> Option<u64> {
        let target = fs::read_link(self.repo_dir(repo).join(REPODATA_LINK)).ok()?;
        target.file_name()?.to_str()?.parse().ok()
    }

    /// What clients are served now, even between a crash after the flip and
    /// the [`Tree::recover`] that the next start runs.
    pub fn live(&self, repo: &RepoName) -> Result<Option<Arc<Installed>>, SwapError> {
        if let Some(staged) = self.state.staged(repo)?
            && self.live_version(repo) == Some(staged.version())
        {
            return Ok(Some(staged));
        }
        Ok(self.state.current(repo)?)
    }

    /// Finishes or undoes an interrupted swap (run at start-up, per repo).
    pub fn recover(&self, repo: &RepoName) -> Result<(), SwapError> {
        if let Some(staged) = self.state.staged(repo)? {
            if self.live_version(repo) == Some(staged.version()) {
                tracing::info!(%repo, version = staged.version(), "finishing a swap interrupted after the flip");
                self.state.promote(repo)?;
            } else {
                tracing::info!(%repo, version = staged.version(), "dropping a swap interrupted before the flip");
                self.state.unstage(repo)?;
            }
        }
        self.undo_unflipped(repo)?;
        self.state.clear_journal(repo)?;
        Ok(())
    }

    /// Takes away what a swap that never flipped placed: its journalled
    /// package paths that no kept snapshot serves, its temporary names, its
    /// repodata directory and its staged manifest. Nothing when the swap
    /// did flip (its files are live) or when there is no journal.
    fn undo_unflipped(&self, repo: &RepoName) -> Result<(), SwapError> {
        let Some((version, paths)) = self.state.journal(repo)? else {
            return Ok(());
        };
        if self.live_version(repo) == Some(version) {
            return Ok(());
        }
        let repo_dir = self.repo_dir(repo);
        // A path some kept snapshot serves is live, or was dropped by the
        // successor of a retained one.
        let current = self.state.current(repo)?;
        let retained = self.state.retained(repo)?;
        let retained_paths: HashSet<&str> = retained
            .iter()
            .flat_map(|r| r.gone.iter())
            .map(|e| e.path.as_str())
            .collect();
        let kept = |path: &str| {
            retained_paths.contains(path)
                || current
                    .as_ref()
                    .is_some_and(|c| c.snapshot.manifest.has_path(path))
        };
        let mut removed = 0usize;
        for path in &paths {
            let dest = repo_dir.join(path);
            if let (Some(dir), Some(name)) = (dest.parent(), dest.file_name()) {
                let _ =
                    fs::remove_file(dir.join(format!(".{}.hotpush-tmp", name.to_string_lossy())));
            }
            if !kept(path) && fs::remove_file(&dest).is_ok() {
                removed += 1;
            }
        }
        let versions = repo_dir.join(VERSIONS_DIR);
        for dir in [
            versions.join(format!("{version}.building")),
            versions.join(version.to_string()),
        ] {
            if dir.exists() {
                fs::remove_dir_all(&dir).map_err(io_err("remove", &dir))?;
            }
        }
        let _ = fs::remove_file(repo_dir.join(LINK_TMP));
        self.state.unstage(repo)?;
        tracing::info!(%repo, version, removed, "removed what an unfinished swap had placed");
        Ok(())
    }

    /// Removes what no snapshot inside `retain_for` references: old package
    /// paths, old repodata directories, their blobs, and expired manifests.
    /// Work is proportional to what expired, not to the tree: a file an
    /// expired snapshot had is still referenced exactly when the live
    /// snapshot has it, or the successor of a kept snapshot dropped it.
    pub fn collect_garbage(&self, repo: &RepoName) -> Result<usize, SwapError> {
        let Some(current) = self.state.current(repo)? else {
            return Ok(0);
        };
        let now = SystemTime::now();
        let (kept, expired): (Vec<Retained>, Vec<Retained>) = self
            .state
            .retained(repo)?
            .into_iter()
            .partition(|r| within(r.since, self.retain_for, now));
        let kept_versions: HashSet<u64> = std::iter::once(current.version())
            .chain(kept.iter().map(|r| r.version))
            .collect();
        let repo_dir = self.repo_dir(repo);
        let mut removed = 0;
        at("gc::start")?;
        if !expired.is_empty() {
            let kept_paths: HashSet<&str> = kept
                .iter()
                .flat_map(|r| r.gone.iter())
                .map(|e| e.path.as_str())
                .collect();
            let live = &current.snapshot.manifest;
            let kept_blobs: HashSet<Sha256Digest> = kept
                .iter()
                .flat_map(|r| r.gone.iter())
                .chain(live.entries.iter())
                .map(|e| e.sha256)
                .collect();
            for old in &expired {
                for e in &old.gone {
                    let path = e.path.as_str();
                    if !e.is_repodata()
                        && !kept_paths.contains(path)
                        && !live.has_path(path)
                        && fs::remove_file(repo_dir.join(path)).is_ok()
                    {
                        removed += 1;
                    }
                    if !kept_blobs.contains(&e.sha256) {
                        self.store.remove(&e.sha256).map_err(|e| StateError::Io {
                            op: "remove blob",
                            path: repo_dir.clone(),
                            source: io::Error::other(e.to_string()),
                        })?;
                    }
                }
                at("gc::removed_snapshot_files")?;
                self.state.forget(repo, old.version)?;
            }
        }
        let versions = repo_dir.join(VERSIONS_DIR);
        if let Ok(dirs) = fs::read_dir(&versions) {
            for d in dirs.flatten() {
                let name = d.file_name().to_string_lossy().into_owned();
                let keep = name
                    .parse::<u64>()
                    .is_ok_and(|v| kept_versions.contains(&v));
                if !keep {
                    fs::remove_dir_all(d.path()).map_err(io_err("remove", &d.path()))?;
                    removed += 1;
                }
            }
        }
        Ok(removed)
    }
}

/// The entries of `new` that `live` does not have with the same content
/// (digest and size), each with whether `live` has its path (with other
/// content): one walk over both sorted lists.
pub(crate) fn differing<'a>(
    live: &'a [Entry],
    new: &'a [Entry],
) -> impl Iterator<Item = (&'a Entry, bool)> {
    let mut ours = live.iter().peekable();
    new.iter().filter_map(move |e| {
        while ours.next_if(|o| o.path < e.path).is_some() {}
        match ours.peek() {
            Some(o) if o.path == e.path => {
                (o.sha256 != e.sha256 || o.size != e.size).then_some((e, true))
            }
            _ => Some((e, false)),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use hotpush_shared::Limits;
    use hotpush_shared::manifest::{Entry, Manifest};
    use hotpush_shared::relpath::RelPath;
    use hotpush_shared::sign::SigningKey;

    struct Fixture {
        _dir: tempfile::TempDir,
        tree: Tree,
        key: SigningKey,
    }

    fn fixture(retain_for: Duration) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let tree = Tree {
            store: BlobStore::open(&dir.path().join("data")).unwrap(),
            state: StateDir::open(&dir.path().join("data"), Limits::default()).unwrap(),
            serve_root: dir.path().join("www"),
            retain_for,
        };
        Fixture {
            _dir: dir,
            tree,
            key: SigningKey::generate().unwrap(),
        }
    }

    fn snapshot(f: &Fixture, version: u64, files: &[(&str, &str)]) -> Arc<Snapshot> {
        let mut entries: Vec<Entry> = files
            .iter()
            .map(|(p, body)| {
                let sha256 = f.tree.store.import_bytes(body.as_bytes()).unwrap();
                Entry {
                    path: RelPath::new(p, 1024).unwrap(),
                    size: body.len() as u64,
                    sha256,
                }
            })
            .collect();
        entries.sort_by(|a, b| a.path.cmp(&b.path));
        let m = Manifest {
            repo: RepoName::new("r/x86_64").unwrap(),
            version,
            created_unix: 0,
            expires_unix: i64::MAX,
            entries,
        };
        Arc::new(Snapshot::new(f.key.sign(m.encode()), m))
    }

    fn read(f: &Fixture, path: &str) -> Option<String> {
        fs::read_to_string(f.tree.serve_root.join("r/x86_64").join(path)).ok()
    }

    #[test]
    fn swap_keeps_old_repodata_and_packages_reachable_until_gc() {
        let f = fixture(Duration::from_secs(3600));
        let repo = RepoName::new("r/x86_64").unwrap();
        let s1 = snapshot(
            &f,
            1,
            &[
                ("repodata/repomd.xml", "v1"),
                ("repodata/a-primary.xml.gz", "p1"),
                ("Packages/a.rpm", "a"),
            ],
        );
        f.tree.install(&s1).unwrap();
        assert_eq!(read(&f, "repodata/repomd.xml").as_deref(), Some("v1"));
        assert_eq!(f.tree.live_version(&repo), Some(1));

        let s2 = snapshot(
            &f,
            2,
            &[
                ("repodata/repomd.xml", "v2"),
                ("repodata/b-primary.xml.gz", "p2"),
                ("Packages/b.rpm", "b"),
            ],
        );
        f.tree.install(&s2).unwrap();
        assert_eq!(read(&f, "repodata/repomd.xml").as_deref(), Some("v2"));
        // A client that read v1's repomd.xml still finds what it names.
        assert_eq!(read(&f, "repodata/a-primary.xml.gz").as_deref(), Some("p1"));
        assert_eq!(read(&f, "Packages/a.rpm").as_deref(), Some("a"));
        assert_eq!(f.tree.state.current(&repo).unwrap().unwrap().version(), 2);
        assert_eq!(
            f.tree.collect_garbage(&repo).unwrap(),
            0,
            "nothing expires inside retain_for"
        );
        assert_eq!(
            read(&f, "Packages/a.rpm").as_deref(),
            Some("a"),
            "still inside retain_for"
        );
    }

    #[test]
    fn gc_after_window_removes_old_files_only() {
        let f = fixture(Duration::ZERO);
        let repo = RepoName::new("r/x86_64").unwrap();
        let s1 = snapshot(
            &f,
            1,
            &[
                ("repodata/repomd.xml", "v1"),
                ("Packages/a.rpm", "a"),
                ("Packages/keep.rpm", "k"),
            ],
        );
        f.tree.install(&s1).unwrap();
        let s2 = snapshot(
            &f,
            2,
            &[("repodata/repomd.xml", "v2"), ("Packages/keep.rpm", "k")],
        );
        f.tree.install(&s2).unwrap();
        f.tree.collect_garbage(&repo).unwrap();
        assert_eq!(read(&f, "Packages/a.rpm"), None);
        assert_eq!(read(&f, "Packages/keep.rpm").as_deref(), Some("k"));
        assert!(
            !f.tree.store.has(
                &s1.manifest
                    .entries
                    .iter()
                    .find(|e| e.path.as_str() == "Packages/a.rpm")
                    .unwrap()
                    .sha256
            )
        );
        assert!(f.tree.state.retained(&repo).unwrap().is_empty());
    }

    #[test]
    fn recover_finishes_or_drops_an_interrupted_swap() {
        let f = fixture(Duration::from_secs(3600));
        let repo = RepoName::new("r/x86_64").unwrap();
        let s1 = snapshot(&f, 1, &[("repodata/repomd.xml", "v1")]);
        f.tree.install(&s1).unwrap();
        // Crash after staging, before the flip: v1 stays.
        let s2 = snapshot(&f, 2, &[("repodata/repomd.xml", "v2")]);
        f.tree.state.stage(&s2).unwrap();
        f.tree.recover(&repo).unwrap();
        assert_eq!(f.tree.state.current(&repo).unwrap().unwrap().version(), 1);
        assert!(f.tree.state.staged(&repo).unwrap().is_none());
        // Crash after the flip, before promotion: v2 becomes current.
        f.tree.state.stage(&s2).unwrap();
        f.tree.switch(&f.tree.repo_dir(&repo), 1).unwrap();
        fs::create_dir_all(f.tree.repo_dir(&repo).join(".repodata/2")).unwrap();
        f.tree.switch(&f.tree.repo_dir(&repo), 2).unwrap();
        f.tree.recover(&repo).unwrap();
        assert_eq!(f.tree.state.current(&repo).unwrap().unwrap().version(), 2);
    }

    #[test]
    fn a_failed_swap_takes_away_what_it_placed() {
        let f = fixture(Duration::from_secs(3600));
        let repo = RepoName::new("r/x86_64").unwrap();
        let s1 = snapshot(
            &f,
            1,
            &[("repodata/repomd.xml", "v1"), ("Packages/a.rpm", "a")],
        );
        f.tree.install(&s1).unwrap();
        // v2 places b.rpm, then fails on c.rpm, whose blob is gone.
        let s2 = snapshot(
            &f,
            2,
            &[
                ("repodata/repomd.xml", "v2"),
                ("Packages/a.rpm", "a"),
                ("Packages/b.rpm", "b"),
                ("Packages/c.rpm", "c"),
            ],
        );
        let c = s2
            .manifest
            .entries
            .iter()
            .find(|e| e.path == "Packages/c.rpm")
            .unwrap();
        f.tree.store.remove(&c.sha256).unwrap();
        assert!(matches!(
            f.tree.install(&s2),
            Err(SwapError::MissingBlob { .. })
        ));
        assert_eq!(
            read(&f, "Packages/b.rpm"),
            None,
            "placed by the failed swap"
        );
        assert_eq!(
            read(&f, "Packages/a.rpm").as_deref(),
            Some("a"),
            "still live"
        );
        assert_eq!(read(&f, "repodata/repomd.xml").as_deref(), Some("v1"));
        let leftovers: Vec<String> = walk(&f.tree.repo_dir(&repo))
            .into_iter()
            .filter(|p| {
                p.contains("hotpush-tmp") || p.contains(".repodata/2") || p.contains("link-tmp")
            })
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
        assert!(f.tree.state.journal(&repo).unwrap().is_none());
        assert!(f.tree.state.staged(&repo).unwrap().is_none());
    }

    #[test]
    fn start_up_takes_away_what_a_crashed_swap_placed() {
        let f = fixture(Duration::from_secs(3600));
        let repo = RepoName::new("r/x86_64").unwrap();
        let s1 = snapshot(
            &f,
            1,
            &[("repodata/repomd.xml", "v1"), ("Packages/a.rpm", "a")],
        );
        f.tree.install(&s1).unwrap();
        // A crash after S1 placed b.rpm (journalled) and left a temporary name.
        let dir = f.tree.repo_dir(&repo);
        f.tree
            .state
            .write_journal(&repo, 2, ["Packages/b.rpm", "Packages/a.rpm"].into_iter())
            .unwrap();
        fs::write(dir.join("Packages/b.rpm"), "b").unwrap();
        fs::write(dir.join("Packages/.c.rpm.hotpush-tmp"), "c").unwrap();
        fs::create_dir_all(dir.join(".repodata/2.building")).unwrap();
        f.tree.recover(&repo).unwrap();
        assert_eq!(read(&f, "Packages/b.rpm"), None);
        assert_eq!(
            read(&f, "Packages/a.rpm").as_deref(),
            Some("a"),
            "v1 serves it"
        );
        assert!(!dir.join(".repodata/2.building").exists());
        assert!(f.tree.state.journal(&repo).unwrap().is_none());
    }

    /// Makes retained `version` look replaced `age` ago.
    fn age(f: &Fixture, version: u64, age: Duration) {
        let path = f
            .tree
            .state
            .retained_signed_path(&RepoName::new("r/x86_64").unwrap(), version);
        let file = fs::File::options().write(true).open(path).unwrap();
        file.set_modified(SystemTime::now() - age).unwrap();
    }

    #[test]
    fn gc_keeps_what_a_kept_snapshot_serves_even_if_an_expired_one_dropped_it() {
        let f = fixture(Duration::from_secs(3600));
        let repo = RepoName::new("r/x86_64").unwrap();
        let md = |v: &'static str| ("repodata/repomd.xml", v);
        let versions = [
            snapshot(
                &f,
                1,
                &[md("1"), ("Packages/a.rpm", "a"), ("Packages/b.rpm", "b")],
            ),
            snapshot(&f, 2, &[md("2"), ("Packages/a.rpm", "a")]),
            // b comes back, then goes again.
            snapshot(
                &f,
                3,
                &[md("3"), ("Packages/a.rpm", "a"), ("Packages/b.rpm", "b")],
            ),
            snapshot(
                &f,
                4,
                &[md("4"), ("Packages/a.rpm", "a"), ("Packages/c.rpm", "c")],
            ),
        ];
        for s in &versions {
            f.tree.install(s).unwrap();
        }
        let gone: Vec<(u64, Vec<String>)> = f
            .tree
            .state
            .retained(&repo)
            .unwrap()
            .into_iter()
            .map(|r| {
                (
                    r.version,
                    r.gone.iter().map(|e| e.path.to_string()).collect(),
                )
            })
            .collect();
        assert_eq!(
            gone,
            [
                (
                    3,
                    vec!["Packages/b.rpm".into(), "repodata/repomd.xml".into()]
                ),
                (2, vec!["repodata/repomd.xml".into()]),
                (
                    1,
                    vec!["Packages/b.rpm".into(), "repodata/repomd.xml".into()]
                ),
            ]
        );
        // v1 and v2 expire; v3, which serves b.rpm, is kept.
        age(&f, 1, Duration::from_secs(7200));
        age(&f, 2, Duration::from_secs(7200));
        f.tree.collect_garbage(&repo).unwrap();
        assert_eq!(read(&f, "Packages/b.rpm").as_deref(), Some("b"));
        assert_eq!(read(&f, "Packages/a.rpm").as_deref(), Some("a"));
        let b = versions[0].manifest.entry("Packages/b.rpm").unwrap().sha256;
        assert!(f.tree.store.has(&b), "v3 still needs b's blob");
        // Once v3 expires too, b goes.
        age(&f, 3, Duration::from_secs(7200));
        f.tree.collect_garbage(&repo).unwrap();
        assert_eq!(read(&f, "Packages/b.rpm"), None);
        assert!(!f.tree.store.has(&b));
        assert_eq!(read(&f, "Packages/c.rpm").as_deref(), Some("c"));
        assert!(f.tree.state.retained(&repo).unwrap().is_empty());
    }

    #[test]
    fn retained_manifests_without_a_gone_list_get_one() {
        let f = fixture(Duration::from_secs(3600));
        let repo = RepoName::new("r/x86_64").unwrap();
        let s1 = snapshot(
            &f,
            1,
            &[("repodata/repomd.xml", "1"), ("Packages/a.rpm", "a")],
        );
        let s2 = snapshot(&f, 2, &[("repodata/repomd.xml", "2")]);
        f.tree.install(&s1).unwrap();
        f.tree.install(&s2).unwrap();
        let list = f
            .tree
            .state
            .retained_signed_path(&repo, 1)
            .with_extension("gone");
        fs::remove_file(&list).unwrap();
        let retained = f.tree.state.retained(&repo).unwrap();
        assert_eq!(retained[0].gone, s1.manifest.entries);
        assert!(list.is_file(), "written once");
    }

    /// Every entry under `dir`, relative, hidden ones included.
    fn walk(dir: &Path) -> Vec<String> {
        let mut out = Vec::new();
        let mut stack = vec![dir.to_path_buf()];
        while let Some(d) = stack.pop() {
            for e in fs::read_dir(&d).unwrap().flatten() {
                let p = e.path();
                out.push(p.strip_prefix(dir).unwrap().to_string_lossy().into_owned());
                if e.file_type().unwrap().is_dir() {
                    stack.push(p);
                }
            }
        }
        out
    }
}
