//! `hotpush-agent`: runs on a partner mirror. Receives signed snapshots from
//! the origin over mutual TLS, verifies them, swaps them in atomically and
//! acknowledges once they are live.

mod config;
mod http;
mod push;
mod selfcheck;
mod service;
mod state;
mod status;
mod swap;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use hotpush_proto::agent_server::AgentServer;
use hotpush_shared::identity::{self, Identity, PinnedVerifier};
use hotpush_shared::store::BlobStore;
use hotpush_shared::transport;
use tokio_rustls::TlsAcceptor;

use crate::config::Config;
use crate::push::Agent;
use crate::state::StateDir;
use crate::swap::Tree;

/// Exit code for a config that does not load (sysexits EX_CONFIG).
const EXIT_CONFIG: u8 = 78;

#[derive(Parser)]
#[command(
    name = "hotpush-agent",
    version,
    about = "hotpush partner agent: receives, verifies and serves urgent-fix snapshots"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create a config, a TLS identity and data directories; print this agent's id.
    Init {
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
    },
    /// Run the agent.
    Serve {
        #[arg(long, short, default_value = "/etc/hotpush-agent/agent.toml")]
        config: PathBuf,
    },
    /// Show what is installed, from the state on disk.
    Status {
        #[arg(long, short, default_value = "/etc/hotpush-agent/agent.toml")]
        config: PathBuf,
    },
    /// Re-check the live tree against the installed signed manifests.
    Verify {
        #[arg(long, short, default_value = "/etc/hotpush-agent/agent.toml")]
        config: PathBuf,
    },
}

fn main() -> ExitCode {
    hotpush_shared::daemon::init_logging();
    identity::install_crypto_provider();
    let cli = Cli::parse();
    // Reads FAILPOINTS; with it unset every failpoint is a no-op.
    let _failpoints = fail::FailScenario::setup();
    let result = match cli.command {
        Command::Init {
            dir,
            origin_ids,
            origin_keys,
            repos,
            listen,
            http,
        } => init(&dir, &origin_ids, &origin_keys, &repos, &listen, &http),
        Command::Serve { config } => load(&config).and_then(serve),
        Command::Status { config } => load(&config).and_then(|c| status(&c)),
        Command::Verify { config } => load(&config).and_then(|c| verify(&c)),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!(
                "hotpush-agent: error: {}",
                hotpush_shared::daemon::describe_error(e.as_ref())
            );
            if e.downcast_ref::<config::ConfigError>().is_some() {
                ExitCode::from(EXIT_CONFIG)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

fn load(path: &Path) -> anyhow::Result<Config> {
    Ok(Config::load(path)?)
}

fn init(
    dir: &Path,
    ids: &[String],
    keys: &[String],
    repos: &[String],
    listen: &str,
    http: &str,
) -> anyhow::Result<ExitCode> {
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
    std::fs::write(
        &config_path,
        config::template(ids, keys, repos, listen, http),
    )
    .with_context(|| format!("writing {}", config_path.display()))?;
    // Validate what we wrote only when it is complete enough to run.
    if !ids.is_empty() && !keys.is_empty() {
        Config::load(&config_path)?;
    }
    println!("{}", identity.id()?);
    eprintln!(
        "created {}\nthe line above is this agent's id: give it to the origin's operator for `hotpush-origin agent add`",
        config_path.display()
    );
    Ok(ExitCode::SUCCESS)
}

fn open_tree(config: &Config) -> anyhow::Result<Tree> {
    Ok(Tree {
        store: BlobStore::open(&config.data_dir)?,
        state: StateDir::open(&config.data_dir, config.limits.clone())?,
        serve_root: config.serve_root.clone(),
        retain_for: config.retain_for,
    })
}

#[tokio::main]
async fn serve(config: Config) -> anyhow::Result<ExitCode> {
    let identity = Identity::load(&config.tls_cert, &config.tls_key)?;
    let agent_id = identity.id()?.to_string();
    let tree = open_tree(&config)?;
    std::fs::create_dir_all(&config.serve_root)
        .with_context(|| format!("creating serve_root {}", config.serve_root.display()))?;
    for repo in &config.repos {
        tree.recover(repo)?;
    }
    let tls = identity::server_config(
        &identity,
        PinnedVerifier::new(config.origin_ids.clone(), "origin"),
    )?;
    let listeners = config
        .listen
        .iter()
        .map(|a| transport::bind(*a).with_context(|| format!("binding {a}")))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let max_message = config
        .limits
        .max_manifest_bytes
        .max(config.limits.max_chunk_bytes)
        + (1 << 20);
    let http_addrs = config.http_listen.clone();
    let serve_root = config.serve_root.clone();
    let listen = config.listen.clone();
    let http = selfcheck::client().context("building the HTTP client for the public-URL check")?;
    let agent = Arc::new(Agent::new(config, tree, agent_id.clone(), http));
    let service =
        AgentServer::new(service::AgentService { agent }).max_decoding_message_size(max_message);
    let incoming = transport::tls_incoming(listeners, TlsAcceptor::from(tls));
    if !http_addrs.is_empty() {
        tokio::spawn(async move {
            if let Err(e) = http::serve(serve_root, http_addrs).await {
                tracing::error!(error = %e, "HTTP server failed");
            }
        });
    }
    tracing::info!(agent_id = %agent_id, listen = ?listen, "hotpush-agent ready");
    tonic::transport::Server::builder()
        .initial_stream_window_size(8 << 20)
        .initial_connection_window_size(16 << 20)
        .add_service(service)
        .serve_with_incoming_shutdown(incoming, hotpush_shared::daemon::shutdown_signal())
        .await?;
    tracing::info!("hotpush-agent stopped");
    Ok(ExitCode::SUCCESS)
}

fn status(config: &Config) -> anyhow::Result<ExitCode> {
    let tree = open_tree(config)?;
    for repo in &config.repos {
        match tree.live(repo)? {
            Some(i) => println!(
                "{repo}: version {} live (manifest {}, {} files, {} bytes)",
                i.manifest.version,
                &i.signed.digest().to_hex()[..16],
                i.manifest.entries.len(),
                i.manifest.total_bytes()
            ),
            None => println!("{repo}: nothing installed yet"),
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn verify(config: &Config) -> anyhow::Result<ExitCode> {
    let tree = open_tree(config)?;
    let mut bad = 0;
    for repo in &config.repos {
        let Some(i) = tree.live(repo)? else {
            continue;
        };
        let dir = tree.repo_dir(repo);
        for e in &i.manifest.entries {
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
            i.manifest.version,
            i.manifest.entries.len()
        );
    }
    if bad > 0 {
        println!("{bad} file(s) differ from the signed manifest");
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}
