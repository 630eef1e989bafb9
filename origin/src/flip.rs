//! When staged mirrors flip (docs/PROTOCOL.md, "The flip").
//!
//! A mirror that has staged a new version of a repo waits here. Once every
//! mirror of the repo has staged it or failed (or `stage_wait` has passed
//! since the first staged), the metalink names the new repomd.xml as an
//! alternate of the current one ([`Flips::next`]) for `settle`, at least
//! the metalink's max-age; only then are the staged mirrors told to flip,
//! together. So any metalink a client may still hold accepts what every
//! mirror it lists serves, before and after the flip. A mirror that stages
//! this version later flips at once; a newer version supersedes the round.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hotpush_shared::Sha256Digest;
use hotpush_shared::manifest::RepoName;
use hotpush_shared::name::AgentName;
use hotpush_shared::snapshot::Snapshot;
use tokio::sync::watch;

use crate::metalink::Metalinks;

/// What the mirrors of a round are told.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Go {
    Wait,
    Flip,
    /// A newer version took over.
    Superseded(u64),
}

/// The flip of one version of one repo.
struct Round {
    snapshot: Arc<Snapshot>,
    /// The repomd.xml the metalink named when the round began, if any.
    current_repomd: Option<Sha256Digest>,
    /// The mirrors that carry the repo, when the round began.
    expected: HashSet<AgentName>,
    staged: HashSet<AgentName>,
    failed: HashSet<AgentName>,
    first_staged: Option<Instant>,
    /// The settle has begun (or is skipped): no mirror is waited for any more.
    deciding: bool,
    go: watch::Sender<Go>,
}

/// What the metalink needs to know of a round, and when its flip began.
#[derive(Clone, Debug)]
pub struct Next {
    pub snapshot: Arc<Snapshot>,
    /// When the mirrors were told to flip (None while settling).
    pub flip_at: Option<Instant>,
    /// When the metalink began to accept it.
    pub since: Instant,
}

/// The flip rounds of every repo.
#[derive(Default)]
pub struct Flips {
    rounds: Mutex<HashMap<RepoName, Round>>,
    /// The version each repo's metalink accepts as an alternate, while its flip is under way.
    next: Mutex<HashMap<RepoName, Next>>,
    /// The documents clients get: the settle starts once they accept the
    /// new repomd.xml.
    metalinks: Arc<Metalinks>,
}

/// How a round decides: its settle delay and how long it waits for stragglers.
#[derive(Clone, Copy, Debug)]
pub struct Timing {
    pub settle: Duration,
    pub stage_wait: Duration,
}

impl Flips {
    pub fn new(metalinks: Arc<Metalinks>) -> Self {
        Self {
            metalinks,
            ..Self::default()
        }
    }

    /// The version whose flip is under way for `repo`, if any.
    pub fn next(&self, repo: &RepoName) -> Option<Next> {
        self.next
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(repo)
            .cloned()
    }

    /// Forgets the alternate of `repo` once the metalink's main entry has
    /// reached `version` (the flip is done) or moved past it.
    pub fn done(&self, repo: &RepoName, version: u64) {
        let mut next = self.next.lock().unwrap_or_else(|p| p.into_inner());
        if next
            .get(repo)
            .is_some_and(|n| n.snapshot.version() <= version)
        {
            next.remove(repo);
        }
    }

    /// `target` has staged `snapshot`; resolves when it may flip.
    /// `carrying` lists the mirrors of the repo (read when a round begins);
    /// `current_repomd` is the sha256 of the repomd.xml the metalink names
    /// now, if any (with none, or the same bytes, nobody can be misled and
    /// there is nothing to settle).
    pub async fn staged(
        self: &Arc<Self>,
        target: &AgentName,
        snapshot: &Arc<Snapshot>,
        carrying: impl FnOnce() -> HashSet<AgentName>,
        current_repomd: Option<Sha256Digest>,
        timing: Timing,
    ) -> Result<(), String> {
        let repo = snapshot.repo().clone();
        let version = snapshot.version();
        let mut go = {
            let mut rounds = self.rounds.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(r) = rounds.get(&repo) {
                let current = r.snapshot.version();
                if current > version {
                    return Err(format!("superseded by version {current}"));
                }
                if current < version {
                    let _ = r.go.send(Go::Superseded(version));
                    rounds.remove(&repo);
                }
            }
            let round = rounds.entry(repo.clone()).or_insert_with(|| Round {
                snapshot: snapshot.clone(),
                current_repomd,
                expected: carrying(),
                staged: HashSet::new(),
                failed: HashSet::new(),
                first_staged: None,
                deciding: false,
                go: watch::channel(Go::Wait).0,
            });
            round.staged.insert(target.clone());
            round.failed.remove(target);
            let rx = round.go.subscribe();
            if round.first_staged.is_none() {
                round.first_staged = Some(Instant::now());
                // However many mirrors are still receiving, decide after stage_wait.
                let (flips, repo) = (self.clone(), repo.clone());
                tokio::spawn(async move {
                    tokio::time::sleep(timing.stage_wait).await;
                    flips.decide(&repo, version, timing, true);
                });
            }
            rx
        };
        self.decide(&repo, version, timing, false);
        loop {
            match *go.borrow_and_update() {
                Go::Flip => return Ok(()),
                Go::Superseded(newer) => return Err(format!("superseded by version {newer}")),
                Go::Wait => {}
            }
            if go.changed().await.is_err() {
                return Err("superseded by a newer version".into());
            }
        }
    }

