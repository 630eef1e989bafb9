//! The origin's status report: one model of every repo and mirror, rendered
//! by `hotpush-origin status` (a table, or `--json`), by `GET /status`, and
//! carried to the CLI by the Control service's Status call.

use std::collections::{BTreeMap, HashMap};

use hotpush_shared::manifest::RepoName;
use hotpush_shared::push::{FailureKind, Phase};
use serde::{Deserialize, Serialize};

use crate::db::{DbError, DrillRecord};
use crate::origin::Origin;
use hotpush_shared::clock::now_unix;

/// Everything `status` shows.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Report {
    pub origin_id: String,
    pub repos: Vec<RepoReport>,
    pub agents: Vec<AgentReport>,
    pub descriptors: Descriptors,
    /// The latest drill (`hotpush-origin drill`), if any.
    pub drill: Option<DrillRecord>,
    /// When a drill last passed.
    pub drill_last_passed_unix: Option<i64>,
    /// What needs attention before the next emergency, in plain words.
    pub warnings: Vec<String>,
}

/// A drill older than this is a warning: the lane may have rotted unnoticed.
pub const DRILL_MAX_AGE_SECS: i64 = 14 * 86_400;

/// The daemon's descriptor limit against what its connection caps need.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub struct Descriptors {
    /// The soft `RLIMIT_NOFILE` the daemon runs with.
    pub limit: usize,
    /// What the configured `[connections]` caps and reserve need.
    pub needed: usize,
}

/// One repo.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RepoReport {
    pub repo: String,
    /// The newest published version (0: none).
    pub latest_version: u64,
    /// The version the metalink sends clients to (0: none yet).
    pub metalink_version: u64,
    /// The version whose flip is under way, accepted as an alternate.
    pub metalink_next: Option<u64>,
    /// Of the newest version, hex.
    pub manifest_digest: String,
}

/// One registered agent.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AgentReport {
    pub name: String,
    pub endpoint: String,
    pub public_url: String,
    pub weight: u32,
    /// The last error of each repo, `repo: error`, joined by `; `; empty when none.
    pub last_error: String,
    /// Its latest ack of each repo.
    pub acked: Vec<AckedReport>,
    /// Each repo it carries.
    pub mirrors: Vec<MirrorReport>,
}

/// An agent's latest ack of one repo.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AckedReport {
    pub repo: String,
    pub version: u64,
    pub acked_unix: i64,
    /// Its public URL was seen serving this version.
    pub public_verified: bool,
}

/// Where one agent stands with one repo.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MirrorState {
    /// Serves the newest version, verified through its public URL.
    Live,
    /// A push of the newest version is under way.
    Pushing,
    /// The last push could not connect or got no answer; retried with backoff.
    Unreachable,
    /// The agent refused the last push (the error says why); retried.
    Refused,
    /// Its front end does not serve what it acked (down or an old copy):
    /// out of the metalink until it does.
    Stale,
    /// The last push failed otherwise; retried with backoff.
    Failing,
    /// On an older version, or none, with no push under way.
    Behind,
}

/// One agent × repo.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MirrorReport {
    pub repo: String,
    pub state: MirrorState,
    /// The version it serves, verified (0: none).
    pub version: u64,
    /// The push under way.
    pub pushing: Option<PushingReport>,
    /// The last completed push.
    pub last_push: Option<LastPushReport>,
    pub last_error: Option<String>,
    /// What the crawler last saw at its public URL.
    pub front_end: Option<FrontEndReport>,
}

/// The crawler's last look at a mirror's public repomd.xml.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FrontEndReport {
    /// `serving`, `unreachable` or `stale`.
    pub result: String,
    pub detail: String,
    pub checked_unix: i64,
    pub elapsed_ms: u64,
}

/// A push under way.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PushingReport {
    pub version: u64,
    pub phase: Phase,
    pub bytes_sent: u64,
    pub bytes_wanted: u64,
}

/// A completed push.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LastPushReport {
    pub version: u64,
    pub bytes_sent: u64,
    pub elapsed_ms: u64,
    pub verify_ms: u64,
    pub receive_ms: u64,
    /// Staging and the flip itself.
    pub swap_ms: u64,
    /// How long the mirror waited, staged, for the flip.
    pub flip_wait_ms: u64,
    /// When it switched, Unix ms by its clock (0 when not a flip).
    pub flipped_unix_ms: u64,
    /// When the origin had the ack, Unix ms.
    pub acked_unix_ms: u64,
}

