//! hotpush side by side with rsync (daemon and over ssh), cp and nginx, in
//! one run on the same deterministically generated repos: [`run`] measures
//! the selected workloads `runs` times each and returns a [`Report`] of
//! medians. docs/PERFORMANCE.md says what each workload does and why.

pub mod copy;
pub mod data;
pub mod hotpush;
pub mod metalink;
pub mod process;
pub mod report;
pub mod rsync;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::data::{KIB, MB, REPODATA_FILES, Sizes, Tree, TreeSpec};
use crate::hotpush::{Hotpush, Memory, Timing};
use crate::process::{empty_dir, flush, run_parallel};
use crate::report::{MetalinkRow, Report, Row, RssRow, Tool, bytes, secs, thousands};
use crate::rsync::{Cipher, Daemons, Sshd};

/// How big the data is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum)]
pub enum Scale {
    /// Tiny trees, 1 s of wrk: checks that everything runs (the smoke test).
    Smoke,
    /// A tenth of full (100 MB, 2,000 and 10,000 files), 3 s of wrk.
    Small,
    /// ~1 GB in 404 files, 20,000 and 100,000 files, 10 s of wrk.
    Full,
}

impl Scale {
    pub fn name(self) -> &'static str {
        match self {
            Scale::Smoke => "smoke",
            Scale::Small => "small",
            Scale::Full => "full",
        }
    }

    pub fn params(self) -> Params {
        match self {
            Scale::Full => Params {
                full_packages: 400,
                full_package_bytes: 2_500_000,
                small_tree_files: 20_000,
                large_tree_files: 100_000,
                urgent_package_bytes: 5 * MB,
                wrk_secs: 10,
            },
            Scale::Small => Params {
                full_packages: 40,
                full_package_bytes: 2_500_000,
                small_tree_files: 2_000,
                large_tree_files: 10_000,
                urgent_package_bytes: 5 * MB,
                wrk_secs: 3,
            },
            Scale::Smoke => Params {
                full_packages: 8,
                full_package_bytes: 128 * KIB,
                small_tree_files: 40,
                large_tree_files: 80,
                urgent_package_bytes: 256 * KIB,
                wrk_secs: 1,
            },
        }
    }
}

/// The sizes a [`Scale`] stands for.
#[derive(Clone, Copy, Debug)]
pub struct Params {
    /// Workload `full`: packages of about `full_package_bytes` each.
    pub full_packages: usize,
    pub full_package_bytes: u64,
    /// Files (repodata included) of the trees of `inc20k` and of
    /// `inc100k`/`first100k`.
    pub small_tree_files: usize,
    pub large_tree_files: usize,
    /// The one package of `urgent`.
    pub urgent_package_bytes: u64,
    /// Length of each wrk run.
    pub wrk_secs: u32,
}

/// What can be measured; `--only` takes these names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, clap::ValueEnum)]
pub enum Workload {
    #[value(name = "full")]
    Full,
    #[value(name = "inc20k")]
    Inc20k,
    #[value(name = "inc100k")]
    Inc100k,
    #[value(name = "first100k")]
    First100k,
    #[value(name = "urgent")]
    Urgent,
    #[value(name = "metalink")]
    Metalink,
    #[value(name = "rss")]
    Rss,
}

impl Workload {
    pub const ALL: [Workload; 7] = [
        Workload::Full,
        Workload::Inc20k,
        Workload::Inc100k,
        Workload::First100k,
        Workload::Urgent,
        Workload::Metalink,
        Workload::Rss,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Workload::Full => "full",
            Workload::Inc20k => "inc20k",
            Workload::Inc100k => "inc100k",
            Workload::First100k => "first100k",
            Workload::Urgent => "urgent",
            Workload::Metalink => "metalink",
            Workload::Rss => "rss",
        }
    }

    /// Whether it compares against rsync and cp (and so needs them).
    fn has_baselines(self) -> bool {
        !matches!(self, Workload::Metalink | Workload::Rss)
    }
}

/// Publishes of the 20,000-file tree before its metalink is loaded.
pub const METALINK_PUBLISHES: usize = 16;
/// Publishes of each tree before peak memory is read.
pub const RSS_PUBLISHES: usize = 12;
/// How long after a publish current RSS is read: longer than the daemons'
/// jemalloc takes to hand freed pages back (`dirty_decay_ms` 250 in
/// `.cargo/config.toml`), so the reading is what stays, not garbage of
/// the publish just done. Peaks (VmHWM) are unaffected.
const RSS_SETTLE: std::time::Duration = std::time::Duration::from_secs(2);

