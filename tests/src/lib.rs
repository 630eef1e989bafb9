//! End-to-end test harness: real `hotpush-origin` and `hotpush-agent`
//! processes talking mutual TLS over loopback sockets.
//!
//! A [`Network`] lives in one temp dir: the origin's config and state, one
//! directory per agent (its config, TLS identity, data and served tree) and a
//! log file per process. Every child process is killed when the `Network` is
//! dropped; when a test panics, the tail of every log is printed first.
//! `HOTPUSH_KEEP_TEST_DIR=1` keeps the whole directory for a post-mortem
//! (of a failure, or of a benchmark's run).
//!
//! Plain synchronous Rust: `std::process` for the daemons and the CLI,
//! `curl` for HTTP, `tests/rpm-fixtures.sh` for packages and repodata.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Read;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use sha2::Digest;

pub mod dnf;
pub mod faultproxy;
pub mod local;
pub mod nginx;
pub mod stress;
pub mod webcheck;

/// Flip timing for test networks: no metalink caching, a short settle and
/// stage wait, so that a publish costs tests well under a second extra.
pub const TEST_FLIP_TIMING: [(&str, &str); 3] = [
    ("metalink_max_age_secs", "0"),
    ("settle_secs", "0.3"),
    ("stage_wait_secs", "1"),
];

/// How long a daemon may take to start listening.
pub const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// The workspace root (the parent of `tests/`).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// Path of a workspace binary (`hotpush-origin`, `hotpush-agent`): in
/// `$HOTPUSH_BIN_DIR` when set (the benchmark's release build), else next
/// to the test executable (`target/debug/deps/..` → `target/debug/`), else
/// under `$CARGO_TARGET_DIR/debug` or `<workspace>/target/debug`.
pub fn bin(name: &str) -> PathBuf {
    if let Some(dir) = std::env::var_os("HOTPUSH_BIN_DIR") {
        return PathBuf::from(dir).join(name);
    }
    let mut candidates = Vec::new();
    if let Ok(exe) = std::env::current_exe()
        && let Some(deps) = exe.parent()
    {
        if deps.ends_with("deps")
            && let Some(profile) = deps.parent()
        {
            candidates.push(profile.join(name));
        }
        candidates.push(deps.join(name));
    }
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR") {
        candidates.push(PathBuf::from(dir).join("debug").join(name));
    }
    candidates.push(workspace_root().join("target/debug").join(name));
    candidates
        .iter()
        .find(|p| p.is_file())
        .cloned()
        .unwrap_or_else(|| {
            panic!(
                "{name} not found (looked in {candidates:?}): run `cargo build --workspace` first"
            )
        })
}

/// A port that is free on `ip` and that nothing else in this test run
/// will be handed.
///
/// Ports come from below the kernel's ephemeral range, so a daemon that
/// binds port 0 or opens an outgoing connection can never take a port
/// a test has picked but not yet bound (asking the kernel for port 0 and
/// releasing it raced exactly that way). A counter keeps picks unique
/// within the process; the process id spreads test binaries apart, and
/// a port some other process holds is skipped.
pub fn free_port(ip: IpAddr) -> u16 {
    free_ports(ip, 1)
}

/// The first of `count` consecutive ports that are free on `ip`, picked
/// as [`free_port`] picks one (for a script that numbers its own ports).
pub fn free_ports(ip: IpAddr, count: u16) -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let (low, high) = unreserved_ports();
    let slots = u32::from((high - low) / count);
    let start = std::process::id().wrapping_mul(7919) % slots;
    for _ in 0..slots {
        let slot = (start + NEXT.fetch_add(1, Ordering::Relaxed)) % slots;
        let base = low + slot as u16 * count;
        let all_free =
            (base..base + count).all(|port| TcpListener::bind(SocketAddr::new(ip, port)).is_ok());
        if all_free {
            return base;
        }
    }
    panic!("no {count} free ports on {ip} in {low}..{high}");
}

/// The range `free_port` draws from: from 10000 up to where the
/// kernel's ephemeral range begins.
fn unreserved_ports() -> (u16, u16) {
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    if ephemeral_low > 12000 {
        (10000, ephemeral_low)
    } else {
        // An unusual kernel setting: use the top of the port space.
        (61000, 65535)
    }
}

/// Polls `probe` every 50 ms until it returns `Some`, or panics after
/// `timeout` naming `what`.
pub fn wait_until<T>(what: &str, timeout: Duration, mut probe: impl FnMut() -> Option<T>) -> T {
    wait_for(what, timeout, || probe().ok_or_else(String::new))
}

