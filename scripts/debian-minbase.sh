#!/usr/bin/env bash
# Print the path of a cached Debian minbase root filesystem (a tar), making it once with
# debootstrap from the machine's own Debian package source.
#
#   scripts/debian-minbase.sh            print the tar's path (build it if missing)
#   scripts/debian-minbase.sh --check    exit 0 if it is cached, 1 if not (never builds)
#
# Cache: $STRATA_TEST_CACHE (default /var/cache/strata-test)/debian-<suite>-minbase.tar
# The suite and mirror come from /etc/apt/sources.list.d/debian.sources or
# /etc/apt/sources.list (first `deb` entry); override with DEBIAN_SUITE / DEBIAN_MIRROR.
# Needs root (debootstrap). The tar is written to a temp name and renamed, so an
# interrupted build leaves nothing behind.
set -euo pipefail

cache="${STRATA_TEST_CACHE:-/var/cache/strata-test}"

source_field() { # $1 = field name in deb822 sources
    awk -v f="$1:" '$1 == f { print $2; exit }' /etc/apt/sources.list.d/debian.sources 2>/dev/null
}

suite="${DEBIAN_SUITE:-}"
mirror="${DEBIAN_MIRROR:-}"
if [ -z "$suite" ] || [ -z "$mirror" ]; then
    if [ -f /etc/apt/sources.list.d/debian.sources ]; then
        : "${suite:=$(source_field Suites)}"
        : "${mirror:=$(source_field URIs)}"
    fi
    if { [ -z "$suite" ] || [ -z "$mirror" ]; } && [ -f /etc/apt/sources.list ]; then
        line=$(grep -E '^deb ' /etc/apt/sources.list | grep -v security | head -1 || true)
        : "${mirror:=$(echo "$line" | awk '{print $2}')}"
        : "${suite:=$(echo "$line" | awk '{print $3}')}"
    fi
fi
suite="${suite:-bookworm}"
mirror="${mirror:-http://deb.debian.org/debian}"
tar="$cache/debian-$suite-minbase.tar"

if [ "${1:-}" = "--check" ]; then
    [ -s "$tar" ]
    exit $?
fi

if [ -s "$tar" ]; then
    echo "$tar"
    exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
    echo "debian-minbase.sh: debootstrap needs root (no cached $tar)" >&2
    exit 1
fi
command -v debootstrap >/dev/null || {
    echo "debian-minbase.sh: debootstrap is not installed (scripts/setup.sh installs it)" >&2
    exit 1
}

mkdir -p "$cache"
work=$(mktemp -d "$cache/.build.XXXXXX")
trap 'rm -rf "$work"' EXIT
echo "debian-minbase.sh: debootstrap --variant=minbase $suite from $mirror (once)" >&2
if ! debootstrap --variant=minbase "$suite" "$work/root" "$mirror" >"$work/log" 2>&1; then
    tail -20 "$work/log" >&2
    echo "debian-minbase.sh: debootstrap failed (log above)" >&2
    exit 1
fi
# The machine's package source, so that apt inside the rootfs installs from it.
if [ -f /etc/apt/sources.list.d/debian.sources ]; then
    mkdir -p "$work/root/etc/apt/sources.list.d"
    cp /etc/apt/sources.list.d/debian.sources "$work/root/etc/apt/sources.list.d/"
    : >"$work/root/etc/apt/sources.list"
fi
# ... and the machine's apt settings for reaching it (a mirror's Acquire:: options).
for f in /etc/apt/apt.conf.d/*; do
    if [ -f "$f" ] && grep -q '^Acquire::' "$f"; then
        cp "$f" "$work/root/etc/apt/apt.conf.d/"
    fi
done
rm -rf "$work/root/var/cache/apt/archives/"*.deb
tar --numeric-owner --xattrs --xattrs-include='*' -C "$work/root" -cf "$work/rootfs.tar" .
mv "$work/rootfs.tar" "$tar"
echo "$tar"
