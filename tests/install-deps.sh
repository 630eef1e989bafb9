#!/usr/bin/env bash
# Installs what the integration tests need on a Debian 12 (bookworm) CI machine.
# Run as root. Idempotent: if every tool is already present it does nothing
# (no apt-get update, no network).
#
# Checked:   dnf createrepo_c rpmbuild rpm nginx gpg curl rsync sshd ssh wrk promtool, and
#            `/usr/bin/python3 -c 'import librepo'` (the system python, not pyenv's).
# Installed: dnf createrepo-c rpm python3-librepo nginx gnupg curl
#            rsync openssh-server openssh-client wrk prometheus
#            with --no-install-recommends. On bookworm the only Recommends that
#            drops are deltarpm and python3-unbound (from python3-dnf) and
#            ca-certificates (from libcurl4); none is needed for loopback http tests.
#            rsync, sshd, ssh and wrk are the benchmark's baselines and load
#            generator (bench/run.sh, docs/PERFORMANCE.md); sshd is in /usr/sbin.
#            prometheus brings promtool, which checks both daemons' metrics.
#
# nginx, sshd and prometheus are never started: if no /usr/sbin/policy-rc.d exists, a
# deny-all one (exit 101) is put in place for the duration of the install and
# removed after. The benchmark runs its own sshd on loopback when it needs one.
#
# Env (for testing this script): INSTALL_DEPS_FORCE=1 takes the install branch
# even if nothing is missing; INSTALL_DEPS_SIMULATE=1 skips `apt-get update` and
# passes -s to apt-get install (prints what would be done, changes nothing).
set -euo pipefail

prog=install-deps.sh
die() { echo "$prog: error: $*" >&2; exit 1; }
export PATH="/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin${PATH:+:$PATH}"

PACKAGES=(dnf createrepo-c rpm python3-librepo nginx gnupg curl
          rsync openssh-server openssh-client wrk prometheus)
TOOLS=(dnf createrepo_c rpmbuild rpm nginx gpg curl rsync sshd ssh wrk promtool)
# tool -> Debian package that provides it (for the report only)
declare -A PROVIDER=([dnf]=dnf [createrepo_c]=createrepo-c [rpmbuild]=rpm [rpm]=rpm
                     [nginx]=nginx [gpg]=gnupg [curl]=curl [librepo]=python3-librepo
                     [rsync]=rsync [sshd]=openssh-server [ssh]=openssh-client [wrk]=wrk
                     [promtool]=prometheus)

missing=()
check_all() {
    missing=()
    local t
    for t in "${TOOLS[@]}"; do
        command -v "$t" >/dev/null 2>&1 || missing+=("$t")
    done
    if ! { [ -x /usr/bin/python3 ] && /usr/bin/python3 -c 'import librepo' >/dev/null 2>&1; }; then
        missing+=(librepo)
    fi
}

check_all
if [ ${#missing[@]} -eq 0 ] && [ "${INSTALL_DEPS_FORCE:-0}" != 1 ]; then
    echo "$prog: all present (${TOOLS[*]} python3-librepo); nothing to install"
    exit 0
fi

if [ ${#missing[@]} -gt 0 ]; then
    echo "$prog: missing:$(for t in "${missing[@]}"; do printf ' %s (%s)' "$t" "${PROVIDER[$t]}"; done)"
else
    echo "$prog: nothing missing, but INSTALL_DEPS_FORCE=1"
fi

[ "$(id -u)" -eq 0 ] || die "must run as root to apt-get install: ${PACKAGES[*]}"
command -v apt-get >/dev/null 2>&1 || die "apt-get not found; this script supports Debian 12 only"

simulate=()
[ "${INSTALL_DEPS_SIMULATE:-0}" = 1 ] && simulate=(-s)

# Keep maintainer scripts from starting nginx, sshd (or anything else).
policy=/usr/sbin/policy-rc.d
created_policy=0
cleanup() { if [ "$created_policy" = 1 ]; then rm -f "$policy"; fi; }
trap cleanup EXIT
if [ ! -e "$policy" ] && [ ${#simulate[@]} -eq 0 ]; then
    printf '#!/bin/sh\n# temporary, from hotpush tests/install-deps.sh\nexit 101\n' > "$policy"
    chmod 0755 "$policy"
    created_policy=1
fi

before=$(dpkg-query -W -f='${db:Status-Abbrev} ${Package}\n' 2>/dev/null | awk '$1=="ii"{print $2}' | sort)

export DEBIAN_FRONTEND=noninteractive
if [ ${#simulate[@]} -eq 0 ]; then
    echo "$prog: apt-get update"
    apt-get update -q >/tmp/install-deps.apt-update.log 2>&1 \
        || { tail -n 20 /tmp/install-deps.apt-update.log >&2; die "apt-get update failed (log: /tmp/install-deps.apt-update.log)"; }
else
    echo "$prog: (simulate) skipping apt-get update"
fi
echo "$prog: apt-get install ${simulate[*]} -y --no-install-recommends ${PACKAGES[*]}"
apt-get install "${simulate[@]}" -y -q --no-install-recommends "${PACKAGES[@]}" \
    || die "apt-get install failed for: ${PACKAGES[*]}"

after=$(dpkg-query -W -f='${db:Status-Abbrev} ${Package}\n' 2>/dev/null | awk '$1=="ii"{print $2}' | sort)
new=$(comm -13 <(printf '%s\n' "$before") <(printf '%s\n' "$after") | tr '\n' ' ')
echo "$prog: newly installed packages: ${new:-none}"

check_all
[ ${#missing[@]} -eq 0 ] || die "still missing after install: ${missing[*]}"
echo "$prog: OK, all present"
