//! `hotpush-agent status`: what is installed, from the state on disk.

use std::process::ExitCode;

use crate::daemon::open_tree;

/// Show what is installed, from the state on disk.
#[derive(clap::Args)]
#[command(after_help = "Example:\n  hotpush-agent status -c /etc/hotpush-agent/agent.toml")]
pub struct Args {
    #[command(flatten)]
    config: super::ConfigArg,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let config = args.config.load()?;
    let tree = open_tree(&config)?;
    for repo in &config.repos {
        match tree.live(repo)? {
            Some(i) => println!(
                "{repo}: version {} live (manifest {}, {} files, {} bytes)",
                i.version(),
                &i.snapshot.digest.to_hex()[..16],
                i.snapshot.manifest.entries.len(),
                i.snapshot.manifest.total_bytes()
            ),
            None => println!("{repo}: nothing installed yet"),
        }
    }
    Ok(ExitCode::SUCCESS)
}
