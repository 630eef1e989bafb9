//! Building each repo's [`Document`] from the database: which version
//! clients get (the newest that `min_acks` agents acked with a verified
//! public URL), which mirrors serve it, and what else is accepted — the
//! next version while its flip is under way, older ones inside the grace
//! window.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use hotpush_shared::Sha256Digest;
use hotpush_shared::clock::now_unix;
use hotpush_shared::manifest::RepoName;
use hotpush_shared::metalink::{FileDescription, Mirror, MirrorEntry, Template};

use super::{Document, Documents, Listed, MetalinkError};
use crate::db::{AckRecord, AgentRecord, DbError, VersionInfo};
use crate::origin::Origin;

/// How many recent versions are considered when looking for one with enough acks.
const LOOKBACK: usize = 32;

/// The version clients should get, and the agents serving it.
#[derive(Debug)]
struct Current {
    version: VersionInfo,
    mirrors: Vec<AgentRecord>,
}

/// What a document is computed from: one read of the database.
struct RepoView {
    /// Newest first.
    versions: Vec<VersionInfo>,
    agents: Vec<AgentRecord>,
    acks: Vec<AckRecord>,
}

impl RepoView {
    /// Agents whose front end the crawler found failing are left out —
    /// unless that is every agent that acked anything: then the origin's
    /// own view of the network is the likelier fault, and they stay.
    fn load(origin: &Origin, repo: &RepoName, agents: &[AgentRecord]) -> Result<Self, DbError> {
        let acks = origin.db.acks(repo.as_str())?;
        let carrying: Vec<AgentRecord> =
            agents.iter().filter(|a| a.carries(repo)).cloned().collect();
        let acked = |a: &AgentRecord| {
            acks.iter()
                .any(|k| k.agent == a.name().as_str() && k.public_verified)
        };
        let healthy: Vec<AgentRecord> = carrying
            .iter()
            .filter(|a| !origin.crawls.failing(a.name(), repo))
            .cloned()
            .collect();
        let agents = if healthy.iter().any(acked) || !carrying.iter().any(acked) {
            healthy
        } else {
            carrying
        };
        Ok(Self {
            versions: origin.db.version_infos(repo.as_str(), LOOKBACK)?,
            agents,
            acks,
        })
    }

    /// Agents whose public URL was seen serving exactly `version`.
    fn serving(&self, version: &VersionInfo) -> Vec<AgentRecord> {
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

/// What the metalink says about one version's repomd.xml.
#[derive(Clone, Debug)]
struct Described {
    description: FileDescription,
    sha256: Sha256Digest,
}

/// repomd.xml descriptions by (repo, version): reading and hashing it once
/// is enough. Holds only the versions the last rebuild used.
#[derive(Default)]
pub(super) struct DescriptionCache(Mutex<HashMap<(String, u64), Described>>);

impl DescriptionCache {
    fn get(
        &self,
        origin: &Origin,
        v: &VersionInfo,
        used: &mut HashSet<(String, u64)>,
    ) -> Result<Described, MetalinkError> {
        let key = (v.repo.clone(), v.version);
        used.insert(key.clone());
        if let Some(d) = self.0.lock().unwrap_or_else(|p| p.into_inner()).get(&key) {
            return Ok(d.clone());
        }
        let corrupt = |e: String| MetalinkError::Corrupt(v.repo.clone(), e);
        let record = origin
            .db
            .version(&v.repo, v.version)?
            .ok_or_else(|| corrupt(format!("version {} vanished", v.version)))?;
        let snapshot = record
            .snapshot(&origin.config.limits)
            .map_err(|e| corrupt(e.to_string()))?;
        let entry = snapshot
            .repomd()
            .ok_or_else(|| corrupt("no repomd.xml".into()))?;
        let bytes =
            std::fs::read(origin.store.path(&entry.sha256)).map_err(|e| corrupt(e.to_string()))?;
        let described = Described {
            description: FileDescription::of_repomd(&bytes, v.repomd_timestamp),
            sha256: entry.sha256,
        };
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key, described.clone());
        Ok(described)
    }

    fn retain(&self, used: &HashSet<(String, u64)>) {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|k, _| used.contains(k));
    }
}

/// Every repo's document, from one read of the agents and one per repo of
/// its recent versions and acks.
pub(super) fn build_all(origin: &Origin, cache: &DescriptionCache) -> Result<Documents, DbError> {
    let agents = origin.db.agents()?;
    let mut used = HashSet::new();
    let mut documents = HashMap::new();
    for repo in origin.db.repos()? {
        let document = build(origin, cache, &repo, &agents, &mut used);
        documents.insert(repo, Arc::new(document));
    }
    cache.retain(&used);
    Ok(documents)
}

fn build(
    origin: &Origin,
    cache: &DescriptionCache,
    repo: &RepoName,
    agents: &[AgentRecord],
    used: &mut HashSet<(String, u64)>,
) -> Result<Document, MetalinkError> {
    let view = RepoView::load(origin, repo, agents)?;
    if view.versions.is_empty() {
        return Err(MetalinkError::UnknownRepo(repo.clone()));
    }
    let current = view
        .current(origin.config.min_acks)
        .ok_or_else(|| MetalinkError::NoMirrors {
            repo: repo.clone(),
            min_acks: origin.config.min_acks,
        })?;
    let main = cache.get(origin, &current.version, used)?;
    let (mut alternates, lagging) = grace_alternates(origin, cache, &view, &current, used)?;
    // While a newer version's flip is under way, its repomd.xml is accepted
    // too, and the mirrors already serving it are listed (PROTOCOL.md, "The flip").
    let (next, flipped) = match next_version(origin, repo, &view, &current) {
        Some(info) => {
            alternates.push(cache.get(origin, info, used)?.description);
            let flipped: Vec<AgentRecord> = view
                .serving(info)
                .into_iter()
                .filter(|a| !current.mirrors.iter().any(|m| m.name() == a.name()))
                .collect();
            (Some(info.version), flipped)
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
        &Sha256Digest::of(
            format!("{:?}{alternates:?}{next:?}{names:?}", main.description).as_bytes()
        )
        .to_hex()[..16]
    );
    let listed = |agents: Vec<AgentRecord>| -> Vec<Listed> {
        agents
            .into_iter()
            .map(|a| Listed {
                weight: a.weight,
                entry: MirrorEntry::new(&Mirror {
                    base_url: a.target.public_url.repo_base(repo),
                    location: String::new(),
                }),
            })
            .collect()
    };
    let fallback = origin.config.fallback_url.as_ref().map(|f| {
        MirrorEntry::new(&Mirror {
            base_url: f.replace("{repo}", repo.as_str()),
            location: String::new(),
        })
    });
    Ok(Document {
        template: Template::new(&main.description, &alternates),
        version: current.version.version,
        repomd_sha256: main.sha256,
        next,
        groups: vec![listed(current.mirrors), listed(flipped), listed(lagging)],
        fallback,
        etag,
    })
}

/// The version whose flip is under way, if it is newer than `current`
/// (once `current` has caught up, the round is over and forgotten).
fn next_version<'v>(
    origin: &Origin,
    repo: &RepoName,
    view: &'v RepoView,
    current: &Current,
) -> Option<&'v VersionInfo> {
    let next = origin.flips.next(repo)?;
    if next.snapshot.version() <= current.version.version {
        origin.flips.done(repo, current.version.version);
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
    used: &mut HashSet<(String, u64)>,
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
        alternates.push(cache.get(origin, older, used)?.description);
        lagging.extend(view.serving(older));
    }
    Ok((alternates, lagging))
}
