//! The origin daemon's shared state and its progress events.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use hotpush_shared::sign::SigningKey;
use hotpush_shared::store::BlobStore;
use tokio::sync::{broadcast, watch};

use crate::config::Config;
use crate::db::Db;

/// What happened to one push, as shown live by `publish`.
#[derive(Clone, Debug)]
pub struct Event {
    pub agent: String,
    pub repo: String,
    pub version: u64,
    pub kind: EventKind,
}

/// The stages of a push as the operator sees them.
#[derive(Clone, Debug)]
pub enum EventKind {
    Progress {
        phase: &'static str,
        bytes_sent: u64,
        bytes_wanted: u64,
    },
    Acked {
        elapsed_ms: u64,
        bytes_sent: u64,
    },
    Failed {
        reason: String,
        will_retry: bool,
    },
}

/// Last known state of one agent × repo, for `status`.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct PushState {
    pub last_error: Option<String>,
    pub bytes_sent_total: u64,
    pub pushes_ok: u64,
    pub pushes_failed: u64,
}

/// Shared by the reconcilers, the control service and the HTTP server.
pub struct Origin {
    pub config: Config,
    pub db: Db,
    pub store: BlobStore,
    pub key: SigningKey,
    pub origin_id: String,
    /// Progress of every push; subscribers that fall behind skip events.
    pub events: broadcast::Sender<Event>,
    /// Newest version per repo; reconcilers wake on change.
    latest: Mutex<HashMap<String, watch::Sender<u64>>>,
    /// Per agent, per repo.
    pub push_state: Mutex<HashMap<(String, String), PushState>>,
    /// Wakes the supervisor when a repo or agent may have appeared.
    pub rescan: tokio::sync::Notify,
}

impl Origin {
    /// Builds the shared state.
    pub fn new(
        config: Config,
        db: Db,
        store: BlobStore,
        key: SigningKey,
        origin_id: String,
    ) -> Arc<Self> {
        let (events, _) = broadcast::channel(1024);
        Arc::new(Self {
            config,
            db,
            store,
            key,
            origin_id,
            events,
            latest: Mutex::new(HashMap::new()),
            push_state: Mutex::new(HashMap::new()),
            rescan: tokio::sync::Notify::new(),
        })
    }

    /// Watches the newest version of `repo`.
    pub fn watch_latest(&self, repo: &str) -> watch::Receiver<u64> {
        let mut map = self.latest.lock().unwrap_or_else(|p| p.into_inner());
        map.entry(repo.to_owned())
            .or_insert_with(|| watch::channel(0).0)
            .subscribe()
    }

    /// Tells the reconcilers of `repo` that `version` exists.
    pub fn announce(&self, repo: &str, version: u64) {
        let mut map = self.latest.lock().unwrap_or_else(|p| p.into_inner());
        let tx = map
            .entry(repo.to_owned())
            .or_insert_with(|| watch::channel(0).0);
        tx.send_if_modified(|v| {
            let newer = version > *v;
            if newer {
                *v = version;
            }
            newer
        });
        // A first publish of a new repo needs reconcilers started now.
        self.rescan.notify_one();
    }

    /// Emits an event and updates the per-agent summary.
    pub fn emit(&self, event: Event) {
        {
            let mut states = self.push_state.lock().unwrap_or_else(|p| p.into_inner());
            let s = states
                .entry((event.agent.clone(), event.repo.clone()))
                .or_default();
            match &event.kind {
                EventKind::Acked { bytes_sent, .. } => {
                    s.last_error = None;
                    s.bytes_sent_total += bytes_sent;
                    s.pushes_ok += 1;
                }
                EventKind::Failed { reason, .. } => {
                    s.last_error = Some(reason.clone());
                    s.pushes_failed += 1;
                }
                EventKind::Progress { .. } => {}
            }
        }
        let _ = self.events.send(event);
    }
}
