//! Which version the metalink points at, and the document itself (docs/PROTOCOL.md
//! "The metalink").
//!
//! The metalink lists only agents that acked the version it names, so dnf is
//! never sent to a mirror that lacks the fix. It moves to a new version once
//! `min_acks` agents have acked it; until then it keeps naming the previous
//! version and the agents that still serve it.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::SystemTime;

use hotpush_shared::clock::now_unix;
use hotpush_shared::manifest::RepoName;
use hotpush_shared::metalink::{FileDescription, Mirror, write_metalink};
use rand::RngExt;

use crate::db::{AckRecord, AgentRecord, DbError, VersionRecord};
use crate::origin::Origin;

/// How many recent versions are considered when looking for one with enough acks.
const LOOKBACK: usize = 32;

/// The version clients should get, and the agents serving it.
#[derive(Debug)]
pub struct Current {
    pub version: VersionRecord,
    pub mirrors: Vec<AgentRecord>,
}

/// What the metalink is computed from: one read of the database per request.
struct RepoView {
    /// Newest first.
    versions: Vec<VersionRecord>,
    agents: Vec<AgentRecord>,
    acks: Vec<AckRecord>,
}

impl RepoView {
    fn load(origin: &Origin, repo: &RepoName) -> Result<Self, DbError> {
        Ok(Self {
            versions: origin.db.versions(repo.as_str(), LOOKBACK)?,
            agents: origin
                .db
                .agents()?
                .into_iter()
                .filter(|a| a.carries(repo))
                .collect(),
            acks: origin.db.acks(repo.as_str())?,
        })
    }

    /// Agents whose public URL was seen serving exactly `version`.
    fn serving(&self, version: &VersionRecord) -> Vec<AgentRecord> {
        self.agents
            .iter()
            .filter(|a| {
                self.acks.iter().any(|k| {
                    k.agent == a.name().as_str()
                        && k.version == version.version
                        && k.manifest_digest == version.manifest_digest
                        && k.public_verified
                })
            })
            .cloned()
            .collect()
    }

    /// The newest version at least `min_acks` agents serve.
    fn current(&self, min_acks: usize) -> Option<Current> {
        self.versions.iter().find_map(|v| {
            let mirrors = self.serving(v);
            (mirrors.len() >= min_acks).then(|| Current {
                version: v.clone(),
                mirrors,
            })
        })
    }
}

/// The newest version acked by at least `min_acks` agents whose public URL
/// was seen serving it.
pub fn current_version(origin: &Origin, repo: &RepoName) -> Result<Option<Current>, DbError> {
    Ok(RepoView::load(origin, repo)?.current(origin.config.min_acks))
}

/// Orders mirrors by weighted random choice (Efraimidis–Spirakis), so each
/// partner is listed first in proportion to its capacity.
pub fn weighted_order(mut mirrors: Vec<AgentRecord>, rng: &mut impl rand::Rng) -> Vec<AgentRecord> {
    let mut keyed: Vec<(f64, AgentRecord)> = mirrors
        .drain(..)
        .map(|m| {
            let u: f64 = rng.random_range(f64::MIN_POSITIVE..1.0);
            (u.powf(1.0 / f64::from(m.weight.max(1))), m)
        })
        .collect();
    keyed.sort_by(|a, b| b.0.total_cmp(&a.0));
    keyed.into_iter().map(|(_, m)| m).collect()
}

/// Why a metalink could not be produced.
#[derive(Debug, thiserror::Error)]
pub enum MetalinkError {
    #[error("repo {0} is not published here")]
    UnknownRepo(RepoName),
    #[error("no mirror serves {repo} yet: waiting for {min_acks} agent(s) to ack")]
    NoMirrors { repo: RepoName, min_acks: usize },
    #[error("stored snapshot of {0} is unreadable: {1}")]
    Corrupt(String, String),
    #[error(transparent)]
    Db(#[from] DbError),
}

/// repomd.xml descriptions by (repo, version): hashing it once is enough.
#[derive(Default)]
pub struct DescriptionCache(Mutex<HashMap<(String, u64), FileDescription>>);

impl DescriptionCache {
    fn get(&self, origin: &Origin, v: &VersionRecord) -> Result<FileDescription, MetalinkError> {
        let key = (v.repo.clone(), v.version);
        if let Some(d) = self.0.lock().unwrap_or_else(|p| p.into_inner()).get(&key) {
            return Ok(d.clone());
        }
        let corrupt = |e: String| MetalinkError::Corrupt(v.repo.clone(), e);
        let snapshot = v
            .snapshot(&origin.config.limits)
            .map_err(|e| corrupt(e.to_string()))?;
        let entry = snapshot
            .repomd()
            .ok_or_else(|| corrupt("no repomd.xml".into()))?;
        let bytes =
            std::fs::read(origin.store.path(&entry.sha256)).map_err(|e| corrupt(e.to_string()))?;
        let description = FileDescription::of_repomd(&bytes, v.repomd_timestamp);
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key, description.clone());
        Ok(description)
    }
}

/// A rendered metalink and a tag for its content (mirror order aside).
pub struct Rendered {
    pub body: String,
    pub etag: String,
}

