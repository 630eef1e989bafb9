//! The origin's TOML config. Unknown keys are refused.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use hotpush_shared::Limits;
use hotpush_shared::identity::PeerId;
use hotpush_shared::limits::ConnLimits;
use serde::Deserialize;

/// How long a signed manifest may be installed: long enough for an agent
/// that was down over a long weekend to catch up, short enough that an old
/// push cannot be replayed months later.
pub const DEFAULT_MANIFEST_LIFETIME_SECS: u64 = 14 * 86400;

/// How long clients and caches may keep a metalink (`Cache-Control:
/// max-age`). librepo asks with `no-cache`, so this bounds only proxies and
/// CDNs that serve it anyway; short, because the metalink is what tells
/// clients a fix exists.
pub const DEFAULT_METALINK_MAX_AGE_SECS: u64 = 10;
/// Added to the metalink's max-age to make the settle delay: the time a
/// client takes from reading the metalink to fetching repomd.xml.
pub const SETTLE_MARGIN_SECS: u64 = 2;
/// How long the first mirror to stage waits for the others, so that mirrors
/// staging at about the same time flip together; a mirror that stages
/// later flips as soon as it has (that is safe once the settle is over), so
/// a slow or unreachable partner delays the others by this at most.
pub const DEFAULT_STAGE_WAIT_SECS: u64 = 5;
/// How often mirrors are crawled by default.
pub const DEFAULT_CRAWL_INTERVAL_SECS: u64 = 60;
/// How far back a publish looks for the bytes a path had: dnf's default
/// `metadata_expire`, how long a client may hold older metadata.
pub const CHANGED_PATH_WINDOW_SECS: u64 = 48 * 3600;

pub use hotpush_shared::config::ConfigError;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    data_dir: PathBuf,
    signing_key: PathBuf,
    tls_cert: PathBuf,
    tls_key: PathBuf,
    control_socket: PathBuf,
    #[serde(default)]
    http_listen: Vec<SocketAddr>,
    #[serde(default)]
    min_acks: Option<usize>,
    #[serde(default)]
    fallback_url: Option<String>,
    #[serde(default)]
    alternates_grace_secs: Option<u64>,
    #[serde(default)]
    public_url: Option<String>,
    #[serde(default)]
    manifest_lifetime_secs: Option<u64>,
    #[serde(default)]
    metalink_max_age_secs: Option<u64>,
    #[serde(default)]
    settle_secs: Option<f64>,
    #[serde(default)]
    stage_wait_secs: Option<f64>,
    #[serde(default)]
    crawl_interval_secs: Option<f64>,
    #[serde(default)]
    control_listen: Vec<SocketAddr>,
    #[serde(default, rename = "publisher")]
    publishers: Vec<RawPublisher>,
    #[serde(default)]
    limits: Limits,
    #[serde(default)]
    connections: ConnLimits,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPublisher {
    name: String,
    id: String,
}

/// A remote publisher allowed on `control_listen`.
#[derive(Debug, Clone)]
pub struct Publisher {
    pub name: String,
    pub id: PeerId,
}

