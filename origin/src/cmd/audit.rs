//! `hotpush-origin audit`: who published what, and who changed the partner list, when.

use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, UNIX_EPOCH};

use crate::db::Db;

/// Show the audit log: publishes, refused publishes, and partners added or removed.
#[derive(clap::Args)]
#[command(after_help = "Example:\n  hotpush-origin audit | tail")]
pub struct Args {}

pub fn run(config_path: &Path, _args: Args) -> anyhow::Result<ExitCode> {
    let config = super::load(config_path)?;
    let db = Db::open(&config.data_dir)?;
    // Tab-separated, one line per event, oldest first: easy to read and to grep.
    println!("#\ttime\twho\taction\trepo\tversion\tmanifest\tdetail");
    for r in db.audit_log()? {
        let at = UNIX_EPOCH + Duration::from_secs(r.at_unix.max(0) as u64);
        println!(
            "{}\t{}\t{}\t{}\t{}\tv{}\t{}\t{}",
            r.id,
            hotpush_shared::metalink::httpdate(at),
            r.who,
            r.action,
            r.repo,
            r.version,
            r.manifest_digest,
            r.detail
        );
    }
    Ok(ExitCode::SUCCESS)
}
