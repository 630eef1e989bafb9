//! The results: every sample kept, medians taken, printed as markdown
//! tables (timings; peak memory; metalink under load) and as JSON.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde_json::{Value, json};

use crate::hotpush::Memory;
use crate::metalink::Load;
use crate::rsync::Cipher;
use crate::{Scale, Workload, durable_key};

/// A column of the timing table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Tool {
    Hotpush,
    RsyncDaemon,
    RsyncSsh(Cipher),
    Cp,
}

impl Tool {
    /// Every tool, in column order.
    pub const ALL: [Tool; 5] = [
        Tool::Hotpush,
        Tool::RsyncDaemon,
        Tool::RsyncSsh(Cipher::Chacha20),
        Tool::RsyncSsh(Cipher::Aes128Gcm),
        Tool::Cp,
    ];

    /// Its key in the JSON output.
    pub fn key(self) -> &'static str {
        match self {
            Tool::Hotpush => "hotpush",
            Tool::RsyncDaemon => "rsync_daemon",
            Tool::RsyncSsh(Cipher::Chacha20) => "rsync_ssh_chacha20",
            Tool::RsyncSsh(Cipher::Aes128Gcm) => "rsync_ssh_aes128gcm",
            Tool::Cp => "cp",
        }
    }
}

/// One row of the timing table: a workload's wall times, in seconds.
#[derive(Clone, Debug)]
pub struct Row {
    pub workload: Workload,
    pub label: String,
    /// The tools this row should have figures for.
    pub expected: Vec<Tool>,
    pub samples: BTreeMap<Tool, Vec<f64>>,
    /// For a row measuring hotpush alone: the rsync daemon samples of the
    /// row it varies, for the ratio column.
    pub ratio_against: Option<Vec<f64>>,
    /// Further raw numbers for the JSON output (e.g. bytes sent).
    pub extra: BTreeMap<String, Vec<f64>>,
}

impl Row {
    pub fn new(workload: Workload, label: String, expected: &[Tool]) -> Self {
        Row {
            workload,
            label,
            expected: expected.to_vec(),
            samples: BTreeMap::new(),
            ratio_against: None,
            extra: BTreeMap::new(),
        }
    }

    pub fn add(&mut self, tool: Tool, secs: f64) {
        self.samples.entry(tool).or_default().push(secs);
    }

    pub fn add_extra(&mut self, key: &str, value: f64) {
        self.extra.entry(key.to_owned()).or_default().push(value);
    }

    fn median(&self, tool: Tool) -> Option<f64> {
        self.samples.get(&tool).and_then(|s| median(s))
    }

    /// hotpush's median over rsync daemon's.
    pub fn ratio(&self) -> Option<f64> {
        let base = match &self.ratio_against {
            Some(s) => median(s),
            None => self.median(Tool::RsyncDaemon),
        }?;
        Some(self.median(Tool::Hotpush)? / base)
    }
}

/// Peak and current memory over a series of publishes of one tree.
#[derive(Clone, Debug)]
pub struct RssRow {
    pub label: String,
    pub publishes: usize,
    /// Per run: after the first publish, after the last.
    pub first: Vec<Memory>,
    pub last: Vec<Memory>,
}

/// One server under wrk.
#[derive(Clone, Debug)]
pub struct MetalinkRow {
    pub label: String,
    pub server: String,
    pub loads: Vec<Load>,
    /// Body bytes of one response.
    pub bytes: usize,
}

/// What one benchmark run found.
#[derive(Clone, Debug)]
pub struct Report {
    pub scale: Scale,
    pub runs: usize,
    pub rows: Vec<Row>,
    pub rss: Vec<RssRow>,
    pub metalink: Vec<MetalinkRow>,
    pub notes: Vec<String>,
    /// Name → (files, bytes) of every generated tree.
    pub data: BTreeMap<String, (usize, u64)>,
}

/// The median (mean of the middle two for an even count).
pub fn median(samples: &[f64]) -> Option<f64> {
    let mut v: Vec<f64> = samples.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    Some(if v.len() % 2 == 1 {
        v[mid]
    } else {
        (v[mid - 1] + v[mid]) / 2.0
    })
}

fn median_by(samples: &[Memory], field: fn(&Memory) -> u64) -> Option<f64> {
    median(&samples.iter().map(|m| field(m) as f64).collect::<Vec<_>>())
}

/// `412 ms`, `1.23 s`, `12.3 s`.
pub fn secs(s: f64) -> String {
    if s < 1.0 {
        format!("{:.0} ms", s * 1000.0)
    } else if s < 10.0 {
        format!("{s:.2} s")
    } else {
        format!("{s:.1} s")
    }
}

/// `1,234,567`.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// `1.00 GB`, `340 MB`, `5.2 kB` (decimal units).
pub fn bytes(n: u64) -> String {
    let n = n as f64;
    if n >= 1e9 {
        format!("{:.2} GB", n / 1e9)
    } else if n >= 1e6 {
        format!("{:.0} MB", n / 1e6)
    } else {
        format!("{:.1} kB", n / 1e3)
    }
}

