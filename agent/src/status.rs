//! What this agent serves, for the `Status` RPC and `hotpush-agent status`.

use bytes::Bytes;
use hotpush_proto as pb;
use hotpush_shared::clock::{now_unix, unix_of};

use crate::agent::Agent;
use crate::state::StateError;

/// Installed version of every configured repo.
pub fn collect(agent: &Agent) -> Result<pb::AgentStatus, StateError> {
    let mut repos = Vec::new();
    for repo in &agent.config.repos {
        let state = match agent.tree.state.current(repo)? {
            Some(i) => pb::RepoState {
                repo: repo.to_string(),
                version: i.version(),
                manifest_digest: Bytes::copy_from_slice(&i.snapshot.digest.0),
                repomd_sha256: i
                    .snapshot
                    .repomd()
                    .map(|e| Bytes::copy_from_slice(&e.sha256.0))
                    .unwrap_or_default(),
                installed_unix: unix_of(i.since),
            },
            None => pb::RepoState {
                repo: repo.to_string(),
                ..Default::default()
            },
        };
        repos.push(state);
    }
    let disk_free_bytes = hotpush_shared::store::free_bytes(&agent.config.data_dir).unwrap_or(0);
    Ok(pb::AgentStatus {
        agent_id: agent.agent_id.to_string(),
        repos,
        disk_free_bytes,
        version: env!("CARGO_PKG_VERSION").to_owned(),
        now_unix: now_unix(),
    })
}
