//! `hotpush-origin`: parses the command line and runs it (see the library).

use std::process::ExitCode;

/// Memory stays flat across publishes (see the workspace Cargo.toml).
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    hotpush_shared::daemon::init_logging();
    hotpush_shared::daemon::quiet_on_closed_stdout();
    hotpush_shared::identity::install_crypto_provider();
    hotpush_origin::cmd::run()
}
