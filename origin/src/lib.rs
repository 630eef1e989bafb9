//! hotpush's origin: the release engineers' side. It validates and signs
//! snapshots, pushes them to partner agents, and serves the metalink that
//! sends dnf only to mirrors that serve the newest snapshot.
//!
//! The daemon is this library; `hotpush-origin` is a thin binary over
//! [`cmd`]. Tests start whole networks in one process with [`Origin::spawn`].
//!
//! # Layout
//! - [`daemon`]: [`Origin::spawn`], listeners and the running handle.
//! - [`origin`]: the shared state and its progress events.
//! - [`source`]: the origin as the push side's version source
//!   (`hotpush_shared::push` does the pushing).
//! - [`publish`]: a directory → a signed, stored snapshot; [`history`]:
//!   the bytes each path had recently, so changed paths are refused.
//! - [`metalink`]: which version clients get, and the document;
//!   [`flip`]: when staged mirrors flip, and what the metalink accepts meanwhile;
//!   [`crawl`]: whether each mirror's front end still serves what it acked.
//! - [`status`]: the status report model, [`page`] its HTML page;
//!   [`metrics`]: Prometheus metrics.
//! - [`control`] (gRPC) and [`web`] (HTTP): thin edges over the above.
//! - [`client`]: the Control service's client (publish and wait, status).
//! - [`db`]: SQLite state; [`config`]: the TOML config.
//! - [`doctor`], [`drill`], [`emptyrepo`]: what their commands do.
//! - [`cmd`]: the command line, one file per subcommand.

pub mod client;
pub mod cmd;
pub mod config;
pub mod control;
pub mod crawl;
pub mod daemon;
pub mod db;
pub mod doctor;
pub mod drill;
pub mod emptyrepo;
pub mod flip;
pub mod history;
pub mod metalink;
pub mod metrics;
pub mod origin;
pub mod page;
pub mod publish;
pub mod source;
pub mod status;
pub mod web;

pub use daemon::{Listeners, OriginHandle, SpawnError};
pub use origin::Origin;