/// The tools compared with hotpush, in column order.
const BASELINES: [Tool; 4] = [
    Tool::RsyncDaemon,
    Tool::RsyncSsh(Cipher::Chacha20),
    Tool::RsyncSsh(Cipher::Aes128Gcm),
    Tool::Cp,
];

/// What to run.
#[derive(Clone, Debug)]
pub struct Options {
    pub scale: Scale,
    /// Every figure is the median of this many runs.
    pub runs: usize,
    /// Where the data and the baselines' destinations go (a temp dir is
    /// made inside); the system temp dir when `None`.
    pub work: Option<PathBuf>,
    /// Keep the temp dir instead of removing it at the end.
    pub keep: bool,
    /// Workloads to run; every one when empty.
    pub only: Vec<Workload>,
}

impl Options {
    pub fn selected(&self, w: Workload) -> bool {
        self.only.is_empty() || self.only.contains(&w)
    }
}

/// External programs the selected workloads need that cannot be found.
pub fn missing_tools(opts: &Options) -> Vec<&'static str> {
    let mut need = Vec::new();
    if Workload::ALL
        .iter()
        .any(|w| w.has_baselines() && opts.selected(*w))
    {
        need.extend(["rsync", "ssh", "ssh-keygen", "/usr/sbin/sshd", "cp", "sync"]);
    }
    if opts.selected(Workload::Metalink) {
        need.extend(["wrk", "nginx"]);
    }
    need.into_iter().filter(|p| !process::have(p)).collect()
}

/// Prints a progress line on stderr.
fn progress(msg: &str) {
    eprintln!("hotpush-bench: {msg}");
}

/// Runs the selected workloads and returns their figures.
pub fn run(opts: &Options) -> Result<Report> {
    if opts.runs == 0 {
        bail!("--runs must be at least 1");
    }
    let missing = missing_tools(opts);
    if !missing.is_empty() {
        bail!(
            "missing tools: {} (tests/install-deps.sh installs them)",
            missing.join(", ")
        );
    }
    for name in ["hotpush-origin", "hotpush-agent"] {
        let path = hotpush_tests::bin(name);
        if !path.is_file() {
            bail!(
                "{} not found: build it (bench/run.sh builds release binaries)",
                path.display()
            );
        }
    }
    // Four agents, their TLS connections and the origin's clients.
    hotpush_tests::raise_fd_limit();
    let parent = match &opts.work {
        Some(w) => w.clone(),
        None => std::env::temp_dir(),
    };
    std::fs::create_dir_all(&parent).with_context(|| format!("mkdir {}", parent.display()))?;
    let dir = tempfile::Builder::new()
        .prefix("hotpush-bench.")
        .tempdir_in(&parent)
        .with_context(|| format!("creating a temp dir in {}", parent.display()))?;
    progress(&format!(
        "scale {}, {} run(s), work dir {}, binaries {}",
        opts.scale.name(),
        opts.runs,
        dir.path().display(),
        hotpush_tests::bin("hotpush-origin")
            .parent()
            .unwrap_or(Path::new("?"))
            .display()
    ));
    let result = Bench::new(opts, dir.path()).and_then(Bench::run_all);
    if opts.keep {
        let kept = dir.keep();
        progress(&format!("kept {}", kept.display()));
    }
    result
}

/// One benchmark run in progress: its work dir, the baselines' four
/// destinations and daemons, and the report being filled in.
struct Bench<'a> {
    opts: &'a Options,
    p: Params,
    root: PathBuf,
    logs: PathBuf,
    dests: Vec<PathBuf>,
    rsyncd: Option<Daemons>,
    sshd: Option<Sshd>,
    report: Report,
    /// Names the baseline log files uniquely.
    step: usize,
}

