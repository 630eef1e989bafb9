#!/usr/bin/env bash
# Runs every test of hotpush: formatting, lints, unit tests and the
# end-to-end tests (real origin and agent processes, real mutual TLS, real
# dnf). Installs the Debian packages the end-to-end tests need if missing.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

echo "==> test dependencies"
tests/install-deps.sh

echo "==> cargo fmt --check"
cargo fmt --all -- --check

echo "==> cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

echo "==> build (the end-to-end tests run the built binaries)"
cargo build --workspace --locked

# The end-to-end tests build RPMs and push ~120 MB snapshots to three agents
# at once; on a nearly full disk the agents rightly refuse them, which reads
# like a product bug. Say what is wrong before starting instead.
tmp="${TMPDIR:-/tmp}"
need_kib=$((2 * 1024 * 1024))
free_kib=$(df -Pk "$tmp" | awk 'NR == 2 { print $4 }')
if [ "$free_kib" -lt "$need_kib" ]; then
    echo "run-all.sh: only $((free_kib / 1024)) MiB free in $tmp; the end-to-end tests need 2048 MiB (set TMPDIR to a roomier place)" >&2
    exit 1
fi

echo "==> cargo test"
cargo test --workspace --locked -- --test-threads="${HOTPUSH_TEST_THREADS:-2}"
