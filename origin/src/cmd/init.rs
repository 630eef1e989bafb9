//! `hotpush-origin init`: a config, signing key, TLS identity and state.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use hotpush_shared::identity::Identity;
use hotpush_shared::sign::SigningKey;

use crate::config::{self, Config};
use crate::db::Db;

/// Create a config, signing key, TLS identity and state; print the ids agents need.
#[derive(clap::Args)]
#[command(after_help = "Example:\n  hotpush-origin init --dir /etc/hotpush --http '[::]:8000'")]
pub struct Args {
    /// Directory to create (holds origin.toml, keys/, tls/, data/).
    #[arg(long, default_value = "/etc/hotpush")]
    dir: PathBuf,
    /// HTTP listen address for the metalink.
    #[arg(long, default_value = "[::]:8000")]
    http: String,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let dir = &args.dir;
    let config_path = dir.join("origin.toml");
    if config_path.exists() {
        bail!(
            "{} already exists; refusing to overwrite the origin's keys",
            config_path.display()
        );
    }
    for sub in ["keys", "tls", "data"] {
        std::fs::create_dir_all(dir.join(sub))
            .with_context(|| format!("creating {}", dir.join(sub).display()))?;
    }
    let key = SigningKey::generate()?;
    key.save(&dir.join("keys/signing.key"))?;
    let identity = Identity::generate("hotpush-origin")?;
    identity.save(&dir.join("tls/cert.pem"), &dir.join("tls/key.pem"))?;
    std::fs::write(&config_path, config::template(&args.http))?;
    let config = Config::load(&config_path)?;
    Db::open(&config.data_dir)?;
    println!("origin-id: {}", identity.id()?);
    println!("signing-key: {}", key.public_hex());
    eprintln!(
        "created {}\ngive both lines to each partner: `hotpush-agent init --origin-id <origin-id> --origin-key <signing-key>`",
        config_path.display()
    );
    Ok(ExitCode::SUCCESS)
}
