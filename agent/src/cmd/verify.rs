//! `hotpush-agent verify`: re-hash the live tree against the signed manifests.

use std::process::ExitCode;

use crate::daemon::open_tree;

/// Re-check the live tree against the installed signed manifests (tampering, bit rot).
#[derive(clap::Args)]
#[command(after_help = "Example:\n  hotpush-agent verify -c /etc/hotpush-agent/agent.toml")]
pub struct Args {
    #[command(flatten)]
    config: super::ConfigArg,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let config = args.config.load()?;
    let tree = open_tree(&config)?;
    let mut bad = 0;
    for repo in &config.repos {
        let Some(i) = tree.live(repo)? else {
            continue;
        };
        let dir = tree.repo_dir(repo);
        let manifest = &i.snapshot.manifest;
        for e in &manifest.entries {
            let path = dir.join(e.path.as_str());
            let ok = std::fs::File::open(&path)
                .and_then(hotpush_shared::Sha256Digest::of_reader)
                .is_ok_and(|(d, n)| d == e.sha256 && n == e.size);
            if !ok {
                bad += 1;
                println!(
                    "MISMATCH {repo} {}: expected {} bytes sha256 {}",
                    e.path, e.size, e.sha256
                );
            }
        }
        println!(
            "{repo}: version {} checked, {} files",
            manifest.version,
            manifest.entries.len()
        );
    }
    if bad > 0 {
        println!("{bad} file(s) differ from the signed manifest");
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}
