#!/bin/sh
# stress-ng's filesystem class with --verify on a strata mount and on kernel overlayfs, each
# stressor alone, SECONDS each (default 10), one worker; root only. For each stressor it prints
# the exit status and bogo ops on both, and flags a stressor that fails on strata but passes
# on the kernel (exit status 1 if there is any).
# Usage: scripts/stress.sh [SECONDS] [STRESSOR...]
# STRESS_USER=NAME runs strata-fuse and stress-ng on strata as that unprivileged user (rootless:
# fusermount3, /dev/fuse made 0666); the kernel side runs as root.
# Logs in $OUT (default $CARGO_TARGET_DIR/stress or target/stress).
# stress-ng exit statuses: 0 pass, 2 a stressor failed (or --verify found bad data),
# 3 not enough resources, 4 not implemented/skipped here.
set -eu
cd "$(dirname "$0")/.."
SECS=${1:-10}
[ $# -gt 0 ] && shift
STRESSORS=${*:-$(stress-ng --class 'filesystem?' 2>&1 | sed 's/.*stressors: //')}
TD=${CARGO_TARGET_DIR:-$PWD/target}
OUT=${OUT:-$TD/stress}
BIN=${STRATA_FUSE_BIN:-$TD/release/strata-fuse}
[ -x "$BIN" ] || cargo build --release --bin strata-fuse
mkdir -p "$OUT"
W=$(mktemp -d /tmp/strata-stress.XXXXXX)
USR=${STRESS_USER:-}
as_user() { if [ -n "$USR" ]; then runuser -u "$USR" -- "$@"; else "$@"; fi; }
if [ -n "$USR" ]; then
    id "$USR" >/dev/null
    chmod 755 "$W"
    chmod 666 /dev/fuse
fi
cleanup() {
    umount "$W/m" 2>/dev/null || umount -l "$W/m" 2>/dev/null || true
    umount "$W/l" 2>/dev/null || umount -l "$W/l" 2>/dev/null || true
    rm -rf "$W"
}
trap cleanup EXIT

fresh() {
    umount "$W/m" 2>/dev/null || umount -l "$W/m" 2>/dev/null || true
    # (lazily, if a daemon that outlived its mount still holds the lower layer open)
    umount "$W/l" 2>/dev/null || umount -l "$W/l" 2>/dev/null || true
    rm -rf "$W/l" "$W/u" "$W/w" "$W/m"
    mkdir -p "$W/l/lower/dir" "$W/u" "$W/w" "$W/m"
    echo lower > "$W/l/lower/file"
    ln "$W/l/lower/file" "$W/l/lower/link"
    head -c 1048576 /dev/urandom > "$W/l/lower/dir/big"
    [ -n "$USR" ] && chown "$USR" "$W/u" "$W/w" "$W/m"
    mount --bind "$W/l" "$W/l"
    mount -o remount,bind,ro "$W/l"
}

lower_sum() {
    (cd "$W/l" && find . -printf '%p %m %U %G %s %n %T@\n' | sort && find . -type f -exec sha256sum {} + | sort) | sha256sum
}

run_on() { # impl stressor -> "status bogo"
    impl=$1 s=$2
    fresh
    run=""
    if [ "$impl" = strata ]; then
        as_user "$BIN" -o "lowerdir=$W/l,upperdir=$W/u,workdir=$W/w" "$W/m"
        run=as_user
    else
        mount -t overlay overlay -o "lowerdir=$W/l,upperdir=$W/u,workdir=$W/w,redirect_dir=on,index=on" "$W/m"
    fi
    log="$OUT/$s.$impl.log"
    before=$(lower_sum)
    set +e
    ($run sh -c 'cd "$1" && shift && exec "$@"' sh "$W/m" timeout -k 5 $((SECS + 60)) stress-ng --"$s" 1 --verify --timeout "$SECS" \
        --temp-path "$W/m" --metrics-brief) >"$log" 2>&1
    st=$?
    set -e
    umount "$W/m" 2>/dev/null || umount -l "$W/m" 2>/dev/null || true
    if [ "$(lower_sum)" != "$before" ]; then
        echo "stress.sh: $s on $impl changed the lower layer" >&2
        st=lower-changed
    fi
    bogo=$(awk -v s="$s" '$0 ~ "metrc:" && $4 == s {print $5; exit}' "$log")
    echo "$st ${bogo:--}"
}

fail=0
printf '%-14s %-14s %-14s %s\n' stressor strata kernel verdict
for s in $STRESSORS; do
    a=$(run_on strata "$s")
    b=$(run_on kernel "$s")
    sa=${a%% *} sb=${b%% *}
    verdict=same
    if [ "$sa" != 0 ] && [ "$sb" = 0 ]; then verdict="STRATA ONLY FAILS"; fail=1; fi
    if [ "$sa" = 0 ] && [ "$sb" != 0 ]; then verdict="kernel only fails"; fi
    case "$sa $sb" in *lower-changed*) verdict="LOWER LAYER CHANGED"; fail=1 ;; esac
    printf '%-14s %-14s %-14s %s\n' "$s" "$a" "$b" "$verdict"
done
exit $fail