/// Like [`wait_until`], for a probe that says why it is not there yet: the
/// timeout names the last reason, not only what was awaited.
pub fn wait_for<T>(
    what: &str,
    timeout: Duration,
    mut probe: impl FnMut() -> Result<T, String>,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        let why = match probe() {
            Ok(v) => return v,
            Err(why) => why,
        };
        if Instant::now() >= deadline {
            let why = if why.is_empty() {
                why
            } else {
                format!(": {why}")
            };
            panic!("timed out after {timeout:?} waiting for {what}{why}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Runs a command to completion, capturing its output.
pub fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"))
}

/// Runs a command that must succeed; returns its stdout.
pub fn run_ok(cmd: &mut Command) -> String {
    let out = run(cmd);
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Removes ANSI escape sequences (`ESC [ … letter`) from log text.
pub fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' && chars.peek() == Some(&'[') {
            chars.next();
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Lowercase hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(bytes))
}

/// Lowercase hex SHA-512 of `bytes`.
pub fn sha512_hex(bytes: &[u8]) -> String {
    hex::encode(sha2::Sha512::digest(bytes))
}

/// `GET url` with curl; `Err` on a connection failure or an HTTP error status.
pub fn http_get(url: &str) -> anyhow::Result<Vec<u8>> {
    let out = Command::new("curl")
        .args(["-sS", "--fail", "-g", "--max-time", "10", url])
        .output()
        .context("running curl (is it installed?)")?;
    if !out.status.success() {
        bail!(
            "curl {url}: {} {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(out.stdout)
}

/// The id and signing key of a freshly initialised origin that no agent
/// trusts: material for configuring an agent that must refuse our origin.
pub fn foreign_origin() -> (String, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = run_ok(
        Command::new(bin("hotpush-origin"))
            .arg("init")
            .arg("--dir")
            .arg(dir.path().join("origin"))
            .args(["--http", "127.0.0.1:1"]),
    );
    parse_origin_init(&out)
}

fn parse_origin_init(stdout: &str) -> (String, String) {
    let field = |name: &str| {
        stdout
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| v.trim().to_owned())
            .unwrap_or_else(|| panic!("`hotpush-origin init` printed no {name:?} line: {stdout}"))
    };
    (field("origin-id:"), field("signing-key:"))
}

/// A tmpfs of its own, unmounted (lazily) on drop.
pub struct Tmpfs {
    pub dir: PathBuf,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size` (e.g. `"200m"`) at `dir`; needs root.
    pub fn mount(dir: &Path, size: &str) -> Result<Self, String> {
        std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
        let out = crate::run(
            Command::new("mount")
                .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
                .arg(dir),
        );
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).into_owned());
        }
        Ok(Self {
            dir: dir.to_path_buf(),
        })
    }

    /// Changes its size.
    pub fn resize(&self, size: &str) {
        crate::run_ok(
            Command::new("mount")
                .args(["-o", &format!("remount,size={size}")])
                .arg(&self.dir),
        );
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
    }
}

/// Peak resident memory of process `pid` (`VmHWM`), in KiB.
pub fn peak_rss_kib(pid: u32) -> u64 {
    proc_status_kib(pid, "VmHWM:")
}

/// Resident memory of process `pid` now (`VmRSS`), in KiB.
pub fn rss_kib(pid: u32) -> u64 {
    proc_status_kib(pid, "VmRSS:")
}

/// Resident anonymous memory (heap, stacks) of process `pid`, in KiB: RSS
/// without the file pages it maps (its binary, SQLite's shared memory).
pub fn rss_anon_kib(pid: u32) -> u64 {
    proc_status_kib(pid, "RssAnon:")
}

/// Threads of process `pid` now.
pub fn threads(pid: u32) -> u64 {
    proc_status_kib(pid, "Threads:")
}

fn proc_status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| panic!("reading /proc/{pid}/status: {e}"));
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

/// Descriptors process `pid` holds open now.
pub fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

/// Raises this process's soft descriptor limit to the hard one (attack
/// tests open thousands of sockets); returns the new soft limit.
pub fn raise_fd_limit() -> usize {
    hotpush_shared::daemon::raise_fd_limit()
}

/// Address family of an agent's listeners.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    fn loopback(self) -> IpAddr {
        match self {
            Family::V4 => IpAddr::V4(Ipv4Addr::LOCALHOST),
            Family::V6 => IpAddr::V6(Ipv6Addr::LOCALHOST),
        }
    }
}

/// How to set up one agent.
#[derive(Clone, Debug)]
pub struct AgentSpec {
    pub family: Family,
    /// Repos it carries; empty means the network's repos.
    pub repos: Vec<String>,
    /// Trust this origin id instead of the network's origin.
    pub origin_id: Option<String>,
    /// Trust this signing key instead of the network's origin key.
    pub origin_key: Option<String>,
    /// `agent add --weight` (the product's default when `None`).
    pub weight: Option<u32>,
    /// Extra environment for the agent process (e.g. `FAILPOINTS`,
    /// `RUST_LOG`); applied after the harness defaults, so it overrides them.
    pub env: Vec<(String, String)>,
    /// Top-level `agent.toml` keys to set (raw TOML values, e.g.
    /// `("retain_for_secs", "5")`), written after `hotpush-agent init`.
    pub config: Vec<(String, String)>,
    /// Register the agent with this gRPC endpoint instead of its own listen
    /// address (e.g. a fault proxy in front of it).
    pub endpoint: Option<String>,
    /// Put `data_dir` and `serve_root` under this directory (`data/`, `www/`),
    /// e.g. a small filesystem of its own.
    pub data_root: Option<PathBuf>,
    /// Run the agent under this command (e.g. `prlimit --nofile=1024 --`).
    pub wrapper: Vec<String>,
    /// Where clients reach its tree (a front end), instead of its own server.
    pub public_url: Option<String>,
}

impl AgentSpec {
    pub fn v4() -> Self {
        Self::new(Family::V4)
    }
    pub fn v6() -> Self {
        Self::new(Family::V6)
    }
    pub fn new(family: Family) -> Self {
        Self {
            family,
            repos: Vec::new(),
            origin_id: None,
            origin_key: None,
            weight: None,
            env: Vec::new(),
            config: Vec::new(),
            endpoint: None,
            data_root: None,
            wrapper: Vec::new(),
            public_url: None,
        }
    }

    /// Registers (and configures the agent with) this public URL, e.g. a
    /// front end's, instead of its built-in server's.
    pub fn public_url(mut self, url: &str) -> Self {
        self.public_url = Some(url.to_owned());
        self
    }

    /// Runs the agent as `<wrapper…> hotpush-agent serve …`.
    pub fn wrapper(mut self, command: &[&str]) -> Self {
        self.wrapper = command.iter().map(|s| (*s).to_owned()).collect();
        self
    }
    /// An environment variable for the agent process.
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_owned(), value.to_owned()));
        self
    }
    /// A top-level `agent.toml` key (raw TOML value).
    pub fn config(mut self, key: &str, value: &str) -> Self {
        self.config.push((key.to_owned(), value.to_owned()));
        self
    }
    /// The endpoint the origin is told to connect to.
    pub fn endpoint(mut self, endpoint: &str) -> Self {
        self.endpoint = Some(endpoint.to_owned());
        self
    }
    /// Where `data/` and `www/` live.
    pub fn data_root(mut self, dir: &Path) -> Self {
        self.data_root = Some(dir.to_path_buf());
        self
    }
    /// Share of client traffic (`agent add --weight`).
    pub fn weight(mut self, weight: u32) -> Self {
        self.weight = Some(weight);
        self
    }
    pub fn repo(mut self, repo: &str) -> Self {
        self.repos.push(repo.to_owned());
        self
    }
    pub fn origin_id(mut self, id: &str) -> Self {
        self.origin_id = Some(id.to_owned());
        self
    }
    pub fn origin_key(mut self, key: &str) -> Self {
        self.origin_key = Some(key.to_owned());
        self
    }
}

/// One running (or stopped) agent.
#[derive(Debug)]
pub struct Agent {
    /// Name registered with `agent add` (`m0`, `m1`, …).
    pub name: String,
    /// Where clients reach its tree (see [`AgentSpec::public_url`]).
    pub public_base: String,
    pub dir: PathBuf,
    pub config: PathBuf,
    pub listen: SocketAddr,
    pub http: SocketAddr,
    /// Its TLS id, as printed by `hotpush-agent init`.
    pub id: String,
    pub repos: Vec<String>,
    pub log: PathBuf,
    /// Its `data_dir` (blobs, partial blobs, state).
    pub data_dir: PathBuf,
    /// Its `serve_root`.
    pub serve_root: PathBuf,
    /// Extra environment for its process (see [`AgentSpec::env`]).
    pub env: Vec<(String, String)>,
    /// Command it runs under (see [`AgentSpec::wrapper`]).
    pub wrapper: Vec<String>,
    child: Option<Child>,
}

impl Agent {
    /// Base URL of its built-in HTTP server, as registered with the origin.
    pub fn public_url(&self) -> String {
        format!("http://{}/", self.http)
    }

    /// The URL a metalink must list for `repo` on this agent.
    pub fn repomd_url(&self, repo: &str) -> String {
        format!("{}{repo}/repodata/repomd.xml", self.public_base)
    }

    /// `<serve_root>/<repo>` (`<agent dir>/www/<repo>` by default): the
    /// served tree of `repo`.
    pub fn served(&self, repo: &str) -> PathBuf {
        self.serve_root.join(repo)
    }

    /// A file of the served tree (`rel` relative to the repo; symlinks
    /// followed), or `None` when absent.
    pub fn read_served(&self, repo: &str, rel: &str) -> Option<Vec<u8>> {
        std::fs::read(self.served(repo).join(rel)).ok()
    }

    /// Every regular file reachable under the served tree of `repo`
    /// (following the `repodata` symlink; hidden entries skipped).
    pub fn served_files(&self, repo: &str) -> Vec<String> {
        let root = self.served(repo);
        if !root.exists() {
            return Vec::new();
        }
        walk_files(&root, true)
    }

    /// The agent's log so far, without colour codes.
    pub fn log_text(&self) -> String {
        strip_ansi(&std::fs::read_to_string(&self.log).unwrap_or_default())
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// OS process id, while running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// `hotpush-agent status -c <config>`: what its persisted state says.
    pub fn status_text(&self) -> String {
        run_ok(
            Command::new(bin("hotpush-agent"))
                .arg("status")
                .arg("-c")
                .arg(&self.config)
                .env("NO_COLOR", "1"),
        )
    }

    /// The version `hotpush-agent status` reports live for `repo`, if any.
    pub fn status_version(&self, repo: &str) -> Option<u64> {
        let text = self.status_text();
        let line = text
            .lines()
            .find(|l| l.starts_with(&format!("{repo}: ")))
            .unwrap_or_else(|| panic!("`hotpush-agent status` names no {repo}: {text}"));
        line.split_once(": version ")
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .map(|v| {
                v.parse()
                    .unwrap_or_else(|e| panic!("bad version in {line:?}: {e}"))
            })
    }

    /// The version the `repodata` symlink of `repo` points at, if any.
    pub fn linked_version(&self, repo: &str) -> Option<u64> {
        let target = std::fs::read_link(self.served(repo).join("repodata")).ok()?;
        target.file_name()?.to_str()?.parse().ok()
    }
}

/// Sets top-level key `key` of a TOML file to the raw value `value`:
/// replaces a `key = …` or commented `# key = …` line, else inserts it at
/// the top (before any table).
pub fn set_toml_key(path: &Path, key: &str, value: &str) {
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let line = format!("{key} = {value}");
    let is_key = |l: &str| {
        let l = l.trim_start().trim_start_matches('#').trim_start();
        l.strip_prefix(key)
            .is_some_and(|rest| rest.trim_start().starts_with('='))
    };
    let mut done = false;
    let mut out: Vec<String> = text
        .lines()
        .map(|l| {
            if !done && is_key(l) {
                done = true;
                line.clone()
            } else {
                l.to_owned()
            }
        })
        .collect();
    if !done {
        out.insert(0, line);
    }
    std::fs::write(path, out.join("\n") + "\n")
        .unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
}

/// How to stop a process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Signal {
    Kill,
    Term,
}

/// What one `hotpush-origin publish` run produced.
#[derive(Debug)]
pub struct Publish {
    /// Exit code (-1 when killed by a signal).
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
    /// The summary, when run with `--json`.
    pub json: Option<serde_json::Value>,
    pub elapsed: Duration,
}

impl Publish {
    /// The JSON summary; panics when there is none.
    pub fn summary(&self) -> &serde_json::Value {
        self.json
            .as_ref()
            .unwrap_or_else(|| panic!("publish printed no JSON summary: {self:#?}"))
    }

    /// `agents.<name>` of the JSON summary.
    pub fn agent(&self, name: &str) -> &serde_json::Value {
        let a = &self.summary()["agents"][name];
        assert!(!a.is_null(), "no agent {name} in the summary: {self:#?}");
        a
    }
}

/// Builds a [`Network`].
#[derive(Debug, Default)]
pub struct NetworkBuilder {
    repos: Vec<String>,
    agents: Vec<AgentSpec>,
    origin_config: Vec<(String, String)>,
}

impl NetworkBuilder {
    /// A repo every agent without its own repo list carries.
    pub fn repo(mut self, repo: &str) -> Self {
        self.repos.push(repo.to_owned());
        self
    }

    pub fn agent(mut self, spec: AgentSpec) -> Self {
        self.agents.push(spec);
        self
    }

    /// A top-level `origin.toml` key (raw TOML value; dotted keys such as
    /// `connections.max_http_connections` set a table's field).
    pub fn origin_config(mut self, key: &str, value: &str) -> Self {
        self.origin_config.push((key.to_owned(), value.to_owned()));
        self
    }

    /// Initialises the origin and agents, registers the agents, starts every
    /// daemon and waits until all of them listen.
    pub fn start(self) -> Network {
        let dir = tempfile::Builder::new()
            .prefix("hotpush-e2e.")
            .tempdir()
            .expect("creating the test dir");
        let root = dir.path().to_path_buf();
        let origin_dir = root.join("origin");
        let origin_http = SocketAddr::new(
            IpAddr::V4(Ipv4Addr::LOCALHOST),
            free_port(IpAddr::V4(Ipv4Addr::LOCALHOST)),
        );
        let out = run_ok(
            Command::new(bin("hotpush-origin"))
                .arg("init")
                .arg("--dir")
                .arg(&origin_dir)
                .arg("--http")
                .arg(origin_http.to_string()),
        );
        let (origin_id, origin_key) = parse_origin_init(&out);
        let origin_config = origin_dir.join("origin.toml");
        // Fast flips for tests: a client's metalink is fetched fresh (no
        // cache), so a short settle keeps the guarantee. Tests may override.
        for (key, value) in TEST_FLIP_TIMING {
            set_toml_key(&origin_config, key, value);
        }
        for (key, value) in &self.origin_config {
            set_toml_key(&origin_config, key, value);
        }
        let mut net = Network {
            dir: Some(dir),
            root,
            origin_config,
            origin_socket: origin_dir.join("control.sock"),
            origin_dir,
            origin_http,
            origin_id,
            origin_key,
            origin: None,
            origin_log: PathBuf::new(),
            agents: Vec::new(),
        };
        net.origin_log = net.root.join("origin.log");
        for (i, spec) in self.agents.into_iter().enumerate() {
            let repos = if spec.repos.is_empty() {
                self.repos.clone()
            } else {
                spec.repos.clone()
            };
            assert!(!repos.is_empty(), "agent {i} carries no repo");
            net.init_agent(i, &spec, repos);
        }
        for i in 0..net.agents.len() {
            net.spawn_agent(i);
        }
        net.start_origin();
        for i in 0..net.agents.len() {
            net.wait_agent_ready(i);
        }
        net
    }
}

/// An origin and its agents, each a real process.
#[derive(Debug)]
pub struct Network {
    dir: Option<tempfile::TempDir>,
    /// The temp dir everything lives in.
    pub root: PathBuf,
    pub origin_dir: PathBuf,
    pub origin_config: PathBuf,
    pub origin_socket: PathBuf,
    pub origin_http: SocketAddr,
    pub origin_id: String,
    pub origin_key: String,
    pub origin_log: PathBuf,
    pub agents: Vec<Agent>,
    origin: Option<Child>,
}

impl Network {
    pub fn builder() -> NetworkBuilder {
        NetworkBuilder::default()
    }

    fn init_agent(&mut self, i: usize, spec: &AgentSpec, repos: Vec<String>) {
        let ip = spec.family.loopback();
        let listen = SocketAddr::new(ip, free_port(ip));
        let http = SocketAddr::new(ip, free_port(ip));
        let name = format!("m{i}");
        let dir = self.root.join(&name);
        let mut init = Command::new(bin("hotpush-agent"));
        init.arg("init")
            .arg("--dir")
            .arg(&dir)
            .arg("--origin-id")
            .arg(spec.origin_id.as_deref().unwrap_or(&self.origin_id))
            .arg("--origin-key")
            .arg(spec.origin_key.as_deref().unwrap_or(&self.origin_key))
            .arg("--listen")
            .arg(listen.to_string())
            .arg("--http")
            .arg(http.to_string());
        for r in &repos {
            init.arg("--repo").arg(r);
        }
        let id = run_ok(&mut init).trim().to_owned();
        assert_eq!(id.len(), 64, "agent id should be 64 hex digits: {id:?}");
        let config = dir.join("agent.toml");
        let (mut data_dir, mut serve_root) = (dir.join("data"), dir.join("www"));
        if let Some(root) = &spec.data_root {
            data_dir = root.join("data");
            serve_root = root.join("www");
            for (key, path) in [("data_dir", &data_dir), ("serve_root", &serve_root)] {
                std::fs::create_dir_all(path)
                    .unwrap_or_else(|e| panic!("mkdir {}: {e}", path.display()));
                set_toml_key(&config, key, &format!("{:?}", path.display().to_string()));
            }
        }
        for (key, value) in &spec.config {
            set_toml_key(&config, key, value);
        }
        let public_url = spec
            .public_url
            .clone()
            .unwrap_or_else(|| format!("http://{http}/"));
        if spec.public_url.is_some() {
            set_toml_key(&config, "public_url", &format!("{public_url:?}"));
        }
        let endpoint = spec
            .endpoint
            .clone()
            .unwrap_or_else(|| format!("https://{listen}"));
        let mut add = self.origin_cmd();
        add.args(["agent", "add", &name])
            .arg("--endpoint")
            .arg(endpoint)
            .arg("--id")
            .arg(&id)
            .arg("--public-url")
            .arg(&public_url);
        if let Some(w) = spec.weight {
            add.arg("--weight").arg(w.to_string());
        }
        for r in &repos {
            add.arg("--repo").arg(r);
        }
        run_ok(&mut add);
        self.agents.push(Agent {
            public_base: public_url,
            log: self.root.join(format!("{name}.log")),
            config,
            data_dir,
            serve_root,
            env: spec.env.clone(),
            wrapper: spec.wrapper.clone(),
            name,
            dir,
            listen,
            http,
            id,
            repos,
            child: None,
        });
    }

    /// `hotpush-origin -c <config>` ready for arguments.
    pub fn origin_cmd(&self) -> Command {
        let mut c = Command::new(bin("hotpush-origin"));
        c.arg("-c").arg(&self.origin_config);
        c.env("NO_COLOR", "1");
        c
    }

    fn spawn_daemon(mut cmd: Command, log: &Path, env: &[(String, String)]) -> Child {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap_or_else(|e| panic!("opening {}: {e}", log.display()));
        cmd.env("RUST_LOG", "info").env("NO_COLOR", "1");
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {cmd:?}: {e}"))
    }

    fn spawn_agent(&mut self, i: usize) {
        let a = &mut self.agents[i];
        assert!(a.child.is_none(), "agent {} is already running", a.name);
        let mut cmd = match a.wrapper.split_first() {
            Some((program, args)) => {
                let mut c = Command::new(program);
                c.args(args).arg(bin("hotpush-agent"));
                c
            }
            None => Command::new(bin("hotpush-agent")),
        };
        cmd.arg("serve").arg("-c").arg(&a.config);
        a.child = Some(Self::spawn_daemon(cmd, &a.log, &a.env));
    }

    /// Starts the origin daemon (again, after [`Network::stop_origin`]) and
    /// waits until it listens.
    pub fn start_origin(&mut self) {
        assert!(self.origin.is_none(), "the origin is already running");
        let mut cmd = Command::new(bin("hotpush-origin"));
        cmd.arg("-c").arg(&self.origin_config).arg("serve");
        self.origin = Some(Self::spawn_daemon(cmd, &self.origin_log, &[]));
        let (http, socket) = (self.origin_http, self.origin_socket.clone());
        let log = self.origin_log.clone();
        let child = self.origin.as_mut().expect("just spawned");
        wait_ready("hotpush-origin", child, &log, || {
            tcp_open(http) && std::os::unix::net::UnixStream::connect(&socket).is_ok()
        });
    }

    fn wait_agent_ready(&mut self, i: usize) {
        let a = &mut self.agents[i];
        let (listen, http, log) = (a.listen, a.http, a.log.clone());
        let child = a.child.as_mut().expect("agent not started");
        wait_ready(&format!("agent {}", a.name), child, &log, || {
            tcp_open(listen) && tcp_open(http)
        });
    }

    /// Starts agent `i` again (after [`Network::stop_agent`]) and waits until
    /// it listens.
    pub fn start_agent(&mut self, i: usize) {
        self.spawn_agent(i);
        self.wait_agent_ready(i);
    }

    /// The origin daemon's process id, while running.
    pub fn origin_pid(&self) -> Option<u32> {
        self.origin.as_ref().map(Child::id)
    }

    /// Stops the origin daemon: SIGKILL, or SIGTERM and wait for a clean exit.
    pub fn stop_origin(&mut self, signal: Signal) {
        let mut child = self.origin.take().expect("the origin is not running");
        stop_child(&mut child, signal);
    }

    /// Replaces the extra environment of agent `i` (used from its next start).
    pub fn set_agent_env(&mut self, i: usize, env: &[(&str, &str)]) {
        self.agents[i].env = env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
    }

    /// Sets a top-level key of agent `i`'s `agent.toml` (used from its next start).
    pub fn set_agent_config(&mut self, i: usize, key: &str, value: &str) {
        set_toml_key(&self.agents[i].config, key, value);
    }

    /// Stops agent `i`: SIGKILL, or SIGTERM and wait for a clean exit.
    pub fn stop_agent(&mut self, i: usize, signal: Signal) {
        let a = &mut self.agents[i];
        let mut child = a
            .child
            .take()
            .unwrap_or_else(|| panic!("agent {} is not running", a.name));
        stop_child(&mut child, signal);
    }

    /// Runs `hotpush-origin publish <repo> --from <from> <extra…>`.
    pub fn publish(&self, repo: &str, from: &Path, extra: &[&str]) -> Publish {
        let start = Instant::now();
        let out = run(&mut self.publish_cmd(repo, from, extra));
        let elapsed = start.elapsed();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let json = if extra.contains(&"--json") {
            stdout
                .lines()
                .rev()
                .find(|l| l.trim_start().starts_with('{'))
                .and_then(|l| serde_json::from_str(l).ok())
        } else {
            None
        };
        Publish {
            code: out.status.code().unwrap_or(-1),
            stdout,
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            json,
            elapsed,
        }
    }

    /// The `publish` command line, for callers that need to spawn it.
    pub fn publish_cmd(&self, repo: &str, from: &Path, extra: &[&str]) -> Command {
        let mut cmd = self.origin_cmd();
        cmd.args(["publish", repo])
            .arg("--from")
            .arg(from)
            .args(extra);
        cmd
    }

    /// `hotpush-origin status --json`.
    pub fn status(&self) -> serde_json::Value {
        let out = run_ok(self.origin_cmd().args(["status", "--json"]));
        serde_json::from_str(out.trim())
            .unwrap_or_else(|e| panic!("status --json printed invalid JSON ({e}): {out}"))
    }

    /// (version, bytes sent) of the last completed push of `repo` to
    /// `agent`, from `status --json`.
    pub fn last_push(&self, agent: &str, repo: &str) -> Option<(u64, u64)> {
        let pushes = self.last_pushes(repo);
        let p = pushes.get(agent)?;
        Some((p["version"].as_u64()?, p["bytes_sent"].as_u64()?))
    }

    /// Agent name → `last_push` of `repo` (version, bytes_sent, elapsed_ms,
    /// flip_wait_ms, flipped_unix_ms), for every agent with one, from one
    /// `status --json`.
    pub fn last_pushes(&self, repo: &str) -> BTreeMap<String, serde_json::Value> {
        let status = self.status();
        let mut out = BTreeMap::new();
        for a in status["agents"].as_array().into_iter().flatten() {
            let Some(name) = a["name"].as_str() else {
                continue;
            };
            for m in a["mirrors"].as_array().into_iter().flatten() {
                if m["repo"] == repo && !m["last_push"].is_null() {
                    out.insert(name.to_owned(), m["last_push"].clone());
                }
            }
        }
        out
    }

    /// `http://127.0.0.1:PORT/metalink?repo=<r>&arch=<a>` for repo `<r>/<a>`.
    pub fn metalink_url(&self, repo: &str) -> String {
        let (r, arch) = repo
            .rsplit_once('/')
            .unwrap_or_else(|| panic!("repo {repo:?} has no /arch"));
        format!("http://{}/metalink?repo={r}&arch={arch}", self.origin_http)
    }

    /// The metalink document for `repo`.
    pub fn metalink(&self, repo: &str) -> anyhow::Result<String> {
        let body = http_get(&self.metalink_url(repo))?;
        Ok(String::from_utf8(body)?)
    }

    /// The metalink of `repo`, and the names of the agents it lists
    /// (sorted).
    pub fn listed(&self, repo: &str) -> (Vec<String>, Metalink) {
        let m = Metalink::parse(&self.metalink(repo).expect("GET the metalink"));
        let mut names: Vec<String> = self
            .agents
            .iter()
            .filter(|a| m.urls.contains(&a.repomd_url(repo)))
            .map(|a| a.name.clone())
            .collect();
        names.sort();
        (names, m)
    }

    /// The origin's log so far, without colour codes.
    pub fn origin_log_text(&self) -> String {
        strip_ansi(&std::fs::read_to_string(&self.origin_log).unwrap_or_default())
    }

    fn dump_logs(&self) {
        let mut logs = vec![("origin".to_owned(), self.origin_log.clone())];
        logs.extend(self.agents.iter().map(|a| (a.name.clone(), a.log.clone())));
        for (name, path) in logs {
            let text = strip_ansi(&std::fs::read_to_string(&path).unwrap_or_default());
            let lines: Vec<&str> = text.lines().collect();
            let tail = &lines[lines.len().saturating_sub(40)..];
            eprintln!(
                "---- {name} log ({}), last {} lines ----\n{}",
                path.display(),
                tail.len(),
                tail.join("\n")
            );
        }
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        for a in &mut self.agents {
            if let Some(mut c) = a.child.take() {
                stop_child(&mut c, Signal::Kill);
            }
        }
        if let Some(mut c) = self.origin.take() {
            stop_child(&mut c, Signal::Kill);
        }
        if std::thread::panicking() {
            self.dump_logs();
        }
        if std::env::var_os("HOTPUSH_KEEP_TEST_DIR").is_some()
            && let Some(dir) = self.dir.take()
        {
            eprintln!("kept the test dir {}", dir.keep().display());
        }
    }
}

fn tcp_open(addr: SocketAddr) -> bool {
    TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
}

fn wait_ready(what: &str, child: &mut Child, log: &Path, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            panic!(
                "{what} exited with {status} before it was ready; log {}:\n{}",
                log.display(),
                strip_ansi(&std::fs::read_to_string(log).unwrap_or_default())
            );
        }
        if ready() {
            return;
        }
        if Instant::now() >= deadline {
            panic!(
                "{what} not ready after {READY_TIMEOUT:?}; log {}:\n{}",
                log.display(),
                strip_ansi(&std::fs::read_to_string(log).unwrap_or_default())
            );
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

pub(crate) fn stop_child(child: &mut Child, signal: Signal) {
    if signal == Signal::Term {
        let sent = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .is_ok_and(|s| s.success());
        if sent {
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// Relative paths of the regular files under `root`, sorted; `follow`
/// follows symlinks. Entries whose name starts with `.` are skipped.
pub fn walk_files(root: &Path, follow: bool) -> Vec<String> {
    fn go(root: &Path, dir: &Path, follow: bool, out: &mut Vec<String>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            if e.file_name().to_string_lossy().starts_with('.') {
                continue;
            }
            let path = e.path();
            let meta = if follow {
                std::fs::metadata(&path)
            } else {
                std::fs::symlink_metadata(&path)
            };
            let Ok(meta) = meta else { continue };
            if meta.is_dir() {
                go(root, &path, follow, out);
            } else if meta.is_file() {
                let rel = path.strip_prefix(root).expect("under root");
                out.push(rel.to_string_lossy().into_owned());
            }
        }
    }
    let mut out = Vec::new();
    go(root, root, follow, &mut out);
    out.sort();
    out
}

/// What a metalink says about repomd.xml (parsed independently of the
/// product's own parser, with plain string search).
#[derive(Debug, Default)]
pub struct Metalink {
    /// `<url>` texts in document order.
    pub urls: Vec<String>,
    /// `<hash type="…">` → value.
    pub hashes: BTreeMap<String, String>,
    pub size: Option<u64>,
    pub has_alternates: bool,
}

impl Metalink {
    pub fn parse(text: &str) -> Self {
        let mut m = Metalink {
            has_alternates: text.contains("mm0:alternates"),
            ..Default::default()
        };
        for part in text.split("<url").skip(1) {
            if let Some((_, rest)) = part.split_once('>')
                && let Some((url, _)) = rest.split_once("</url>")
            {
                m.urls.push(url.trim().replace("&amp;", "&"));
            }
        }
        for part in text.split("<hash type=\"").skip(1) {
            if let Some((ty, rest)) = part.split_once("\">")
                && let Some((value, _)) = rest.split_once("</hash>")
            {
                // Only the first (current) file's hashes.
                m.hashes
                    .entry(ty.to_owned())
                    .or_insert_with(|| value.trim().to_owned());
            }
        }
        m.size = text
            .split_once("<size>")
            .and_then(|(_, r)| r.split_once("</size>"))
            .and_then(|(s, _)| s.trim().parse().ok());
        m
    }
}

/// Fixture repos.
pub mod fixture {
    use super::*;

    /// `tests/rpm-fixtures.sh`.
    pub fn script() -> PathBuf {
        workspace_root().join("tests/rpm-fixtures.sh")
    }

    /// Copies a directory tree (regular files and directories).
    pub fn copy_dir(src: &Path, dst: &Path) {
        std::fs::create_dir_all(dst).unwrap_or_else(|e| panic!("mkdir {}: {e}", dst.display()));
        for e in std::fs::read_dir(src).unwrap_or_else(|e| panic!("reading {}: {e}", src.display()))
        {
            let e = e.expect("dir entry");
            let to = dst.join(e.file_name());
            if e.file_type().expect("file type").is_dir() {
                copy_dir(&e.path(), &to);
            } else {
                std::fs::copy(e.path(), &to)
                    .unwrap_or_else(|err| panic!("copying {}: {err}", e.path().display()));
            }
        }
    }

    /// A copy of `deploy/sample-repo` (hello-hotpush 1.0) at `dst`.
    pub fn sample_repo(dst: &Path) {
        copy_dir(&workspace_root().join("deploy/sample-repo"), dst);
    }

    /// Builds `<dir>/Packages/NAME-VERSION-1.noarch.rpm` with `size_kb` KiB of
    /// random payload; returns its path.
    pub fn build_rpm(dir: &Path, name: &str, version: &str, size_kb: u64) -> PathBuf {
        let out = run_ok(
            Command::new("bash")
                .arg(script())
                .arg("build-rpm")
                .arg(dir.join("Packages"))
                .args([name, version, &size_kb.to_string()]),
        );
        PathBuf::from(out.trim())
    }

    /// Runs createrepo_c (with `--update` when repodata exists) on `dir`.
    pub fn createrepo(dir: &Path) {
        run_ok(
            Command::new("bash")
                .arg(script())
                .arg("createrepo")
                .arg(dir),
        );
    }

    /// A repo at `dir` holding one package per `(name, version, size_kb)`.
    pub fn repo_with(dir: &Path, packages: &[(&str, &str, u64)]) {
        for (name, version, kb) in packages {
            build_rpm(dir, name, version, *kb);
        }
        createrepo(dir);
    }

    /// The files a publish of `dir` ships, relative to `dir`:
    /// `repodata/repomd.xml`, every `<location href>` it names, and every
    /// file under `Packages/`.
    pub fn referenced_files(dir: &Path) -> Vec<String> {
        let repomd = std::fs::read_to_string(dir.join("repodata/repomd.xml"))
            .unwrap_or_else(|e| panic!("reading {}/repodata/repomd.xml: {e}", dir.display()));
        let mut files = vec!["repodata/repomd.xml".to_owned()];
        for part in repomd.split("<location href=\"").skip(1) {
            if let Some((href, _)) = part.split_once('"') {
                files.push(href.to_owned());
            }
        }
        files.extend(
            walk_files(&dir.join("Packages"), false)
                .into_iter()
                .map(|p| format!("Packages/{p}")),
        );
        files.sort();
        files.dedup();
        files
    }

    /// sha256 → size of every referenced file of `dir`.
    pub fn blobs(dir: &Path) -> BTreeMap<String, u64> {
        referenced_files(dir)
            .iter()
            .map(|rel| {
                let bytes = read(&dir.join(rel));
                (sha256_hex(&bytes), bytes.len() as u64)
            })
            .collect()
    }

    /// Writes a yum repo at `dir` without rpmbuild or createrepo: one file
    /// per `(path, size)` with deterministic pseudo-random content (varied
    /// by `seed`; a file already there with that size is left alone), then
    /// `repodata/` (a gzipped primary.xml listing them with
    /// sha256 checksums, and repomd.xml with `revision`). The origin checks
    /// repodata checksums, not RPM headers, so this is a valid publish.
    pub fn synthetic_repo(dir: &Path, files: &[(String, u64)], seed: u64, revision: u64) {
        let mut packages = String::new();
        for (i, (path, size)) in files.iter().enumerate() {
            let file = dir.join(path);
            std::fs::create_dir_all(file.parent().expect("a parent"))
                .unwrap_or_else(|e| panic!("mkdir for {}: {e}", file.display()));
            let body = pseudo_random(seed ^ (i as u64).wrapping_mul(0x9e37_79b9), *size);
            // Left alone when already there (same bytes by construction), so
            // that publishing the same dir again sees unchanged files.
            let there = std::fs::metadata(&file).is_ok_and(|m| m.len() == *size);
            if !there {
                std::fs::write(&file, &body)
                    .unwrap_or_else(|e| panic!("writing {}: {e}", file.display()));
            }
            packages.push_str(&format!(
                "<package type=\"rpm\"><name>p{i}</name><arch>noarch</arch>\
                 <checksum type=\"sha256\" pkgid=\"YES\">{}</checksum>\
                 <size package=\"{size}\" installed=\"0\" archive=\"0\"/>\
                 <location href=\"{path}\"/></package>\n",
                sha256_hex(&body)
            ));
        }
        let primary = format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<metadata xmlns=\"http://linux.duke.edu/metadata/common\" packages=\"{}\">\n{packages}</metadata>\n",
            files.len()
        );
        write_repodata(dir, &gzip(primary.as_bytes()), revision);
    }

    /// `repodata/<sha256>-primary.xml.gz` holding `primary_gz` as given, and
    /// a repomd.xml that declares it with `revision` as its timestamp; any
    /// older repodata is removed.
    pub fn write_repodata(dir: &Path, primary_gz: &[u8], revision: u64) {
        let repodata = dir.join("repodata");
        let _ = std::fs::remove_dir_all(&repodata);
        std::fs::create_dir_all(&repodata).expect("mkdir repodata");
        let sum = sha256_hex(primary_gz);
        let href = format!("repodata/{sum}-primary.xml.gz");
        std::fs::write(dir.join(&href), primary_gz).expect("writing primary");
        let repomd = format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<repomd xmlns=\"http://linux.duke.edu/metadata/repo\"><revision>{revision}</revision>\
             <data type=\"primary\"><checksum type=\"sha256\">{sum}</checksum><location href=\"{href}\"/>\
             <timestamp>{revision}</timestamp><size>{}</size></data></repomd>\n",
            primary_gz.len()
        );
        std::fs::write(repodata.join("repomd.xml"), repomd).expect("writing repomd.xml");
    }

    /// gzip of `data`.
    pub fn gzip(data: &[u8]) -> Vec<u8> {
        use std::io::Write;
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(data).expect("gzip");
        gz.finish().expect("gzip")
    }

    /// `len` bytes of a xorshift stream seeded with `seed`: incompressible,
    /// reproducible, fast.
    pub fn pseudo_random(seed: u64, len: u64) -> Vec<u8> {
        let mut x = seed | 1;
        let mut out = Vec::with_capacity(len as usize);
        while (out.len() as u64) < len {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            out.extend_from_slice(&x.to_le_bytes());
        }
        out.truncate(len as usize);
        out
    }

    /// Reads a whole file, panicking with its path.
    pub fn read(path: &Path) -> Vec<u8> {
        let mut buf = Vec::new();
        File::open(path)
            .and_then(|mut f| f.read_to_end(&mut buf))
            .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
        buf
    }
}
