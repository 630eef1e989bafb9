//! hotpush itself: a real origin and four real agents on loopback
//! (`hotpush_tests::Network`, the binaries of `HOTPUSH_BIN_DIR`), timed
//! publishes, the metalink switch, and memory readings from /proc.

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use hotpush_tests::{AgentSpec, Metalink, Network, Signal, TEST_FLIP_TIMING};

use crate::data::Tree;
use crate::metalink;

/// The repo every benchmark network carries.
pub const REPO: &str = "bench/x86_64";
/// Agents per network, like the rsync and cp baselines' destinations.
pub const AGENTS: usize = 4;
/// `publish --timeout`: generous, a benchmark measures rather than gives up.
const PUBLISH_TIMEOUT_SECS: &str = "600";

/// The flip timing an origin runs with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Timing {
    /// `settle_secs = 0`, `metalink_max_age_secs = 0`: mirrors switch as
    /// soon as all have staged. The settle is a deliberate fixed delay for
    /// consistency, measured on its own in the urgent workload.
    NoSettle,
    /// The product's defaults (neither key set: max-age 10 s, settle 12 s).
    Product,
}

/// What one timed publish took.
#[derive(Clone, Copy, Debug)]
pub struct Pushed {
    /// From the start of `hotpush-origin publish` until it exited with
    /// every agent live.
    pub elapsed: Duration,
    /// Bytes the origin sent, all agents together (from `--json`).
    pub bytes_sent: u64,
}

/// Current and peak resident memory, in KiB.
#[derive(Clone, Copy, Debug, Default)]
pub struct Memory {
    pub origin_rss: u64,
    /// The anonymous part of `origin_rss` (heap and stacks, no file pages).
    pub origin_anon: u64,
    pub origin_peak: u64,
    /// Of the agent with the most, for each reading.
    pub agent_rss: u64,
    /// The largest agent's anonymous part, likewise.
    pub agent_anon: u64,
    /// The most threads any agent runs (each keeps an allocator cache).
    pub agent_threads: u64,
    pub agent_peak: u64,
}

/// A running network: an origin and [`AGENTS`] agents, empty.
pub struct Hotpush {
    pub net: Network,
}

impl Hotpush {
    /// Starts a fresh network (new keys, state and served trees).
    pub fn start(timing: Timing) -> Result<Self> {
        let mut b = Network::builder().repo(REPO);
        for _ in 0..AGENTS {
            b = b.agent(AgentSpec::v4());
        }
        if timing == Timing::NoSettle {
            b = b
                .origin_config("metalink_max_age_secs", "0")
                .origin_config("settle_secs", "0");
        }
        let mut net = b.start();
        if timing == Timing::Product {
            product_timing(&mut net)?;
        }
        Ok(Hotpush { net })
    }

    /// `hotpush-origin publish REPO --from <tree> --json --wait all`, timed;
    /// fails unless it exited 0 with every agent live, serving `tree`'s
    /// repomd.xml.
    pub fn publish(&self, tree: &Tree) -> Result<Pushed> {
        let p = self.net.publish(
            REPO,
            &tree.dir,
            &["--json", "--wait", "all", "--timeout", PUBLISH_TIMEOUT_SECS],
        );
        if p.code != 0 {
            bail!(
                "publish of {} exited {}:\n{}\n{}",
                tree.dir.display(),
                p.code,
                p.stdout.trim(),
                p.stderr.trim()
            );
        }
        let summary = p
            .json
            .as_ref()
            .context("publish --json printed no summary")?;
        let bytes_sent = self.check_live(summary, tree)?;
        Ok(Pushed {
            elapsed: p.elapsed,
            bytes_sent,
        })
    }

