//! `hotpush-origin agent add|list|remove`: the partners the origin pushes to.

use std::path::Path;
use std::process::ExitCode;

use anyhow::bail;
use hotpush_shared::manifest::RepoName;
use hotpush_shared::name::AgentName;
use hotpush_shared::push::Target;
use hotpush_shared::url::PublicUrl;

use crate::db::{AgentRecord, Db};

/// Manage partner agents.
#[derive(clap::Subcommand)]
pub enum Command {
    /// Register a partner agent.
    #[command(
        after_help = "Example:\n  hotpush-origin agent add mirror-a --endpoint https://[2001:db8::10]:7443 \\\n    \
                            --id <id printed by hotpush-agent init> \\\n    \
                            --public-url https://mirror-a.example.org/hotpush/ --weight 100"
    )]
    Add {
        /// A name for it: letters, digits, '.', '_', '-' (appears in logs and metrics).
        name: AgentName,
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
    #[command(after_help = "Example:\n  hotpush-origin -c /etc/hotpush/origin.toml agent list")]
    List,
    /// Unregister an agent (it leaves the metalink at once).
    #[command(after_help = "Example:\n  hotpush-origin agent remove mirror-a")]
    Remove { name: String },
}

pub fn run(config_path: &Path, cmd: Command) -> anyhow::Result<ExitCode> {
    let config = super::load(config_path)?;
    let db = Db::open(&config.data_dir)?;
    match cmd {
        Command::Add {
            name,
            endpoint,
            id,
            public_url,
            weight,
            repos,
        } => {
            if !endpoint.starts_with("https://") {
                bail!(
                    "--endpoint must be https://host:port (pushes always use mutual TLS), not {endpoint:?}"
                );
            }
            let target = Target {
                name: name.clone(),
                endpoint,
                peer_id: id.parse()?,
                public_url: PublicUrl::parse(&public_url)?,
                repos: repos
                    .iter()
                    .map(|r| RepoName::new(r))
                    .collect::<Result<_, _>>()?,
            };
            let detail = format!(
                "{} {} id {} public_url {} weight {weight} repos [{}]",
                target.name,
                target.endpoint,
                target.peer_id,
                target.public_url,
                repos.join(" ")
            );
            db.add_agent(&AgentRecord { target, weight })?;
            audit(&db, "agent-add", &detail)?;
            println!("added agent {name}; a running origin starts pushing to it within a second");
        }
        Command::List => {
            for a in db.agents()? {
                let t = &a.target;
                let repos = if t.repos.is_empty() {
                    "all repos".to_owned()
                } else {
                    t.repos
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(" ")
                };
                println!(
                    "{}\t{}\t{}\tweight {}\t{}\tid {}",
                    t.name, t.endpoint, t.public_url, a.weight, repos, t.peer_id
                );
            }
        }
        Command::Remove { name } => {
            db.remove_agent(&name)?;
            audit(&db, "agent-remove", &name)?;
            println!("removed agent {name}; it leaves the metalink now");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Who may receive pushes is as sensitive as who may publish: changes to
/// the partner list go into the audit log under the local user.
fn audit(db: &Db, action: &str, detail: &str) -> anyhow::Result<()> {
    let who = crate::control::local_user(nix::unistd::getuid().as_raw());
    db.audit(&who, action, "", 0, "", detail)?;
    Ok(())
}