/// A validated config; relative paths are resolved against the file's directory.
#[derive(Debug, Clone)]
pub struct Config {
    pub data_dir: PathBuf,
    pub signing_key: PathBuf,
    pub tls_cert: PathBuf,
    pub tls_key: PathBuf,
    pub control_socket: PathBuf,
    pub http_listen: Vec<SocketAddr>,
    /// Acks needed before the metalink moves to a new version.
    pub min_acks: usize,
    /// Base URL of a copy the origin's operator serves (`{repo}` is replaced),
    /// listed last in every metalink as the fallback.
    pub fallback_url: Option<String>,
    /// After a publish, how long the previous repomd.xml stays acceptable as
    /// an `mm0:alternate` (and mirrors still on it stay listed, after the
    /// current ones). Zero, the default, lists no alternates: an alternate
    /// lets a client stay on the vulnerable version.
    pub alternates_grace: Duration,
    /// Base URL under which clients reach this origin's HTTP (for `repo-file`).
    pub public_url: Option<String>,
    pub manifest_lifetime: Duration,
    /// `Cache-Control: max-age` of the metalink.
    pub metalink_max_age: Duration,
    /// From the moment the metalink accepts a new repomd.xml (as an
    /// alternate) to the moment mirrors are told to flip: every metalink a
    /// client may still hold then accepts it too. Default: the max-age
    /// plus [`SETTLE_MARGIN_SECS`].
    pub settle: Duration,
    /// How long the first mirror to stage waits for the others still
    /// receiving before the staged ones flip.
    pub stage_wait: Duration,
    /// How often every mirror's public repomd.xml is fetched (and after
    /// each ack); a mirror is listed only while it serves what it acked.
    pub crawl_interval: Duration,
    /// Control service over mutual TLS, for publishers on other hosts.
    pub control_listen: Vec<SocketAddr>,
    /// Who may connect to `control_listen`, by pinned TLS id.
    pub publishers: Vec<Publisher>,
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
        let resolve = |p: PathBuf| hotpush_shared::config::resolve(path, p);
        let min_acks = raw.min_acks.unwrap_or(1);
        let max_age = raw
            .metalink_max_age_secs
            .unwrap_or(DEFAULT_METALINK_MAX_AGE_SECS);
        if let Some(settle) = raw.settle_secs
            && settle < max_age as f64
        {
            tracing::warn!(
                settle,
                max_age,
                "settle_secs is shorter than metalink_max_age_secs: a client holding a metalink \
                 cached just before a publish may find no mirror serving what it names"
            );
        }
        if min_acks == 0 {
            return Err(ConfigError::Invalid {
                path: path.into(),
                what: "min_acks must be at least 1: the metalink may only list mirrors that acked"
                    .into(),
            });
        }
        let publishers = raw
            .publishers
            .into_iter()
            .map(|p| {
                let id = p.id.parse().map_err(|e| ConfigError::Invalid {
                    path: path.into(),
                    what: format!("publisher {:?}: {e}", p.name),
                })?;
                Ok(Publisher { name: p.name, id })
            })
            .collect::<Result<Vec<_>, ConfigError>>()?;
        if !raw.control_listen.is_empty() && publishers.is_empty() {
            return Err(ConfigError::Invalid {
                path: path.into(),
                what: "control_listen is set but no [[publisher]] is listed: nobody could connect"
                    .into(),
            });
        }
        Ok(Self {
            control_listen: raw.control_listen,
            publishers,
            data_dir: resolve(raw.data_dir),
            signing_key: resolve(raw.signing_key),
            tls_cert: resolve(raw.tls_cert),
            tls_key: resolve(raw.tls_key),
            control_socket: resolve(raw.control_socket),
            http_listen: raw.http_listen,
            min_acks,
            fallback_url: raw.fallback_url.filter(|u| !u.is_empty()),
            alternates_grace: Duration::from_secs(raw.alternates_grace_secs.unwrap_or(0)),
            public_url: raw.public_url.filter(|u| !u.is_empty()),
            manifest_lifetime: Duration::from_secs(
                raw.manifest_lifetime_secs
                    .unwrap_or(DEFAULT_MANIFEST_LIFETIME_SECS),
            ),
            metalink_max_age: Duration::from_secs(max_age),
            settle: match raw.settle_secs {
                Some(secs) if secs.is_finite() && secs >= 0.0 => Duration::from_secs_f64(secs),
                Some(secs) => {
                    return Err(ConfigError::Invalid {
                        path: path.into(),
                        what: format!("settle_secs must be a number of seconds ≥ 0, not {secs}"),
                    });
                }
                None => Duration::from_secs(max_age + SETTLE_MARGIN_SECS),
            },
            stage_wait: Duration::from_secs_f64(
                raw.stage_wait_secs
                    .filter(|s| s.is_finite() && *s >= 0.0)
                    .unwrap_or(DEFAULT_STAGE_WAIT_SECS as f64),
            ),
            crawl_interval: match raw.crawl_interval_secs {
                Some(secs) if secs.is_finite() && secs > 0.0 => Duration::from_secs_f64(secs),
                Some(secs) => {
                    return Err(ConfigError::Invalid {
                        path: path.into(),
                        what: format!(
                            "crawl_interval_secs must be a number of seconds > 0, not {secs}"
                        ),
                    });
                }
                None => Duration::from_secs(DEFAULT_CRAWL_INTERVAL_SECS),
            },
            limits: raw.limits,
            connections: raw.connections,
        })
    }
}

