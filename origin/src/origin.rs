//! The origin's shared state: what the reconcilers, the control service
//! and the HTTP server all read, and the progress events they publish.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use hotpush_shared::delta::Delta;
use hotpush_shared::identity::PeerId;
use hotpush_shared::manifest::RepoName;
use hotpush_shared::name::AgentName;
use hotpush_shared::push::{Announcements, Event, EventKind, FailureKind, Phase};
use hotpush_shared::repo::KnownPackages;
use hotpush_shared::sign::SigningKey;
use hotpush_shared::snapshot::Snapshot;
use hotpush_shared::store::BlobStore;
use tokio::sync::broadcast;

use crate::config::Config;
use crate::db::{Db, DbError};
use crate::metrics::Metrics;

/// Progress events kept for subscribers that fall behind; a `publish`
/// client that lags this far skips events, it does not block pushes.
const EVENT_BACKLOG: usize = 1024;

/// The last known push state of one agent × repo, for `status`.
#[derive(Clone, Debug, Default)]
pub struct PushState {
    /// The version being pushed, the phase and bytes so far.
    pub pushing: Option<(u64, Phase, u64, u64)>,
    /// The last failure and its kind, cleared by an ack.
    pub last_error: Option<(String, FailureKind)>,
    /// The last completed push.
    pub last_push: Option<LastPush>,
}

/// A completed push, as the ack told it.
#[derive(Clone, Copy, Debug)]
pub struct LastPush {
    pub version: u64,
    pub bytes_sent: u64,
    pub elapsed_ms: u64,
    /// The agent's own account: verify, receive, swap, flip wait, flip time.
    pub timings: hotpush_shared::ack::Timings,
    /// When the ack arrived, Unix ms.
    pub acked_unix_ms: u64,
}

/// Shared by the reconcilers, the control service and the HTTP server.
pub struct Origin {
    pub config: Config,
    pub db: Db,
    pub store: BlobStore,
    pub key: SigningKey,
    pub origin_id: PeerId,
    /// Progress of every push, for `publish` clients.
    pub events: broadcast::Sender<Event>,
    /// New versions and roster changes, for the reconcilers.
    pub(crate) announcements: Announcements,
    /// Per agent × repo.
    push_state: Mutex<HashMap<(AgentName, RepoName), PushState>>,
    /// The newest snapshot of each repo, decoded once.
    latest: Mutex<HashMap<RepoName, Arc<Snapshot>>>,
    /// The primary.xml entries of the version of each repo this process
    /// published last, so that the next publish parses only what changed.
    known_packages: Mutex<HashMap<RepoName, (u64, Arc<KnownPackages>)>>,
    /// The change from each repo's previous version to its newest, for
    /// delta offers to the mirrors that have the previous one live.
    deltas: Mutex<HashMap<RepoName, Arc<Delta>>>,
    pub metrics: Metrics,
    /// When staged mirrors flip, and what the metalink accepts meanwhile.
    pub flips: Arc<crate::flip::Flips>,
    /// Every repo's metalink, kept in memory.
    pub metalinks: Arc<crate::metalink::Metalinks>,
    /// What each mirror's public URL served when last fetched.
    pub crawls: crate::crawl::Crawls,
    /// The bytes each path had in recent snapshots.
    pub history: crate::history::PathHistory,
    /// Descriptors the configured connection caps need (before they were
    /// fitted to the process's limit), for `status` and `doctor`.
    pub fds_needed: usize,
}

impl Origin {
    /// Builds the shared state.
    pub fn new(
        config: Config,
        db: Db,
        store: BlobStore,
        key: SigningKey,
        origin_id: PeerId,
        fds_needed: usize,
        metrics: Metrics,
    ) -> Arc<Self> {
        let (events, _) = broadcast::channel(EVENT_BACKLOG);
        let metalinks = Arc::new(crate::metalink::Metalinks::default());
        Arc::new(Self {
            fds_needed,
            config,
            db,
            store,
            key,
            origin_id,
            events,
            announcements: Announcements::default(),
            push_state: Mutex::new(HashMap::new()),
            latest: Mutex::new(HashMap::new()),
            known_packages: Mutex::new(HashMap::new()),
            deltas: Mutex::new(HashMap::new()),
            metrics,
            flips: Arc::new(crate::flip::Flips::new(metalinks.clone())),
            metalinks,
            crawls: Default::default(),
            history: Default::default(),
        })
    }

