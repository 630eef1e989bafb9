#!/usr/bin/env bash
# Proves that a real dnf (Debian 12: dnf 4.14 / librepo 1.14) can install a
# package from a repo reached through a metalink.
#
#   tests/dnf-check.sh METALINK_URL PACKAGE [EXPECT_FILE_PATH EXPECTED_CONTENT]
#
# Creates a throw-away installroot plus a private HOME, dnf.conf and repos.d,
# runs `dnf install PACKAGE` into it, then `rpm --root ROOT -q PACKAGE`.
# If EXPECT_FILE_PATH is given (a path inside the installroot, e.g.
# /usr/share/hello-hotpush/VERSION), its content (trailing newlines ignored)
# must equal EXPECTED_CONTENT.
#
# Exit 0 only on success. On failure prints dnf's output and the tail of
# ROOT/var/log/dnf.librepo.log (dnf itself is silent about rejected mirrors).
#
# Env:
#   KEEP_ROOT=1       keep the temp dir (installroot, config, logs) and print its path
#   RELEASEVER=N      --releasever (default 40; mandatory for an empty installroot)
#   DNF_TIMEOUT=SECS  kill dnf after this long (default 300)
#   VERBOSE=1         also print dnf's output on success
# Must run as root (dnf writes the installroot's rpmdb).
set -uo pipefail

prog=dnf-check.sh
die() { echo "$prog: error: $*" >&2; exit 1; }

if [ $# -ne 2 ] && [ $# -ne 4 ]; then
    echo "usage: $prog METALINK_URL PACKAGE [EXPECT_FILE_PATH EXPECTED_CONTENT]" >&2
    exit 2
fi
metalink=$1 pkg=$2 expect_path=${3:-} expected=${4:-}
releasever=${RELEASEVER:-40}
dnf_timeout=${DNF_TIMEOUT:-300}

[ "$(id -u)" -eq 0 ] || die "must run as root (dnf --installroot writes an rpmdb)"
for t in dnf rpm timeout; do
    command -v "$t" >/dev/null 2>&1 || die "$t not found (run tests/install-deps.sh)"
done
case "$metalink" in
    http://*|https://*|file://*) ;;
    *) die "METALINK_URL must be an http(s):// or file:// URL, got '$metalink'" ;;
esac
[[ $pkg =~ ^[A-Za-z0-9][A-Za-z0-9._+-]*$ ]] || die "invalid package name '$pkg'"

W=$(mktemp -d "${TMPDIR:-/tmp}/dnf-check.XXXXXX") || die "mktemp failed"
root=$W/root

kill_agents() {
    # dnf only spawns gpg-agent for gpgcheck/repo_gpgcheck; be defensive anyway.
    # Select strictly by a homedir inside our own temp dir, kill by PID.
    local pid args
    while read -r pid args; do
        case "$args" in
            *gpg-agent*"$W"/*) kill "$pid" 2>/dev/null ;;
        esac
    done < <(ps -eo pid=,args= 2>/dev/null)
}
cleanup() {
    kill_agents
    if [ "${KEEP_ROOT:-0}" = 1 ]; then
        echo "$prog: KEEP_ROOT=1: kept $W (installroot $root)" >&2
    else
        rm -rf "$W"
    fi
}
trap cleanup EXIT

mkdir -p "$root" "$W/home" "$W/etc" "$W/repos.d"
# Pitfall: Debian's rpm puts the rpmdb at ~/.rpmdb (inside the root); use Fedora's path.
printf '%%_dbpath /var/lib/rpm\n' > "$W/home/.rpmmacros"
# Pitfall: Debian's /etc/dnf/dnf.conf has skip_if_unavailable=True, which turns a
# broken repo into a later "No match for argument". Use our own config.
cat > "$W/etc/dnf.conf" <<CONF
[main]
gpgcheck=1
installonly_limit=3
clean_requirements_on_remove=True
best=True
skip_if_unavailable=False
install_weak_deps=False
keepcache=False
CONF
cat > "$W/repos.d/hotpush-test.repo" <<REPO
[hotpush-test]
name=hotpush test repo
metalink=$metalink
enabled=1
gpgcheck=0
repo_gpgcheck=0
metadata_expire=0
skip_if_unavailable=False
REPO

export HOME=$W/home LC_ALL=C.UTF-8
dnf_log=$W/dnf.out
librepo_log=$root/var/log/dnf.librepo.log

fail() {
    echo "$prog: FAILED: $*" >&2
    if [ -s "$dnf_log" ]; then
        echo "---- dnf output ----" >&2
        cat "$dnf_log" >&2
    fi
    if [ -s "$librepo_log" ]; then
        echo "---- tail of $librepo_log ----" >&2
        tail -n 40 "$librepo_log" >&2
    else
        echo "---- (no $librepo_log) ----" >&2
    fi
    exit 1
}

start=$(date +%s.%N)
timeout "$dnf_timeout" dnf -y --installroot="$root" --releasever="$releasever" \
    --config="$W/etc/dnf.conf" --setopt=reposdir="$W/repos.d" --noplugins \
    install "$pkg" >"$dnf_log" 2>&1
rc=$?
end=$(date +%s.%N)
[ $rc -eq 0 ] || fail "dnf install $pkg exited $rc$([ $rc -eq 124 ] && echo " (timed out after ${dnf_timeout}s)")"

nevra=$(rpm --root "$root" -q "$pkg" 2>&1) || { echo "$nevra" >> "$dnf_log"; fail "rpm --root $root -q $pkg: not installed"; }

if [ -n "$expect_path" ]; then
    f=$root/${expect_path#/}
    [ -f "$f" ] || fail "expected file $expect_path is missing from the installroot"
    got=$(cat "$f")
    [ "$got" = "$expected" ] || fail "$expect_path contains '$got', expected '$expected'"
fi

[ "${VERBOSE:-0}" = 1 ] && cat "$dnf_log"
printf '%s: OK: %s installed from %s (dnf %.2fs)%s\n' "$prog" "$nevra" "$metalink" \
    "$(awk -v a="$start" -v b="$end" 'BEGIN{print b - a}')" \
    "$([ -n "$expect_path" ] && echo "; $expect_path = '$expected'")"
exit 0