impl<'a> Bench<'a> {
    fn new(opts: &'a Options, root: &Path) -> Result<Self> {
        let logs = root.join("logs");
        std::fs::create_dir_all(&logs).with_context(|| format!("mkdir {}", logs.display()))?;
        let dests: Vec<PathBuf> = (0..hotpush::AGENTS)
            .map(|i| root.join(format!("dst/{i}")))
            .collect();
        for d in &dests {
            empty_dir(d)?;
        }
        let (mut rsyncd, mut sshd) = (None, None);
        if Workload::ALL
            .iter()
            .any(|w| w.has_baselines() && opts.selected(*w))
        {
            rsyncd = Some(Daemons::start(&root.join("rsyncd"), &dests)?);
            sshd = Some(Sshd::start(&root.join("sshd"))?);
        }
        let bin_dir = hotpush_tests::bin("hotpush-origin")
            .parent()
            .map(|d| d.display().to_string())
            .unwrap_or_default();
        Ok(Bench {
            opts,
            p: opts.scale.params(),
            root: root.to_path_buf(),
            logs,
            dests,
            rsyncd,
            sshd,
            report: Report {
                scale: opts.scale,
                runs: opts.runs,
                rows: Vec::new(),
                rss: Vec::new(),
                metalink: Vec::new(),
                notes: notes(&bin_dir),
                data: BTreeMap::new(),
            },
            step: 0,
        })
    }

    fn run_all(mut self) -> Result<Report> {
        let o = self.opts;
        if o.selected(Workload::Full) {
            self.full()?;
        }
        if o.selected(Workload::Urgent) || o.selected(Workload::Metalink) {
            self.urgent()?;
        }
        if o.selected(Workload::Inc20k)
            || o.selected(Workload::Metalink)
            || o.selected(Workload::Rss)
        {
            self.tree_series(false)?;
        }
        if o.selected(Workload::Inc100k)
            || o.selected(Workload::First100k)
            || o.selected(Workload::Rss)
        {
            self.tree_series(true)?;
        }
        // Workload order; the two urgent rows keep theirs (stable sort).
        self.report.rows.sort_by_key(|r| r.workload);
        // Stop the daemons before the work dir goes.
        self.rsyncd = None;
        self.sshd = None;
        Ok(self.report)
    }

    // ---- the baselines ------------------------------------------------

    /// A cold copy by `tool` to the four emptied destinations: how long it
    /// took, and how long until its data was on disk too (the tool's time
    /// plus a `sync` right after it). hotpush acks only once what it wrote
    /// is durable, so the second figure is the one with the same promise.
    fn cold(&mut self, tool: Tool, tree: &Tree) -> Result<Cold> {
        for d in &self.dests {
            empty_dir(d)?;
        }
        flush()?;
        self.step += 1;
        let label = format!("{:03}-{}-cold", self.step, tool.key());
        let took = match tool {
            Tool::Cp => run_parallel(
                copy::cold_commands(&tree.dir, &self.dests),
                &self.logs,
                &label,
            )?,
            _ => run_parallel(self.rsync_commands(tool, &tree.dir)?, &self.logs, &label)?,
        };
        let syncing = Instant::now();
        flush()?;
        let durable = took + syncing.elapsed();
        self.check_dests(tree, &[])?;
        Ok(Cold { took, durable })
    }

    /// Brings the four destinations, holding `old` (as `tool` left them),
    /// to `new`. rsync finds the change itself; cp is told it (the floor).
    fn warm(&mut self, tool: Tool, old: &Tree, new: &Tree) -> Result<Duration> {
        let diff = Tree::diff(old, new);
        flush()?;
        self.step += 1;
        let label = format!("{:03}-{}-warm", self.step, tool.key());
        let took = match tool {
            Tool::Cp => copy::apply_diff(&new.dir, &diff, &self.dests)?,
            _ => run_parallel(self.rsync_commands(tool, &new.dir)?, &self.logs, &label)?,
        };
        self.check_dests(new, &diff.removed)?;
        Ok(took)
    }

    fn rsync_commands(&self, tool: Tool, src: &Path) -> Result<Vec<std::process::Command>> {
        match tool {
            Tool::RsyncDaemon => Ok(self
                .rsyncd
                .as_ref()
                .context("rsync daemons not started")?
                .commands(src)),
            Tool::RsyncSsh(cipher) => Ok(self.sshd.as_ref().context("sshd not started")?.commands(
                cipher,
                src,
                &self.dests,
            )),
            other => bail!("{} is not an rsync baseline", other.key()),
        }
    }

