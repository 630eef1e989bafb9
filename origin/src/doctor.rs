//! `hotpush-origin doctor`: is this origin ready for an emergency? Checks
//! the keys, the daemon, every partner (reachable over pinned mTLS, right
//! id, clock, disk, repos) and every repo's metalink, and says what to fix.

use std::time::Duration;

use hotpush_proto as pb;
use hotpush_shared::identity::Identity;
use hotpush_shared::sign::SigningKey;

use hotpush_shared::clock::now_unix;
use hotpush_shared::limits::ConnLimits;
use hotpush_shared::manifest::RepoName;
use hotpush_shared::push::reconciler::connect;
use hotpush_shared::transport::{describe_status, explain_connect_error};
use hotpush_shared::url::MetalinkQuery;

use crate::config::Config;
use crate::db::{AgentRecord, Db};

/// Clock difference above which manifests may look expired or not yet valid.
const MAX_CLOCK_SKEW_SECS: i64 = 60;
/// Free disk below which a partner may refuse the next push.
const LOW_DISK_BYTES: u64 = 1 << 30;

pub use hotpush_shared::doctor::{Finding, Level};
use hotpush_shared::doctor::{fail, ok, warn};

/// Runs every check; `metalink_base` is where clients reach this origin.
pub async fn examine(config: &Config, metalink_base: Option<String>) -> Vec<Finding> {
    let mut out = Vec::new();
    match SigningKey::load(&config.signing_key) {
        Ok(k) => out.push(ok(format!(
            "signing key loads; agents must trust {}",
            k.public_hex()
        ))),
        Err(e) => out.push(fail(format!("signing key: {e}"))),
    }
    let identity = match Identity::load(&config.tls_cert, &config.tls_key)
        .and_then(|i| i.id().map(|id| (i, id)))
    {
        Ok((i, id)) => {
            out.push(ok(format!(
                "TLS identity loads; agents must pin origin id {id}"
            )));
            Some(i)
        }
        Err(e) => {
            out.push(fail(format!("TLS identity: {e}")));
            None
        }
    };
    let db = match Db::open(&config.data_dir) {
        Ok(db) => db,
        Err(e) => {
            out.push(fail(format!("state database: {e}")));
            return out;
        }
    };
    match crate::client::connect_local(&config.control_socket).await {
        Ok(mut control) => {
            out.push(ok(format!(
                "origin daemon answers on {}",
                config.control_socket.display()
            )));
            match crate::client::status(&mut control).await {
                Ok(report) => out.push(descriptors(report.descriptors)),
                Err(e) => out.push(warn(format!("origin daemon status: {e}"))),
            }
        }
        Err(e) => out.push(fail(format!(
            "{} (start `hotpush-origin serve`)",
            hotpush_shared::daemon::describe_error(&e)
        ))),
    }
    let agents = db.agents().unwrap_or_default();
    if agents.is_empty() {
        out.push(fail(
            "no agents registered (`hotpush-origin agent add`)".into(),
        ));
    }
    let repos = db.repos().unwrap_or_default();
    if let Some(identity) = &identity {
        for agent in &agents {
            out.extend(check_agent(identity, agent, &repos).await);
        }
    }
    if let Some(base) = metalink_base {
        for repo in &repos {
            out.push(check_metalink(&base, repo).await);
        }
    }
    out
}

async fn check_agent(identity: &Identity, agent: &AgentRecord, repos: &[RepoName]) -> Vec<Finding> {
    let name = agent.name();
    let endpoint = &agent.target.endpoint;
    let channel = match connect(identity, &agent.target, &ConnLimits::default()) {
        Ok(c) => c,
        Err(e) => return vec![fail(format!("agent {name}: bad record: {e}"))],
    };
    let mut client = pb::agent_client::AgentClient::new(channel);
    let status =
        tokio::time::timeout(Duration::from_secs(10), client.status(pb::StatusRequest {})).await;
    let s = match status {
        Err(_) => {
            return vec![fail(format!(
                "agent {name} ({endpoint}): no answer in 10 s"
            ))];
        }
        Ok(Err(e)) => {
            let why = explain_connect_error(describe_status(&e));
            return vec![fail(format!("agent {name} ({endpoint}): {why}"))];
        }
        Ok(Ok(r)) => r.into_inner(),
    };
    let mut out = vec![ok(format!(
        "agent {name}: reachable over mTLS, id {}…, version {}",
        &s.agent_id[..16.min(s.agent_id.len())],
        s.version
    ))];
    let skew = s.now_unix - now_unix();
    if skew.abs() > MAX_CLOCK_SKEW_SECS {
        out.push(warn(format!(
            "agent {name}: clock is {skew:+} s off: manifests may be judged expired; run NTP"
        )));
    }
    if s.disk_free_bytes < LOW_DISK_BYTES {
        out.push(warn(format!(
            "agent {name}: only {} MB free on its data disk",
            s.disk_free_bytes >> 20
        )));
    }
    let carried: Vec<&str> = s.repos.iter().map(|r| r.repo.as_str()).collect();
    for repo in repos.iter().filter(|r| agent.carries(r)) {
        if !carried.contains(&repo.as_str()) {
            out.push(fail(format!("agent {name}: registered for {repo}, but its config does not carry it (add it to repos=)")));
        }
    }
    out
}

/// The daemon's descriptor limit against its connection caps.
fn descriptors(d: crate::status::Descriptors) -> Finding {
    if d.limit >= d.needed {
        ok(format!(
            "descriptor limit {} covers the connection caps ({} needed)",
            d.limit, d.needed
        ))
    } else {
        warn(format!(
            "descriptor limit {} is below the {} the [connections] caps need: the daemon serves fewer \
             connections than configured; set LimitNOFILE=65536 (deploy/systemd) or lower the caps",
            d.limit, d.needed
        ))
    }
}

async fn check_metalink(base: &str, repo: &RepoName) -> Finding {
    let url = MetalinkQuery::new(repo.clone()).url(base);
    let fetched = async {
        let http = crate::drill::client().map_err(|e| e.to_string())?;
        let body = http
            .get(&url)
            .send()
            .await
            .map_err(|e| e.to_string())?
            .text()
            .await
            .map_err(|e| e.to_string())?;
        hotpush_shared::metalink::parse_metalink(&body).map_err(|e| e.to_string())
    };
    match fetched.await {
        Ok(m) if !m.urls.is_empty() => ok(format!(
            "metalink for {repo} lists {} mirror(s)",
            m.urls.len()
        )),
        Ok(_) => fail(format!("metalink for {repo} lists no mirror")),
        Err(e) => fail(format!("metalink for {repo} ({url}): {e}")),
    }
}
