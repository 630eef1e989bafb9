//! The origin's Prometheus metrics, kept by `prometheus-client` (which also
//! escapes label values and writes the exposition format).

use hotpush_shared::push::{Event, EventKind};
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// How a push ended.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
pub enum Outcome {
    Acked,
    Failed,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PushLabels {
    agent: String,
    repo: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    agent: String,
    repo: String,
    outcome: Outcome,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: String,
}

/// Every metric the origin exports.
pub struct Metrics {
    registry: Registry,
    pushes: Family<OutcomeLabels, Counter>,
    bytes_sent: Family<PushLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("hotpush");
        let pushes = Family::<OutcomeLabels, Counter>::default();
        registry.register("pushes", "Pushes to an agent, by outcome", pushes.clone());
        let bytes_sent = Family::<PushLabels, Counter>::default();
        registry.register(
            "push_sent_bytes",
            "Blob bytes sent to an agent",
            bytes_sent.clone(),
        );
        let build = Family::<BuildLabels, Gauge>::default();
        build
            .get_or_create(&BuildLabels {
                version: env!("CARGO_PKG_VERSION").to_owned(),
            })
            .set(1);
        registry.register("origin_build_info", "The running hotpush-origin", build);
        Self {
            registry,
            pushes,
            bytes_sent,
        }
    }
}

impl Metrics {
    /// Counts what `event` says happened.
    pub fn observe(&self, event: &Event) {
        let push = PushLabels {
            agent: event.target.to_string(),
            repo: event.repo.to_string(),
        };
        let outcome = |outcome| OutcomeLabels {
            agent: push.agent.clone(),
            repo: push.repo.clone(),
            outcome,
        };
        match &event.kind {
            EventKind::Acked { bytes_sent, .. } => {
                self.pushes.get_or_create(&outcome(Outcome::Acked)).inc();
                self.bytes_sent.get_or_create(&push).inc_by(*bytes_sent);
            }
            EventKind::Failed { .. } => {
                self.pushes.get_or_create(&outcome(Outcome::Failed)).inc();
            }
            EventKind::Progress { .. } => {}
        }
    }

    /// The exposition text (OpenMetrics).
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}
