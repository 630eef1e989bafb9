//! The command line: one obvious command per step, errors that say what to
//! do next, and exit codes a script can branch on.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use hotpush_proto as pb;
use hotpush_proto::control_client::ControlClient;
use hotpush_proto::publish_event::Event as Ev;
use hotpush_shared::identity::Identity;
use hotpush_shared::sign::SigningKey;
use hotpush_shared::store::BlobStore;

use crate::config::{self, Config};
use crate::db::{AgentRecord, Db};
use crate::origin::Origin;

/// The wait condition did not hold before `--timeout`.
const EXIT_NOT_LIVE: u8 = 3;
/// The daemon is not running (sysexits EX_UNAVAILABLE).
const EXIT_UNAVAILABLE: u8 = 69;
/// The config does not load (sysexits EX_CONFIG).
const EXIT_CONFIG: u8 = 78;

#[derive(Parser)]
#[command(
    name = "hotpush-origin",
    version,
    about = "hotpush origin: publish urgent fixes to partner mirrors in minutes"
)]
struct Cli {
    /// Origin config file.
    #[arg(long, short, global = true, default_value = "/etc/hotpush/origin.toml")]
    config: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create a config, signing key, TLS identity and state; print the ids agents need.
    Init {
        /// Directory to create (holds origin.toml, keys/, tls/, data/).
        #[arg(long, default_value = "/etc/hotpush")]
        dir: PathBuf,
        /// HTTP listen address for the metalink.
        #[arg(long, default_value = "[::]:8000")]
        http: String,
    },
    /// Run the origin daemon (reconcilers, control socket, metalink HTTP).
    Serve,
    /// Manage partner agents.
    #[command(subcommand)]
    Agent(AgentCommand),
    /// Manage repos.
    #[command(subcommand)]
    Repo(RepoCommand),
    /// Validate DIR, sign it as the next version of REPO, push it, and wait.
    Publish {
        /// Repo name, e.g. f41-critical/x86_64.
        repo: String,
        /// The repo directory (repodata/ plus packages) on this host.
        #[arg(long)]
        from: PathBuf,
        /// When to return: all, quorum, or a number of agents.
        #[arg(long, default_value = "all")]
        wait: String,
        /// Give up waiting after this many seconds (pushes continue in the daemon).
        #[arg(long, default_value_t = 300)]
        timeout: u64,
        /// Print one JSON summary instead of progress lines.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        remote: Remote,
    },
    /// Show versions, acks and the last error of every agent.
    Status {
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        remote: Remote,
    },
    /// Remote publishers.
    #[command(subcommand)]
    Publisher(PublisherCommand),
    /// Check keys, the daemon, every partner (id, clock, disk, repos) and every metalink.
    Doctor {
        /// The metalink base URL clients use (default: public_url, else the first http_listen).
        #[arg(long)]
        origin_url: Option<String>,
    },
    /// Rehearse end to end and print a pass/fail table.
    ///
    /// Publishes (by default the latest content, signed again: no change for
    /// clients), waits for every partner, then fetches through the metalink
    /// from every mirror what dnf would, checking every hash.
    Drill {
        /// Repo name, e.g. f41-critical/x86_64.
        repo: String,
        /// Publish this directory instead of re-signing the latest content.
        #[arg(long)]
        from: Option<PathBuf>,
        /// The metalink base URL clients use (default: public_url, else the first http_listen).
        #[arg(long)]
        origin_url: Option<String>,
        #[arg(long, default_value_t = 300)]
        timeout: u64,
    },
    /// Show the audit log of publishes.
    Audit,
    /// Print the dnf .repo stanza for REPO, for the distribution's -repos package.
    RepoFile {
        /// Repo name, e.g. f41-critical/x86_64.
        repo: String,
        /// Base URL of this origin as clients reach it (default: public_url from the config).
        #[arg(long)]
        origin_url: Option<String>,
        /// gpgkey= value.
        #[arg(
            long,
            default_value = "file:///etc/pki/rpm-gpg/RPM-GPG-KEY-fedora-$releasever-$basearch"
        )]
        gpgkey: String,
    },
}

