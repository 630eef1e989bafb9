#!/usr/bin/env bash
# hotpush demo: a complete local network on loopback with embedded defaults.
#
# Starts an origin and three agents (agent 3 on IPv6 ::1), generates every key
# and TLS identity, publishes deploy/sample-repo (one real RPM) as the repo
# demo/x86_64, writes a dnf .repo file for it, prints the metalink URL, and
# keeps running until Ctrl-C.
#
# Environment (all optional):
#   HOTPUSH_DEMO_DIR   work directory (default: a new /tmp/hotpush-demo.XXXXXX)
#   HOTPUSH_DEMO_PORT  first port; the demo uses PORT..PORT+30 (default 18400)
#   HOTPUSH_BIN_DIR    directory holding built binaries (default: build release)
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
port=${HOTPUSH_DEMO_PORT:-18400}
dir=${HOTPUSH_DEMO_DIR:-$(mktemp -d /tmp/hotpush-demo.XXXXXX)}
mkdir -p "$dir"

if [ -z "${HOTPUSH_BIN_DIR:-}" ]; then
  echo "==> building hotpush (release; the first build takes about two minutes)"
  (cd "$here" && cargo build --release --quiet -p hotpush-origin -p hotpush-agent)
  HOTPUSH_BIN_DIR="${CARGO_TARGET_DIR:-$here/target}/release"
fi
origin="$HOTPUSH_BIN_DIR/hotpush-origin"
agent="$HOTPUSH_BIN_DIR/hotpush-agent"

pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT
trap 'echo; echo "==> stopping"; exit 0' INT TERM

wait_port() { # host port
  for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "demo: nothing listens on $1:$2 after 10 s; see the logs in $dir" >&2
  return 1
}

echo "==> work directory: $dir"
"$origin" init --dir "$dir/origin" --http "[::]:$port" > "$dir/origin.ids" 2>/dev/null
origin_id=$(awk '/^origin-id:/ {print $2}' "$dir/origin.ids")
origin_key=$(awk '/^signing-key:/ {print $2}' "$dir/origin.ids")
cfg="$dir/origin/origin.toml"

hosts=(127.0.0.1 127.0.0.1 ::1)
for i in 1 2 3; do
  host=${hosts[$((i - 1))]}
  addr=$host; [[ $host == *:* ]] && addr="[$host]"
  push_port=$((port + 10 + i)); http_port=$((port + 20 + i))
  id=$("$agent" init --dir "$dir/agent$i" --origin-id "$origin_id" --origin-key "$origin_key" \
        --repo demo/x86_64 --listen "$addr:$push_port" --http "$addr:$http_port" 2>/dev/null)
  "$origin" -c "$cfg" agent add "mirror$i" --endpoint "https://$addr:$push_port" --id "$id" \
        --public-url "http://$addr:$http_port/" > /dev/null
  "$agent" serve -c "$dir/agent$i/agent.toml" 2> "$dir/agent$i.log" &
  pids+=($!)
  echo "    agent mirror$i: push https://$addr:$push_port, serves http://$addr:$http_port/ (log $dir/agent$i.log)"
done
"$origin" -c "$cfg" serve 2> "$dir/origin.log" &
pids+=($!)
wait_port ::1 "$port"
for i in 1 2 3; do wait_port "${hosts[$((i - 1))]}" $((port + 10 + i)); wait_port "${hosts[$((i - 1))]}" $((port + 20 + i)); done
echo "    origin: metalink on http://[::1]:$port/ (log $dir/origin.log)"

echo "==> publishing deploy/sample-repo as demo/x86_64"
"$origin" -c "$cfg" publish demo/x86_64 --from "$here/deploy/sample-repo" --wait all --timeout 60

metalink="http://[::1]:$port/metalink?repo=demo&arch=x86_64"
cat > "$dir/hotpush-demo.repo" <<REPO
[hotpush-demo]
name=hotpush demo (urgent fixes)
metalink=$metalink
enabled=1
# The demo RPM is unsigned; real deployments sign packages and keep gpgcheck=1.
gpgcheck=0
metadata_expire=1m
skip_if_unavailable=True
REPO
echo "==> ready"
echo "    metalink:  $metalink"
echo "    repo file: $dir/hotpush-demo.repo"
echo "    try:       tests/dnf-check.sh '$metalink' hello-hotpush"
echo "    status:    $origin -c $cfg status"
echo "HOTPUSH-DEMO-READY $metalink"
echo "==> running; press Ctrl-C to stop"
wait
