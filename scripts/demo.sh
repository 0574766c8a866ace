#!/usr/bin/env bash
# A short demo of strata-fuse: two lower layers and an upper layer showing an override, a
# whiteout and an opaque directory; then a write through the mount lands in the upper dir.
# Needs root (trusted.* xattrs, mknod of the 0/0 whiteout) and a built target/release/strata-fuse.
# Exits non-zero if anything fails.
set -euo pipefail

cd "$(dirname "$0")/.."
BIN="${STRATA_FUSE_BIN:-$PWD/target/release/strata-fuse}"
if [ ! -x "$BIN" ] && ! command -v "$BIN" >/dev/null 2>&1; then
    echo "demo: $BIN not found; run: cargo build --release" >&2
    exit 1
fi

SUDO=()
[ "$(id -u)" -eq 0 ] || SUDO=(sudo)

T="$(mktemp -d /tmp/strata-demo.XXXXXX)"
MNT="$T/merged"
mounted=0
cleanup() {
    if [ "$mounted" -eq 1 ]; then
        fusermount3 -u "$MNT" 2>/dev/null || "${SUDO[@]}" umount "$MNT" 2>/dev/null \
            || "${SUDO[@]}" umount -l "$MNT" 2>/dev/null || true
    fi
    "${SUDO[@]}" rm -rf "$T"
}
trap cleanup EXIT

if [ -t 1 ]; then B=$'\033[1m' N=$'\033[0m'; else B='' N=''; fi
step() { printf '\n%s$ %s%s\n' "$B" "$*" "$N"; "$@"; }

mkdir -p "$T"/{lower1,lower2,upper,work,merged}

# lower2 (bottom): the base
mkdir -p "$T/lower2/etc" "$T/lower2/cache"
echo "base config" > "$T/lower2/etc/app.conf"
echo "will be deleted" > "$T/lower2/etc/old.conf"
echo "stale cache entry" > "$T/lower2/cache/entry"
echo "from lower2" > "$T/lower2/readme"

# lower1 (top lower): overrides a file, deletes one, replaces a directory wholesale
echo "overridden in lower1" > "$T/lower1/readme"
mkdir -p "$T/lower1/etc" "$T/lower1/cache"
"${SUDO[@]}" mknod "$T/lower1/etc/old.conf" c 0 0          # whiteout: hides etc/old.conf
"${SUDO[@]}" setfattr -n trusted.overlay.opaque -v y "$T/lower1/cache"   # opaque dir
echo "fresh cache entry" > "$T/lower1/cache/fresh"

# upper: one more override
echo "overridden in upper" > "$T/upper/readme"

echo "layers in $T"
step "${SUDO[@]}" "$BIN" -o "lowerdir=$T/lower1:$T/lower2,upperdir=$T/upper,workdir=$T/work" "$MNT"
mounted=1

step ls -la "$MNT" "$MNT/etc" "$MNT/cache"
step cat "$MNT/readme" "$MNT/etc/app.conf" "$MNT/cache/fresh"
[ "$(cat "$MNT/readme")" = "overridden in upper" ]
[ ! -e "$MNT/etc/old.conf" ]
[ ! -e "$MNT/cache/entry" ]

echo "written through strata" > "$MNT/etc/new.conf"
echo "appended" >> "$MNT/etc/app.conf"
step cat "$MNT/etc/new.conf" "$MNT/etc/app.conf"

step "${SUDO[@]}" fusermount3 -u "$MNT" || step "${SUDO[@]}" umount "$MNT"
mounted=0

step ls -laR "$T/upper"
[ "$(cat "$T/upper/etc/new.conf")" = "written through strata" ]
[ "$(cat "$T/lower2/etc/app.conf")" = "base config" ]   # lower layers untouched
echo
echo "demo: ok"
