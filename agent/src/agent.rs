//! The agent's shared state across pushes: its config and tree, the newest
//! version offered per repo (older pushes in flight watch it and stop), one
//! swap lock per repo, and which blobs some push is writing right now.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use hotpush_shared::Sha256Digest;
use hotpush_shared::identity::PeerId;
use hotpush_shared::manifest::RepoName;
use tokio::sync::watch;

use crate::config::Config;
use crate::swap::Tree;

/// Shared by every push and the Status call.
pub struct Agent {
    pub config: Config,
    pub tree: Tree,
    pub agent_id: PeerId,
    /// Newest version offered per repo; older pushes in flight watch it and stop.
    pub(crate) offered: HashMap<RepoName, watch::Sender<u64>>,
    /// One swap per repo at a time.
    pub(crate) swap_locks: HashMap<RepoName, tokio::sync::Mutex<()>>,
    /// Blobs some push is writing right now: two pushes never write one partial file.
    receiving: Mutex<HashSet<Sha256Digest>>,
    /// For checking the public URL after a swap.
    pub(crate) http: reqwest::Client,
}

impl Agent {
    /// Builds the shared state for the configured repos.
    pub fn new(config: Config, tree: Tree, agent_id: PeerId, http: reqwest::Client) -> Self {
        let offered = config
            .repos
            .iter()
            .map(|r| (r.clone(), watch::channel(0).0))
            .collect();
        let swap_locks = config
            .repos
            .iter()
            .map(|r| (r.clone(), tokio::sync::Mutex::new(())))
            .collect();
        Self {
            config,
            tree,
            agent_id,
            offered,
            swap_locks,
            receiving: Mutex::new(HashSet::new()),
            http,
        }
    }

    /// Marks `digest` as being written by the caller; false when another
    /// push holds it.
    pub(crate) fn claim(&self, digest: Sha256Digest) -> bool {
        self.receiving
            .lock()
            .map(|mut set| set.insert(digest))
            .unwrap_or(false)
    }

    /// Lets go of a claimed blob.
    pub(crate) fn release(&self, digest: &Sha256Digest) {
        if let Ok(mut set) = self.receiving.lock() {
            set.remove(digest);
        }
    }
}
