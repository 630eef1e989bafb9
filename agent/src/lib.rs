//! hotpush's agent: runs on a partner mirror. Receives signed snapshots
//! from the origin over mutual TLS, verifies them, swaps them in atomically
//! and acknowledges once they are live.
//!
//! The daemon is this library; `hotpush-agent` is a thin binary over
//! [`cmd`]. Tests start agents in process with [`Agent::spawn`].
//!
//! # Layout
//! - [`daemon`]: [`Agent::spawn`], listeners and the running handle.
//! - [`agent`]: the state shared by every push.
//! - [`service`]: the gRPC edge; [`session`]: one Push exchange.
//! - [`verify`]: the numbered checks of an Offer (docs/PROTOCOL.md).
//! - [`swap`]: putting a snapshot live atomically, recovery, GC;
//!   [`state`]: the installed manifests on disk.
//! - [`selfcheck`]: fetching repomd.xml through the public URL before acking.
//! - [`status`]: what this agent serves; [`http`]: the built-in web server
//!   and the admin listener; [`metrics`]: what it exports there.
//! - [`doctor`]: is this mirror ready (`hotpush-agent doctor`).
//! - [`failpoint`]: named stages for the crash tests.
//! - [`config`], [`cmd`]: the TOML config and the command line.

pub mod agent;
pub mod cmd;
pub mod config;
pub mod daemon;
pub mod doctor;
pub mod failpoint;
pub mod http;
pub mod metrics;
pub mod selfcheck;
pub mod service;
pub mod session;
pub mod state;
pub mod status;
pub mod swap;
pub mod verify;

pub use agent::Agent;
pub use daemon::{AgentHandle, Listeners, SpawnError};
