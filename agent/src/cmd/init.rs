//! `hotpush-agent init`: a config, a TLS identity and data directories.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use hotpush_shared::identity::Identity;

use crate::config::{self, Config};

/// Create a config, a TLS identity and data directories; print this agent's id.
#[derive(clap::Args)]
#[command(
    after_help = "Example:\n  hotpush-agent init --dir /etc/hotpush-agent \\\n    \
                        --origin-id <origin-id> --origin-key <signing-key> --repo f41-critical/x86_64"
)]
pub struct Args {
    /// Directory to create (holds agent.toml, tls/, data/, www/).
    #[arg(long, default_value = "/etc/hotpush-agent")]
    dir: PathBuf,
    /// Origin id to accept (from `hotpush-origin init`); repeatable.
    #[arg(long = "origin-id")]
    origin_ids: Vec<String>,
    /// Origin public signing key to trust; repeatable.
    #[arg(long = "origin-key")]
    origin_keys: Vec<String>,
    /// Repo to carry, e.g. f41-critical/x86_64; repeatable.
    #[arg(long = "repo")]
    repos: Vec<String>,
    /// Push listener address.
    #[arg(long, default_value = "[::]:7443")]
    listen: String,
    /// Built-in HTTP listener address ("" for none).
    #[arg(long, default_value = "")]
    http: String,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let dir = &args.dir;
    let config_path = dir.join("agent.toml");
    if config_path.exists() {
        bail!(
            "{} already exists; refusing to overwrite an agent's identity",
            config_path.display()
        );
    }
    for sub in ["tls", "data", "www"] {
        std::fs::create_dir_all(dir.join(sub))
            .with_context(|| format!("creating {}", dir.join(sub).display()))?;
    }
    let identity = Identity::generate("hotpush-agent")?;
    identity.save(&dir.join("tls/cert.pem"), &dir.join("tls/key.pem"))?;
    let text = config::template(
        &args.origin_ids,
        &args.origin_keys,
        &args.repos,
        &args.listen,
        &args.http,
    );
    std::fs::write(&config_path, text)
        .with_context(|| format!("writing {}", config_path.display()))?;
    // Validate what we wrote only when it is complete enough to run.
    if !args.origin_ids.is_empty() && !args.origin_keys.is_empty() {
        Config::load(&config_path)?;
    }
    println!("{}", identity.id()?);
    eprintln!(
        "created {}\nthe line above is this agent's id: give it to the origin's operator for `hotpush-origin agent add`",
        config_path.display()
    );
    Ok(ExitCode::SUCCESS)
}
