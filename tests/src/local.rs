//! A whole network in one process: an origin and agents started with
//! [`Origin::spawn`] and [`Agent::spawn`] on loopback port 0, talking real
//! mutual TLS over real sockets. No prior build, no port polling, no log
//! scraping: tests read state through the libraries' own types.
//!
//! Process-level tests ([`crate::Network`]) remain where a real process
//! matters: SIGKILL, failpoints, real dnf and nginx, the README's commands.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use hotpush_agent::{Agent, AgentHandle};
use hotpush_origin::client::{self, Summary, Wait};
use hotpush_origin::db::{AgentRecord, Db};
use hotpush_origin::status::Report;
use hotpush_origin::{Origin, OriginHandle};
use hotpush_shared::identity::Identity;
use hotpush_shared::manifest::RepoName;
use hotpush_shared::name::AgentName;
use hotpush_shared::push::Target;
use hotpush_shared::sign::SigningKey;
use hotpush_shared::url::{MetalinkQuery, PublicUrl};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::Family;

/// One agent running in this process.
pub struct LocalAgent {
    pub name: String,
    pub dir: PathBuf,
    pub handle: AgentHandle,
}

impl LocalAgent {
    /// Its built-in HTTP server.
    pub fn http(&self) -> SocketAddr {
        self.handle.http_addrs[0]
    }

    /// The URL a metalink must list for `repo` on this agent.
    pub fn repomd_url(&self, repo: &str) -> String {
        format!("http://{}/{repo}/repodata/repomd.xml", self.http())
    }

    /// `<serve_root>/<repo>`.
    pub fn served(&self, repo: &str) -> PathBuf {
        self.handle.agent.config.serve_root.join(repo)
    }

    /// Every regular file reachable under the served tree of `repo`.
    pub fn served_files(&self, repo: &str) -> Vec<String> {
        crate::walk_files(&self.served(repo), true)
    }

    /// A file of the served tree, or `None`.
    pub fn read_served(&self, repo: &str, rel: &str) -> Option<Vec<u8>> {
        std::fs::read(self.served(repo).join(rel)).ok()
    }
}

/// An origin and its agents in this process.
pub struct LocalNetwork {
    dir: tempfile::TempDir,
    pub origin: OriginHandle,
    pub agents: Vec<LocalAgent>,
    pub control_socket: PathBuf,
    shutdown: CancellationToken,
}

async fn bind(ip: IpAddr) -> TcpListener {
    TcpListener::bind(SocketAddr::new(ip, 0))
        .await
        .unwrap_or_else(|e| panic!("binding {ip}:0: {e}"))
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
}