    /// Every destination serves `tree`'s repomd.xml and none of `removed`.
    fn check_dests(&self, tree: &Tree, removed: &[String]) -> Result<()> {
        let repomd = tree.repomd()?;
        for d in &self.dests {
            let got = std::fs::read(d.join("repodata/repomd.xml"))
                .with_context(|| format!("{} has no repodata/repomd.xml", d.display()))?;
            if got != repomd {
                bail!(
                    "{} holds another repomd.xml than {}",
                    d.display(),
                    tree.dir.display()
                );
            }
            if let Some(stale) = removed.iter().find(|r| d.join(r).exists()) {
                bail!("{} still holds removed {stale}", d.display());
            }
        }
        Ok(())
    }

    fn record(&mut self, name: &str, tree: &Tree) {
        self.report
            .data
            .insert(name.to_owned(), (tree.file_count(), tree.total_bytes()));
    }

    // ---- workload 1 -----------------------------------------------------

    fn full(&mut self) -> Result<()> {
        progress("full: generating the tree");
        let tree = Tree::generate(
            &self.root.join("full"),
            TreeSpec {
                packages: self.p.full_packages,
                sizes: Sizes::Around(self.p.full_package_bytes),
                seed: 1,
            },
        )?;
        self.record("full", &tree);
        let mut row = Row::new(
            Workload::Full,
            format!(
                "`full`: cold push, {} files, {}",
                thousands(tree.file_count() as u64),
                bytes(tree.total_bytes())
            ),
            &Tool::ALL,
        );
        for run in 1..=self.opts.runs {
            let hp = Hotpush::start(Timing::NoSettle)?;
            flush()?;
            let pushed = hp.publish(&tree)?;
            drop(hp);
            row.add(Tool::Hotpush, pushed.elapsed.as_secs_f64());
            row.add_extra("hotpush_bytes_sent", pushed.bytes_sent as f64);
            progress(&format!(
                "full run {run}: hotpush {}",
                secs(pushed.elapsed.as_secs_f64())
            ));
            for tool in BASELINES {
                let cold = self.cold(tool, &tree)?;
                let (took, durable) = (cold.took.as_secs_f64(), cold.durable.as_secs_f64());
                row.add(tool, took);
                row.add_extra(&durable_key(tool), durable);
                progress(&format!(
                    "full run {run}: {} {}, on disk after {}",
                    tool.key(),
                    secs(took),
                    secs(durable)
                ));
            }
        }
        self.report.rows.push(row);
        remove_unless_kept(self.opts, &tree.dir)
    }

    // ---- workload 5 (and the empty repo's metalink) ---------------------

    fn urgent(&mut self) -> Result<()> {
        let timed = self.opts.selected(Workload::Urgent);
        let dir = self.root.join("urgent");
        let v1 = Tree::generate(
            &dir.join("v1"),
            TreeSpec {
                packages: 0,
                sizes: Sizes::Around(self.p.urgent_package_bytes),
                seed: 4,
            },
        )?;
        let mut v2 = v1.link_clone(&dir.join("v2"))?;
        v2.urgent_fix(self.p.urgent_package_bytes)?;
        self.record("urgent_v1", &v1);
        self.record("urgent_v2", &v2);
        let fix = bytes(self.p.urgent_package_bytes);
        let mut row = Row::new(
            Workload::Urgent,
            format!("`urgent`: empty repo + one {fix} package, settle 0"),
            &Tool::ALL,
        );
        let mut product = Row::new(
            Workload::Urgent,
            "`urgent`, product timing (max-age 10 s, settle 12 s)".to_owned(),
            &[Tool::Hotpush],
        );
        for run in 1..=self.opts.runs {
            // The publish directory is changed in place, as release
            // engineers do (the origin's hash cache is keyed by path).
            let publish_dir = dir.join("publish");
            let mut src = fresh_clone(&v1, &publish_dir)?;
            let hp = Hotpush::start(Timing::NoSettle)?;
            hp.publish(&src)?;
            if self.opts.selected(Workload::Metalink) {
                self.metalink(&hp, "empty repo")?;
            }
            if timed {
                src.urgent_fix(self.p.urgent_package_bytes)?;
                flush()?;
                let (live, named) = hp.publish_until_metalink(&src)?;
                let t = live.max(named).as_secs_f64();
                row.add(Tool::Hotpush, t);
                row.add_extra("hotpush_live_s", live.as_secs_f64());
                row.add_extra("hotpush_metalink_s", named.as_secs_f64());
                progress(&format!(
                    "urgent run {run}: hotpush {} (live {}, metalink {})",
                    secs(t),
                    secs(live.as_secs_f64()),
                    secs(named.as_secs_f64())
                ));
            }
            drop(hp);
            if !timed {
                continue;
            }
            let mut src = fresh_clone(&v1, &publish_dir)?;
            let hp = Hotpush::start(Timing::Product)?;
            hp.publish(&src)?;
            src.urgent_fix(self.p.urgent_package_bytes)?;
            flush()?;
            let (live, named) = hp.publish_until_metalink(&src)?;
            drop(hp);
            let t = live.max(named).as_secs_f64();
            product.add(Tool::Hotpush, t);
            product.add_extra("hotpush_live_s", live.as_secs_f64());
            product.add_extra("hotpush_metalink_s", named.as_secs_f64());
            progress(&format!(
                "urgent run {run}: hotpush, product timing {}",
                secs(t)
            ));
            for tool in BASELINES {
                self.cold(tool, &v1)?;
                let took = self.warm(tool, &v1, &v2)?.as_secs_f64();
                row.add(tool, took);
                progress(&format!("urgent run {run}: {} {}", tool.key(), secs(took)));
            }
        }
        if timed {
            product.ratio_against = row.samples.get(&Tool::RsyncDaemon).cloned();
            self.report.rows.push(row);
            self.report.rows.push(product);
        }
        remove_unless_kept(self.opts, &dir)
    }