    /// A push of `version` to `target` failed: the round does not wait for it.
    pub fn failed(
        self: &Arc<Self>,
        target: &AgentName,
        repo: &RepoName,
        version: u64,
        timing: Timing,
    ) {
        {
            let mut rounds = self.rounds.lock().unwrap_or_else(|p| p.into_inner());
            let Some(r) = rounds.get_mut(repo) else {
                return;
            };
            if r.snapshot.version() != version || r.staged.contains(target) {
                return;
            }
            r.failed.insert(target.clone());
        }
        self.decide(repo, version, timing, false);
    }

    /// Begins the settle once every expected mirror has staged or failed
    /// (or `timed_out`), then tells the staged mirrors to flip.
    fn decide(self: &Arc<Self>, repo: &RepoName, version: u64, timing: Timing, timed_out: bool) {
        let mut rounds = self.rounds.lock().unwrap_or_else(|p| p.into_inner());
        let Some(r) = rounds.get_mut(repo) else {
            return;
        };
        if r.deciding || r.snapshot.version() != version || r.staged.is_empty() {
            return;
        }
        let everyone = r
            .expected
            .iter()
            .all(|a| r.staged.contains(a) || r.failed.contains(a));
        if !everyone && !timed_out {
            return;
        }
        r.deciding = true;
        let new_repomd = r.snapshot.repomd().map(|e| e.sha256);
        let settle = settle_for(r.current_repomd, new_repomd, timing.settle);
        let snapshot = r.snapshot.clone();
        let go = r.go.clone();
        drop(rounds);
        let since = Instant::now();
        self.next.lock().unwrap_or_else(|p| p.into_inner()).insert(
            repo.clone(),
            Next {
                snapshot,
                flip_at: None,
                since,
            },
        );
        tracing::info!(%repo, version, settle_ms = settle.as_millis() as u64, everyone, "metalink accepts the new repomd.xml; mirrors flip after the settle delay");
        let (flips, repo) = (self.clone(), repo.clone());
        tokio::spawn(async move {
            // The settle counts from the moment clients can get a metalink
            // accepting the new repomd.xml, not from the decision.
            flips.metalinks.refreshed().await;
            tokio::time::sleep(settle).await;
            if let Some(n) = flips
                .next
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get_mut(&repo)
                .filter(|n| n.snapshot.version() == version)
            {
                n.flip_at = Some(Instant::now());
            }
            let _ = go.send_if_modified(|g| {
                let wait = *g == Go::Wait;
                if wait {
                    *g = Go::Flip;
                }
                wait
            });
        });
    }
}

