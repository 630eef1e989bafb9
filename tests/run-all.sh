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

echo "==> cargo test"
cargo test --workspace --locked -- --test-threads="${HOTPUSH_TEST_THREADS:-2}"