    /// Publishes `tree` and measures both when `publish` exits with every
    /// agent live and when the origin's metalink first names `tree`'s
    /// repomd.xml (its sha256) as the main hash, polling it every few ms.
    /// Returns (live, metalink), both from the start of `publish`.
    pub fn publish_until_metalink(&self, tree: &Tree) -> Result<(Duration, Duration)> {
        let want = hotpush_tests::sha256_hex(&tree.repomd()?);
        let path = metalink_path();
        let mut cmd = self.net.publish_cmd(
            REPO,
            &tree.dir,
            &["--json", "--wait", "all", "--timeout", PUBLISH_TIMEOUT_SECS],
        );
        // The JSON summary is one line: it fits the pipe while we poll.
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let start = Instant::now();
        let mut child = cmd.spawn().context("spawning hotpush-origin publish")?;
        let (mut live, mut named) = (None, None);
        while live.is_none() || named.is_none() {
            if live.is_none()
                && let Some(status) = child.try_wait().context("waiting for publish")?
            {
                live = Some(start.elapsed());
                if !status.success() {
                    let out = child.wait_with_output().context("publish output")?;
                    bail!(
                        "publish exited with {status}:\n{}\n{}",
                        String::from_utf8_lossy(&out.stdout).trim(),
                        String::from_utf8_lossy(&out.stderr).trim()
                    );
                }
            }
            if named.is_none()
                && let Ok((200, body)) = metalink::get(self.origin_http(), &path)
                && Metalink::parse(&String::from_utf8_lossy(&body))
                    .hashes
                    .get("sha256")
                    == Some(&want)
            {
                named = Some(start.elapsed());
            }
            if start.elapsed() > Duration::from_secs(600) {
                let _ = child.kill();
                bail!("the metalink did not name the new repomd.xml within 600 s");
            }
            std::thread::sleep(Duration::from_millis(3));
        }
        let out = child.wait_with_output().context("publish output")?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        let summary: serde_json::Value = stdout
            .lines()
            .rev()
            .find_map(|l| serde_json::from_str(l).ok())
            .with_context(|| format!("publish --json printed no summary: {stdout}"))?;
        self.check_live(&summary, tree)?;
        match (live, named) {
            (Some(l), Some(n)) => Ok((l, n)),
            _ => bail!("publish or metalink not observed"),
        }
    }

    /// Every agent live in the summary and serving `tree`'s repomd.xml;
    /// returns the bytes sent, all agents together.
    fn check_live(&self, summary: &serde_json::Value, tree: &Tree) -> Result<u64> {
        let repomd = tree.repomd()?;
        let mut sent = 0;
        for a in &self.net.agents {
            let s = &summary["agents"][&a.name];
            if s["state"] != "live" {
                bail!("agent {} is not live after publish: {summary}", a.name);
            }
            sent += s["bytes_sent"].as_u64().unwrap_or(0);
            if a.read_served(REPO, "repodata/repomd.xml").as_deref() != Some(&repomd[..]) {
                bail!("agent {} does not serve the published repomd.xml", a.name);
            }
        }
        Ok(sent)
    }

    /// Resident memory now and at peak (VmRSS, VmHWM) of the origin and of
    /// the agent with the most.
    pub fn memory(&self) -> Result<Memory> {
        let origin = self.net.origin_pid().context("the origin is not running")?;
        let mut m = Memory {
            origin_rss: hotpush_tests::rss_kib(origin),
            origin_anon: hotpush_tests::rss_anon_kib(origin),
            origin_peak: hotpush_tests::peak_rss_kib(origin),
            ..Memory::default()
        };
        for a in &self.net.agents {
            let pid = a
                .pid()
                .with_context(|| format!("agent {} is not running", a.name))?;
            m.agent_rss = m.agent_rss.max(hotpush_tests::rss_kib(pid));
            m.agent_anon = m.agent_anon.max(hotpush_tests::rss_anon_kib(pid));
            m.agent_threads = m.agent_threads.max(hotpush_tests::threads(pid));
            m.agent_peak = m.agent_peak.max(hotpush_tests::peak_rss_kib(pid));
        }
        Ok(m)
    }

    /// The origin's HTTP listener (`/metalink`).
    pub fn origin_http(&self) -> SocketAddr {
        self.net.origin_http
    }
}

/// Path and query of [`REPO`]'s metalink, as dnf asks for it.
pub fn metalink_path() -> String {
    let (repo, arch) = REPO.split_once('/').unwrap_or((REPO, "x86_64"));
    format!("/metalink?repo={repo}&arch={arch}")
}

/// The test harness always writes its fast flip timing into origin.toml;
/// removes those keys (so the origin runs on the product's defaults) and
/// restarts the origin on them.
fn product_timing(net: &mut Network) -> Result<()> {
    net.stop_origin(Signal::Term);
    let path = &net.origin_config;
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let keep: Vec<&str> = text
        .lines()
        .filter(|l| {
            !TEST_FLIP_TIMING.iter().any(|(key, _)| {
                l.trim_start()
                    .strip_prefix(key)
                    .is_some_and(|rest| rest.trim_start().starts_with('='))
            })
        })
        .collect();
    std::fs::write(path, keep.join("\n") + "\n")
        .with_context(|| format!("writing {}", path.display()))?;
    net.start_origin();
    Ok(())
}
