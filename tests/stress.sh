#!/usr/bin/env bash
# Longer consistency stress runs than the test suite's: real dnf clients in
# --refresh loops through the metalink while versions are published back to
# back (tests/tests/consistency.rs). Prints one REPORT line per run.
#
#   tests/stress.sh [PUBLISHES]     (default 300 per run)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
tests/install-deps.sh
cargo build --workspace --locked
HOTPUSH_STRESS_PUBLISHES="${1:-300}" cargo test -p hotpush-tests --locked --test consistency \
    -- --nocapture --test-threads=1
