//! Explicit limits. Every number here bounds memory, disk or time that a
//! peer could otherwise make us spend; each default says why it is what it is.

use serde::{Deserialize, Serialize};

/// Limits enforced while building, sending and receiving snapshots.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Entries in one manifest. Fedora's largest repos hold ~70,000 packages;
    /// the emergency repo holds a handful.
    pub max_entries: usize,
    /// Sum of entry sizes in one snapshot: 64 GiB.
    pub max_total_bytes: u64,
    /// One blob (one package): 4 GiB, rpm's own header limit.
    pub max_blob_bytes: u64,
    /// Encoded manifest: 16 MiB (~100 bytes per entry).
    pub max_manifest_bytes: usize,
    /// Largest Chunk payload accepted: 1 MiB (the origin sends 256 KiB).
    pub max_chunk_bytes: usize,
    /// One path: 1024 bytes; one path segment: 255 bytes (NAME_MAX).
    pub max_path_bytes: usize,
    /// Decompressed primary.xml: 2 GiB, against decompression bombs.
    pub max_primary_bytes: u64,
    /// repomd.xml: 1 MiB.
    pub max_repomd_bytes: u64,
}

/// Bytes per chunk the origin sends. Large enough that a gigabyte is a
/// few thousand messages, small enough that a chunk stays in the CPU's
/// cache between the agent's decoding, hashing and writing it: 1 MiB
/// chunks went through memory at each of those steps. Measured in one
/// hour, a cold 1 GB push to four agents took 8.1–8.3 s with 1 MiB,
/// 6.0–6.1 s with 256 KiB, 6.2–6.4 s with 128 KiB and 6.5 s with 64 KiB
/// (docs/PERFORMANCE.md).
pub const CHUNK_BYTES: usize = 256 << 10;

/// What is sent to an agent whose Want does not say what it accepts.
pub const OLD_AGENT_CHUNK_BYTES: usize = 64 * 1024;

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_entries: 200_000,
            max_total_bytes: 64 << 30,
            max_blob_bytes: 4 << 30,
            max_manifest_bytes: 16 << 20,
            max_chunk_bytes: 1 << 20,
            max_path_bytes: 1024,
            max_primary_bytes: 2 << 30,
            max_repomd_bytes: 1 << 20,
        }
    }
}

/// Bounds on what peers can make a daemon hold open: connections, TLS
/// handshakes, HTTP/2 streams, unverified Offer bytes, idle time. Set under
/// `[connections]` in either config; `doctor` checks them against the
/// process's descriptor limit.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConnLimits {
    /// Open HTTP connections (metalink, status, the built-in file server).
    /// A dnf client holds one for a few milliseconds; 4,096 leaves room for
    /// a flood of clients while staying far under a 65,536-descriptor limit.
    pub max_http_connections: usize,
    /// HTTP connections from one address (one /64 for IPv6): enough for a
    /// large NAT, far too few for one host to fill the server.
    pub max_http_connections_per_address: usize,
    /// Seconds a client may take to send a request's headers, or to start
    /// the next request on a kept-alive connection. dnf sends its headers at
    /// once; 10 s forgives slow links and sheds idle connections.
    pub http_header_timeout_secs: u64,
    /// TLS handshakes under way at once on a push or control port.
    pub max_tls_handshakes: usize,
    /// TLS handshakes under way from one address (one /64 for IPv6).
    pub max_tls_handshakes_per_address: usize,
    /// Seconds a peer may take to finish the TLS handshake: a real one takes
    /// a few round trips.
    pub tls_handshake_timeout_secs: u64,
    /// Established mutual-TLS connections per pinned peer id; a new one
    /// closes that peer's oldest (a restarted origin gets in at once).
    pub max_connections_per_peer: usize,
    /// Concurrent HTTP/2 streams per connection: a push per repo, and Status.
    pub max_streams_per_connection: u32,
    /// Bytes of Offers being read before their signature is checked, in
    /// total over every connection and stream (each Offer is charged the
    /// manifest size limit). 48 MiB: three full-size manifests at once.
    pub max_unverified_offer_bytes: usize,
    /// Seconds a push may go without a message before the agent ends it and
    /// lets go of its partial blob (kept for resume): an honest origin sends
    /// a chunk at least every few seconds; a partition without a reset does not.
    pub push_idle_timeout_secs: u64,
    /// Descriptors kept free for the daemon's own files (blobs, the served
    /// tree, SQLite): connection caps never eat into these.
    pub reserved_fds: usize,
    /// Seconds between HTTP/2 pings on push and control connections, and
    /// how long an answer may take: a peer gone without a reset is noticed
    /// within twice this.
    pub keepalive_secs: u64,
}

