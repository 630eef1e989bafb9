//! The origin as the push side's [`Source`]: versions from the database,
//! targets from the registered agents, acks recorded with their public-URL
//! verdict.

use std::collections::HashSet;
use std::sync::Arc;

use futures_util::future::BoxFuture;
use hotpush_shared::ack::Ack;
use hotpush_shared::delta::Delta;
use hotpush_shared::manifest::RepoName;
use hotpush_shared::name::AgentName;
use hotpush_shared::push::{Announcements, Event, Source, SourceError, Target};
use hotpush_shared::snapshot::Snapshot;
use hotpush_shared::store::BlobStore;

use crate::origin::Origin;

impl Source for Origin {
    fn repos(&self) -> Result<Vec<RepoName>, SourceError> {
        Ok(self.db.repos()?)
    }

    fn targets(&self) -> Result<Vec<Target>, SourceError> {
        Ok(self.db.agents()?.into_iter().map(|a| a.target).collect())
    }

    fn latest(&self, repo: &RepoName) -> Result<Option<Arc<Snapshot>>, SourceError> {
        Ok(Origin::latest(self, repo)?)
    }

    fn acked(&self, target: &AgentName, repo: &RepoName) -> Result<Option<u64>, SourceError> {
        Ok(self
            .db
            .acks(repo.as_str())?
            .into_iter()
            .find(|a| a.agent == target.as_str() && a.public_verified)
            .map(|a| a.version))
    }

    fn delta(&self, repo: &RepoName, base: u64, snapshot: &Snapshot) -> Option<Arc<Delta>> {
        Origin::delta(self, repo, base, snapshot)
    }

    fn blobs(&self) -> &BlobStore {
        &self.store
    }

    fn announcements(&self) -> &Announcements {
        &self.announcements
    }

    fn record_ack(&self, target: &Target, snapshot: &Snapshot, ack: &Ack) -> Result<(), String> {
        let verdict = ack.public.counts_for(&target.public_url, snapshot.repo());
        let detail = verdict.as_ref().err().cloned().unwrap_or_default();
        self.db
            .record_ack(
                target.name.as_str(),
                snapshot.repo().as_str(),
                snapshot.version(),
                &snapshot.digest,
                verdict.is_ok(),
                &detail,
            )
            .map_err(|e| format!("recording the ack: {e}"))?;
        if verdict.is_ok() {
            self.crawls.acked(&target.name, snapshot.repo());
        }
        self.metalinks.changed();
        verdict
    }

    fn report(&self, event: Event) {
        self.emit(event);
    }

    fn may_flip<'a>(
        &'a self,
        target: &'a Target,
        snapshot: &'a Arc<Snapshot>,
    ) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            let repo = snapshot.repo();
            let carrying = || {
                self.db
                    .agents()
                    .unwrap_or_default()
                    .into_iter()
                    .filter(|a| a.carries(repo))
                    .map(|a| a.target.name)
                    .collect::<HashSet<AgentName>>()
            };
            let current = self.metalinks.served_repomd(repo);
            self.flips
                .staged(
                    &target.name,
                    snapshot,
                    carrying,
                    current,
                    self.flip_timing(),
                )
                .await
        })
    }
}
