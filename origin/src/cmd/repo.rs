//! `hotpush-origin repo init`: the usually-empty emergency repo.

use std::path::PathBuf;
use std::process::ExitCode;

use hotpush_shared::clock::now_unix;

/// Manage repos.
#[derive(clap::Subcommand)]
pub enum Command {
    /// Write a valid empty repo into DIR (one primary.xml.gz, about 530 bytes).
    #[command(after_help = "Example:\n  hotpush-origin repo init /srv/critical/f41/x86_64")]
    Init { dir: PathBuf },
}

pub fn run(cmd: Command) -> anyhow::Result<ExitCode> {
    match cmd {
        Command::Init { dir } => {
            crate::emptyrepo::write_empty_repo(&dir, now_unix() as u64)?;
            println!("wrote an empty repo to {}", dir.display());
        }
    }
    Ok(ExitCode::SUCCESS)
}