impl LocalNetwork {
    /// Starts an origin and one agent per entry of `families`, each
    /// carrying `repos`, registered with the origin as `m0`, `m1`, ….
    pub async fn start(repos: &[&str], families: &[Family]) -> Self {
        hotpush_shared::identity::install_crypto_provider();
        let dir = tempfile::Builder::new()
            .prefix("hotpush-local.")
            .tempdir()
            .expect("creating the test dir");
        let shutdown = CancellationToken::new();
        let origin_dir = dir.path().join("origin");
        for sub in ["keys", "tls", "data"] {
            std::fs::create_dir_all(origin_dir.join(sub)).expect("mkdir");
        }
        let key = SigningKey::generate().expect("signing key");
        key.save(&origin_dir.join("keys/signing.key"))
            .expect("save key");
        let origin_identity = Identity::generate("hotpush-origin").expect("identity");
        origin_identity
            .save(
                &origin_dir.join("tls/cert.pem"),
                &origin_dir.join("tls/key.pem"),
            )
            .expect("save identity");
        let origin_id = origin_identity.id().expect("id").to_string();
        let http = bind(IpAddr::V4(Ipv4Addr::LOCALHOST)).await;
        let origin_config = origin_dir.join("origin.toml");
        let http_addr = http.local_addr().expect("local addr");
        write(
            &origin_config,
            &hotpush_origin::config::template(&http_addr.to_string()),
        );
        for (key, value) in crate::TEST_FLIP_TIMING {
            crate::set_toml_key(&origin_config, key, value);
        }
        let config = hotpush_origin::config::Config::load(&origin_config).expect("origin config");
        let db = Db::open(&config.data_dir).expect("origin db");

        let mut agents = Vec::new();
        for (i, family) in families.iter().enumerate() {
            let ip = match family {
                Family::V4 => IpAddr::V4(Ipv4Addr::LOCALHOST),
                Family::V6 => IpAddr::V6(Ipv6Addr::LOCALHOST),
            };
            let (push, web) = (bind(ip).await, bind(ip).await);
            let (push_addr, web_addr) = (
                push.local_addr().expect("addr"),
                web.local_addr().expect("addr"),
            );
            let name = format!("m{i}");
            let adir = dir.path().join(&name);
            for sub in ["tls", "data", "www"] {
                std::fs::create_dir_all(adir.join(sub)).expect("mkdir");
            }
            let identity = Identity::generate("hotpush-agent").expect("identity");
            identity
                .save(&adir.join("tls/cert.pem"), &adir.join("tls/key.pem"))
                .expect("save identity");
            let repo_list: Vec<String> = repos.iter().map(|r| (*r).to_owned()).collect();
            let path = adir.join("agent.toml");
            write(
                &path,
                &hotpush_agent::config::template(
                    std::slice::from_ref(&origin_id),
                    &[key.public_hex()],
                    &repo_list,
                    &push_addr.to_string(),
                    &web_addr.to_string(),
                ),
            );
            let agent_config = hotpush_agent::config::Config::load(&path).expect("agent config");
            let listeners = hotpush_agent::Listeners {
                push: vec![push],
                http: vec![web],
                admin: Vec::new(),
            };
            let handle = Agent::spawn(agent_config, listeners, shutdown.clone())
                .await
                .expect("agent starts");
            db.add_agent(&AgentRecord {
                target: Target {
                    name: AgentName::new(&name).expect("name"),
                    endpoint: format!("https://{push_addr}"),
                    peer_id: identity.id().expect("id"),
                    public_url: PublicUrl::of_listener(web_addr),
                    repos: repos
                        .iter()
                        .map(|r| RepoName::new(r).expect("repo"))
                        .collect(),
                },
                weight: 100,
            })
            .expect("agent add");
            agents.push(LocalAgent {
                name,
                dir: adir,
                handle,
            });
        }
        let control_socket = config.control_socket.clone();
        let listeners = hotpush_origin::Listeners {
            control: tokio::net::UnixListener::bind(&control_socket).expect("control socket"),
            remote_control: Vec::new(),
            http: vec![http],
        };
        let origin = Origin::spawn(config, listeners, shutdown.clone())
            .await
            .expect("origin starts");
        Self {
            dir,
            origin,
            agents,
            control_socket,
            shutdown,
        }
    }

    /// The temp dir everything lives in.
    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    /// Publishes `from` as the next version of `repo` through the control
    /// socket, as `hotpush-origin publish` does, and waits for `wait`.
    pub async fn publish(&self, repo: &str, from: &Path, wait: Wait, timeout: Duration) -> Summary {
        let mut control = client::connect_local(&self.control_socket)
            .await
            .expect("control socket");
        client::publish(
            &mut control,
            repo,
            Some(from.to_path_buf()),
            wait,
            timeout,
            client::Options::default(),
            |_| {},
        )
        .await
        .expect("publish")
    }

    /// The origin's status report.
    pub async fn status(&self) -> Report {
        let mut control = client::connect_local(&self.control_socket)
            .await
            .expect("control socket");
        client::status(&mut control).await.expect("status")
    }

    /// The metalink document for `repo`, over HTTP.
    pub async fn metalink(&self, repo: &str) -> anyhow::Result<String> {
        let query = MetalinkQuery::new(RepoName::new(repo)?);
        let url = query.url(&format!("http://{}", self.origin.http_addrs[0]));
        let response = reqwest::get(&url).await?;
        anyhow::ensure!(
            response.status().is_success(),
            "GET {url}: {}",
            response.status()
        );
        Ok(response.text().await?)
    }

    /// Stops every daemon and waits for them.
    pub async fn stop(self) {
        self.shutdown.cancel();
        self.origin.stopped().await;
        for a in self.agents {
            a.handle.stopped().await;
        }
    }
}
