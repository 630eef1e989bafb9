//! The agent's TOML config. Unknown keys are refused so that a typo is an
//! error at start-up, not a silently ignored setting during an emergency.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use hotpush_shared::Limits;
use hotpush_shared::identity::PeerId;
use hotpush_shared::limits::ConnLimits;
use hotpush_shared::manifest::RepoName;
use hotpush_shared::sign::TrustedKeys;
use hotpush_shared::url::PublicUrl;
use serde::Deserialize;

/// dnf's default `metadata_expire`: a client may hold old repodata this long.
pub const DEFAULT_RETAIN_FOR_SECS: u64 = 48 * 3600;
/// The origin retries a failed push within 30 s, and an agent that was down
/// is retried as soon as it is back: an hour covers both, and bounds what
/// an abandoned push can leave on disk.
pub const DEFAULT_RETAIN_PARTIALS_SECS: u64 = 3600;

pub use hotpush_shared::config::ConfigError;

/// The file as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    listen: Vec<SocketAddr>,
    #[serde(default)]
    http_listen: Vec<SocketAddr>,
    #[serde(default)]
    admin_listen: Vec<SocketAddr>,
    data_dir: PathBuf,
    serve_root: PathBuf,
    tls_cert: PathBuf,
    tls_key: PathBuf,
    origin_ids: Vec<String>,
    origin_keys: Vec<String>,
    repos: Vec<String>,
    #[serde(default)]
    public_url: Option<String>,
    #[serde(default)]
    retain_for_secs: Option<u64>,
    #[serde(default)]
    min_free_bytes: Option<u64>,
    #[serde(default)]
    retain_partials_for_secs: Option<u64>,
    #[serde(default)]
    limits: Limits,
    #[serde(default)]
    connections: ConnLimits,
}

/// A validated config; relative paths are resolved against the file's directory.
#[derive(Debug)]
pub struct Config {
    pub listen: Vec<SocketAddr>,
    pub http_listen: Vec<SocketAddr>,
    /// Prometheus metrics (`/metrics`), for the partner's monitoring only.
    pub admin_listen: Vec<SocketAddr>,
    pub data_dir: PathBuf,
    pub serve_root: PathBuf,
    pub tls_cert: PathBuf,
    pub tls_key: PathBuf,
    pub origin_ids: Vec<PeerId>,
    pub origin_keys: TrustedKeys,
    pub repos: Vec<RepoName>,
    /// Base URL under which clients reach `serve_root` (the partner's front
    /// end); each ack says whether it serves the new snapshot.
    pub public_url: Option<PublicUrl>,
    pub retain_for: Duration,
    /// Refuse a push that would leave less than this free on the data disk.
    pub min_free_bytes: u64,
    /// How long a partial blob that no push is writing is kept for a retry
    /// to resume; under disk pressure, partials no push wants go at once.
    pub retain_partials_for: Duration,
    pub limits: Limits,
    /// Bounds on connections, handshakes, streams and idle time.
    pub connections: ConnLimits,
}

