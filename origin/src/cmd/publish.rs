//! `hotpush-origin publish`: validate → sign → push → live progress per
//! partner → summary; exit 0 only when the wait condition holds.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use hotpush_shared::push::Phase;
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

use super::{EXIT_NOT_LIVE, Remote};
use crate::client::{self, Options, Outcome, Summary, Update, Wait};

/// Validate DIR, sign it as the next version of REPO, push it, and wait.
#[derive(clap::Args)]
#[command(
    after_help = "Examples:\n  hotpush-origin publish f41-critical/x86_64 --from /srv/critical/f41/x86_64\n  \
                        hotpush-origin publish f41-critical/x86_64 --from DIR --wait quorum --timeout 120 --json"
)]
pub struct Args {
    /// Repo name, e.g. f41-critical/x86_64.
    pub repo: String,
    /// The repo directory (repodata/ plus packages) on this host.
    #[arg(long)]
    pub from: PathBuf,
    /// When to return: all, quorum, or a number of agents.
    #[arg(long, default_value = "all")]
    pub wait: Wait,
    /// Give up waiting after this many seconds (pushes continue in the daemon).
    #[arg(long, default_value_t = 300)]
    pub timeout: u64,
    /// Print one JSON summary instead of progress lines.
    #[arg(long)]
    pub json: bool,
    /// Publish even if a path the recent snapshots serve gets other bytes.
    /// Clients holding the older metadata then fail on that package on every
    /// mirror until they refresh: bump the package's release instead if you can.
    #[arg(long)]
    pub allow_changed_paths: bool,
    #[command(flatten)]
    pub remote: Remote,
}

pub fn run(config_path: &Path, args: Args) -> anyhow::Result<ExitCode> {
    let timeout = Duration::from_secs(args.timeout);
    let options = Options {
        allow_changed_paths: args.allow_changed_paths,
    };
    publish_and_wait(
        config_path,
        &args.remote,
        &args.repo,
        Some(&args.from),
        (args.wait, timeout),
        options,
        args.json,
    )
}

/// Publishes `from` (or, with `None`, the latest content again), prints
/// progress, and waits for the `--wait` condition.
#[tokio::main]
pub async fn publish_and_wait(
    config_path: &Path,
    remote: &Remote,
    repo: &str,
    from: Option<&Path>,
    (wait, timeout): (Wait, Duration),
    options: Options,
    json: bool,
) -> anyhow::Result<ExitCode> {
    // A remote publish names a directory on the origin host; a local one is resolved here.
    let from = match from {
        None => None,
        Some(from) if remote.remote.is_some() => {
            if !from.is_absolute() {
                bail!("--from must be an absolute path on the origin host with --remote");
            }
            Some(from.to_path_buf())
        }
        Some(from) => Some(
            std::fs::canonicalize(from).with_context(|| format!("--from {}", from.display()))?,
        ),
    };
    let mut control = remote.client(config_path).await?;
    let mut printer = Printer::default();
    // A bar per partner on a terminal; plain lines in logs and pipes.
    let mut bars = std::io::stdout().is_terminal().then(Bars::default);
    let summary = client::publish(&mut control, repo, from, wait, timeout, options, |u| {
        if json {
            return;
        }
        match (&mut bars, u) {
            (Some(b), Update::Published(p)) => {
                printer.print(Update::Published(p), wait);
                b.start(&p.agents);
            }
            (Some(b), u) => b.update(&u),
            (None, u) => printer.print(u, wait),
        }
    })
    .await?;
    if let Some(b) = bars {
        b.finish();
    }
    if json {
        println!("{}", serde_json::to_string(&summary)?);
    } else {
        print_summary(&summary, timeout);
    }
    Ok(if summary.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_NOT_LIVE)
    })
}

/// What a partner is doing in `phase`, in the words both the bars and the
/// plain lines use.
fn doing(phase: Phase) -> &'static str {
    match phase {
        Phase::Connecting => "verifying",
        Phase::Sending => "sending",
        Phase::Committing => "sent, staging",
        Phase::Staged => "staged, waiting for the flip",
        Phase::Flipping => "flipping",
    }
}

/// Progress bars, one per partner: bytes, rate, and what it is doing.
#[derive(Default)]
struct Bars {
    multi: MultiProgress,
    bars: BTreeMap<String, ProgressBar>,
    /// With a bar, once the size of what a partner wants is known.
    sized: Option<ProgressStyle>,
}

