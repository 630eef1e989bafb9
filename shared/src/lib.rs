//! hotpush's shared library: everything the origin and the agents must agree on.
//!
//! # Layout
//! - [`ack`]: an agent's acknowledgement and its public-URL check.
//! - [`admission`]: caps on open connections, oldest idle closed first.
//! - [`clock`]: Unix seconds, read one way.
//! - [`config`]: TOML config parsing and errors shared by both daemons.
//! - [`daemon`]: logging, shutdown and HTTP serving shared by both daemons.
//! - [`digest`]: the `Sha256Digest` newtype and hash-while-writing.
//! - [`limits`]: explicit, documented size limits.
//! - [`relpath`]: validated relative paths (§4 path rules).
//! - [`manifest`]: the snapshot manifest, its encoding and validation; repo names.
//! - [`name`]: validated agent names.
//! - [`snapshot`]: a signed manifest decoded once, as stored and pushed.
//! - [`delta`]: a manifest sent as its changes against the agent's live one.
//! - [`url`]: a mirror's public URL and a repo's metalink query.
//! - [`xml`]: the bounded XML walker every parser here uses.
//! - [`push`]: the push side (one exchange, reconcilers, backoff), used by
//!   the origin and, for relays, by agents.
//! - [`sign`]: ed25519 signing keys, trusted keys, signature checks.
//! - [`store`]: the content-addressed blob store (`objects/`, `tmp/`).
//! - [`http`]: the bounded HTTP server both daemons run.
//! - [`identity`]: TLS identities pinned by SPKI fingerprint, rustls configs.
//! - [`repo`]: repodata (repomd.xml, primary) parsing and repo validation.
//! - [`metalink`]: the MirrorManager-format metalink writer and parser.
//! - [`transport`]: dual-stack listeners, TLS accept loops and gRPC channels.

pub mod ack;
pub mod admission;
pub mod clock;
pub mod config;
pub mod daemon;
pub mod delta;
pub mod digest;
pub mod doctor;
pub mod fetch;
pub mod http;
pub mod identity;
pub mod limits;
pub mod manifest;
pub mod metalink;
pub mod metrics;
pub mod name;
pub mod push;
pub mod relpath;
pub mod repo;
pub mod sign;
pub mod snapshot;
pub mod store;
pub mod transport;
pub mod url;
pub mod xml;

pub use digest::Sha256Digest;
pub use limits::Limits;
