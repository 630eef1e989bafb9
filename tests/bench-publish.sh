#!/usr/bin/env bash
# Benchmark: publish a ~100 MB repo of RPM-sized incompressible packages to
# three agents on loopback (release build), and report the wall time of the
# publish and the peak RSS (VmHWM) of the origin and of each agent.
#
#   tests/bench-publish.sh [PACKAGES [KB_EACH]]     default 25 × 4096 KB
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
count=${1:-25}
kb=${2:-4096}
work=$(mktemp -d /tmp/hotpush-bench.XXXXXX)
port=${HOTPUSH_BENCH_PORT:-18600}

(cd "$here" && cargo build --release --quiet -p hotpush-origin -p hotpush-agent)
bin="${CARGO_TARGET_DIR:-$here/target}/release"

echo "==> building $count packages of $kb KB of random data"
mkdir -p "$work/repo/Packages"
for i in $(seq "$count"); do
  "$here/tests/rpm-fixtures.sh" build-rpm "$work/repo/Packages" "bench$i" 1.0 "$kb" > /dev/null
done
"$here/tests/rpm-fixtures.sh" createrepo "$work/repo" > /dev/null
size=$(du -sb "$work/repo" | cut -f1)

HOTPUSH_BIN_DIR="$bin" HOTPUSH_DEMO_DIR="$work/net" HOTPUSH_DEMO_PORT="$port" \
  "$here/deploy/demo.sh" > "$work/demo.out" 2>&1 &
demo=$!
trap 'kill $demo 2>/dev/null; wait 2>/dev/null; rm -rf "$work"' EXIT
for _ in $(seq 300); do grep -q HOTPUSH-DEMO-READY "$work/demo.out" && break; sleep 0.1; done
grep -q HOTPUSH-DEMO-READY "$work/demo.out" || { cat "$work/demo.out"; exit 1; }

echo "==> publishing $size bytes to 3 agents"
start=$(date +%s.%N)
"$bin/hotpush-origin" -c "$work/net/origin/origin.toml" publish demo/x86_64 --from "$work/repo" --wait all --timeout 600 --json > "$work/result.json"
end=$(date +%s.%N)
python3 - "$work/result.json" "$start" "$end" "$size" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
wall = float(sys.argv[3]) - float(sys.argv[2])
size = int(sys.argv[4])
print(f"publish wall time: {wall:.2f} s for {size/1e6:.1f} MB to {len(r['agents'])} agents "
      f"({3*size/1e6/wall:.0f} MB/s aggregate), ok={r['ok']}")
for name, a in sorted(r["agents"].items()):
    print(f"  {name}: {a['state']} in {a['elapsed_ms']} ms, {a['bytes_sent']} bytes sent")
PY
for p in $(pgrep -f "$work/net"); do
  cmd=$(tr '\0' ' ' < "/proc/$p/cmdline" | awk '{print $1" "$2" "$3" "$4}')
  case "$cmd" in *hotpush-*serve*|*hotpush-*-c*) ;; *) continue ;; esac
  hwm=$(awk '/VmHWM/ {print $2}' "/proc/$p/status")
  echo "  peak RSS $((hwm / 1024)) MB: $(basename "$(echo "$cmd" | awk '{print $1}')") $(echo "$cmd" | grep -o 'agent[0-9]' || echo origin)"
done
