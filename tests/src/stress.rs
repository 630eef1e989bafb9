//! The consistency stress run: real dnf clients loop `--refresh makecache`
//! and `distro-sync` through the metalink while versions of a repo are
//! published back to back, and every client run, mirror flip and metalink
//! change is recorded on the wall clock, so that a test can count failures
//! and the runs that overlapped a flip (docs/PROTOCOL.md, "The flip").
//!
//! The network is three agents — one over IPv6, one behind a real nginx
//! front end with `deploy/nginx-hotpush.conf` — and, when asked, a caching
//! nginx in front of the origin for some clients, holding the metalink for
//! its `max-age` like a site proxy. dnf runs under `nice` so that five
//! clients on a small machine do not starve the daemons whose timing is
//! measured.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::dnf::DnfRoot;
use crate::nginx::Nginx;
use crate::{AgentSpec, Metalink, Network, fixture, free_port, sha256_hex};

/// The repo every stress run publishes.
pub const REPO: &str = "stress/x86_64";
const PKG: &str = "hello-fix";
/// Package versions cycled through: publish `i` serves versions
/// `1..=(i % POOL) + 1`, so the newest one changes with every publish and
/// `distro-sync` downloads a package on most runs.
const POOL: usize = 6;
/// Each package's payload, so that a download takes a moment.
const PACKAGE_KB: u64 = 256;

/// What to run.
#[derive(Clone, Debug)]
pub struct Plan {
    /// Versions published after the first one.
    pub publishes: usize,
    pub clients: usize,
    /// How many of the clients fetch the metalink through a caching nginx.
    pub proxied_clients: usize,
    pub metalink_max_age_secs: u64,
    pub settle_secs: f64,
    /// Extra `agent.toml` keys (raw TOML values) for every agent.
    pub agent_config: Vec<(String, String)>,
    /// Stop publishing once a client run has failed.
    pub stop_at_first_failure: bool,
}

impl Plan {
    /// Five clients fetching the metalink directly (`max-age=0`), with the
    /// test networks' short settle; `publishes` from
    /// `HOTPUSH_STRESS_PUBLISHES` when set.
    pub fn new(publishes: usize) -> Self {
        Self {
            publishes: publishes_from_env().unwrap_or(publishes),
            clients: 5,
            proxied_clients: 0,
            metalink_max_age_secs: 0,
            settle_secs: 0.3,
            agent_config: Vec::new(),
            stop_at_first_failure: false,
        }
    }

    /// `proxied` of the clients go through a caching proxy that keeps the
    /// metalink for `max_age` seconds; the settle is the product's default
    /// for that max-age.
    pub fn behind_proxy(mut self, proxied: usize, max_age: u64) -> Self {
        self.proxied_clients = proxied;
        self.metalink_max_age_secs = max_age;
        self.settle_secs = max_age as f64 + 2.0;
        self
    }

    pub fn agent_config(mut self, key: &str, value: &str) -> Self {
        self.agent_config.push((key.to_owned(), value.to_owned()));
        self
    }
}

fn publishes_from_env() -> Option<usize> {
    std::env::var("HOTPUSH_STRESS_PUBLISHES").ok()?.parse().ok()
}

/// One dnf command of one client.
#[derive(Clone, Debug)]
pub struct ClientRun {
    pub client: usize,
    pub command: &'static str,
    pub start_ms: u64,
    pub end_ms: u64,
    pub ok: bool,
    /// dnf upgraded or downgraded the package (it downloaded an rpm).
    pub switched_package: bool,
    /// On failure: dnf's stderr and the tail of librepo's log.
    pub detail: String,
}

/// One publish, as the mirrors and the metalink saw it.
#[derive(Clone, Debug)]
pub struct PublishRecord {
    pub version: u64,
    pub repomd_sha256: String,
    /// `publish --wait all` from start to exit.
    pub elapsed: Duration,
    /// Agent → when it switched to this version (unix ms).
    pub flipped_ms: BTreeMap<String, u64>,
    /// When the metalink first named this version's repomd.xml as the main
    /// one (unix ms, polled every few ms).
    pub main_ms: Option<u64>,
}

