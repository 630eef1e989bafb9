//! `hotpush-origin status`: the status report as a table, or `--json`.

use std::path::Path;
use std::process::ExitCode;

use super::Remote;
use crate::client;
use crate::status::{MirrorState, Report};

/// Show versions, acks and the last error of every agent.
#[derive(clap::Args)]
#[command(
    after_help = "Examples:\n  hotpush-origin status\n  hotpush-origin status --json | jq '.agents[].mirrors'"
)]
pub struct Args {
    /// The report as JSON (the same document as GET /status).
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    remote: Remote,
}

#[tokio::main]
pub async fn run(config_path: &Path, args: Args) -> anyhow::Result<ExitCode> {
    let mut control = args.remote.client(config_path).await?;
    let report = client::status(&mut control).await?;
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print!("{}", table(&report));
    }
    Ok(ExitCode::SUCCESS)
}

/// The report for a terminal.
fn table(report: &Report) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(out, "origin {}", report.origin_id);
    for w in &report.warnings {
        let _ = writeln!(out, "warning: {w}");
    }
    if let Some(d) = &report.drill {
        let _ = writeln!(
            out,
            "last drill: {} ({}) at {}{}",
            if d.passed { "passed" } else { "FAILED" },
            d.repo,
            hotpush_shared::metalink::httpdate(hotpush_shared::clock::system_time(d.at_unix)),
            if d.detail.is_empty() {
                String::new()
            } else {
                format!(": {}", d.detail)
            }
        );
    }
    for r in &report.repos {
        let _ = writeln!(
            out,
            "repo {}: latest version {}, metalink serves version {}",
            r.repo, r.latest_version, r.metalink_version
        );
    }
    for a in &report.agents {
        let acked: Vec<String> = a
            .acked
            .iter()
            .map(|k| format!("{} v{}", k.repo, k.version))
            .collect();
        let _ = writeln!(
            out,
            "agent {} ({}): {}",
            a.name,
            a.endpoint,
            if acked.is_empty() {
                "nothing acked".into()
            } else {
                acked.join(", ")
            }
        );
        for m in &a.mirrors {
            let state = match m.state {
                MirrorState::Live => "live".to_owned(),
                MirrorState::Pushing => match &m.pushing {
                    Some(p) if p.bytes_wanted > 0 => format!(
                        "pushing v{} ({} %)",
                        p.version,
                        p.bytes_sent * 100 / p.bytes_wanted
                    ),
                    Some(p) => format!("pushing v{}", p.version),
                    None => "pushing".to_owned(),
                },
                MirrorState::Unreachable => "unreachable, retrying".to_owned(),
                MirrorState::Refused => "refused the snapshot, retrying".to_owned(),
                MirrorState::Stale => {
                    "out of the metalink: its front end does not serve what it acked".to_owned()
                }
                MirrorState::Failing => "failing, retrying".to_owned(),
                MirrorState::Behind => "behind".to_owned(),
            };
            let _ = writeln!(out, "  {}: {state}, serves v{}", m.repo, m.version);
            if let Some(f) = m.front_end.as_ref().filter(|f| f.result != "serving") {
                let _ = writeln!(out, "    front end: {}", f.detail);
            }
        }
        if !a.last_error.is_empty() {
            let _ = writeln!(out, "  last error: {}", a.last_error);
        }
    }
    out
}