#[derive(Subcommand)]
enum AgentCommand {
    /// Register a partner agent.
    Add {
        name: String,
        /// Push endpoint, e.g. https://[2001:db8::1]:7443
        #[arg(long)]
        endpoint: String,
        /// The agent's id, as printed by `hotpush-agent init`.
        #[arg(long)]
        id: String,
        /// Base URL where clients reach the agent's served tree.
        #[arg(long)]
        public_url: String,
        /// Share of client traffic (partner capacity), relative to the others.
        #[arg(long, default_value_t = 100)]
        weight: u32,
        /// Repo it carries; repeatable; none means every repo.
        #[arg(long = "repo")]
        repos: Vec<String>,
    },
    /// List registered agents.
    List,
    /// Unregister an agent.
    Remove { name: String },
}

/// Where the control service is: the local socket (default) or, for
/// publishers on other hosts, the origin's `control_listen` over mutual TLS.
#[derive(clap::Args, Clone, Default)]
struct Remote {
    /// The origin's control_listen URL, e.g. https://origin.example.org:7444
    #[arg(long, requires_all = ["origin_id", "identity"])]
    remote: Option<String>,
    /// The origin's id (printed by `hotpush-origin init`), pinned for --remote.
    #[arg(long)]
    origin_id: Option<String>,
    /// Directory with this publisher's cert.pem and key.pem (`publisher init`).
    #[arg(long)]
    identity: Option<PathBuf>,
}

#[derive(Subcommand)]
enum PublisherCommand {
    /// Create a publisher identity in DIR and print its id (for the origin's [[publisher]] list).
    Init { dir: PathBuf },
}

#[derive(Subcommand)]
enum RepoCommand {
    /// Write a valid empty repo into DIR.
    Init { dir: PathBuf },
}

/// Parses `--wait`: how many of `n` agents must ack.
fn wait_target(wait: &str, n: usize) -> anyhow::Result<usize> {
    match wait {
        "all" => Ok(n),
        "quorum" => Ok(n / 2 + 1),
        other => other
            .parse()
            .with_context(|| format!("--wait must be all, quorum or a number, not {other:?}")),
    }
}

/// Runs the command line.
pub fn run() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Init { dir, http } => init(&dir, &http),
        Command::Serve => load(&cli.config).and_then(serve),
        Command::Agent(cmd) => load(&cli.config).and_then(|c| agent(&c, cmd)),
        Command::Repo(RepoCommand::Init { dir }) => {
            crate::emptyrepo::write_empty_repo(&dir, crate::db::now_unix() as u64).map(|()| {
                println!("wrote an empty repo to {}", dir.display());
                ExitCode::SUCCESS
            })
        }
        Command::Publish {
            repo,
            from,
            wait,
            timeout,
            json,
            remote,
        } => publish(
            &cli.config,
            &remote,
            &repo,
            &from,
            &wait,
            Duration::from_secs(timeout),
            json,
        ),
        Command::Status { json, remote } => status(&cli.config, &remote, json),
        Command::Publisher(PublisherCommand::Init { dir }) => publisher_init(&dir),
        Command::Doctor { origin_url } => load(&cli.config).and_then(|c| doctor(&c, origin_url)),
        Command::Drill {
            repo,
            from,
            origin_url,
            timeout,
        } => load(&cli.config).and_then(|c| {
            drill(
                &cli.config,
                &c,
                &repo,
                from.as_deref(),
                origin_url,
                Duration::from_secs(timeout),
            )
        }),
        Command::Audit => load(&cli.config).and_then(|c| audit(&c)),
        Command::RepoFile {
            repo,
            origin_url,
            gpgkey,
        } => load(&cli.config).and_then(|c| {
            let base = origin_url.or(c.public_url.clone()).ok_or_else(|| {
                anyhow::anyhow!(
                    "no origin URL: pass --origin-url or set public_url in {}",
                    cli.config.display()
                )
            })?;
            print!("{}", repo_file(&repo, &base, &gpgkey)?);
            Ok(ExitCode::SUCCESS)
        }),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!(
                "hotpush-origin: error: {}",
                hotpush_shared::daemon::describe_error(e.as_ref())
            );
            if e.downcast_ref::<config::ConfigError>().is_some() {
                ExitCode::from(EXIT_CONFIG)
            } else if e.downcast_ref::<Unavailable>().is_some() {
                ExitCode::from(EXIT_UNAVAILABLE)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("cannot reach the origin daemon at {0}: is `hotpush-origin serve` running? ({1})")]
