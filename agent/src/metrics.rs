//! The agent's Prometheus metrics, served on its admin listener
//! (`admin_listen`, never the public tree): acks, refusals by reason, the
//! version live per repo, swap and flip-wait times, and installs whose
//! public URL did not serve the new snapshot.

use hotpush_shared::ack::Ack;
use hotpush_shared::manifest::RepoName;
use hotpush_shared::metrics::{build_info, encode, register};
use prometheus::{Histogram, HistogramOpts, IntCounterVec, IntGaugeVec, Opts, Registry};

/// Every metric the agent exports.
pub struct Metrics {
    registry: Registry,
    acked: IntCounterVec,
    refused: IntCounterVec,
    live: IntGaugeVec,
    not_public: IntCounterVec,
    swap_seconds: Histogram,
    flip_wait_seconds: Histogram,
}

impl Metrics {
    pub fn new() -> prometheus::Result<Self> {
        let r = Registry::new_custom(Some("hotpush_agent".into()), None)?;
        let buckets = vec![0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0];
        let metrics = Self {
            acked: register(
                &r,
                IntCounterVec::new(
                    Opts::new("acks_total", "Snapshots installed and acked"),
                    &["repo"],
                )?,
            )?,
            refused: register(
                &r,
                IntCounterVec::new(
                    Opts::new(
                        "refusals_total",
                        "Pushes refused, by reason (bad_signature, rollback, disk, ...)",
                    ),
                    &["reason"],
                )?,
            )?,
            live: register(
                &r,
                IntGaugeVec::new(
                    Opts::new("live_version", "The version served, per repo"),
                    &["repo"],
                )?,
            )?,
            not_public: register(
                &r,
                IntCounterVec::new(
                    Opts::new(
                        "public_check_failures_total",
                        "Installs whose public URL did not serve the new repomd.xml",
                    ),
                    &["repo"],
                )?,
            )?,
            swap_seconds: register(
                &r,
                Histogram::with_opts(
                    HistogramOpts::new("swap_seconds", "Staging and flipping one snapshot")
                        .buckets(buckets.clone()),
                )?,
            )?,
            flip_wait_seconds: register(
                &r,
                Histogram::with_opts(
                    HistogramOpts::new(
                        "flip_wait_seconds",
                        "Staged, waiting for the origin's Flip",
                    )
                    .buckets(buckets),
                )?,
            )?,
            registry: r,
        };
        build_info(
            &metrics.registry,
            "build_info",
            "The running hotpush-agent",
            env!("CARGO_PKG_VERSION"),
        )?;
        Ok(metrics)
    }

    /// A snapshot is live and acked.
    pub fn acked(&self, ack: &Ack) {
        let repo = ack.repo.as_str();
        self.acked.with_label_values(&[repo]).inc();
        self.serving(&ack.repo, ack.version);
        if !ack.public.verified {
            self.not_public.with_label_values(&[repo]).inc();
        }
        self.swap_seconds
            .observe(ack.timings.swap_ms as f64 / 1000.0);
        if ack.timings.flip_wait_ms > 0 {
            self.flip_wait_seconds
                .observe(ack.timings.flip_wait_ms as f64 / 1000.0);
        }
    }

    /// `repo` serves `version`.
    pub fn serving(&self, repo: &RepoName, version: u64) {
        self.live
            .with_label_values(&[repo.as_str()])
            .set(i64::try_from(version).unwrap_or(i64::MAX));
    }

    /// A push was refused for `reason` (the wire's reject code).
    pub fn refused(&self, reason: &str) {
        self.refused.with_label_values(&[reason]).inc();
    }

    /// The exposition text and its content type.
    pub fn encode(&self) -> prometheus::Result<(String, String)> {
        encode(&self.registry)
    }
}
