//! The push side of hotpush: keeping mirrors on the newest snapshot of each
//! repo. The origin uses it now; a relaying agent (docs/PROTOCOL.md, "Where
//! relays and root rotation fit") will use the same code for its downstream
//! mirrors, reading versions from its own installed state instead of the
//! origin's database: everything it needs from its owner goes through
//! [`Source`].
//!
//! - [`exchange`]: one Push exchange with one agent;
//! - [`reconciler`]: one task per target × repo that pushes the newest
//!   version until it is acked, with [`backoff`], and is superseded by a
//!   newer publish; a supervisor keeps one running per pair.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::future::BoxFuture;
use hotpush_proto as pb;
use tokio::sync::{Notify, watch};

use crate::ack::Ack;
use crate::delta::Delta;
use crate::identity::PeerId;
use crate::manifest::RepoName;
use crate::name::AgentName;
use crate::snapshot::Snapshot;
use crate::store::BlobStore;
use crate::url::PublicUrl;

pub mod backoff;
pub mod exchange;
pub mod reconciler;

pub use exchange::{FailureKind, PushFailure, Pushed};
pub use reconciler::supervise;

/// A mirror to keep current.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub name: AgentName,
    /// `https://host:port` of its push listener.
    pub endpoint: String,
    /// Its pinned TLS id.
    pub peer_id: PeerId,
    /// Where clients reach its served tree.
    pub public_url: PublicUrl,
    /// Repos it carries; empty means every repo.
    pub repos: Vec<RepoName>,
}

impl Target {
    /// True when this mirror carries `repo`.
    pub fn carries(&self, repo: &RepoName) -> bool {
        self.repos.is_empty() || self.repos.contains(repo)
    }
}

/// Where a push to one mirror stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// Offer sent, waiting for the agent's answer.
    Connecting,
    /// Streaming the blobs the agent wants.
    Sending,
    /// All sent; the agent stages the snapshot.
    Committing,
    /// Staged beside the live snapshot, waiting for the flip.
    Staged,
    /// Told to flip; the agent swaps and checks its public URL.
    Flipping,
}

impl From<Phase> for pb::PushPhase {
    fn from(p: Phase) -> Self {
        match p {
            Phase::Connecting => pb::PushPhase::Connecting,
            Phase::Sending => pb::PushPhase::Sending,
            Phase::Committing => pb::PushPhase::Committing,
            Phase::Staged => pb::PushPhase::Staged,
            Phase::Flipping => pb::PushPhase::Flipping,
        }
    }
}

impl TryFrom<pb::PushPhase> for Phase {
    type Error = pb::PushPhase;
    fn try_from(p: pb::PushPhase) -> Result<Self, pb::PushPhase> {
        match p {
            pb::PushPhase::Connecting => Ok(Phase::Connecting),
            pb::PushPhase::Sending => Ok(Phase::Sending),
            pb::PushPhase::Committing => Ok(Phase::Committing),
            pb::PushPhase::Staged => Ok(Phase::Staged),
            pb::PushPhase::Flipping => Ok(Phase::Flipping),
            other => Err(other),
        }
    }
}

/// Something that happened to the push of one version to one mirror.
#[derive(Clone, Debug)]
pub struct Event {
    pub target: AgentName,
    pub repo: RepoName,
    pub version: u64,
    pub kind: EventKind,
}

/// What happened.
#[derive(Clone, Debug)]
pub enum EventKind {
    Progress {
        phase: Phase,
        bytes_sent: u64,
        bytes_wanted: u64,
    },
    /// The mirror serves the version, and its ack counted.
    Acked {
        elapsed: Duration,
        bytes_sent: u64,
        /// Bytes of Offer: O(change) for a delta, the whole manifest otherwise.
        offer_bytes: u64,
        ack: Ack,
    },
    Failed {
        reason: String,
        kind: FailureKind,
        will_retry: bool,
    },
}

/// An error from a [`Source`] (a database, a state directory).
pub type SourceError = Box<dyn std::error::Error + Send + Sync>;

/// What the push side needs from its owner: the origin's database today,
/// a relay's installed state later.
pub trait Source: Send + Sync + 'static {
    /// Repos that have a version to push.
    fn repos(&self) -> Result<Vec<RepoName>, SourceError>;
    /// The mirrors to keep current.
    fn targets(&self) -> Result<Vec<Target>, SourceError>;
    /// The newest snapshot of `repo`.
    fn latest(&self, repo: &RepoName) -> Result<Option<Arc<Snapshot>>, SourceError>;
    /// The newest version of `repo` that `target` acked with an ack that counted.
    fn acked(&self, target: &AgentName, repo: &RepoName) -> Result<Option<u64>, SourceError>;
    /// The change from version `base` of `repo` to `snapshot`, when one is
    /// at hand: offered instead of the whole manifest to a mirror that has
    /// `base` live (docs/PROTOCOL.md, "Delta offers").
    fn delta(&self, repo: &RepoName, base: u64, snapshot: &Snapshot) -> Option<Arc<Delta>>;
    /// Where blob bytes are read from.
    fn blobs(&self) -> &BlobStore;
    /// New versions and changes to the list of targets.
    fn announcements(&self) -> &Announcements;
    /// Records an ack. `Err` says, in plain words, why it does not count
    /// (the mirror's front end does not serve the snapshot, say); the
    /// reconciler then retries with backoff.
    fn record_ack(&self, target: &Target, snapshot: &Snapshot, ack: &Ack) -> Result<(), String>;
    /// Progress, acks and failures, for whoever watches (publish, status, metrics).
    fn report(&self, event: Event);
    /// `target` has staged `snapshot`: resolves when it may flip (at once,
    /// or once the metalink accepts the new repomd.xml; docs/PROTOCOL.md,
    /// "The flip"), or with why it may not (a newer version took over).
    fn may_flip<'a>(
        &'a self,
        target: &'a Target,
        snapshot: &'a Arc<Snapshot>,
    ) -> BoxFuture<'a, Result<(), String>>;
}

/// Newest version per repo, and a nudge when targets or repos change: what
/// wakes reconcilers and the supervisor.
#[derive(Debug, Default)]
pub struct Announcements {
    latest: Mutex<HashMap<RepoName, watch::Sender<u64>>>,
    roster: Notify,
}

impl Announcements {
    fn sender<'a>(
        map: &'a mut HashMap<RepoName, watch::Sender<u64>>,
        repo: &RepoName,
    ) -> &'a watch::Sender<u64> {
        map.entry(repo.clone())
            .or_insert_with(|| watch::channel(0).0)
    }

    /// Watches the newest version of `repo` (0 until one is announced).
    pub fn watch(&self, repo: &RepoName) -> watch::Receiver<u64> {
        let mut map = self.latest.lock().unwrap_or_else(|p| p.into_inner());
        Self::sender(&mut map, repo).subscribe()
    }

    /// Tells the reconcilers of `repo` that `version` exists.
    pub fn announce(&self, repo: &RepoName, version: u64) {
        let mut map = self.latest.lock().unwrap_or_else(|p| p.into_inner());
        Self::sender(&mut map, repo).send_if_modified(|v| {
            let newer = version > *v;
            if newer {
                *v = version;
            }
            newer
        });
        drop(map);
        // A first version of a new repo needs reconcilers started now.
        self.roster.notify_one();
    }

    /// Tells the supervisor that targets may have changed.
    pub fn roster_changed(&self) {
        self.roster.notify_one();
    }

    async fn roster_change(&self) {
        self.roster.notified().await;
    }
}
