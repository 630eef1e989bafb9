#!/usr/bin/env bash
# Test fixtures for the integration tests: build tiny noarch RPMs and yum repodata.
#
#   tests/rpm-fixtures.sh build-rpm OUTDIR NAME VERSION [SIZE_KB]
#       Builds OUTDIR/NAME-VERSION-1.noarch.rpm. Payload:
#         /usr/share/NAME/VERSION   containing VERSION
#         /usr/share/NAME/blob      SIZE_KB KiB of random data (only if SIZE_KB > 0)
#       The payload is written with gzip level 0 (stored blocks), so random data
#       costs no compression time and the .rpm is ~SIZE_KB plus a few KB.
#       rpmbuild runs with a private HOME and _topdir under a temp dir (never the
#       real home). Prints the absolute path of the .rpm.
#
#   tests/rpm-fixtures.sh createrepo DIR [EXTRA_CREATEREPO_C_ARGS...]
#       Runs `createrepo_c --no-database --quiet [--update] [EXTRA...] DIR`
#       (--update when DIR/repodata/repomd.xml already exists).
#       Prints the absolute path of DIR/repodata/repomd.xml.
#
# Errors go to stderr; exit status is non-zero on any failure.
# Needs: rpmbuild (Debian package rpm), createrepo_c (Debian package createrepo-c).
set -euo pipefail

prog=rpm-fixtures.sh
die() { echo "$prog: error: $*" >&2; exit 1; }
usage() {
    cat >&2 <<USAGE
usage: $prog build-rpm OUTDIR NAME VERSION [SIZE_KB]
       $prog createrepo DIR [EXTRA_CREATEREPO_C_ARGS...]
USAGE
    exit 2
}
need() { command -v "$1" >/dev/null 2>&1 || die "$1 not found in PATH (install Debian package $2; see tests/install-deps.sh)"; }

build_rpm() {
    [ $# -ge 3 ] && [ $# -le 4 ] || usage
    local outdir=$1 name=$2 version=$3 size_kb=${4:-0}
    [[ $name =~ ^[A-Za-z0-9][A-Za-z0-9._+-]*$ ]] || die "invalid package name '$name'"
    [[ $version =~ ^[A-Za-z0-9._+~^]+$ ]] || die "invalid version '$version' (no '-' or spaces allowed)"
    [[ $size_kb =~ ^[0-9]+$ ]] || die "SIZE_KB must be a non-negative integer, got '$size_kb'"
    need rpmbuild rpm

    mkdir -p "$outdir" || die "cannot create OUTDIR '$outdir'"
    outdir=$(cd "$outdir" && pwd)

    local tmp
    tmp=$(mktemp -d "${TMPDIR:-/tmp}/rpm-fixtures.XXXXXX") || die "mktemp failed"
    # shellcheck disable=SC2064
    trap "rm -rf '$tmp'" EXIT
    mkdir -p "$tmp/home" "$tmp/top/SOURCES" "$tmp/tmp"
    # Debian's rpm defaults %_dbpath to ~/.rpmdb; keep even that inside the temp dir.
    printf '%%_dbpath %s\n' "$tmp/rpmdb" > "$tmp/home/.rpmmacros"

    local with_blob=0
    if [ "$size_kb" -gt 0 ]; then
        head -c "$((size_kb * 1024))" /dev/urandom > "$tmp/top/SOURCES/blob" \
            || die "cannot write ${size_kb} KiB of random data to $tmp"
        with_blob=1
    fi

    cat > "$tmp/fixture.spec" <<SPEC
Name:           $name
Version:        $version
Release:        1
Summary:        hotpush test fixture $name $version
License:        MIT
BuildArch:      noarch

%description
Test fixture built by tests/rpm-fixtures.sh.

%prep
%build
%install
mkdir -p %{buildroot}%{_datadir}/%{name}
printf '%s\n' '%{version}' > %{buildroot}%{_datadir}/%{name}/VERSION
%if $with_blob
cp %{_sourcedir}/blob %{buildroot}%{_datadir}/%{name}/blob
%endif

%files
%dir %{_datadir}/%{name}
%{_datadir}/%{name}/VERSION
%if $with_blob
%{_datadir}/%{name}/blob
%endif
SPEC

    local log="$tmp/rpmbuild.log"
    if ! HOME="$tmp/home" LC_ALL=C rpmbuild -bb "$tmp/fixture.spec" \
            --define "_topdir $tmp/top" \
            --define "_tmppath $tmp/tmp" \
            --define "_buildhost hotpush-test" \
            --define "_binary_payload w0.gzdio" \
            --define "_build_id_links none" \
            --define "__os_install_post %{nil}" \
            >"$log" 2>&1; then
        cat "$log" >&2
        die "rpmbuild failed for $name-$version"
    fi

    local rpm_name="$name-$version-1.noarch.rpm"
    local built="$tmp/top/RPMS/noarch/$rpm_name"
    [ -f "$built" ] || { cat "$log" >&2; die "rpmbuild did not produce $rpm_name"; }
    mv -f "$built" "$outdir/$rpm_name" || die "cannot move $rpm_name into $outdir"
    echo "$outdir/$rpm_name"
}

create_repo() {
    [ $# -ge 1 ] || usage
    local dir=$1; shift
    [ -d "$dir" ] || die "repo directory '$dir' does not exist"
    need createrepo_c createrepo-c
    dir=$(cd "$dir" && pwd)
    local args=(--no-database --quiet)
    [ -f "$dir/repodata/repomd.xml" ] && args+=(--update)
    local out
    if ! out=$(createrepo_c "${args[@]}" "$@" "$dir" 2>&1); then
        printf '%s\n' "$out" >&2
        die "createrepo_c failed for $dir"
    fi
    [ -n "$out" ] && printf '%s\n' "$out" >&2
    [ -f "$dir/repodata/repomd.xml" ] || die "createrepo_c produced no $dir/repodata/repomd.xml"
    echo "$dir/repodata/repomd.xml"
}

[ $# -ge 1 ] || usage
cmd=$1; shift
case "$cmd" in
    build-rpm)  build_rpm "$@" ;;
    createrepo) create_repo "$@" ;;
    -h|--help)  usage ;;
    *)          echo "$prog: unknown command '$cmd'" >&2; usage ;;
esac
