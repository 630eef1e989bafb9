//! `hotpush-origin publisher init`: an identity for a publisher on another host.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use hotpush_shared::identity::Identity;

/// Remote publishers.
#[derive(clap::Subcommand)]
pub enum Command {
    /// Create a publisher identity in DIR and print its id (for the origin's [[publisher]] list).
    #[command(after_help = "Example:\n  hotpush-origin publisher init ~/.config/hotpush-publisher")]
    Init { dir: PathBuf },
}

pub fn run(cmd: Command) -> anyhow::Result<ExitCode> {
    let Command::Init { dir } = cmd;
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let identity = Identity::generate("hotpush-publisher")?;
    identity.save(&dir.join("cert.pem"), &dir.join("key.pem"))?;
    println!("{}", identity.id()?);
    eprintln!(
        "created {}/cert.pem and key.pem\nthe line above is this publisher's id: the origin's operator adds it as a [[publisher]] in origin.toml",
        dir.display()
    );
    Ok(ExitCode::SUCCESS)
}