impl Default for ConnLimits {
    fn default() -> Self {
        Self {
            max_http_connections: 4096,
            max_http_connections_per_address: 256,
            http_header_timeout_secs: 10,
            max_tls_handshakes: 256,
            max_tls_handshakes_per_address: 32,
            tls_handshake_timeout_secs: 5,
            max_connections_per_peer: 4,
            max_streams_per_connection: 16,
            max_unverified_offer_bytes: 48 << 20,
            push_idle_timeout_secs: 60,
            reserved_fds: 512,
            keepalive_secs: 20,
        }
    }
}

impl ConnLimits {
    /// The `[connections]` table with every default but those named in
    /// `skip`, commented out, for the config templates `init` writes: the
    /// values come from [`ConnLimits::default`], so the two cannot drift.
    pub fn commented_defaults(skip: &[&str]) -> String {
        let table = toml::to_string(&Self::default()).unwrap_or_default();
        let mut out = String::from("# [connections]\n");
        for line in table.lines() {
            let key = line.split(" = ").next().unwrap_or_default();
            if !line.is_empty() && !skip.contains(&key) {
                out.push_str("# ");
                out.push_str(line);
                out.push('\n');
            }
        }
        out
    }

    /// The bounds only an agent applies (on pushes it receives).
    pub const AGENT_ONLY: &'static [&'static str] =
        &["max_unverified_offer_bytes", "push_idle_timeout_secs"];

    /// Descriptors these caps may use at once, plus the reserve: what
    /// `LimitNOFILE` must allow. `peers` is how many pinned peers may connect.
    pub fn descriptors_needed(&self, peers: usize) -> usize {
        self.max_http_connections
            + self.max_tls_handshakes
            + self.max_connections_per_peer * peers.max(1)
            + self.reserved_fds
    }

    /// These caps shrunk, if need be, so that they fit `fd_limit`
    /// descriptors with the reserve untouched (HTTP and handshakes give up
    /// room in proportion); the warning says what was cut.
    pub fn fit(&self, fd_limit: usize, peers: usize) -> (Self, Option<String>) {
        let needed = self.descriptors_needed(peers);
        if needed <= fd_limit {
            return (self.clone(), None);
        }
        let fixed = self.max_connections_per_peer * peers.max(1) + self.reserved_fds;
        let room = fd_limit.saturating_sub(fixed).max(2);
        let flexible = self.max_http_connections + self.max_tls_handshakes;
        let scale = |n: usize| (n * room / flexible).max(1);
        let fitted = Self {
            max_http_connections: scale(self.max_http_connections),
            max_tls_handshakes: scale(self.max_tls_handshakes),
            ..self.clone()
        };
        let warning = format!(
            "the descriptor limit ({fd_limit}) is below what the connection caps need ({needed}): \
             serving at most {} HTTP connections and {} TLS handshakes; raise LimitNOFILE \
             (deploy/systemd sets 65536)",
            fitted.max_http_connections, fitted.max_tls_handshakes
        );
        (fitted, Some(warning))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_systemd_units_allow_the_default_caps() {
        let deploy = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/systemd");
        for unit in ["hotpush-origin.service", "hotpush-agent.service"] {
            let text = std::fs::read_to_string(deploy.join(unit)).unwrap();
            let limit: usize = text
                .lines()
                .find_map(|l| l.strip_prefix("LimitNOFILE="))
                .unwrap_or_else(|| panic!("{unit} sets no LimitNOFILE"))
                .trim()
                .parse()
                .unwrap();
            // A dozen pinned peers (origins or publishers) is generous.
            let needed = ConnLimits::default().descriptors_needed(12);
            assert!(limit >= needed, "{unit}: LimitNOFILE={limit} < {needed}");
        }
    }

    #[test]
    fn commented_defaults_are_the_defaults_and_parse_back() {
        let text = ConnLimits::commented_defaults(ConnLimits::AGENT_ONLY);
        assert!(text.starts_with("# [connections]\n# max_http_connections = 4096\n"));
        assert!(!text.contains("push_idle_timeout_secs"), "{text}");
        assert!(text.contains("# reserved_fds = 512\n"), "{text}");
        let uncommented: String = text.lines().map(|l| format!("{}\n", &l[2..])).collect();
        #[derive(serde::Deserialize)]
        struct File {
            connections: ConnLimits,
        }
        let parsed: File = toml::from_str(&uncommented).unwrap();
        assert_eq!(parsed.connections, ConnLimits::default());
        let every = ConnLimits::commented_defaults(&[]);
        assert!(every.contains("# push_idle_timeout_secs = 60\n"), "{every}");
    }

    #[test]
    fn caps_shrink_to_fit_the_descriptor_limit_and_keep_the_reserve() {
        let c = ConnLimits::default();
        let (same, warning) = c.fit(65536, 2);
        assert_eq!((same, warning), (c.clone(), None));
        let (fitted, warning) = c.fit(1024, 2);
        assert!(warning.is_some());
        assert!(fitted.descriptors_needed(2) <= 1024, "{fitted:?}");
        assert_eq!(fitted.reserved_fds, c.reserved_fds);
        assert!(fitted.max_http_connections >= 1 && fitted.max_tls_handshakes >= 1);
    }
}