struct Unavailable(String, String);

fn load(path: &Path) -> anyhow::Result<Config> {
    Ok(Config::load(path)?)
}

fn init(dir: &Path, http: &str) -> anyhow::Result<ExitCode> {
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
    std::fs::write(&config_path, config::template(http))?;
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

#[tokio::main]
async fn serve(config: Config) -> anyhow::Result<ExitCode> {
    std::fs::create_dir_all(&config.data_dir)?;
    let db = Db::open(&config.data_dir)?;
    let store = BlobStore::open(&config.data_dir)?;
    let key = SigningKey::load(&config.signing_key)?;
    let identity = Identity::load(&config.tls_cert, &config.tls_key)?;
    let origin_id = identity.id()?.to_string();
    let origin = Origin::new(config.clone(), db, store, key, origin_id.clone());
    for repo in origin.db.repos()? {
        if let Some(v) = origin.db.latest(&repo)? {
            origin.announce(&repo, v.version);
        }
    }

    // The control socket: its permissions decide who may publish.
    let socket = &config.control_socket;
    if socket.exists() {
        if std::os::unix::net::UnixStream::connect(socket).is_ok() {
            bail!(
                "{} is in use: another origin daemon is running",
                socket.display()
            );
        }
        std::fs::remove_file(socket)?;
    }
    let listener = tokio::net::UnixListener::bind(socket)
        .with_context(|| format!("binding {}", socket.display()))?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o660))?;
    }
    let control = pb::control_server::ControlServer::new(crate::control::ControlService {
        origin: origin.clone(),
    });
    let incoming = tokio_stream::wrappers::UnixListenerStream::new(listener);
    tokio::spawn(async move {
        if let Err(e) = tonic::transport::Server::builder()
            .add_service(control)
            .serve_with_incoming(incoming)
            .await
        {
            tracing::error!(error = %e, "control socket failed");
        }
    });
    if !config.control_listen.is_empty() {
        // Remote publishers: the same service, over mutual TLS with pinned ids.
        let ids = config.publishers.iter().map(|p| p.id);
        let tls = hotpush_shared::identity::server_config(
            &identity,
            hotpush_shared::identity::PinnedVerifier::new(ids, "publisher"),
        )?;
        let listeners = config
            .control_listen
            .iter()
            .map(|a| hotpush_shared::transport::bind(*a).with_context(|| format!("binding {a}")))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let incoming = hotpush_shared::transport::tls_incoming(
            listeners,
            tokio_rustls::TlsAcceptor::from(tls),
        );
        let control = pb::control_server::ControlServer::new(crate::control::ControlService {
            origin: origin.clone(),
        });
        tokio::spawn(async move {
            if let Err(e) = tonic::transport::Server::builder()
                .add_service(control)
                .serve_with_incoming(incoming)
                .await
            {
                tracing::error!(error = %e, "control listener failed");
            }
        });
        tracing::info!(listen = ?config.control_listen, publishers = config.publishers.len(), "remote publishing enabled");
    }
    if !config.http_listen.is_empty() {
        let (o, addrs) = (origin.clone(), config.http_listen.clone());
        tokio::spawn(async move {
            if let Err(e) = crate::web::serve(o, addrs).await {
                tracing::error!(error = %e, "HTTP server failed");
            }
        });
    }
    tokio::spawn(crate::reconcile::supervise(origin.clone(), identity));
    tracing::info!(%origin_id, control = %socket.display(), http = ?config.http_listen, "hotpush-origin ready");
    hotpush_shared::daemon::shutdown_signal().await;
    let _ = std::fs::remove_file(socket);
    tracing::info!("hotpush-origin stopped");
    Ok(ExitCode::SUCCESS)
}

