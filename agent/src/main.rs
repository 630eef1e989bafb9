//! `hotpush-agent`: parses the command line and runs it (see the library).

use std::process::ExitCode;

fn main() -> ExitCode {
    hotpush_shared::daemon::init_logging();
    hotpush_shared::identity::install_crypto_provider();
    hotpush_agent::cmd::run()
}
