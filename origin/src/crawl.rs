//! The mirror crawler (docs/PROTOCOL.md "The metalink"): fetches every
//! mirror's public `repodata/repomd.xml` the way dnf does, after each ack
//! and every `crawl_interval`, and keeps a mirror in the metalink only
//! while it serves what it acked. A front end that died or serves an old
//! copy after the ack would otherwise cost every client a timeout or a
//! checksum mismatch until the next push to it failed.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use hotpush_shared::Sha256Digest;
use hotpush_shared::clock::now_unix;
use hotpush_shared::manifest::RepoName;
use hotpush_shared::name::AgentName;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::db::DbError;
use crate::origin::Origin;

/// How long one fetch may take: a client would give up about then too.
pub const TIMEOUT: Duration = Duration::from_secs(5);
/// Fetches at once.
const CONCURRENCY: usize = 8;
/// The largest repomd.xml read.
const MAX_REPOMD_BYTES: u64 = 1 << 20;

/// What the last fetch of a mirror's repomd.xml showed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The repomd.xml of the version it acked (or of the flip under way).
    Serving,
    /// No answer, an error status, or a timeout: the words say which.
    Unreachable(String),
    /// Some other repomd.xml: a front end or cache serving an old copy.
    Stale { got: Sha256Digest },
}

impl Verdict {
    /// The reason in a word, for metrics and the status page.
    pub fn reason(&self) -> &'static str {
        match self {
            Verdict::Serving => "serving",
            Verdict::Unreachable(_) => "unreachable",
            Verdict::Stale { .. } => "stale",
        }
    }

    /// Plain words for `status`.
    pub fn describe(&self) -> String {
        match self {
            Verdict::Serving => "serves what it acked".into(),
            Verdict::Unreachable(why) => format!("public URL unreachable: {why}"),
            Verdict::Stale { got } => format!(
                "stale front end: its public repomd.xml (sha256 {}…) is not the one it acked",
                &got.to_hex()[..12]
            ),
        }
    }
}

/// One crawl of one mirror × repo.
#[derive(Clone, Debug)]
pub struct Crawl {
    pub verdict: Verdict,
    pub at_unix: i64,
    pub elapsed_ms: u64,
}

/// The last crawl of every mirror × repo, and the wake-up for the next.
#[derive(Default)]
pub struct Crawls {
    last: Mutex<HashMap<(AgentName, RepoName), Crawl>>,
    /// Acks since the last crawl: crawl these mirrors now.
    soon: Notify,
}

impl Crawls {
    /// The last crawl of `agent` × `repo`, if any.
    pub fn get(&self, agent: &AgentName, repo: &RepoName) -> Option<Crawl> {
        self.lock().get(&(agent.clone(), repo.clone())).cloned()
    }

    /// True when the last crawl found `agent` not serving `repo` as acked.
    pub fn failing(&self, agent: &AgentName, repo: &RepoName) -> bool {
        self.lock()
            .get(&(agent.clone(), repo.clone()))
            .is_some_and(|c| c.verdict != Verdict::Serving)
    }