fn agent(config: &Config, cmd: AgentCommand) -> anyhow::Result<ExitCode> {
    let db = Db::open(&config.data_dir)?;
    match cmd {
        AgentCommand::Add {
            name,
            endpoint,
            id,
            public_url,
            weight,
            repos,
        } => {
            let peer_id: hotpush_shared::identity::PeerId = id.parse()?;
            if !endpoint.starts_with("https://") {
                bail!(
                    "--endpoint must be https://host:port (pushes always use mutual TLS), not {endpoint:?}"
                );
            }
            if !(public_url.starts_with("http://") || public_url.starts_with("https://")) {
                bail!("--public-url must be an http:// or https:// URL, not {public_url:?}");
            }
            for r in &repos {
                hotpush_shared::manifest::RepoName::new(r)?;
            }
            db.add_agent(&AgentRecord {
                name: name.clone(),
                endpoint,
                peer_id: peer_id.to_string(),
                public_url,
                weight,
                repos,
            })?;
            println!("added agent {name}; a running origin starts pushing to it within a second");
        }
        AgentCommand::List => {
            for a in db.agents()? {
                let repos = if a.repos.is_empty() {
                    "all repos".to_owned()
                } else {
                    a.repos.join(" ")
                };
                println!(
                    "{}\t{}\t{}\tweight {}\t{}\tid {}",
                    a.name, a.endpoint, a.public_url, a.weight, repos, a.peer_id
                );
            }
        }
        AgentCommand::Remove { name } => {
            db.remove_agent(&name)?;
            println!("removed agent {name}; it leaves the metalink now");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Connects to the control service: over mutual TLS with `--remote`, else
/// through the local socket named in the config.
async fn control_client(
    config_path: &Path,
    remote: &Remote,
) -> anyhow::Result<ControlClient<tonic::transport::Channel>> {
    if let (Some(url), Some(origin_id), Some(dir)) =
        (&remote.remote, &remote.origin_id, &remote.identity)
    {
        let identity = Identity::load(&dir.join("cert.pem"), &dir.join("key.pem"))?;
        let pinned = hotpush_shared::identity::PinnedVerifier::new([origin_id.parse()?], "origin");
        let tls = hotpush_shared::identity::client_config(&identity, pinned)?;
        let channel = hotpush_shared::transport::tls_channel(url, tls)?;
        return Ok(ControlClient::new(channel));
    }
    let config = load(config_path)?;
    let path = config.control_socket.clone();
    let channel = hotpush_shared::transport::unix_channel(path.clone())
        .await
        .map_err(|e| {
            let mut why = e.to_string();
            let mut source = std::error::Error::source(&e);
            while let Some(s) = source {
                why = format!("{why}: {s}");
                source = s.source();
            }
            if why.contains("Permission denied") {
                why.push_str("; whoever may write to the control socket may publish: ask to be added to its group");
            }
            Unavailable(path.display().to_string(), why)
        })?;
    Ok(ControlClient::new(channel))
}

/// One agent's outcome, as `publish --json` reports it.
#[derive(Default, serde::Serialize)]
struct AgentOutcome {
    state: &'static str,
    bytes_sent: u64,
    elapsed_ms: u64,
    reason: String,
}

#[tokio::main]
async fn publish(
    config_path: &Path,
    remote: &Remote,
    repo: &str,
    from: &Path,
    wait: &str,
    timeout: Duration,
    json: bool,
) -> anyhow::Result<ExitCode> {
    publish_and_wait(config_path, remote, repo, Some(from), wait, timeout, json).await
}

/// Publishes `from` (or, with `None`, the latest content again), prints
/// progress, and waits for the `--wait` condition.
async fn publish_and_wait(
    config_path: &Path,
    remote: &Remote,
    repo: &str,
    from: Option<&Path>,
    wait: &str,
    timeout: Duration,
    json: bool,
) -> anyhow::Result<ExitCode> {
    // A remote publish names a directory on the origin host; a local one is resolved here.
    let from = match from {
        None => PathBuf::new(),
        Some(from) if remote.remote.is_some() => {
            if !from.is_absolute() {
                bail!("--from must be an absolute path on the origin host with --remote");
            }
            from.to_path_buf()
        }
        Some(from) => {
            std::fs::canonicalize(from).with_context(|| format!("--from {}", from.display()))?
        }
    };
    let mut client = control_client(config_path, remote).await?;
    let request = pb::PublishRequest {
        repo: repo.to_owned(),
        from_dir: from.display().to_string(),
    };
    let mut events = match client.publish(request).await {
        Ok(r) => r.into_inner(),
        Err(status) => bail!("publish refused: {}", status.message()),
    };
    let deadline = tokio::time::Instant::now() + timeout;
    let mut outcomes: BTreeMap<String, AgentOutcome> = BTreeMap::new();
    let mut published: Option<pb::Published> = None;
    let mut target = usize::MAX;
    let mut last_progress: BTreeMap<String, tokio::time::Instant> = BTreeMap::new();
    loop {
        let acked = outcomes.values().filter(|o| o.state == "live").count();
        if acked >= target {
            break;
        }
        let next = tokio::time::timeout_at(deadline, events.message()).await;
        let event = match next {
            Err(_) => break,
            Ok(Err(status)) => bail!("origin daemon: {}", status.message()),
            Ok(Ok(None)) => break,
            Ok(Ok(Some(pb::PublishEvent { event: Some(e) }))) => e,
            Ok(Ok(Some(_))) => continue,
        };
        match event {
            Ev::Published(p) => {
                target = wait_target(wait, p.agents.len())?;
                for a in &p.agents {
                    outcomes.insert(
                        a.clone(),
                        AgentOutcome {
                            state: "pending",
                            ..Default::default()
                        },
                    );
                }
                if !json {
                    println!(
                        "published {} version {} (manifest {}, {} files, {} bytes, {} new blobs{}{})",
                        p.repo,
                        p.version,
                        &hex::encode(&p.manifest_digest)[..16],
                        p.entries,
                        p.total_bytes,
                        p.new_blobs,
                        if p.unchanged {
                            ", same content as the previous version"
                        } else {
                            ""
                        },
                        if p.unreferenced_files > 0 {
                            format!(
                                "; not published: {} unreferenced files",
                                p.unreferenced_files
                            )
                        } else {
                            String::new()
                        }
                    );
                    println!(
                        "pushing to {} agent(s): {}; waiting for {wait} ({target})",
                        p.agents.len(),
                        p.agents.join(", ")
                    );
                    if target > p.agents.len() {
                        println!(
                            "warning: --wait {wait} asks for more agents than carry this repo"
                        );
                    }
                }
                published = Some(p);
            }
            Ev::Progress(p) => {
                let o = outcomes.entry(p.agent.clone()).or_default();
                // A retry after a failure stays "failed" (with its reason) until it acks.
                if o.state == "pending" || o.state == "pushing" {
                    o.state = "pushing";
                    o.bytes_sent = p.bytes_sent;
                }
                // One line per agent per second at most: readable in a terminal and a log.
                let due = last_progress
                    .get(&p.agent)
                    .is_none_or(|t| t.elapsed() >= Duration::from_secs(1));
                if !json
                    && p.bytes_wanted > 0
                    && (p.phase == "committing" || (p.phase == "sending" && due))
                {
                    let verb = if p.phase == "committing" {
                        "sent, swapping"
                    } else {
                        "sending"
                    };
                    println!(
                        "  {}: {} of {} bytes {verb}",
                        p.agent, p.bytes_sent, p.bytes_wanted
                    );
                    last_progress.insert(p.agent.clone(), tokio::time::Instant::now());
                }
            }
            Ev::Acked(a) => {
                let o = outcomes.entry(a.agent.clone()).or_default();
                *o = AgentOutcome {
                    state: "live",
                    bytes_sent: a.bytes_sent,
                    elapsed_ms: a.elapsed_ms,
                    reason: String::new(),
                };
                if !json {
                    println!(
                        "  {}: LIVE in {:.1} s ({} bytes sent)",
                        a.agent,
                        a.elapsed_ms as f64 / 1000.0,
                        a.bytes_sent
                    );
                }
            }
            Ev::Failed(f) => {
                let o = outcomes.entry(f.agent.clone()).or_default();
                o.state = "failed";
                o.reason = f.reason.clone();
                if !json {
                    println!(
                        "  {}: FAILED: {}{}",
                        f.agent,
                        f.reason,
                        if f.will_retry { " (retrying)" } else { "" }
                    );
                }
            }
        }
    }
    let Some(p) = published else {
        bail!("the origin daemon closed the stream before confirming the publish")
    };
    let live = outcomes.values().filter(|o| o.state == "live").count();
    let ok = live >= target;
    if json {
        let summary = serde_json::json!({
            "repo": p.repo,
            "version": p.version,
            "manifest_digest": hex::encode(&p.manifest_digest),
            "entries": p.entries,
            "total_bytes": p.total_bytes,
            "new_blobs": p.new_blobs,
            "unreferenced_files": p.unreferenced_files,
            "wait": wait,
            "needed": target,
            "live": live,
            "ok": ok,
            "agents": outcomes,
        });
        println!("{summary}");
    } else if ok {
        println!(
            "OK: {live}/{} agent(s) live with version {} (needed {target})",
            outcomes.len(),
            p.version
        );
    } else {
        println!(
            "NOT LIVE: {live}/{} agent(s) acked version {} within {}s (needed {target}):",
            outcomes.len(),
            p.version,
            timeout.as_secs()
        );
        for (name, o) in outcomes.iter().filter(|(_, o)| o.state != "live") {
            let reason = if o.reason.is_empty() {
                "no answer yet"
            } else {
                &o.reason
            };
            println!("  {name}: {} — {reason}", o.state);
        }
        println!(
            "the origin keeps retrying in the background; `hotpush-origin status` shows progress"
        );
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_NOT_LIVE)
    })
}

#[tokio::main]
async fn status(config_path: &Path, remote: &Remote, json: bool) -> anyhow::Result<ExitCode> {
    let mut client = control_client(config_path, remote).await?;
    let s = client
        .status(pb::StatusRequest {})
        .await
        .map_err(|e| anyhow::anyhow!(e.message().to_owned()))?
        .into_inner();
    if json {
        let v = serde_json::json!({
            "origin_id": s.origin_id,
            "repos": s.repos.iter().map(|r| serde_json::json!({"repo": r.repo, "latest_version": r.latest_version, "metalink_version": r.metalink_version})).collect::<Vec<_>>(),
            "agents": s.agents.iter().map(|a| serde_json::json!({"name": a.name, "endpoint": a.endpoint, "last_error": a.last_error,
                "acked": a.acked.iter().map(|k| serde_json::json!({"repo": k.repo, "version": k.version})).collect::<Vec<_>>()})).collect::<Vec<_>>(),
        });
        println!("{v}");
        return Ok(ExitCode::SUCCESS);
    }
    println!("origin {}", s.origin_id);
    for r in &s.repos {
        println!(
            "repo {}: latest version {}, metalink serves version {}",
            r.repo, r.latest_version, r.metalink_version
        );
    }
    for a in &s.agents {
        let acked: Vec<String> = a
            .acked
            .iter()
            .map(|k| format!("{} v{}", k.repo, k.version))
            .collect();
        println!(
            "agent {} ({}): {}",
            a.name,
            a.endpoint,
            if acked.is_empty() {
                "nothing acked".into()
            } else {
                acked.join(", ")
            }
        );
        if !a.last_error.is_empty() {
            println!("  last error: {}", a.last_error);
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Where clients reach this origin's HTTP: `public_url`, else the first
/// `http_listen` address (an unspecified address becomes loopback).
fn origin_base_url(config: &Config) -> Option<String> {
    if let Some(url) = &config.public_url {
        return Some(url.trim_end_matches('/').to_owned());
    }
    let addr = *config.http_listen.first()?;
    let ip = match addr.ip() {
        std::net::IpAddr::V6(ip) if ip.is_unspecified() => {
            std::net::IpAddr::V6(std::net::Ipv6Addr::LOCALHOST)
        }
        std::net::IpAddr::V4(ip) if ip.is_unspecified() => {
            std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST)
        }
        ip => ip,
    };
    Some(format!(
        "http://{}",
        std::net::SocketAddr::new(ip, addr.port())
    ))
}

#[tokio::main]
async fn doctor(config: &Config, origin_url: Option<String>) -> anyhow::Result<ExitCode> {
    let base = origin_url
        .map(|u| u.trim_end_matches('/').to_owned())
        .or_else(|| origin_base_url(config));
    let findings = crate::doctor::examine(config, base).await;
    for f in &findings {
        println!("{}  {}", f.level.label(), f.what);
    }
    let worst = findings
        .iter()
        .map(|f| f.level)
        .max()
        .unwrap_or(crate::doctor::Level::Ok);
    println!(
        "doctor: {}",
        match worst {
            crate::doctor::Level::Ok => "all good",
            crate::doctor::Level::Warn => "usable, with warnings",
            crate::doctor::Level::Fail => "NOT READY: fix the FAIL lines",
        }
    );
    Ok(if worst == crate::doctor::Level::Fail {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

#[tokio::main]
async fn drill(
    config_path: &Path,
    config: &Config,
    repo: &str,
    from: Option<&Path>,
    origin_url: Option<String>,
    timeout: Duration,
) -> anyhow::Result<ExitCode> {
    let base = origin_url
        .map(|u| u.trim_end_matches('/').to_owned())
        .or_else(|| origin_base_url(config))
        .ok_or_else(|| {
            anyhow::anyhow!("no origin URL: pass --origin-url or set public_url or http_listen")
        })?;
    let (name, arch) = repo.rsplit_once('/').unwrap_or((repo, ""));
    let metalink_url = format!("{base}/metalink?repo={name}&arch={arch}");
    println!(
        "drill 1/2: publish {repo}{}",
        if from.is_none() {
            " (latest content, signed again)"
        } else {
            ""
        }
    );
    let published = publish_and_wait(
        config_path,
        &Remote::default(),
        repo,
        from,
        "all",
        timeout,
        false,
    )
    .await?;
    println!("drill 2/2: fetch {metalink_url} and everything dnf would from every mirror it lists");
    let http = crate::drill::client()?;
    let (file, reports) = crate::drill::check(&http, &metalink_url, &config.limits).await?;
    println!(
        "  metalink: repomd.xml sha256 {}…, {} mirror(s)",
        &file.sha256[..16],
        reports.len()
    );
    let mut failed = published != ExitCode::SUCCESS || reports.is_empty();
    for r in &reports {
        match &r.result {
            Ok(s) => println!(
                "  PASS  {}  ({} metadata files, {} packages, {} bytes verified)",
                r.url, s.metadata_files, s.packages, s.bytes
            ),
            Err(why) => {
                failed = true;
                println!("  FAIL  {}  {why}", r.url);
            }
        }
    }
    if reports.is_empty() {
        println!("  FAIL  the metalink lists no mirror");
    }
    println!("drill {}", if failed { "FAILED" } else { "PASSED" });
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

fn publisher_init(dir: &Path) -> anyhow::Result<ExitCode> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let identity = Identity::generate("hotpush-publisher")?;
    identity.save(&dir.join("cert.pem"), &dir.join("key.pem"))?;
    println!("{}", identity.id()?);
    eprintln!(
        "created {}/cert.pem and key.pem\nthe line above is this publisher's id: the origin's operator adds it as a [[publisher]] in origin.toml",
        dir.display()
    );
    Ok(ExitCode::SUCCESS)
}

fn audit(config: &Config) -> anyhow::Result<ExitCode> {
    let db = Db::open(&config.data_dir)?;
    // Tab-separated, one line per event, oldest first: easy to read and to grep.
    println!("#\ttime\twho\taction\trepo\tversion\tmanifest\tdetail");
    for r in db.audit_log()? {
        let at = std::time::UNIX_EPOCH + Duration::from_secs(r.at_unix.max(0) as u64);
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

/// The `.repo` stanza, with comments that say why each value is what it is.
fn repo_file(repo: &str, origin_url: &str, gpgkey: &str) -> anyhow::Result<String> {
    hotpush_shared::manifest::RepoName::new(repo)?;
    let (name, arch) = repo.rsplit_once('/').unwrap_or((repo, ""));
    let id = format!("hotpush-{}", name.replace('/', "-"));
    let mut metalink = format!("{}/metalink?repo={name}", origin_url.trim_end_matches('/'));
    if !arch.is_empty() {
        metalink.push_str("&arch=");
        metalink.push_str(arch);
    }
    Ok(format!(
        r#"# Urgent security fixes, pushed by hotpush ({repo}).
# Usually empty: it carries packages only during an emergency, and an empty
# repo costs each client about one kilobyte per refresh.
[{id}]
name=Urgent security fixes ({name})
# The metalink lists only mirrors that already serve the newest snapshot.
metalink={metalink}
enabled=1
type=rpm
# Packages are signed with the distribution's key, as in every other repo.
gpgcheck=1
gpgkey={gpgkey}
# Optional: hotpush swaps repomd.xml and repomd.xml.asc together on every mirror.
repo_gpgcheck=0
# Short, so a fix arrives within the hour: a refresh that finds nothing new
# costs one metalink GET (dnf "revives" its cache when the hashes match).
metadata_expire=1h
# An outage of this side repo must never block ordinary dnf use.
skip_if_unavailable=True
"#
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repo_file_stanza() {
        let text = repo_file(
            "f41-critical/x86_64",
            "https://origin.example.org/",
            "file:///k",
        )
        .unwrap();
        assert!(text.contains("[hotpush-f41-critical]\n"), "{text}");
        assert!(text.contains(
            "metalink=https://origin.example.org/metalink?repo=f41-critical&arch=x86_64\n"
        ));
        for line in [
            "gpgcheck=1",
            "metadata_expire=1h",
            "skip_if_unavailable=True",
            "gpgkey=file:///k",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line}");
        }
        assert!(repo_file("bad name", "https://o/", "k").is_err());
    }

    #[test]
    fn wait_targets() {
        assert_eq!(wait_target("all", 3).unwrap(), 3);
        assert_eq!(wait_target("quorum", 3).unwrap(), 2);
        assert_eq!(wait_target("quorum", 4).unwrap(), 3);
        assert_eq!(wait_target("2", 3).unwrap(), 2);
        assert!(wait_target("most", 3).is_err());
    }
}