/// The commented config `hotpush-origin init` writes.
pub fn template(http_listen: &str) -> String {
    format!(
        r#"# hotpush origin configuration. Relative paths are relative to this file.
# Unknown keys are an error, so a typo cannot be silently ignored.

# SQLite state (versions, acks, audit log) and the blob store.
data_dir = "data"

# ed25519 key that signs every snapshot. Agents trust its public key.
signing_key = "keys/signing.key"

# TLS identity presented to agents; its id was printed by `hotpush-origin init`.
tls_cert = "tls/cert.pem"
tls_key = "tls/key.pem"

# Local control socket used by `hotpush-origin publish`. Whoever can write
# to it can publish: keep it owned by the release-engineering group.
control_socket = "control.sock"

# Metalink, status and metrics over HTTP. "[::]" is dual-stack.
http_listen = ["{http_listen}"]

# The metalink moves to a new version once this many agents acked it.
# min_acks = 1

# A copy the origin's operator serves, listed last in every metalink as a
# fallback ("{{repo}}" is replaced by the repo name). Leave unset for none.
# fallback_url = "https://origin.example.org/hotpush/{{repo}}/"

# The URL clients use to reach this origin's HTTP listener, for the
# metalink= line that `hotpush-origin repo-file` prints.
# public_url = "https://origin.example.org/"

# Seconds after a publish during which the previous repomd.xml is still
# accepted as an mm0:alternate. 0 (the default) lists no alternates: during
# an emergency a client must not be allowed to stay on the vulnerable version.
# alternates_grace_secs = 0

# Publishers on other hosts: the control service over mutual TLS, open only
# to the listed publisher ids (`hotpush-origin publisher init` prints one).
# Every publish is in the audit log under the publisher's name.
# control_listen = ["[::]:7444"]
# [[publisher]]
# name = "alice"
# id = "<64 hex characters>"

# How long a signed manifest may be installed (seconds).
# manifest_lifetime_secs = 1209600

# How long clients and caches may keep the metalink (Cache-Control max-age).
# metalink_max_age_secs = 10

# Between the moment the metalink also accepts a new repomd.xml and the
# moment mirrors switch to it. A client holding a metalink from before the
# publish must find a mirror serving what it names, so keep this at least
# metalink_max_age_secs; the default adds 2 s. `publish` prints it.
# settle_secs = 12

# How long mirrors still receiving a publish may hold back the flip of the
# ones that already staged it (seconds); a late mirror flips when it stages.
# stage_wait_secs = 5

# How often the origin fetches every mirror's public repodata/repomd.xml (as
# clients do, and after each ack). A mirror whose front end fails or serves
# something else leaves the metalink until it serves what it acked again.
# crawl_interval_secs = 60

# Bounds on what peers can make the origin hold open; the defaults suit a
# LimitNOFILE of 65536 (deploy/systemd/hotpush-origin.service).
{connections}"#,
        connections = ConnLimits::commented_defaults(ConnLimits::AGENT_ONLY),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn template_parses_and_typos_are_refused() {
        let text = template("[::]:8000");
        let c = Config::parse(&text, Path::new("/etc/hotpush/origin.toml")).unwrap();
        assert_eq!(c.control_socket, Path::new("/etc/hotpush/control.sock"));
        assert_eq!(c.min_acks, 1);
        assert!(c.fallback_url.is_none());
        let typo = text.replace("control_socket", "control_sockt");
        assert!(Config::parse(&typo, Path::new("a.toml")).is_err());
        let zero = format!("{text}\nmin_acks = 0\n");
        assert!(
            Config::parse(&zero, Path::new("a.toml"))
                .unwrap_err()
                .to_string()
                .contains("min_acks")
        );
    }
}