/// Everything a stress run recorded.
#[derive(Debug)]
pub struct Report {
    pub runs: Vec<ClientRun>,
    pub publishes: Vec<PublishRecord>,
    /// A publish that did not end with every agent live, if any.
    pub publish_error: Option<String>,
    pub settle_secs: f64,
    pub wall: Duration,
}

impl Report {
    pub fn failures(&self) -> Vec<&ClientRun> {
        self.runs.iter().filter(|r| !r.ok).collect()
    }

    /// Client runs during which at least one mirror flipped.
    pub fn runs_overlapping_a_flip(&self) -> usize {
        self.runs
            .iter()
            .filter(|r| self.flips().any(|t| (r.start_ms..=r.end_ms).contains(&t)))
            .count()
    }

    fn flips(&self) -> impl Iterator<Item = u64> + '_ {
        self.publishes
            .iter()
            .flat_map(|p| p.flipped_ms.values().copied())
    }

    /// Per publish: last flip minus first flip.
    pub fn flip_spread_ms(&self) -> Vec<u64> {
        self.publishes
            .iter()
            .filter_map(|p| {
                let first = p.flipped_ms.values().min()?;
                let last = p.flipped_ms.values().max()?;
                Some(last - first)
            })
            .collect()
    }

    /// Per publish: from the first flip to the metalink naming the version
    /// as its main repomd.xml.
    pub fn first_flip_to_main_ms(&self) -> Vec<u64> {
        self.publishes
            .iter()
            .filter_map(|p| {
                let first = p.flipped_ms.values().min()?;
                Some(p.main_ms?.saturating_sub(*first))
            })
            .collect()
    }

    /// One `REPORT` line with the counts and the distributions.
    pub fn summary(&self, name: &str) -> String {
        let publish_ms: Vec<u64> = self
            .publishes
            .iter()
            .map(|p| p.elapsed.as_millis() as u64)
            .collect();
        format!(
            "REPORT {name}: {} publishes in {:.0?}, {} dnf runs ({} switched the package), {} failed, \
             {} overlapped a flip; \
             settle {} s; publish→all live ms {}; flip spread ms {}; first flip→metalink main ms {}",
            self.publishes.len(),
            self.wall,
            self.runs.len(),
            self.runs.iter().filter(|r| r.switched_package).count(),
            self.failures().len(),
            self.runs_overlapping_a_flip(),
            self.settle_secs,
            Stats::of(publish_ms),
            Stats::of(self.flip_spread_ms()),
            Stats::of(self.first_flip_to_main_ms()),
        )
    }
}

/// p50 / p90 / max of a sample.
struct Stats(Vec<u64>);

impl Stats {
    fn of(mut v: Vec<u64>) -> Self {
        v.sort_unstable();
        Self(v)
    }
    fn pick(&self, q: f64) -> u64 {
        let i = ((self.0.len() as f64 - 1.0) * q).round() as usize;
        self.0.get(i).copied().unwrap_or(0)
    }
}