    // ---- workloads 2, 3, 4, the 20,000-file metalink and memory ---------

    /// The 20,000-file tree (`large` false) or the 100,000-file one: per
    /// run, a fresh network gets version 1 (timed as `first100k`), then
    /// the small changes one by one (the first timed as `inc…`), memory
    /// read after the first and the 12th, the metalink loaded after the
    /// 16th (20,000 only); then each baseline copies version 1 (timed as
    /// `first100k`) and syncs version 2.
    fn tree_series(&mut self, large: bool) -> Result<()> {
        let o = self.opts;
        let (files, name, inc, first) = if large {
            let f = self.p.large_tree_files;
            (f, "t100k", Workload::Inc100k, Some(Workload::First100k))
        } else {
            (self.p.small_tree_files, "t20k", Workload::Inc20k, None)
        };
        let first = first.filter(|w| o.selected(*w));
        let inc = o.selected(inc).then_some(inc);
        let rss = o.selected(Workload::Rss);
        let metalink = !large && o.selected(Workload::Metalink);
        let publishes = [
            usize::from(first.is_some()),
            if inc.is_some() { 2 } else { 0 },
            if rss { RSS_PUBLISHES } else { 0 },
            if metalink { METALINK_PUBLISHES } else { 0 },
        ]
        .into_iter()
        .max()
        .unwrap_or(0);
        let dir = self.root.join(name);
        progress(&format!(
            "{name}: generating {} files",
            thousands(files as u64)
        ));
        let v1 = Tree::generate(
            &dir.join("v1"),
            TreeSpec {
                packages: files.saturating_sub(REPODATA_FILES),
                // Log-uniform 1–8 KiB: 100,000 files stay a few hundred MB.
                sizes: Sizes::LogUniform {
                    min: KIB,
                    max: 8 * KIB,
                },
                seed: if large { 3 } else { 2 },
            },
        )?;
        let mut v2 = v1.link_clone(&dir.join("v2"))?;
        v2.small_change(1)?;
        self.record(&format!("{name}_v1"), &v1);
        let count = thousands(v1.file_count() as u64);
        let mut first_row = first.map(|w| {
            Row::new(
                w,
                format!(
                    "`{}`: cold push, {count} files, {}",
                    w.name(),
                    bytes(v1.total_bytes())
                ),
                &Tool::ALL,
            )
        });
        let mut inc_row = inc.map(|w| {
            Row::new(
                w,
                format!("`{}`: {count} files, +1 package, 1 replaced", w.name()),
                &Tool::ALL,
            )
        });
        let mut rss_row = rss.then(|| RssRow {
            label: format!("{count} files"),
            publishes: RSS_PUBLISHES,
            first: Vec::new(),
            last: Vec::new(),
        });
        for run in 1..=o.runs {
            // Cloned before the network starts, in the same place every
            // time: the origin's hash cache is keyed by path and mtime.
            let mut src = fresh_clone(&v1, &dir.join("publish"))?;
            let hp = Hotpush::start(Timing::NoSettle)?;
            let mut mem_first = Memory::default();
            for n in 1..=publishes {
                if n > 1 {
                    src.small_change(n as u64 - 1)?;
                }
                if n == 2 && src.repomd()? != v2.repomd()? {
                    bail!("{name}: change 1 in place differs from version 2");
                }
                flush()?;
                let pushed = hp.publish(&src)?;
                let t = pushed.elapsed.as_secs_f64();
                let row = match n {
                    1 => first_row.as_mut(),
                    2 => inc_row.as_mut(),
                    _ => None,
                };
                if let Some(row) = row {
                    row.add(Tool::Hotpush, t);
                    row.add_extra("hotpush_bytes_sent", pushed.bytes_sent as f64);
                    progress(&format!(
                        "{name} run {run}: hotpush publish {n}: {}",
                        secs(t)
                    ));
                } else {
                    progress(&format!("{name} run {run}: publish {n}: {}", secs(t)));
                }
                // Every publish of the series is read, not only the first
                // and last: a step (something kept from the second publish
                // on) and a slope (something growing) look alike otherwise.
                if rss && n <= RSS_PUBLISHES {
                    std::thread::sleep(RSS_SETTLE);
                    let m = hp.memory()?;
                    progress(&format!(
                        "{name} run {run}: RSS after publish {n}: origin {} MiB ({} anonymous), largest agent {} MiB ({} anonymous; up to {} threads)",
                        m.origin_rss / 1024,
                        m.origin_anon / 1024,
                        m.agent_rss / 1024,
                        m.agent_anon / 1024,
                        m.agent_threads
                    ));
                    if n == 1 {
                        mem_first = m;
                    }
                    if n == RSS_PUBLISHES
                        && let Some(r) = rss_row.as_mut()
                    {
                        r.first.push(mem_first);
                        r.last.push(m);
                    }
                }
            }
            if metalink {
                self.metalink(
                    &hp,
                    &format!("{count} files, after {METALINK_PUBLISHES} publishes"),
                )?;
            }
            drop(hp);
            std::fs::remove_dir_all(&src.dir)
                .with_context(|| format!("removing {}", src.dir.display()))?;
            if first_row.is_none() && inc_row.is_none() {
                continue;
            }
            for tool in BASELINES {
                let cold = self.cold(tool, &v1)?;
                if let Some(row) = first_row.as_mut() {
                    let (took, durable) = (cold.took.as_secs_f64(), cold.durable.as_secs_f64());
                    row.add(tool, took);
                    row.add_extra(&durable_key(tool), durable);
                    progress(&format!(
                        "{name} run {run}: {} cold {}, on disk after {}",
                        tool.key(),
                        secs(took),
                        secs(durable)
                    ));
                }
                if let Some(row) = inc_row.as_mut() {
                    let took = self.warm(tool, &v1, &v2)?.as_secs_f64();
                    row.add(tool, took);
                    progress(&format!(
                        "{name} run {run}: {} warm {}",
                        tool.key(),
                        secs(took)
                    ));
                }
            }
        }
        self.report.rows.extend(first_row);
        self.report.rows.extend(inc_row);
        self.report.rss.extend(rss_row);
        remove_unless_kept(o, &dir)
    }

