#!/usr/bin/env bash
# Benchmark: hotpush side by side with rsync (daemon and over ssh), cp and
# nginx, on the same generated data; prints a markdown table of medians on
# stdout (progress on stderr). docs/PERFORMANCE.md explains every row.
#
#   bench/run.sh [--scale smoke|small|full] [--runs N] [--only full,inc20k,...]
#                [--work DIR] [--keep] [--json FILE]
#
# Builds the release binaries first and runs the benchmark on them. Needs
# root (its own sshd; `sync`) and rsync, openssh-server, openssh-client,
# wrk and nginx (tests/install-deps.sh installs them).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$here"
cargo build --release --locked -p hotpush-origin -p hotpush-agent -p hotpush-bench
bin="${CARGO_TARGET_DIR:-$here/target}/release"
HOTPUSH_BIN_DIR="$bin" exec "$bin/hotpush-bench" "$@"
