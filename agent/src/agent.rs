//! The agent's shared state across pushes: its config and tree, the newest
//! push per repo (older ones watch it and stop), one swap lock per repo,
//! which blobs some push is writing right now, and the memory budget for
//! Offers not yet verified.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use hotpush_shared::Sha256Digest;
use hotpush_shared::identity::PeerId;
use hotpush_shared::manifest::RepoName;
use tokio::sync::{Semaphore, watch};

use crate::config::Config;
use crate::swap::Tree;

/// The newest verified offer of a repo: its version, and which push made it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Newest {
    pub version: u64,
    pub push: u64,
}

/// Shared by every push and the Status call.
pub struct Agent {
    pub config: Config,
    pub tree: Tree,
    pub agent_id: PeerId,
    /// Newest verified offer per repo. A push of an older version, or an
    /// earlier push of the same version (one that stalled, say), sees it
    /// change and stops, letting go of its partial blob.
    pub(crate) newest: HashMap<RepoName, watch::Sender<Newest>>,
    /// Numbers pushes, for [`Newest::push`].
    next_push: std::sync::atomic::AtomicU64,
    /// One swap per repo at a time.
    pub(crate) swap_locks: HashMap<RepoName, tokio::sync::Mutex<()>>,
    /// Blobs some push is writing right now: two pushes never write one partial file.
    receiving: Mutex<HashSet<Sha256Digest>>,
    /// KiB of Offers being read before their signature is checked, across
    /// every connection and stream (`max_unverified_offer_bytes`).
    pub(crate) offer_budget: Arc<Semaphore>,
    /// One delta Offer rebuilds its manifest at a time: with the Offer's own
    /// share of `offer_budget` that bounds its up to `max_manifest_bytes` of
    /// rebuilt bytes, and a rebuild never waits for `offer_budget` (no
    /// deadlock between Offers each holding one share).
    pub(crate) rebuilding: Arc<Semaphore>,
    /// For checking the public URL after a swap.
    pub(crate) http: reqwest::Client,
    pub metrics: crate::metrics::Metrics,
}

impl Agent {
    /// Builds the shared state for the configured repos.
    pub fn new(
        config: Config,
        tree: Tree,
        agent_id: PeerId,
        http: reqwest::Client,
        metrics: crate::metrics::Metrics,
    ) -> Self {
        let newest = config
            .repos
            .iter()
            .map(|r| (r.clone(), watch::channel(Newest::default()).0))
            .collect();
        let swap_locks = config
            .repos
            .iter()
            .map(|r| (r.clone(), tokio::sync::Mutex::new(())))
            .collect();
        let budget_kib = config
            .connections
            .max_unverified_offer_bytes
            .max(config.limits.max_manifest_bytes)
            / 1024;
        Self {
            config,
            tree,
            agent_id,
            newest,
            next_push: std::sync::atomic::AtomicU64::new(1),
            swap_locks,
            receiving: Mutex::new(HashSet::new()),
            offer_budget: Arc::new(Semaphore::new(budget_kib)),
            rebuilding: Arc::new(Semaphore::new(1)),
            http,
            metrics,
        }
    }

    /// KiB of the offer budget one Offer is charged: the manifest size limit.
    pub(crate) fn offer_cost_kib(&self) -> u32 {
        u32::try_from(self.config.limits.max_manifest_bytes.div_ceil(1024)).unwrap_or(u32::MAX)
    }

    /// A number for a new push.
    pub(crate) fn push_number(&self) -> u64 {
        self.next_push
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    }

    /// Marks `digest` as being written by the caller; false when another
    /// push holds it.
    pub(crate) fn claim(&self, digest: Sha256Digest) -> bool {
        self.receiving
            .lock()
            .map(|mut set| set.insert(digest))
            .unwrap_or(false)
    }

    /// True while some push writes `digest`.
    pub(crate) fn is_claimed(&self, digest: &Sha256Digest) -> bool {
        self.receiving
            .lock()
            .map(|set| set.contains(digest))
            .unwrap_or(true)
    }

    /// Lets go of a claimed blob.
    pub(crate) fn release(&self, digest: &Sha256Digest) {
        if let Ok(mut set) = self.receiving.lock() {
            set.remove(digest);
        }
    }
}