impl Config {
    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = hotpush_shared::config::read(path)?;
        Self::parse(&text, path)
    }

    /// Parses config text; `path` is used for messages and relative paths.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let raw: RawConfig = hotpush_shared::config::parse(text, path)?;
        let invalid = |what: String| ConfigError::Invalid {
            path: path.into(),
            what,
        };
        let resolve = |p: PathBuf| hotpush_shared::config::resolve(path, p);
        if raw.listen.is_empty() {
            return Err(invalid(
                "`listen` needs at least one address, e.g. [\"[::]:7443\"]".into(),
            ));
        }
        let origin_ids = raw
            .origin_ids
            .iter()
            .map(|s| {
                s.parse::<PeerId>()
                    .map_err(|e| invalid(format!("origin_ids: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        if origin_ids.is_empty() {
            return Err(invalid(
                "`origin_ids` is empty: no origin could connect".into(),
            ));
        }
        let origin_keys = TrustedKeys::from_hex(raw.origin_keys.iter().map(String::as_str))
            .map_err(|e| invalid(format!("origin_keys: {e}")))?;
        if origin_keys.is_empty() {
            return Err(invalid(
                "`origin_keys` is empty: no snapshot could be installed".into(),
            ));
        }
        let repos = raw
            .repos
            .iter()
            .map(|r| RepoName::new(r).map_err(|e| invalid(format!("repos: {e}"))))
            .collect::<Result<Vec<_>, _>>()?;
        let public_url = match raw.public_url.filter(|u| !u.is_empty()) {
            Some(u) => Some(PublicUrl::parse(&u).map_err(|e| invalid(format!("public_url: {e}")))?),
            // Without a front end, the built-in server is what clients reach.
            None => raw.http_listen.first().map(|a| PublicUrl::of_listener(*a)),
        };
        Ok(Self {
            public_url,
            listen: raw.listen,
            http_listen: raw.http_listen,
            admin_listen: raw.admin_listen,
            data_dir: resolve(raw.data_dir),
            serve_root: resolve(raw.serve_root),
            tls_cert: resolve(raw.tls_cert),
            tls_key: resolve(raw.tls_key),
            origin_ids,
            origin_keys,
            repos,
            retain_for: Duration::from_secs(raw.retain_for_secs.unwrap_or(DEFAULT_RETAIN_FOR_SECS)),
            min_free_bytes: raw.min_free_bytes.unwrap_or(64 << 20),
            retain_partials_for: Duration::from_secs(
                raw.retain_partials_for_secs
                    .unwrap_or(DEFAULT_RETAIN_PARTIALS_SECS),
            ),
            limits: raw.limits,
            connections: raw.connections,
        })
    }

    /// `public_url/<repo>/repodata/repomd.xml`.
    pub fn public_repomd_url(&self, repo: &RepoName) -> Option<String> {
        Some(self.public_url.as_ref()?.repomd(repo))
    }

    /// True when this agent carries `repo`.
    pub fn carries(&self, repo: &RepoName) -> bool {
        self.repos.contains(repo)
    }
}

/// The commented config `hotpush-agent init` writes.
pub fn template(
    origin_ids: &[String],
    origin_keys: &[String],
    repos: &[String],
    listen: &str,
    http: &str,
) -> String {
    let list = |v: &[String]| {
        v.iter()
            .map(|s| format!("\"{s}\""))
            .collect::<Vec<_>>()
            .join(", ")
    };
    format!(
        r#"# hotpush agent configuration. Relative paths are relative to this file.
# Unknown keys are an error, so a typo cannot be silently ignored.

# Where the origin connects (gRPC over mutual TLS). "[::]" is dual-stack.
listen = ["{listen}"]

# Optional built-in HTTP server for the served tree (for partners without a
# front end, and for demos). Leave empty when nginx/Apache serves serve_root.
http_listen = [{http}]

# Prometheus metrics at /metrics, for your monitoring: keep it off the
# public network (loopback, or a management address).
# admin_listen = ["[::1]:9471"]

# Verified blobs, partial downloads and installed manifests.
data_dir = "data"

# The tree your web server serves: <serve_root>/<repo>/repodata/repomd.xml.
# Must be on the same filesystem as data_dir (files are hard-linked).
serve_root = "www"

# This agent's TLS identity; its id was printed by `hotpush-agent init`.
tls_cert = "tls/cert.pem"
tls_key = "tls/key.pem"

# Origins allowed to connect, by id (`hotpush-origin init` prints it).
origin_ids = [{ids}]

# Origin signing keys whose snapshots may be installed. List two during a
# key rotation (see deploy/ROTATION.md).
origin_keys = [{keys}]

# Repos this agent carries; pushes for any other repo are refused.
repos = [{repos}]

# The base URL of serve_root as clients reach it through your front end,
# e.g. "https://mirror.example.org/hotpush/". After every swap the agent
# fetches <public_url>/<repo>/repodata/repomd.xml from it and tells the
# origin whether clients see the new snapshot; the metalink lists this
# mirror only when they do. Defaults to the built-in HTTP server.
# public_url = ""

# How long files of a replaced snapshot stay reachable (dnf's default
# metadata_expire is 48 h, so clients may still ask for them).
# retain_for_secs = 172800

# Refuse pushes that would leave less than this free on the data disk.
# min_free_bytes = 67108864

# How long a half-received blob is kept for a retry to resume (seconds).
# Under disk pressure, half-received blobs no push wants go at once.
# retain_partials_for_secs = 3600

# Bounds on what peers can make this agent hold open; the defaults suit a
# LimitNOFILE of 65536 (deploy/systemd/hotpush-agent.service).
{connections}"#,
        http = if http.is_empty() {
            String::new()
        } else {
            format!("\"{http}\"")
        },
        ids = list(origin_ids),
        keys = list(origin_keys),
        repos = list(repos),
        connections = ConnLimits::commented_defaults(&[]),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90";
    const KEY: &str = "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a";

    #[test]
    fn template_parses() {
        let text = template(
            &[ID.into()],
            &[KEY.into()],
            &["f41-critical/x86_64".into()],
            "[::]:7443",
            "[::]:8080",
        );
        let c = Config::parse(&text, Path::new("/etc/hotpush/agent.toml")).unwrap();
        assert_eq!(c.data_dir, Path::new("/etc/hotpush/data"));
        assert_eq!(c.retain_for, Duration::from_secs(DEFAULT_RETAIN_FOR_SECS));
        assert_eq!(c.http_listen.len(), 1);
        let repo = RepoName::new("f41-critical/x86_64").unwrap();
        assert_eq!(
            c.public_repomd_url(&repo).as_deref(),
            Some("http://[::1]:8080/f41-critical/x86_64/repodata/repomd.xml")
        );
        let fronted = format!("{text}\npublic_url = \"https://m.example/hotpush/\"\n");
        let c = Config::parse(&fronted, Path::new("/a.toml")).unwrap();
        assert_eq!(
            c.public_repomd_url(&repo).as_deref(),
            Some("https://m.example/hotpush/f41-critical/x86_64/repodata/repomd.xml")
        );
        assert!(c.carries(&RepoName::new("f41-critical/x86_64").unwrap()));
    }

    #[test]
    fn refuses_unknown_keys_and_bad_values() {
        let good = template(&[ID.into()], &[KEY.into()], &["r".into()], "[::]:7443", "");
        let typo = good.replace("serve_root", "serve_rot");
        assert!(matches!(
            Config::parse(&typo, Path::new("a.toml")),
            Err(ConfigError::Parse { .. })
        ));
        let bad_id = good.replace(ID, "zz");
        let err = Config::parse(&bad_id, Path::new("a.toml"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("origin_ids"), "{err}");
        let no_keys = good.replace(&format!("\"{KEY}\""), "");
        let err = Config::parse(&no_keys, Path::new("a.toml"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("origin_keys"), "{err}");
    }
}