impl Report {
    /// Reads the database and the live push state.
    pub fn collect(origin: &Origin) -> Result<Self, DbError> {
        let agents = origin.db.agents()?;
        let states = origin.push_states();
        let mut repos = Vec::new();
        let mut acks_by_agent: HashMap<String, Vec<AckedReport>> = HashMap::new();
        let mut latest_of: BTreeMap<RepoName, u64> = BTreeMap::new();
        for repo in origin.db.repos()? {
            let latest = origin.db.version_infos(repo.as_str(), 1)?.pop();
            // What clients are told now.
            let document = origin.metalinks.get(&repo);
            let served = document.as_ref().as_ref().ok();
            latest_of.insert(repo.clone(), latest.as_ref().map_or(0, |v| v.version));
            repos.push(RepoReport {
                repo: repo.to_string(),
                latest_version: latest.as_ref().map_or(0, |v| v.version),
                metalink_version: served.map_or(0, |d| d.version),
                metalink_next: served.and_then(|d| d.next),
                manifest_digest: latest
                    .map(|v| v.manifest_digest.to_hex())
                    .unwrap_or_default(),
            });
            for a in origin.db.acks(repo.as_str())? {
                acks_by_agent.entry(a.agent).or_default().push(AckedReport {
                    repo: a.repo,
                    version: a.version,
                    acked_unix: a.acked_unix,
                    public_verified: a.public_verified,
                });
            }
        }
        let agents = agents
            .into_iter()
            .map(|a| {
                let name = a.name().clone();
                let acked = acks_by_agent.remove(name.as_str()).unwrap_or_default();
                let mirrors: Vec<MirrorReport> = latest_of
                    .iter()
                    .filter(|(repo, _)| a.carries(repo))
                    .map(|(repo, latest)| {
                        let state = states.get(&(name.clone(), repo.clone()));
                        let served = acked
                            .iter()
                            .find(|k| k.repo == repo.as_str() && k.public_verified)
                            .map_or(0, |k| k.version);
                        mirror(repo, *latest, served, state, origin.crawls.get(&name, repo))
                    })
                    .collect();
                let last_error = mirrors
                    .iter()
                    .filter_map(|m| m.last_error.as_ref().map(|e| format!("{}: {e}", m.repo)))
                    .collect::<Vec<_>>()
                    .join("; ");
                AgentReport {
                    name: name.to_string(),
                    endpoint: a.target.endpoint.clone(),
                    public_url: a.target.public_url.to_string(),
                    weight: a.weight,
                    last_error,
                    acked,
                    mirrors,
                }
            })
            .collect();
        let (drill, drill_last_passed_unix) = origin.db.drills()?;
        let descriptors = Descriptors {
            limit: hotpush_shared::daemon::fd_limit(),
            needed: origin.fds_needed,
        };
        let mut warnings = Vec::new();
        match drill_last_passed_unix {
            None => warnings.push(
                "no drill has passed yet: rehearse with `hotpush-origin drill <canary repo>` \
                 (deploy/systemd/hotpush-drill.timer runs it weekly)"
                    .to_owned(),
            ),
            Some(at) if now_unix() - at > DRILL_MAX_AGE_SECS => warnings.push(format!(
                "the last passing drill was {} days ago: check hotpush-drill.timer",
                (now_unix() - at) / 86_400
            )),
            Some(_) => {}
        }
        if descriptors.limit < descriptors.needed {
            warnings.push(format!(
                "the descriptor limit {} is below the {} the connection caps need: raise LimitNOFILE",
                descriptors.limit, descriptors.needed
            ));
        }
        Ok(Self {
            origin_id: origin.origin_id.to_string(),
            repos,
            agents,
            descriptors,
            drill,
            drill_last_passed_unix,
            warnings,
        })
    }
}

fn mirror(
    repo: &RepoName,
    latest: u64,
    served: u64,
    state: Option<&crate::origin::PushState>,
    crawl: Option<crate::crawl::Crawl>,
) -> MirrorReport {
    let pushing =
        state
            .and_then(|s| s.pushing)
            .map(|(version, phase, bytes_sent, bytes_wanted)| PushingReport {
                version,
                phase,
                bytes_sent,
                bytes_wanted,
            });
    let last_error = state.and_then(|s| s.last_error.clone());
    let front_end_failing = crawl
        .as_ref()
        .is_some_and(|c| c.verdict != crate::crawl::Verdict::Serving);
    let up_to_date = served >= latest && latest > 0;
    // A mirror behind is described by why pushes to it fail; one up to
    // date, by whether clients can reach what it serves.
    let state_now = if up_to_date && front_end_failing {
        MirrorState::Stale
    } else if up_to_date {
        MirrorState::Live
    } else if pushing.is_some() {
        MirrorState::Pushing
    } else {
        match last_error.as_ref().map(|(_, kind)| kind) {
            Some(FailureKind::Unreachable) => MirrorState::Unreachable,
            Some(FailureKind::Refused(_)) => MirrorState::Refused,
            Some(FailureKind::NotPublic) => MirrorState::Stale,
            Some(FailureKind::Other) => MirrorState::Failing,
            None if front_end_failing => MirrorState::Stale,
            None => MirrorState::Behind,
        }
    };
    MirrorReport {
        repo: repo.to_string(),
        state: state_now,
        version: served,
        pushing,
        last_push: state.and_then(|s| s.last_push).map(|p| LastPushReport {
            version: p.version,
            bytes_sent: p.bytes_sent,
            elapsed_ms: p.elapsed_ms,
            verify_ms: p.timings.verify_ms,
            receive_ms: p.timings.receive_ms,
            swap_ms: p.timings.swap_ms,
            flip_wait_ms: p.timings.flip_wait_ms,
            flipped_unix_ms: p.timings.flipped_unix_ms,
            acked_unix_ms: p.acked_unix_ms,
        }),
        last_error: last_error.map(|(reason, _)| reason),
        front_end: crawl.map(|c| FrontEndReport {
            result: c.verdict.reason().to_owned(),
            detail: c.verdict.describe(),
            checked_unix: c.at_unix,
            elapsed_ms: c.elapsed_ms,
        }),
    }
}
