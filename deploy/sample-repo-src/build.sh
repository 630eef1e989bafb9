#!/usr/bin/env bash
# Regenerates deploy/sample-repo/ (the demo's embedded default yum repo) from
# hello-hotpush.spec. Needs rpmbuild (Debian: rpm) and createrepo_c (Debian:
# createrepo-c). Output is reproducible: running this twice gives byte-identical
# files (checked with rpm 4.18.0 / createrepo_c 0.17.3 on Debian 12).
#
# The RPM is deliberately unsigned; the demo .repo file uses gpgcheck=0.
set -euo pipefail

EPOCH=1790000000
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
spec="$here/hello-hotpush.spec"
out="$(dirname "$here")/sample-repo"

for tool in rpmbuild createrepo_c; do
    command -v "$tool" >/dev/null 2>&1 || { echo "build.sh: $tool not found (apt-get install rpm createrepo-c)" >&2; exit 1; }
done

tmp=$(mktemp -d "${TMPDIR:-/tmp}/hotpush-sample.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/home" "$tmp/top" "$tmp/tmp"
# Private HOME: Debian's rpm reads ~/.rpmmacros and would put an rpmdb in ~/.rpmdb.
printf '%%_dbpath %s\n' "$tmp/rpmdb" > "$tmp/home/.rpmmacros"

export HOME="$tmp/home" LC_ALL=C TZ=UTC SOURCE_DATE_EPOCH=$EPOCH
umask 022

rpmbuild --quiet -bb "$spec" \
    --define "_topdir $tmp/top" \
    --define "_tmppath $tmp/tmp" \
    --define "_buildhost hotpush" \
    --define "_binary_payload w9.gzdio" \
    --define "use_source_date_epoch_as_buildtime 1" \
    --define "clamp_mtime_to_source_date_epoch 1" \
    --define "_build_id_links none"

rpm_file="$tmp/top/RPMS/noarch/hello-hotpush-1.0-1.noarch.rpm"
[ -f "$rpm_file" ] || { echo "build.sh: rpmbuild did not produce $rpm_file" >&2; exit 1; }

rm -rf "$out"
mkdir -p "$out/Packages/h"
cp "$rpm_file" "$out/Packages/h/"
# createrepo_c records the file mtime in primary.xml (<time file=...>); pin it.
touch -d "@$EPOCH" "$out/Packages/h/hello-hotpush-1.0-1.noarch.rpm"

createrepo_c --quiet --no-database \
    --revision "$EPOCH" --set-timestamp-to-revision \
    "$out"

find "$out" -type f -printf '%s\t%P\n' | sort -k2
find "$out" -type f -printf '%s\n' | awk '{s+=$1} END {print "total file bytes:", s}'
