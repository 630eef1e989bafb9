//! `hotpush-origin`: the release engineers' side of hotpush. Validates and
//! signs snapshots, pushes them to partner agents, and serves the metalink
//! that sends dnf only to mirrors that acked.

mod cli;
mod config;
mod control;
mod db;
mod doctor;
mod drill;
mod emptyrepo;
mod metalink;
mod origin;
mod publish;
mod pusher;
mod reconcile;
mod status;
mod web;

use std::process::ExitCode;

fn main() -> ExitCode {
    hotpush_shared::daemon::init_logging();
    hotpush_shared::identity::install_crypto_provider();
    cli::run()
}