    /// The newest snapshot of `repo`, read and decoded once and kept.
    pub fn latest(&self, repo: &RepoName) -> Result<Option<Arc<Snapshot>>, DbError> {
        let Some(info) = self.db.version_infos(repo.as_str(), 1)?.pop() else {
            return Ok(None);
        };
        // Held while decoding: the reconcilers of every agent ask at once
        // (at start-up, after a publish), and each decoded its own copy of
        // a manifest that is ~8 MB at 100,000 files.
        let mut cache = self.latest.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(s) = cache.get(repo)
            && s.version() == info.version
            && s.digest == info.manifest_digest
        {
            return Ok(Some(s.clone()));
        }
        let Some(record) = self.db.version(repo.as_str(), info.version)? else {
            return Ok(None);
        };
        let snapshot =
            Arc::new(
                record
                    .snapshot(&self.config.limits)
                    .map_err(|e| DbError::Corrupt {
                        what: "signed manifest",
                        value: format!("{repo} v{}", record.version),
                        why: e.to_string(),
                    })?,
            );
        cache.insert(repo.clone(), snapshot.clone());
        Ok(Some(snapshot))
    }

    /// The primary.xml entries of `repo`'s version `version`, if this
    /// process published it (after a restart the next publish parses all).
    pub fn known_packages(&self, repo: &RepoName, version: u64) -> Option<Arc<KnownPackages>> {
        let known = self
            .known_packages
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        known
            .get(repo)
            .filter(|(v, _)| *v == version)
            .map(|(_, k)| k.clone())
    }

    /// Keeps the primary.xml entries of `repo`'s version `version`, just
    /// published, in place of the previous version's.
    pub fn remember_packages(&self, repo: &RepoName, version: u64, known: KnownPackages) {
        self.known_packages
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(repo.clone(), (version, Arc::new(known)));
    }

    /// A new version of `repo` exists: wake its reconcilers. With the
    /// version it follows, the change between them is kept for delta offers.
    pub fn announce(&self, snapshot: Arc<Snapshot>, previous: Option<&Snapshot>) {
        let (repo, version) = (snapshot.repo().clone(), snapshot.version());
        {
            let mut deltas = self.deltas.lock().unwrap_or_else(|p| p.into_inner());
            match previous.and_then(|p| Delta::between(p, &snapshot)) {
                Some(d) => deltas.insert(repo.clone(), Arc::new(d)),
                None => deltas.remove(&repo),
            };
        }
        self.latest
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(repo.clone(), snapshot);
        self.announcements.announce(&repo, version);
        self.metalinks.changed();
    }

    /// The kept change from version `base` of `repo` to `snapshot`, if any.
    pub fn delta(&self, repo: &RepoName, base: u64, snapshot: &Snapshot) -> Option<Arc<Delta>> {
        self.deltas
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(repo)
            .filter(|d| d.base_version() == base && d.leads_to(snapshot))
            .cloned()
    }

    /// The push state of every agent × repo.
    pub fn push_states(&self) -> HashMap<(AgentName, RepoName), PushState> {
        self.push_state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The settle delay and stage wait of flip rounds.
    pub fn flip_timing(&self) -> crate::flip::Timing {
        crate::flip::Timing {
            settle: self.config.settle,
            stage_wait: self.config.stage_wait,
        }
    }

    /// Records an event in the push state and metrics, then tells subscribers.
    pub fn emit(&self, event: Event) {
        {
            let mut states = self.push_state.lock().unwrap_or_else(|p| p.into_inner());
            let s = states
                .entry((event.target.clone(), event.repo.clone()))
                .or_default();
            match &event.kind {
                EventKind::Progress {
                    phase,
                    bytes_sent,
                    bytes_wanted,
                } => s.pushing = Some((event.version, *phase, *bytes_sent, *bytes_wanted)),
                EventKind::Acked {
                    elapsed,
                    bytes_sent,
                    ack,
                    ..
                } => {
                    s.pushing = None;
                    s.last_error = None;
                    s.last_push = Some(LastPush {
                        version: event.version,
                        bytes_sent: *bytes_sent,
                        elapsed_ms: elapsed.as_millis() as u64,
                        timings: ack.timings,
                        acked_unix_ms: hotpush_shared::clock::now_unix_ms(),
                    });
                }
                EventKind::Failed { reason, kind, .. } => {
                    s.pushing = None;
                    s.last_error = Some((reason.clone(), kind.clone()));
                }
            }
        }
        if let EventKind::Failed { .. } = &event.kind {
            // The flip round of this version does not wait for this mirror.
            self.flips.failed(
                &event.target,
                &event.repo,
                event.version,
                self.flip_timing(),
            );
        }
        self.metrics.observe(&event);
        // No subscriber is normal: nobody is running `publish` right now.
        let _ = self.events.send(event);
    }
}
