//! The origin's view of every repo and agent, for `status` and `/status`.

use bytes::Bytes;
use hotpush_proto as pb;

use crate::db::DbError;
use crate::metalink::current_version;
use crate::origin::Origin;

/// Builds the status report.
pub fn collect(origin: &Origin) -> Result<pb::OriginStatus, DbError> {
    let agents = origin.db.agents()?;
    let mut repos = Vec::new();
    let mut acked: std::collections::HashMap<String, Vec<pb::RepoState>> = Default::default();
    for repo in origin.db.repos()? {
        let latest = origin.db.latest(&repo)?;
        let acks = origin.db.acks(&repo)?;
        let current = current_version(origin, &repo)?;
        repos.push(pb::OriginRepo {
            repo: repo.clone(),
            latest_version: latest.as_ref().map_or(0, |v| v.version),
            metalink_version: current.as_ref().map_or(0, |c| c.version.version),
            manifest_digest: latest
                .map(|v| Bytes::copy_from_slice(&v.manifest_digest.0))
                .unwrap_or_default(),
        });
        for a in acks {
            acked
                .entry(a.agent.clone())
                .or_default()
                .push(pb::RepoState {
                    repo: a.repo,
                    version: a.version,
                    manifest_digest: Bytes::copy_from_slice(&a.manifest_digest.0),
                    repomd_sha256: Bytes::new(),
                    installed_unix: a.acked_unix,
                });
        }
    }
    let states = origin
        .push_state
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    let agents = agents
        .into_iter()
        .map(|a| {
            let last_error = states
                .iter()
                .filter(|((agent, _), s)| agent == &a.name && s.last_error.is_some())
                .filter_map(|((_, repo), s)| s.last_error.as_ref().map(|e| format!("{repo}: {e}")))
                .collect::<Vec<_>>()
                .join("; ");
            pb::OriginAgent {
                acked: acked.remove(&a.name).unwrap_or_default(),
                name: a.name,
                endpoint: a.endpoint,
                last_error,
            }
        })
        .collect();
    Ok(pb::OriginStatus {
        origin_id: origin.origin_id.clone(),
        repos,
        agents,
    })
}