    /// `agent` acked `repo` after checking its own public URL: what an
    /// older crawl found no longer holds; crawl again soon.
    pub fn acked(&self, agent: &AgentName, repo: &RepoName) {
        self.lock().remove(&(agent.clone(), repo.clone()));
        self.soon.notify_one();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(AgentName, RepoName), Crawl>> {
        self.last.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// What the crawler names itself in User-Agent, so partners' logs (and
    /// tests counting client requests) can tell it from dnf.
    pub const USER_AGENT: &'static str =
        concat!("hotpush-origin/", env!("CARGO_PKG_VERSION"), " (crawler)");

    /// Crawls every acked mirror now, after each ack, and every
    /// `crawl_interval`, until `stop`.
    pub async fn run(origin: Arc<Origin>, stop: CancellationToken) {
        let http = match hotpush_shared::fetch::client(Self::USER_AGENT, TIMEOUT) {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %e, "no HTTP client: the crawler is off");
                return;
            }
        };
        let mut expected = RepomdCache::default();
        loop {
            if let Err(e) = crawl_all(&origin, &http, &mut expected).await {
                tracing::warn!(error = %e, "crawl skipped");
            }
            tokio::select! {
                () = stop.cancelled() => return,
                () = origin.crawls.soon.notified() => {
                    // Let the ack's own bookkeeping (and its neighbours') land.
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                () = tokio::time::sleep(origin.config.crawl_interval) => {}
            }
        }
    }
}

/// The repomd.xml sha256 of stored versions, read once each.
#[derive(Default)]
struct RepomdCache(HashMap<(RepoName, u64), Sha256Digest>);

impl RepomdCache {
    fn get(
        &mut self,
        origin: &Origin,
        repo: &RepoName,
        version: u64,
    ) -> Result<Option<Sha256Digest>, DbError> {
        if let Some(d) = self.0.get(&(repo.clone(), version)) {
            return Ok(Some(*d));
        }
        let sha = match origin.latest(repo)? {
            Some(s) if s.version() == version => s.repomd().map(|e| e.sha256),
            _ => origin
                .db
                .version(repo.as_str(), version)?
                .and_then(|r| r.snapshot(&origin.config.limits).ok())
                .and_then(|s| s.repomd().map(|e| e.sha256)),
        };
        if let Some(d) = sha {
            self.0.insert((repo.clone(), version), d);
        }
        Ok(sha)
    }
}

/// One mirror × repo to fetch, and the repomd.xml files it may serve.
struct Job {
    agent: AgentName,
    repo: RepoName,
    url: String,
    acceptable: Vec<Sha256Digest>,
}

async fn crawl_all(
    origin: &Arc<Origin>,
    http: &reqwest::Client,
    expected: &mut RepomdCache,
) -> Result<(), DbError> {
    let agents = origin.db.agents()?;
    let mut jobs = Vec::new();
    let mut used = HashSet::new();
    for repo in origin.db.repos()? {
        let next = origin
            .flips
            .next(&repo)
            .and_then(|n| n.snapshot.repomd().map(|e| e.sha256));
        for ack in origin.db.acks(repo.as_str())? {
            let Some(agent) = agents
                .iter()
                .find(|a| a.name().as_str() == ack.agent && a.carries(&repo))
            else {
                continue;
            };
            if !ack.public_verified {
                continue;
            }
            used.insert((repo.clone(), ack.version));
            let Some(acked) = expected.get(origin, &repo, ack.version)? else {
                continue;
            };
            jobs.push(Job {
                agent: agent.name().clone(),
                url: agent.target.public_url.repomd(&repo),
                repo: repo.clone(),
                acceptable: std::iter::once(acked).chain(next).collect(),
            });
        }
    }
    expected.0.retain(|k, _| used.contains(k));

    let results: Vec<(Job, Crawl)> = futures_util::stream::iter(jobs)
        .map(|job| async move {
            let started = Instant::now();
            let verdict = match hotpush_shared::fetch::get(http, &job.url, MAX_REPOMD_BYTES).await {
                Ok(body) => {
                    let got = Sha256Digest::of(&body);
                    if job.acceptable.contains(&got) {
                        Verdict::Serving
                    } else {
                        Verdict::Stale { got }
                    }
                }
                Err(why) => Verdict::Unreachable(why),
            };
            let crawl = Crawl {
                verdict,
                at_unix: now_unix(),
                elapsed_ms: started.elapsed().as_millis() as u64,
            };
            (job, crawl)
        })
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await;

    let mut changed = false;
    {
        let mut last = origin.crawls.lock();
        let crawled: HashSet<(AgentName, RepoName)> = results
            .iter()
            .map(|(job, _)| (job.agent.clone(), job.repo.clone()))
            .collect();
        // Mirrors removed, or no longer acked: forget them.
        last.retain(|k, _| crawled.contains(k));
        for (job, crawl) in results {
            origin
                .metrics
                .crawled(&job.agent, &job.repo, crawl.verdict.reason());
            let key = (job.agent.clone(), job.repo.clone());
            let before = last.get(&key).map(|c| c.verdict.reason());
            if before != Some(crawl.verdict.reason()) {
                changed = true;
                match &crawl.verdict {
                    Verdict::Serving => {
                        tracing::info!(agent = %job.agent, repo = %job.repo, "mirror serves what it acked: listed")
                    }
                    v => {
                        tracing::warn!(agent = %job.agent, repo = %job.repo, why = %v.describe(), "mirror left the metalink")
                    }
                }
            }
            last.insert(key, crawl);
        }
    }
    if changed {
        origin.metalinks.changed();
    }
    Ok(())
}
