//! The metalink every dnf fetches on every refresh (docs/PROTOCOL.md "The
//! metalink", "The flip"), served from memory.
//!
//! Each repo's document is built from the database when something changes
//! — an ack, a publish, a flip round, a roster change (at least every
//! [`REBUILD_EVERY`], which also covers `agent add` from another process
//! and the grace window running out) — and kept as a [`Document`]. A
//! request does no database read and no blocking-thread hop: it orders the
//! mirrors (weighted random, per request) and writes them into the
//! pre-rendered template.

mod view;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use hotpush_shared::Sha256Digest;
use hotpush_shared::manifest::RepoName;
use hotpush_shared::metalink::{MirrorEntry, Template};
use rand::RngExt;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::db::DbError;
use crate::origin::Origin;

/// How often the documents are rebuilt when nothing asks for it.
pub const REBUILD_EVERY: Duration = Duration::from_secs(1);

/// Why a metalink could not be produced.
#[derive(Clone, Debug, thiserror::Error)]
pub enum MetalinkError {
    #[error("repo {0} is not published here")]
    UnknownRepo(RepoName),
    #[error("no mirror serves {repo} yet: waiting for {min_acks} agent(s) to ack")]
    NoMirrors { repo: RepoName, min_acks: usize },
    #[error("stored snapshot of {0} is unreadable: {1}")]
    Corrupt(String, String),
    #[error("reading the database: {0}")]
    Db(String),
}

impl From<DbError> for MetalinkError {
    fn from(e: DbError) -> Self {
        Self::Db(e.to_string())
    }
}

/// One mirror in a document, with its share of first places.
#[derive(Clone, Debug)]
struct Listed {
    weight: u32,
    entry: MirrorEntry,
}

/// A repo's metalink, up to the order of its mirrors.
#[derive(Debug)]
pub struct Document {
    template: Template,
    /// Listed in this order of groups, each shuffled by weight per request:
    /// the current version's mirrors, those that acked the next one, those
    /// still inside the grace window.
    groups: Vec<Vec<Listed>>,
    /// The primary location, always last.
    fallback: Option<MirrorEntry>,
    /// A tag for the content, mirror order aside.
    pub etag: String,
    /// The version it sends clients to.
    pub version: u64,
    /// Its repomd.xml.
    pub repomd_sha256: Sha256Digest,
    /// The version whose flip is under way, accepted as an alternate.
    pub next: Option<u64>,
}

impl Document {
    /// The document with the mirrors in a fresh weighted order.
    pub fn render(&self, now: SystemTime) -> String {
        let mut rng = rand::rng();
        let mut order: Vec<&MirrorEntry> = Vec::new();
        for group in &self.groups {
            let weights: Vec<u32> = group.iter().map(|m| m.weight).collect();
            order.extend(
                weighted_order(&weights, &mut rng)
                    .into_iter()
                    .map(|i| &group[i].entry),
            );
        }
        order.extend(&self.fallback);
        self.template.render(order, now)
    }
}

/// A permutation of `0..weights.len()` by weighted random choice
/// (Efraimidis–Spirakis): each index comes first in proportion to its
/// weight (partner capacity).
pub fn weighted_order(weights: &[u32], rng: &mut impl rand::Rng) -> Vec<usize> {
    let mut keyed: Vec<(f64, usize)> = weights
        .iter()
        .enumerate()
        .map(|(i, &w)| {
            let u: f64 = rng.random_range(f64::MIN_POSITIVE..1.0);
            (u.powf(1.0 / f64::from(w.max(1))), i)
        })
        .collect();
    keyed.sort_by(|a, b| b.0.total_cmp(&a.0));
    keyed.into_iter().map(|(_, i)| i).collect()
}

type Documents = HashMap<RepoName, Arc<Result<Document, MetalinkError>>>;

/// Every repo's current document, and the handshake with the task that
/// rebuilds them.
#[derive(Default)]
pub struct Metalinks {
    documents: RwLock<Documents>,
    /// Bumped by whoever changed something the documents show.
    wanted: watch::Sender<u64>,
    /// The last `wanted` value the stored documents reflect.
    built: watch::Sender<u64>,
    /// A rebuild task is running (not in unit tests of other modules).
    running: AtomicBool,
}

impl Metalinks {
    /// The document of `repo`; `UnknownRepo` when it has none.
    pub fn get(&self, repo: &RepoName) -> Arc<Result<Document, MetalinkError>> {
        self.documents
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(repo)
            .cloned()
            .unwrap_or_else(|| Arc::new(Err(MetalinkError::UnknownRepo(repo.clone()))))
    }

    /// The sha256 of the repomd.xml clients are sent to now, if any.
    pub fn served_repomd(&self, repo: &RepoName) -> Option<Sha256Digest> {
        self.get(repo)
            .as_ref()
            .as_ref()
            .ok()
            .map(|d| d.repomd_sha256)
    }

    /// Something the documents show has changed: rebuild them soon.
    pub fn changed(&self) {
        self.wanted.send_modify(|n| *n += 1);
    }

    /// Rebuilds the documents and waits until clients get the result, so a
    /// caller can rely on what the metalink says from now on. Returns at
    /// once when no rebuild task runs.
    pub async fn refreshed(&self) {
        let mut wanted = 0;
        self.wanted.send_modify(|n| {
            *n += 1;
            wanted = *n;
        });
        if !self.running.load(Ordering::SeqCst) {
            return;
        }
        let mut built = self.built.subscribe();
        let _ = built.wait_for(|b| *b >= wanted).await;
    }

    /// Rebuilds every repo's document on change (and every
    /// [`REBUILD_EVERY`]) until `stop`. Counts as running from the call, so
    /// [`Metalinks::refreshed`] waits for its first rebuild.
    pub fn run(
        origin: Arc<Origin>,
        stop: CancellationToken,
    ) -> impl Future<Output = ()> + Send + 'static {
        origin.metalinks.running.store(true, Ordering::SeqCst);
        Self::rebuild_until(origin, stop)
    }

    async fn rebuild_until(origin: Arc<Origin>, stop: CancellationToken) {
        let me = &origin.metalinks;
        let mut wanted = me.wanted.subscribe();
        let cache = Arc::new(view::DescriptionCache::default());
        loop {
            let target = *wanted.borrow_and_update();
            let (o, c) = (origin.clone(), cache.clone());
            match tokio::task::spawn_blocking(move || view::build_all(&o, &c)).await {
                Ok(Ok(documents)) => {
                    *me.documents.write().unwrap_or_else(|p| p.into_inner()) = documents;
                }
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "metalinks not rebuilt; serving the previous ones")
                }
                Err(e) => tracing::error!(error = %e, "metalink rebuild panicked"),
            }
            me.built.send_replace(target);
            tokio::select! {
                () = stop.cancelled() => break,
                _ = wanted.changed() => {}
                () = tokio::time::sleep(REBUILD_EVERY) => {}
            }
        }
        me.running.store(false, Ordering::SeqCst);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn weighted_order_follows_capacity() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let mut big_first = 0;
        for _ in 0..4000 {
            let order = weighted_order(&[300, 100], &mut rng);
            assert_eq!(order.len(), 2);
            big_first += usize::from(order[0] == 0);
        }
        let big = big_first as f64 / 4000.0;
        assert!((0.70..0.80).contains(&big), "big first {big}");
    }
}