    // ---- workload 6 -----------------------------------------------------

    /// wrk against the origin's metalink of `hp`, then against nginx
    /// serving the bytes of one of its responses; adds one load to each
    /// of the two rows for `label`.
    fn metalink(&mut self, hp: &Hotpush, label: &str) -> Result<()> {
        let path = hotpush::metalink_path();
        let (status, body) = metalink::get(hp.origin_http(), &path)?;
        if status != 200 {
            bail!("GET {path} from the origin answered {status}");
        }
        // Two half-length loads each, in the order origin, nginx, nginx,
        // origin, each after a `sync`: whatever the workloads before left
        // running in the background (writeback, freeing deleted trees)
        // weighs on both servers alike instead of on the one measured first.
        let secs = (self.p.wrk_secs / 2).max(1);
        self.step += 1;
        let nginx_dir = self.root.join(format!("nginx-{:03}", self.step));
        empty_dir(&nginx_dir)?;
        let (nginx, nginx_url) = metalink::nginx_serving(&body, &nginx_dir, &path)?;
        let origin_url = format!("http://{}{path}", hp.origin_http());
        let mut loads = Vec::new();
        for (server, url) in [
            ("hotpush origin", &origin_url),
            ("nginx, same bytes (1 worker)", &nginx_url),
            ("nginx, same bytes (1 worker)", &nginx_url),
            ("hotpush origin", &origin_url),
        ] {
            flush()?;
            loads.push((server, metalink::wrk(url, secs)?));
        }
        drop(nginx);
        for (server, load) in loads {
            progress(&format!(
                "metalink {label}: {server}: {:.0} req/s, p99 {:.2} ms, {} bytes, {} errors",
                load.requests_per_sec,
                load.p99_ms,
                body.len(),
                load.errors
            ));
            let row = match self
                .report
                .metalink
                .iter_mut()
                .find(|r| r.label == label && r.server == server)
            {
                Some(r) => r,
                None => {
                    self.report.metalink.push(MetalinkRow {
                        label: label.to_owned(),
                        server: server.to_owned(),
                        loads: Vec::new(),
                        bytes: body.len(),
                    });
                    self.report
                        .metalink
                        .last_mut()
                        .context("metalink row just pushed")?
                }
            };
            row.loads.push(load);
        }
        Ok(())
    }
}