impl std::fmt::Display for Stats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "p50 {} p90 {} max {}",
            self.pick(0.5),
            self.pick(0.9),
            self.pick(1.0)
        )
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Runs `plan`; panics only when the set-up fails (publish or client
/// failures are in the report).
pub fn run(plan: &Plan) -> Report {
    let work = tempfile::Builder::new()
        .prefix("hotpush-stress.")
        .tempdir()
        .expect("creating the stress dir");
    let work = work.path();
    let sources = sources(work, plan.publishes + 1);

    let localhost = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let front = SocketAddr::new(localhost, free_port(localhost));
    let front_root = work.join("m2-front");
    let with_config = |mut spec: AgentSpec| {
        for (k, v) in &plan.agent_config {
            spec = spec.config(k, v);
        }
        spec
    };
    let net = Network::builder()
        .repo(REPO)
        .origin_config(
            "metalink_max_age_secs",
            &plan.metalink_max_age_secs.to_string(),
        )
        .origin_config("settle_secs", &plan.settle_secs.to_string())
        .origin_config("stage_wait_secs", "2")
        .agent(with_config(AgentSpec::v4()))
        .agent(with_config(AgentSpec::v6()))
        .agent(with_config(
            AgentSpec::v4()
                .data_root(&front_root)
                .public_url(&format!("http://{front}/hotpush/")),
        ))
        .start();
    let _front = Nginx::front_end(front, &front_root.join("www"), &work.join("nginx-front"));
    let proxy = (plan.proxied_clients > 0).then(|| {
        let addr = SocketAddr::new(localhost, free_port(localhost));
        Nginx::caching_proxy(addr, net.origin_http, &work.join("nginx-proxy"))
    });

    if let Err(e) = publish(&net, &sources[0]) {
        panic!("the first publish failed: {e}");
    }
    let metalink_path = metalink_path(&net);
    let clients: Vec<DnfRoot> = (0..plan.clients)
        .map(|c| {
            let root = DnfRoot::new(&work.join(format!("dnf{c}")));
            let via = match &proxy {
                Some(p) if c < plan.proxied_clients => p.addr,
                _ => net.origin_http,
            };
            root.add_repo(
                "emergency",
                &format!("http://{via}{metalink_path}"),
                &["metadata_expire=0"],
            );
            root.dnf_ok(&["install", PKG]);
            root
        })
        .collect();

    let stop = AtomicBool::new(false);
    let failures = AtomicUsize::new(0);
    let runs = Mutex::new(Vec::new());
    let changes = Mutex::new(Vec::<(u64, String)>::new());
    let mut publishes = Vec::new();
    let mut publish_error = None;
    let started = Instant::now();
    std::thread::scope(|s| {
        s.spawn(|| poll_metalink(net.origin_http, &metalink_path, &stop, &changes));
        for (c, root) in clients.iter().enumerate() {
            let (stop, failures, runs) = (&stop, &failures, &runs);
            s.spawn(move || client_loop(c, root, stop, failures, runs));
        }
        for src in &sources[1..] {
            if plan.stop_at_first_failure && failures.load(Ordering::SeqCst) > 0 {
                break;
            }
            match publish(&net, src) {
                Ok(record) => publishes.push(record),
                Err(e) => {
                    publish_error = Some(e);
                    break;
                }
            }
        }
        stop.store(true, Ordering::SeqCst);
    });
    let wall = started.elapsed();
    let changes = changes.into_inner().unwrap_or_else(|p| p.into_inner());
    for p in &mut publishes {
        p.main_ms = changes
            .iter()
            .find(|(_, sha)| *sha == p.repomd_sha256)
            .map(|(t, _)| *t);
    }
    let mut runs = runs.into_inner().unwrap_or_else(|p| p.into_inner());
    runs.sort_by_key(|r: &ClientRun| r.start_ms);
    Report {
        runs,
        publishes,
        publish_error,
        settle_secs: plan.settle_secs,
        wall,
    }
}

/// `count` repo trees: tree `i` holds packages `1..=(i % POOL) + 1`
/// (hard links into one pool, so a path never changes bytes) and repodata
/// with revision `i`.
fn sources(work: &Path, count: usize) -> Vec<PathBuf> {
    let pool = work.join("pool");
    for v in 1..=POOL {
        fixture::build_rpm(&pool, PKG, &v.to_string(), PACKAGE_KB);
    }
    (0..count)
        .map(|i| {
            let dir = work.join(format!("src{i}"));
            let packages = dir.join("Packages");
            std::fs::create_dir_all(&packages).expect("mkdir Packages");
            for v in 1..=(i % POOL) + 1 {
                let name = format!("{PKG}-{v}-1.noarch.rpm");
                std::fs::hard_link(pool.join("Packages").join(&name), packages.join(&name))
                    .expect("linking a pool package");
            }
            crate::run_ok(
                Command::new("bash")
                    .arg(fixture::script())
                    .arg("createrepo")
                    .arg(&dir)
                    .arg(format!("--revision={i}")),
            );
            dir
        })
        .collect()
}

/// Publishes `src` and waits until every agent is live; the record's flip
/// times come from the origin's status.
fn publish(net: &Network, src: &Path) -> Result<PublishRecord, String> {
    let p = net.publish(REPO, src, &["--json", "--wait", "all", "--timeout", "60"]);
    if p.code != 0 {
        return Err(format!("publish exited {}: {p:#?}", p.code));
    }
    let version = p.summary()["version"]
        .as_u64()
        .ok_or_else(|| format!("no version in {p:#?}"))?;
    let flipped_ms = net
        .last_pushes(REPO)
        .into_iter()
        .filter(|(_, last)| last["version"].as_u64() == Some(version))
        .filter_map(|(name, last)| Some((name, last["flipped_unix_ms"].as_u64()?)))
        .collect();
    Ok(PublishRecord {
        version,
        repomd_sha256: sha256_hex(&fixture::read(&src.join("repodata/repomd.xml"))),
        elapsed: p.elapsed,
        flipped_ms,
        main_ms: None,
    })
}

fn metalink_path(net: &Network) -> String {
    let url = net.metalink_url(REPO);
    let after_scheme = url.trim_start_matches("http://");
    after_scheme[after_scheme.find('/').unwrap_or(0)..].to_owned()
}

/// One client: `--refresh makecache`, then `distro-sync`, until `stop`.
fn client_loop(
    c: usize,
    root: &DnfRoot,
    stop: &AtomicBool,
    failures: &AtomicUsize,
    runs: &Mutex<Vec<ClientRun>>,
) {
    const COMMANDS: [(&str, &[&str]); 2] = [
        ("makecache", &["--refresh", "makecache"]),
        ("distro-sync", &["distro-sync"]),
    ];
    while !stop.load(Ordering::SeqCst) {
        for (command, args) in COMMANDS {
            let start_ms = now_ms();
            let out = crate::run(&mut root.command_under(&["nice", "-n", "10"], args));
            let end_ms = now_ms();
            let ok = out.status.success();
            let stdout = String::from_utf8_lossy(&out.stdout);
            let switched_package = stdout.contains("Upgraded:") || stdout.contains("Downgraded:");
            let detail = if ok {
                String::new()
            } else {
                failures.fetch_add(1, Ordering::SeqCst);
                format!(
                    "exit {:?}\nstderr:\n{}\n---- dnf.librepo.log ----\n{}",
                    out.status.code(),
                    String::from_utf8_lossy(&out.stderr),
                    root.librepo_log_tail(15)
                )
            };
            runs.lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(ClientRun {
                    client: c,
                    command,
                    start_ms,
                    end_ms,
                    ok,
                    switched_package,
                    detail,
                });
        }
    }
}

/// Records each change of the metalink's main repomd.xml hash.
fn poll_metalink(
    origin: SocketAddr,
    path: &str,
    stop: &AtomicBool,
    changes: &Mutex<Vec<(u64, String)>>,
) {
    let mut last = String::new();
    while !stop.load(Ordering::SeqCst) {
        if let Ok(body) = get(origin, path) {
            let sha = Metalink::parse(&body)
                .hashes
                .get("sha256")
                .cloned()
                .unwrap_or_default();
            if sha != last {
                changes
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push((now_ms(), sha.clone()));
                last = sha;
            }
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// A plain HTTP/1.1 GET (the poller runs every few ms; curl would cost a
/// process each time).
fn get(addr: SocketAddr, path: &str) -> std::io::Result<String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    match text.split_once("\r\n\r\n") {
        Some((head, body)) if head.starts_with("HTTP/1.1 200") => Ok(body.to_owned()),
        _ => Err(std::io::Error::other(format!(
            "unexpected answer: {text:.200}"
        ))),
    }
}