/// How long mirrors wait between the metalink accepting `new` and the
/// flip, when the metalink names `current` now: `settle`, unless nothing
/// is served yet or the repomd.xml is the same, when no client can be
/// misled.
pub fn settle_for(
    current: Option<Sha256Digest>,
    new: Option<Sha256Digest>,
    settle: Duration,
) -> Duration {
    match current {
        Some(current) if Some(current) != new => settle,
        _ => Duration::ZERO,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;
    use hotpush_shared::manifest::{Entry, Manifest};
    use hotpush_shared::relpath::RelPath;
    use hotpush_shared::sign::SigningKey;

    fn snapshot(version: u64, repomd: &[u8]) -> Arc<Snapshot> {
        let m = Manifest {
            repo: "r/x86_64".parse().unwrap(),
            version,
            created_unix: 0,
            expires_unix: i64::MAX,
            entries: vec![Entry {
                path: RelPath::new("repodata/repomd.xml", 1024).unwrap(),
                size: repomd.len() as u64,
                sha256: Sha256Digest::of(repomd),
            }],
        };
        Arc::new(Snapshot::new(
            SigningKey::generate().unwrap().sign(m.encode()),
            m,
        ))
    }

    fn names(list: &[&str]) -> HashSet<AgentName> {
        list.iter().map(|n| n.parse().unwrap()).collect()
    }

    const TIMING: Timing = Timing {
        settle: Duration::from_secs(10),
        stage_wait: Duration::from_secs(5),
    };

    /// Stages `who` in the background; the handle yields (result, when).
    fn stage(
        flips: &Arc<Flips>,
        who: &str,
        s: &Arc<Snapshot>,
        current: Option<Sha256Digest>,
    ) -> tokio::task::JoinHandle<(Result<(), String>, tokio::time::Instant)> {
        let (flips, s, who) = (flips.clone(), s.clone(), who.parse::<AgentName>().unwrap());
        tokio::spawn(async move {
            let r = flips
                .staged(&who, &s, || names(&["a", "b"]), current, TIMING)
                .await;
            (r, tokio::time::Instant::now())
        })
    }

    #[tokio::test(start_paused = true)]
    async fn staged_mirrors_flip_together_once_the_metalink_has_accepted_it_for_the_settle() {
        let flips = Arc::new(Flips::default());
        let (v1, v2) = (snapshot(1, b"old"), snapshot(2, b"new"));
        let current = v1.repomd().map(|e| e.sha256);
        let start = tokio::time::Instant::now();
        let a = stage(&flips, "a", &v2, current);
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(flips.next(v2.repo()).is_none(), "b has not staged yet");
        let b = stage(&flips, "b", &v2, current);
        tokio::time::sleep(Duration::from_millis(10)).await;
        let next = flips.next(v2.repo()).unwrap();
        assert_eq!(next.snapshot.version(), 2);
        assert!(next.flip_at.is_none(), "settling");
        let ((ra, ta), (rb, tb)) = (a.await.unwrap(), b.await.unwrap());
        assert_eq!((ra, rb), (Ok(()), Ok(())));
        assert_eq!(ta, tb, "they flip together");
        assert!(
            ta - start >= Duration::from_secs(11),
            "after b staged and the settle"
        );
        assert!(flips.next(v2.repo()).unwrap().flip_at.is_some());
        // A mirror that stages later flips at once.
        let late = stage(&flips, "c", &v2, current).await.unwrap();
        assert_eq!(late, (Ok(()), tb));
        flips.done(v2.repo(), 2);
        assert!(flips.next(v2.repo()).is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn a_missing_mirror_holds_the_others_back_for_stage_wait_at_most() {
        let flips = Arc::new(Flips::default());
        let (v1, v2) = (snapshot(1, b"old"), snapshot(2, b"new"));
        let start = tokio::time::Instant::now();
        let (r, at) = stage(&flips, "a", &v2, v1.repomd().map(|e| e.sha256))
            .await
            .unwrap();
        assert_eq!(r, Ok(()));
        assert_eq!(at - start, TIMING.stage_wait + TIMING.settle);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_mirror_is_not_waited_for() {
        let flips = Arc::new(Flips::default());
        let (v1, v2) = (snapshot(1, b"old"), snapshot(2, b"new"));
        let start = tokio::time::Instant::now();
        let a = stage(&flips, "a", &v2, v1.repomd().map(|e| e.sha256));
        tokio::time::sleep(Duration::from_secs(1)).await;
        flips.failed(&"b".parse().unwrap(), v2.repo(), 2, TIMING);
        let (r, at) = a.await.unwrap();
        assert_eq!(r, Ok(()));
        assert_eq!(at - start, Duration::from_secs(1) + TIMING.settle);
    }

    #[tokio::test(start_paused = true)]
    async fn nothing_to_settle_without_a_current_repomd_or_with_the_same_one() {
        let flips = Arc::new(Flips::default());
        let v1 = snapshot(1, b"same");
        let start = tokio::time::Instant::now();
        let (a, b) = (stage(&flips, "a", &v1, None), stage(&flips, "b", &v1, None));
        assert_eq!(a.await.unwrap(), (Ok(()), start));
        assert_eq!(b.await.unwrap(), (Ok(()), start));
        let v2 = snapshot(2, b"same");
        let same = v1.repomd().map(|e| e.sha256);
        let (a, b) = (stage(&flips, "a", &v2, same), stage(&flips, "b", &v2, same));
        assert_eq!(a.await.unwrap().0, Ok(()));
        assert_eq!(b.await.unwrap().1, start);
    }

    #[tokio::test(start_paused = true)]
    async fn a_newer_version_supersedes_a_round_still_waiting() {
        let flips = Arc::new(Flips::default());
        let (v1, v2, v3) = (snapshot(1, b"1"), snapshot(2, b"2"), snapshot(3, b"3"));
        let current = v1.repomd().map(|e| e.sha256);
        let old = stage(&flips, "a", &v2, current);
        tokio::time::sleep(Duration::from_secs(1)).await;
        let new = stage(&flips, "a", &v3, current);
        assert_eq!(old.await.unwrap().0, Err("superseded by version 3".into()));
        assert_eq!(new.await.unwrap().0, Ok(()));
        let stale = stage(&flips, "b", &v2, current).await.unwrap();
        assert_eq!(stale.0, Err("superseded by version 3".into()));
    }
}
