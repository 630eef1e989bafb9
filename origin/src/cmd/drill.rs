//! `hotpush-origin drill`: the rehearsal, end to end, with a pass/fail table.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::anyhow;
use hotpush_shared::manifest::RepoName;
use hotpush_shared::url::MetalinkQuery;

use super::Remote;
use super::publish::publish_and_wait;
use crate::client::{Options, Wait};

/// Rehearse end to end and print a pass/fail table.
///
/// Publishes (by default the latest content, signed again: no change for
/// clients), waits for every partner, then fetches through the metalink
/// from every mirror what dnf would, checking every hash.
#[derive(clap::Args)]
#[command(
    after_help = "Example:\n  hotpush-origin drill f41-canary/x86_64 --origin-url https://origin.example.org"
)]
pub struct Args {
    /// Repo name, e.g. f41-critical/x86_64.
    repo: RepoName,
    /// Publish this directory instead of re-signing the latest content.
    #[arg(long)]
    from: Option<PathBuf>,
    /// The metalink base URL clients use (default: public_url, else the first http_listen).
    #[arg(long)]
    origin_url: Option<String>,
    #[arg(long, default_value_t = 300)]
    timeout: u64,
}

pub fn run(config_path: &Path, args: Args) -> anyhow::Result<ExitCode> {
    let config = super::load(config_path)?;
    let base = super::origin_base_url(&config, args.origin_url).ok_or_else(|| {
        anyhow!("no origin URL: pass --origin-url or set public_url or http_listen")
    })?;
    let metalink_url = MetalinkQuery::new(args.repo.clone()).url(&base);
    println!(
        "drill 1/2: publish {}{}",
        args.repo,
        if args.from.is_none() {
            " (latest content, signed again)"
        } else {
            ""
        }
    );
    let published = publish_and_wait(
        config_path,
        &Remote::default(),
        args.repo.as_str(),
        args.from.as_deref(),
        (Wait::All, Duration::from_secs(args.timeout)),
        Options::default(),
        false,
    )?;
    println!("drill 2/2: fetch {metalink_url} and everything dnf would from every mirror it lists");
    let outcome = match check(&metalink_url, &config.limits) {
        Ok(_) if published != ExitCode::SUCCESS => {
            Err("not every partner went live before --timeout".to_owned())
        }
        Ok(outcome) => outcome,
        Err(e) => Err(format!("{e:#}")),
    };
    // For `status`, the status page and metrics: the lane's last rehearsal.
    let (passed, detail) = match &outcome {
        Ok(verified) => (true, verified.clone()),
        Err(why) => (false, why.clone()),
    };
    if let Err(e) = crate::db::Db::open(&config.data_dir)
        .and_then(|db| db.record_drill(args.repo.as_str(), passed, &detail))
    {
        eprintln!("warning: the drill's result was not recorded: {e}");
    }
    println!("drill {}", if passed { "PASSED" } else { "FAILED" });
    Ok(if passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Fetches through the metalink and prints a line per mirror: `Ok(what
/// was verified)`, or `Err(the first failure)`.
#[tokio::main]
async fn check(
    metalink_url: &str,
    limits: &hotpush_shared::Limits,
) -> anyhow::Result<Result<String, String>> {
    let http = crate::drill::client()?;
    let (file, reports) = crate::drill::check(&http, metalink_url, limits).await?;
    println!(
        "  metalink: repomd.xml sha256 {}…, {} mirror(s)",
        &file.sha256[..16.min(file.sha256.len())],
        reports.len()
    );
    let mut first_failure = None;
    for r in &reports {
        match &r.result {
            Ok(s) => println!(
                "  PASS  {}  ({} metadata files, {} packages, {} bytes verified)",
                r.url, s.metadata_files, s.packages, s.bytes
            ),
            Err(why) => {
                println!("  FAIL  {}  {why}", r.url);
                first_failure.get_or_insert_with(|| format!("{}: {why}", r.url));
            }
        }
    }
    if reports.is_empty() {
        println!("  FAIL  the metalink lists no mirror");
        first_failure = Some("the metalink lists no mirror".to_owned());
    }
    Ok(match first_failure {
        Some(why) => Err(why),
        None => Ok(format!("{} mirror(s) verified", reports.len())),
    })
}
