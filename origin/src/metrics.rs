//! The origin's Prometheus metrics (`GET /metrics`), in the Prometheus text
//! format: pushes by outcome, bytes sent, refusals by reason, ack latency,
//! the version each mirror serves, crawls by result, the last drill, and
//! build info.

use hotpush_shared::manifest::RepoName;
use hotpush_shared::metrics::{build_info, encode, register};
use hotpush_shared::name::AgentName;
use hotpush_shared::push::{Event, EventKind, FailureKind};
use prometheus::{
    HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
};

use crate::db::DrillRecord;

/// Every metric the origin exports.
pub struct Metrics {
    registry: Registry,
    pushes: IntCounterVec,
    bytes_sent: IntCounterVec,
    refusals: IntCounterVec,
    ack_seconds: HistogramVec,
    served: IntGaugeVec,
    crawls: IntCounterVec,
    drill_passed: IntGauge,
    drill_time: IntGauge,
    drill_last_pass_time: IntGauge,
}

impl Metrics {
    pub fn new() -> prometheus::Result<Self> {
        let r = Registry::new_custom(Some("hotpush".into()), None)?;
        let push = ["agent", "repo"];
        let metrics = Self {
            pushes: register(
                &r,
                IntCounterVec::new(
                    Opts::new(
                        "pushes_total",
                        "Pushes to an agent, by outcome (acked, failed)",
                    ),
                    &["agent", "repo", "outcome"],
                )?,
            )?,
            bytes_sent: register(
                &r,
                IntCounterVec::new(
                    Opts::new("push_sent_bytes_total", "Blob bytes sent to an agent"),
                    &push,
                )?,
            )?,
            refusals: register(
                &r,
                IntCounterVec::new(
                    Opts::new(
                        "push_refusals_total",
                        "Pushes an agent refused, by its reason (disk, rollback, untrusted_key, ...)",
                    ),
                    &["agent", "repo", "reason"],
                )?,
            )?,
            ack_seconds: register(
                &r,
                HistogramVec::new(
                    HistogramOpts::new(
                        "push_ack_seconds",
                        "From the start of a push to the agent's ack (live and checked)",
                    )
                    .buckets(vec![
                        0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 15.0, 30.0, 60.0, 300.0,
                    ]),
                    &push,
                )?,
            )?,
            served: register(
                &r,
                IntGaugeVec::new(
                    Opts::new(
                        "mirror_version",
                        "The version each agent last acked, verified through its public URL",
                    ),
                    &push,
                )?,
            )?,
            crawls: register(
                &r,
                IntCounterVec::new(
                    Opts::new(
                        "crawls_total",
                        "Fetches of a mirror's public repomd.xml, by result (serving, unreachable, stale)",
                    ),
                    &["agent", "repo", "result"],
                )?,
            )?,
            drill_passed: register(
                &r,
                IntGauge::new(
                    "drill_last_passed",
                    "1 when the latest drill passed, 0 when it failed or none ran",
                )?,
            )?,
            drill_time: register(
                &r,
                IntGauge::new(
                    "drill_last_time_seconds",
                    "When the latest drill ran (Unix time; 0: never)",
                )?,
            )?,
            drill_last_pass_time: register(
                &r,
                IntGauge::new(
                    "drill_last_pass_time_seconds",
                    "When a drill last passed (Unix time; 0: never)",
                )?,
            )?,
            registry: r,
        };
        build_info(
            &metrics.registry,
            "origin_build_info",
            "The running hotpush-origin",
            env!("CARGO_PKG_VERSION"),
        )?;
        Ok(metrics)
    }

    /// Counts what `event` says happened.
    pub fn observe(&self, event: &Event) {
        let (agent, repo) = (event.target.as_str(), event.repo.as_str());
        match &event.kind {
            EventKind::Acked {
                bytes_sent,
                elapsed,
                ..
            } => {
                self.pushes.with_label_values(&[agent, repo, "acked"]).inc();
                self.bytes_sent
                    .with_label_values(&[agent, repo])
                    .inc_by(*bytes_sent);
                self.ack_seconds
                    .with_label_values(&[agent, repo])
                    .observe(elapsed.as_secs_f64());
                self.served
                    .with_label_values(&[agent, repo])
                    .set(i64::try_from(event.version).unwrap_or(i64::MAX));
            }
            EventKind::Failed { kind, .. } => {
                self.pushes
                    .with_label_values(&[agent, repo, "failed"])
                    .inc();
                if let FailureKind::Refused(code) = kind {
                    self.refusals
                        .with_label_values(&[agent, repo, code.as_str()])
                        .inc();
                }
            }
            EventKind::Progress { .. } => {}
        }
    }

    /// The latest drill and the last passing one, as the database has them.
    pub fn drills(&self, last: Option<&DrillRecord>, last_passed_unix: Option<i64>) {
        self.drill_passed
            .set(i64::from(last.is_some_and(|d| d.passed)));
        self.drill_time.set(last.map_or(0, |d| d.at_unix));
        self.drill_last_pass_time.set(last_passed_unix.unwrap_or(0));
    }

    /// Counts one crawl of `agent` × `repo`.
    pub fn crawled(&self, agent: &AgentName, repo: &RepoName, result: &str) {
        self.crawls
            .with_label_values(&[agent.as_str(), repo.as_str(), result])
            .inc();
    }

    /// The exposition text and its content type.
    pub fn encode(&self) -> prometheus::Result<(String, String)> {
        encode(&self.registry)
    }
}