/// What [`Bench::cold`] measured.
struct Cold {
    took: Duration,
    /// `took` plus the `sync` after it.
    durable: Duration,
}

/// The extra figure under which a cold row keeps `tool`'s time until its
/// data was on disk ([`Report::markdown`] prints them as a second table).
pub fn durable_key(tool: Tool) -> String {
    format!("{}_durable", tool.key())
}

/// A hard-linked clone of `tree` at `dir`, replacing what was there.
fn fresh_clone(tree: &Tree, dir: &Path) -> Result<Tree> {
    if dir.exists() {
        std::fs::remove_dir_all(dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    tree.link_clone(dir)
}

/// Frees a workload's data once it is measured (it can be GBs).
fn remove_unless_kept(opts: &Options, dir: &Path) -> Result<()> {
    if opts.keep {
        return Ok(());
    }
    std::fs::remove_dir_all(dir).with_context(|| format!("removing {}", dir.display()))
}

/// What every reader of the table must know.
fn notes(bin_dir: &str) -> Vec<String> {
    vec![
        format!(
            "hotpush: a real origin and {} agents on 127.0.0.1 (binaries in `{bin_dir}`), \
             `metalink_max_age_secs = 0` and `settle_secs = 0` except in the product-timing row \
             (the settle is a deliberate delay, measured there); timed from the start of \
             `hotpush-origin publish --wait all` until it exits with every agent live, and for \
             `urgent` also until the origin's metalink names the new repomd.xml.",
            hotpush::AGENTS
        ),
        "hotpush agents fsync what they store (and the origin syncfs's its blob store) before \
         acking; rsync and cp do not fsync. `sync` runs, untimed, before every measurement. \
         For the cold rows the second table also times the `sync` right after each baseline: \
         the time until its copies are on disk, which is what a hotpush ack promises."
            .to_owned(),
        format!(
            "rsync: 4 clients at once pushing to 4 `rsync --daemon`s, or over ssh to a private \
             sshd, with ftpsync's flags `{}`.",
            rsync::FTPSYNC_FLAGS.join(" ")
        ),
        "cp: `cp -a` of the whole tree to 4 directories at once for cold rows; for the \
         incremental and urgent rows only the changed files are copied and the removed one \
         deleted (the floor: a tool told the change in advance)."
            .to_owned(),
        format!(
            "metalink: `wrk -t{} -c{} --timeout {}s --latency`; nginx serves a file holding the \
             exact bytes of one origin response at the same URL; per run each server takes two \
             loads of half the wrk time, in the order origin, nginx, nginx, origin, each after a \
             `sync`, and req/s and p99 are medians over all loads; errors counts wrk's socket \
             errors and non-2xx answers over all runs.",
            metalink::THREADS,
            metalink::CONNECTIONS,
            metalink::TIMEOUT_SECS
        ),
        format!(
            "memory: peaks are VmHWM over the whole series; current RSS is read {} s after \
             publish 1 and publish {RSS_PUBLISHES}, once jemalloc has handed back what the \
             publish freed.",
            RSS_SETTLE.as_secs()
        ),
    ]
}