fn mib(kib: Option<f64>) -> String {
    kib.map_or("–".to_owned(), |k| format!("{:.0} MiB", k / 1024.0))
}

const DASH: &str = "–";

impl Report {
    /// Every figure a row should have and has not: empty when complete.
    pub fn missing(&self) -> Vec<String> {
        let mut out = Vec::new();
        for r in &self.rows {
            for t in &r.expected {
                if r.median(*t).is_none() {
                    out.push(format!("{}: no figure for {}", r.label, t.key()));
                }
            }
            if r.expected.contains(&Tool::Hotpush) && r.ratio().is_none() {
                out.push(format!("{}: no hotpush ÷ rsync daemon ratio", r.label));
            }
        }
        for r in &self.rss {
            if r.first.is_empty() || r.last.is_empty() {
                out.push(format!("peak RSS {}: no reading", r.label));
            }
        }
        for r in &self.metalink {
            if r.loads.is_empty() || r.bytes == 0 {
                out.push(format!(
                    "metalink {} ({}): no load figure",
                    r.label, r.server
                ));
            }
        }
        out
    }

    pub fn markdown(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "Scale `{}`, median of {} run(s); wall time until all 4 destinations hold the new version.\n",
            self.scale.name(),
            self.runs
        );
        if !self.rows.is_empty() {
            s.push_str(
                "| workload | hotpush | rsync daemon ×4 | rsync ssh ×4 (chacha20 / aes-gcm) | cp ×4 | hotpush ÷ rsync daemon |\n\
                 |---|---:|---:|---:|---:|---:|\n",
            );
            for r in &self.rows {
                let cell = |t: Tool| r.median(t).map_or(DASH.to_owned(), secs);
                let ssh = match (
                    r.median(Tool::RsyncSsh(Cipher::Chacha20)),
                    r.median(Tool::RsyncSsh(Cipher::Aes128Gcm)),
                ) {
                    (None, None) => DASH.to_owned(),
                    (a, b) => format!(
                        "{} / {}",
                        a.map_or(DASH.to_owned(), secs),
                        b.map_or(DASH.to_owned(), secs)
                    ),
                };
                let ratio = r.ratio().map_or(DASH.to_owned(), |x| format!("{x:.2}"));
                let _ = writeln!(
                    s,
                    "| {} | {} | {} | {ssh} | {} | {ratio} |",
                    r.label,
                    cell(Tool::Hotpush),
                    cell(Tool::RsyncDaemon),
                    cell(Tool::Cp),
                );
            }
            s.push('\n');
        }
        let durable: Vec<&Row> = self
            .rows
            .iter()
            .filter(|r| r.extra.contains_key(&durable_key(Tool::RsyncDaemon)))
            .collect();
        if !durable.is_empty() {
            s.push_str(
                "| cold workload, until on disk | hotpush (acks once durable) | rsync daemon ×4, then `sync` | rsync ssh ×4, then `sync` (chacha20 / aes-gcm) | cp ×4, then `sync` | hotpush ÷ (rsync daemon + `sync`) |\n\
                 |---|---:|---:|---:|---:|---:|\n",
            );
            for r in durable {
                let on_disk = |t: Tool| r.extra.get(&durable_key(t)).and_then(|v| median(v));
                let cell = |t: Tool| on_disk(t).map_or(DASH.to_owned(), secs);
                let ratio = match (r.median(Tool::Hotpush), on_disk(Tool::RsyncDaemon)) {
                    (Some(h), Some(d)) => format!("{:.2}", h / d),
                    _ => DASH.to_owned(),
                };
                let _ = writeln!(
                    s,
                    "| {} | {} | {} | {} / {} | {} | {ratio} |",
                    r.label,
                    r.median(Tool::Hotpush).map_or(DASH.to_owned(), secs),
                    cell(Tool::RsyncDaemon),
                    cell(Tool::RsyncSsh(Cipher::Chacha20)),
                    cell(Tool::RsyncSsh(Cipher::Aes128Gcm)),
                    cell(Tool::Cp),
                );
            }
            s.push('\n');
        }
        if !self.rss.is_empty() {
            s.push_str(
                "| hotpush memory | origin peak (VmHWM) | largest agent peak | origin RSS after publish 1 → last | largest agent RSS after publish 1 → last |\n\
                 |---|---:|---:|---:|---:|\n",
            );
            for r in &self.rss {
                let _ = writeln!(
                    s,
                    "| {}, {} publishes | {} | {} | {} → {} | {} → {} |",
                    r.label,
                    r.publishes,
                    mib(median_by(&r.last, |m| m.origin_peak)),
                    mib(median_by(&r.last, |m| m.agent_peak)),
                    mib(median_by(&r.first, |m| m.origin_rss)),
                    mib(median_by(&r.last, |m| m.origin_rss)),
                    mib(median_by(&r.first, |m| m.agent_rss)),
                    mib(median_by(&r.last, |m| m.agent_rss)),
                );
            }
            s.push('\n');
        }
        if !self.metalink.is_empty() {
            s.push_str(
                "| metalink under wrk | server | req/s | p99 latency | response bytes | errors |\n\
                 |---|---|---:|---:|---:|---:|\n",
            );
            for r in &self.metalink {
                let rps = median(
                    &r.loads
                        .iter()
                        .map(|l| l.requests_per_sec)
                        .collect::<Vec<_>>(),
                );
                let p99 = median(&r.loads.iter().map(|l| l.p99_ms).collect::<Vec<_>>());
                let errors: u64 = r.loads.iter().map(|l| l.errors).sum();
                let _ = writeln!(
                    s,
                    "| {} | {} | {} | {} | {} | {} |",
                    r.label,
                    r.server,
                    rps.map_or(DASH.to_owned(), |x| thousands(x.round() as u64)),
                    p99.map_or(DASH.to_owned(), |x| format!("{x:.2} ms")),
                    thousands(r.bytes as u64),
                    thousands(errors),
                );
            }
            s.push('\n');
        }
        if !self.notes.is_empty() {
            s.push_str("Notes:\n\n");
            for n in &self.notes {
                let _ = writeln!(s, "- {n}");
            }
        }
        s
    }

    pub fn json(&self) -> Value {
        let stats = |v: &[f64]| json!({ "samples": v, "median": median(v) });
        let rows: Vec<Value> = self
            .rows
            .iter()
            .map(|r| {
                let tools: serde_json::Map<String, Value> = r
                    .samples
                    .iter()
                    .map(|(t, v)| (t.key().to_owned(), stats(v)))
                    .collect();
                let extra: serde_json::Map<String, Value> =
                    r.extra.iter().map(|(k, v)| (k.clone(), stats(v))).collect();
                json!({
                    "workload": r.workload.name(),
                    "label": r.label,
                    "seconds": tools,
                    "hotpush_over_rsync_daemon": r.ratio(),
                    "extra": extra,
                })
            })
            .collect();
        let mem = |v: &[Memory]| {
            json!({
                "origin_rss_kib": v.iter().map(|m| m.origin_rss).collect::<Vec<_>>(),
                "origin_peak_kib": v.iter().map(|m| m.origin_peak).collect::<Vec<_>>(),
                "max_agent_rss_kib": v.iter().map(|m| m.agent_rss).collect::<Vec<_>>(),
                "max_agent_peak_kib": v.iter().map(|m| m.agent_peak).collect::<Vec<_>>(),
            })
        };
        let rss: Vec<Value> = self
            .rss
            .iter()
            .map(|r| {
                json!({
                    "label": r.label,
                    "publishes": r.publishes,
                    "after_first": mem(&r.first),
                    "after_last": mem(&r.last),
                })
            })
            .collect();
        let metalink: Vec<Value> = self
            .metalink
            .iter()
            .map(|r| {
                let rps: Vec<f64> = r.loads.iter().map(|l| l.requests_per_sec).collect();
                let p99: Vec<f64> = r.loads.iter().map(|l| l.p99_ms).collect();
                json!({
                    "label": r.label,
                    "server": r.server,
                    "requests_per_sec": stats(&rps),
                    "p99_ms": stats(&p99),
                    "errors": r.loads.iter().map(|l| l.errors).collect::<Vec<_>>(),
                    "response_bytes": r.bytes,
                })
            })
            .collect();
        let data: serde_json::Map<String, Value> = self
            .data
            .iter()
            .map(|(k, (files, b))| (k.clone(), json!({ "files": files, "bytes": b })))
            .collect();
        json!({
            "scale": self.scale.name(),
            "runs": self.runs,
            "data": data,
            "timings": rows,
            "memory": rss,
            "metalink": metalink,
            "notes": self.notes,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_and_formats() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median(&[]), None);
        assert_eq!(secs(0.4123), "412 ms");
        assert_eq!(secs(1.234), "1.23 s");
        assert_eq!(secs(12.34), "12.3 s");
        assert_eq!(thousands(1_234_567), "1,234,567");
        assert_eq!(thousands(999), "999");
    }

    #[test]
    fn a_row_without_an_expected_figure_is_reported() {
        let mut r = Row::new(Workload::Full, "full".into(), &[Tool::Hotpush, Tool::Cp]);
        r.add(Tool::Hotpush, 1.0);
        r.add(Tool::RsyncDaemon, 2.0);
        let report = Report {
            scale: Scale::Smoke,
            runs: 1,
            rows: vec![r],
            rss: Vec::new(),
            metalink: Vec::new(),
            notes: Vec::new(),
            data: BTreeMap::new(),
        };
        assert_eq!(report.missing(), vec!["full: no figure for cp".to_owned()]);
        assert!(
            report
                .markdown()
                .contains("| full | 1.00 s | 2.00 s | – | – | 0.50 |")
        );
    }
}