/// Renders the metalink of `repo` for one request.
pub fn render(
    origin: &Origin,
    cache: &DescriptionCache,
    repo: &RepoName,
) -> Result<Rendered, MetalinkError> {
    let view = RepoView::load(origin, repo)?;
    if view.versions.is_empty() {
        return Err(MetalinkError::UnknownRepo(repo.clone()));
    }
    let current = view
        .current(origin.config.min_acks)
        .ok_or_else(|| MetalinkError::NoMirrors {
            repo: repo.clone(),
            min_acks: origin.config.min_acks,
        })?;
    let description = cache.get(origin, &current.version)?;
    let (mut alternates, lagging) = grace_alternates(origin, cache, &view, &current)?;
    // While a newer version's flip is under way, its repomd.xml is accepted
    // too, and the mirrors already serving it are listed (PROTOCOL.md, "The flip").
    let (next, flipped) = match next_version(origin, &view, &current) {
        Some(record) => {
            alternates.push(cache.get(origin, record)?);
            let flipped: Vec<AgentRecord> = view
                .serving(record)
                .into_iter()
                .filter(|a| !current.mirrors.iter().any(|m| m.name() == a.name()))
                .collect();
            (Some(record.version), flipped)
        }
        None => (None, Vec::new()),
    };
    let mut names: Vec<&str> = current
        .mirrors
        .iter()
        .chain(&flipped)
        .map(|m| m.name().as_str())
        .collect();
    names.sort_unstable();
    let etag = format!(
        "W/\"{}-{}\"",
        current.version.version,
        &hotpush_shared::Sha256Digest::of(
            format!("{description:?}{alternates:?}{next:?}{names:?}").as_bytes()
        )
        .to_hex()[..16]
    );
    let mut rng = rand::rng();
    // Mirrors on the current version first, then those that already flipped
    // to the next; inside the grace window, those still on the previous one.
    let mut mirrors: Vec<Mirror> = weighted_order(current.mirrors, &mut rng)
        .into_iter()
        .chain(weighted_order(flipped, &mut rng))
        .chain(weighted_order(lagging, &mut rng))
        .map(|a| Mirror {
            base_url: a.target.public_url.repo_base(repo),
            location: String::new(),
        })
        .collect();
    if let Some(fallback) = &origin.config.fallback_url {
        mirrors.push(Mirror {
            base_url: fallback.replace("{repo}", repo.as_str()),
            location: String::new(),
        });
    }
    let body = write_metalink(&description, &alternates, &mirrors, SystemTime::now());
    Ok(Rendered { body, etag })
}

/// The version whose flip is under way, if it is newer than `current`
/// (once `current` has caught up, the round is over and forgotten).
fn next_version<'v>(
    origin: &Origin,
    view: &'v RepoView,
    current: &Current,
) -> Option<&'v VersionRecord> {
    let repo: RepoName = current.version.repo.parse().ok()?;
    let next = origin.flips.next(&repo)?;
    if next.snapshot.version() <= current.version.version {
        origin.flips.done(&repo, current.version.version);
        return None;
    }
    view.versions
        .iter()
        .find(|v| v.version == next.snapshot.version() && v.manifest_digest == next.snapshot.digest)
}

/// Alternates for versions replaced less than `alternates_grace` ago, and
/// the verified mirrors still serving them. Empty by default.
fn grace_alternates(
    origin: &Origin,
    cache: &DescriptionCache,
    view: &RepoView,
    current: &Current,
) -> Result<(Vec<FileDescription>, Vec<AgentRecord>), MetalinkError> {
    let grace = origin.config.alternates_grace.as_secs() as i64;
    if grace == 0 {
        return Ok((Vec::new(), Vec::new()));
    }
    let now = now_unix();
    let mut alternates = Vec::new();
    let mut lagging = Vec::new();
    // Each older version is acceptable until grace after its successor appeared.
    for pair in view.versions.windows(2) {
        let (newer, older) = (&pair[0], &pair[1]);
        if older.version >= current.version.version || now - newer.created_unix >= grace {
            continue;
        }
        alternates.push(cache.get(origin, older)?);
        lagging.extend(view.serving(older));
    }
    Ok((alternates, lagging))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn agent(name: &str, weight: u32) -> AgentRecord {
        AgentRecord {
            target: hotpush_shared::push::Target {
                name: hotpush_shared::name::AgentName::new(name).unwrap(),
                endpoint: String::new(),
                peer_id: "ab".repeat(32).parse().unwrap(),
                public_url: hotpush_shared::url::PublicUrl::parse(&format!("http://{name}/"))
                    .unwrap(),
                repos: vec![],
            },
            weight,
        }
    }

    #[test]
    fn weighted_order_follows_capacity() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let mut first = HashMap::new();
        for _ in 0..4000 {
            let order = weighted_order(vec![agent("big", 300), agent("small", 100)], &mut rng);
            assert_eq!(order.len(), 2);
            *first.entry(order[0].name().to_string()).or_insert(0) += 1;
        }
        let big = f64::from(first["big"]) / 4000.0;
        assert!((0.70..0.80).contains(&big), "big first {big}");
    }
}