impl Bars {
    fn start(&mut self, agents: &[String]) {
        // Until a partner says what it wants there is no size: name and
        // state only, rather than a bar that looks full.
        let plain = ProgressStyle::with_template("  {prefix:<12} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar());
        self.sized = ProgressStyle::with_template(
            "  {prefix:<12} [{bar:30}] {bytes:>10}/{total_bytes:<10} {bytes_per_sec:>12}  {msg}",
        )
        .ok()
        .map(|s| s.progress_chars("=> "));
        for name in agents {
            let bar = self.multi.add(ProgressBar::new(0));
            bar.set_style(plain.clone());
            bar.set_prefix(name.clone());
            bar.set_message("waiting");
            self.bars.insert(name.clone(), bar);
        }
    }

    fn update(&mut self, update: &Update<'_>) {
        match *update {
            Update::Progress {
                agent,
                phase,
                bytes_sent,
                bytes_wanted,
            } => {
                if let Some(bar) = self.bars.get(agent) {
                    if let Some(style) = &self.sized
                        && bar.length() == Some(0)
                        && bytes_wanted > 0
                    {
                        bar.set_style(style.clone());
                    }
                    bar.set_length(bytes_wanted);
                    bar.set_position(bytes_sent);
                    bar.set_message(doing(phase));
                }
            }
            Update::Acked { agent, outcome } => {
                if let Some(bar) = self.bars.get(agent) {
                    bar.finish_with_message(format!(
                        "LIVE in {:.1} s",
                        outcome.elapsed_ms as f64 / 1000.0
                    ));
                }
            }
            Update::Failed {
                agent,
                reason,
                will_retry,
            } => {
                if let Some(bar) = self.bars.get(agent) {
                    bar.set_message(format!(
                        "FAILED: {reason}{}",
                        if will_retry { " (retrying)" } else { "" }
                    ));
                }
            }
            Update::Published(_) => {}
        }
    }

    /// Leaves the bars as they are on screen.
    fn finish(self) {
        for bar in self.bars.values() {
            if !bar.is_finished() {
                bar.abandon();
            }
        }
    }
}

/// Progress lines: at most one per agent per second while sending.
#[derive(Default)]
struct Printer {
    last: BTreeMap<String, Instant>,
}

impl Printer {
    fn print(&mut self, update: Update<'_>, wait: Wait) {
        match update {
            Update::Published(p) => {
                println!(
                    "published {} version {} (manifest {}, {} files, {} bytes, {} new blobs{}{})",
                    p.repo,
                    p.version,
                    &p.manifest_digest[..16.min(p.manifest_digest.len())],
                    p.entries,
                    p.total_bytes,
                    p.new_blobs,
                    if p.unchanged {
                        ", same content as the previous version"
                    } else {
                        ""
                    },
                    if p.unreferenced_files > 0 {
                        format!(
                            "; not published: {} unreferenced files",
                            p.unreferenced_files
                        )
                    } else {
                        String::new()
                    }
                );
                let needed = wait.needed(p.agents.len());
                println!(
                    "pushing to {} agent(s): {}; waiting for {wait} ({needed})",
                    p.agents.len(),
                    p.agents.join(", ")
                );
                if p.settle_ms > 0 {
                    println!(
                        "once the mirrors have staged it, the metalink accepts it for {:.1} s (settle_secs) before they switch together",
                        p.settle_ms as f64 / 1000.0
                    );
                }
                if p.agents.is_empty() {
                    println!(
                        "no partner carries {}: nothing was pushed (`hotpush-origin agent list`; `agent add NAME ... --repo {}`)",
                        p.repo, p.repo
                    );
                } else if needed > p.agents.len() {
                    println!("warning: --wait {wait} asks for more agents than carry this repo");
                }
            }
            Update::Progress {
                agent,
                phase,
                bytes_sent,
                bytes_wanted,
            } => {
                let due = self
                    .last
                    .get(agent)
                    .is_none_or(|t| t.elapsed() >= Duration::from_secs(1));
                // Every change of phase, but sending at most once a second.
                let verb = match phase {
                    Phase::Connecting => return,
                    Phase::Sending if !due => return,
                    _ => doing(phase),
                };
                if bytes_wanted > 0 {
                    println!("  {agent}: {bytes_sent} of {bytes_wanted} bytes {verb}");
                    self.last.insert(agent.to_owned(), Instant::now());
                }
            }
            Update::Acked { agent, outcome } => println!(
                "  {agent}: LIVE in {:.1} s ({} bytes sent)",
                outcome.elapsed_ms as f64 / 1000.0,
                outcome.bytes_sent
            ),
            Update::Failed {
                agent,
                reason,
                will_retry,
            } => println!(
                "  {agent}: FAILED: {reason}{}",
                if will_retry { " (retrying)" } else { "" }
            ),
        }
    }
}

fn print_summary(s: &Summary, timeout: Duration) {
    let (version, total) = (s.published.version, s.agents.len());
    if s.ok {
        println!(
            "OK: {}/{total} agent(s) live with version {version} (needed {})",
            s.live, s.needed
        );
        return;
    }
    println!(
        "NOT LIVE: {}/{total} agent(s) acked version {version} within {}s (needed {}):",
        s.live,
        timeout.as_secs(),
        s.needed
    );
    for (name, o) in s.agents.iter().filter(|(_, o)| o.state != Outcome::Live) {
        let reason = if o.reason.is_empty() {
            "no answer yet"
        } else {
            &o.reason
        };
        println!("  {name}: {} — {reason}", o.state);
    }
    println!("the origin keeps retrying in the background; `hotpush-origin status` shows progress");
}
