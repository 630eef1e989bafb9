//! `hotpush-agent doctor`: is this mirror ready for an emergency? Checks
//! the config's trust (origin id and key pinned), the TLS identity, that
//! the data and serve directories are writable with room to spare, that
//! the public URL serves exactly what this agent installed (as clients and
//! the origin's crawler see it), the clock against the installed manifests
//! and the front end, and the descriptor limit against the connection caps.

use std::time::{Duration, SystemTime};

use hotpush_shared::Sha256Digest;
use hotpush_shared::clock::{now_unix, unix_of};
use hotpush_shared::doctor::{Finding, fail, ok, warn};
use hotpush_shared::identity::Identity;

use crate::config::Config;
use crate::daemon::open_tree;

/// Clock difference above which manifests may look expired or not yet valid.
const MAX_CLOCK_SKEW_SECS: i64 = 60;

/// Creates and removes a file in `dir`: can the agent write there?
fn writable(dir: &std::path::Path) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let probe = dir.join(".hotpush-doctor");
    std::fs::write(&probe, b"").map_err(|e| format!("{}: {e}", dir.display()))?;
    std::fs::remove_file(&probe).map_err(|e| format!("{}: {e}", dir.display()))
}

/// Runs every check.
pub async fn examine(config: &Config) -> Vec<Finding> {
    let mut out = Vec::new();
    match Identity::load(&config.tls_cert, &config.tls_key).and_then(|i| i.id()) {
        Ok(id) => out.push(ok(format!(
            "TLS identity loads; the origin must pin this agent's id {id}"
        ))),
        Err(e) => out.push(fail(format!(
            "TLS identity ({}, {}): {e}",
            config.tls_cert.display(),
            config.tls_key.display()
        ))),
    }
    out.push(ok(format!(
        "trusts {} origin id(s) for connections and {} signing key(s) for snapshots",
        config.origin_ids.len(),
        config.origin_keys.len()
    )));
    for (what, dir) in [
        ("data_dir", &config.data_dir),
        ("serve_root", &config.serve_root),
    ] {
        match writable(dir) {
            Ok(()) => out.push(ok(format!("{what} {} is writable", dir.display()))),
            Err(e) => out.push(fail(format!("{what} is not writable: {e}"))),
        }
    }
    match hotpush_shared::store::free_bytes(&config.data_dir) {
        Some(free) if free < config.min_free_bytes.saturating_mul(4) => out.push(warn(format!(
            "only {} MiB free where blobs go: pushes are refused below min_free_bytes ({} MiB)",
            free >> 20,
            config.min_free_bytes >> 20
        ))),
        Some(free) => out.push(ok(format!("{} MiB free where blobs go", free >> 20))),
        None => out.push(warn("cannot tell the free disk space".into())),
    }
    let limit = hotpush_shared::daemon::raise_fd_limit();
    let needed = config
        .connections
        .descriptors_needed(config.origin_ids.len());
    if limit < needed {
        out.push(warn(format!(
            "the descriptor limit is {limit}, the [connections] caps need {needed}: \
             serve will lower the caps; raise LimitNOFILE (deploy/systemd/hotpush-agent.service)"
        )));
    } else {
        out.push(ok(format!(
            "descriptor limit {limit} covers the connection caps ({needed})"
        )));
    }
    out.extend(public_url(config).await);
    out
}

/// What clients get through the public URL, per repo, and the clock.
async fn public_url(config: &Config) -> Vec<Finding> {
    let mut out = Vec::new();
    let tree = match open_tree(config) {
        Ok(t) => t,
        Err(e) => return vec![fail(format!("opening the state: {e}"))],
    };
    let http = match crate::selfcheck::client() {
        Ok(c) => c,
        Err(e) => return vec![fail(format!("HTTP client: {e}"))],
    };
    for repo in &config.repos {
        let live = match tree.live(repo) {
            Ok(l) => l,
            Err(e) => {
                out.push(fail(format!("{repo}: reading what is installed: {e}")));
                continue;
            }
        };
        let Some(url) = config.public_repomd_url(repo) else {
            out.push(fail(format!(
                "{repo}: no public_url and no http_listen: clients cannot reach this mirror"
            )));
            continue;
        };
        let Some(live) = live else {
            out.push(warn(format!(
                "{repo}: nothing installed yet (the origin pushes on its next publish or drill)"
            )));
            continue;
        };
        let now = now_unix();
        let m = &live.snapshot.manifest;
        if m.created_unix > now + MAX_CLOCK_SKEW_SECS {
            out.push(fail(format!(
                "{repo}: version {} was signed {} s in this machine's future: its clock is behind",
                m.version,
                m.created_unix - now
            )));
        }
        if m.expires_unix < now {
            out.push(warn(format!(
                "{repo}: the installed manifest expired {} h ago (the origin's next publish or drill renews it)",
                (now - m.expires_unix) / 3600
            )));
        }
        let expected = live.snapshot.repomd().map(|e| e.sha256);
        let response = http
            .get(&url)
            .header("Cache-Control", "no-cache")
            .timeout(Duration::from_secs(10))
            .send()
            .await;
        match response {
            Err(e) => out.push(fail(format!(
                "{repo}: {url} unreachable: {e} (the origin's crawler keeps this mirror out of the metalink)"
            ))),
            Ok(r) => {
                let date = r
                    .headers()
                    .get(reqwest::header::DATE)
                    .and_then(|d| d.to_str().ok())
                    .and_then(hotpush_shared::clock::parse_http_date);
                let status = r.status();
                let body = r.bytes().await.unwrap_or_default();
                if !status.is_success() {
                    out.push(fail(format!("{repo}: {url} answers HTTP {status}")));
                } else if Some(Sha256Digest::of(&body)) == expected {
                    out.push(ok(format!(
                        "{repo}: {url} serves version {}'s repomd.xml",
                        m.version
                    )));
                } else {
                    out.push(fail(format!(
                        "{repo}: {url} serves another repomd.xml than version {} installed: \
                         a front-end cache or a wrong alias (see docs/PARTNERS.md)",
                        m.version
                    )));
                }
                if let Some(date) = date {
                    out.push(clock(unix_of(date), unix_of(SystemTime::now())));
                }
            }
        }
    }
    out
}

fn clock(front_end: i64, here: i64) -> Finding {
    let skew = front_end - here;
    if skew.abs() > MAX_CLOCK_SKEW_SECS {
        warn(format!(
            "the front end's clock and this machine's differ by {skew} s: keep both in sync (NTP)"
        ))
    } else {
        ok(format!(
            "clock agrees with the front end (within {} s)",
            skew.abs()
        ))
    }
}
