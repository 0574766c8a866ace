#!/usr/bin/env bash
# Scale benchmark: a lower layer of many empty files (default 1,000,000 in 1,000 directories,
# made once and cached), walked natively and through strata-fuse; reports each pass's time and
# the daemon's VmRSS, VmHWM and open fds after each step, and the cost per entry.
#
#   scripts/bench-scale.sh [--files N] [--dirs D] [--bin PATH] [--keep-cache]
#
# Steps: drop the page cache; native `find LOWER -printf '%s\n'` (the reference); mount;
# `find MNT -printf '%s\n'` twice (pass 1 cold, pass 2 warm); `echo 2 > drop_caches` (the
# kernel forgets the inodes) and a pause; a last report. Needs root (drop_caches, mounting).
# The tree is cached under ${STRATA_TEST_CACHE:-/var/cache/strata-test}/scale-N-D/ (made in
# a temporary directory and renamed, so an interrupted build leaves nothing). Timings vary
# with the machine's load: this is a benchmark, not a test.
set -euo pipefail

files=1000000
dirs=1000
bin=""
while [ $# -gt 0 ]; do
    case "$1" in
        --files) files=$2; shift 2 ;;
        --dirs) dirs=$2; shift 2 ;;
        --bin) bin=$2; shift 2 ;;
        -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
        *) echo "bench-scale.sh: unknown argument $1" >&2; exit 2 ;;
    esac
done
[ "$(id -u)" -eq 0 ] || { echo "bench-scale.sh: needs root" >&2; exit 2; }

here=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$here")
if [ -z "$bin" ]; then
    (cd "$repo" && cargo build --release --bin strata-fuse >&2)
    bin="${CARGO_TARGET_DIR:-$repo/target}/release/strata-fuse"
fi

cache="${STRATA_TEST_CACHE:-/var/cache/strata-test}"
tree="$cache/scale-$files-$dirs"
if [ ! -d "$tree" ]; then
    echo "making $files files in $dirs directories under $tree (once) ..." >&2
    mkdir -p "$cache"
    tmp=$(mktemp -d "$cache/.scale.XXXXXX")
    python3 - "$tmp" "$files" "$dirs" <<'EOF'
import os, sys
root, files, dirs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
per = files // dirs
for d in range(dirs):
    p = os.path.join(root, "d%04d" % d)
    os.mkdir(p)
    for f in range(per):
        os.close(os.open(os.path.join(p, "f%06d" % f), os.O_CREAT | os.O_WRONLY, 0o644))
EOF
    mv "$tmp" "$tree"
fi

work=$(mktemp -d)
mnt="$work/mnt"
mkdir -p "$work/upper" "$work/work" "$mnt"
cleanup() { umount "$mnt" 2>/dev/null || umount -l "$mnt" 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

drop() { sync; echo "$1" > /proc/sys/vm/drop_caches; }
secs() { local s e; s=$(date +%s.%N); "$@" > /dev/null; e=$(date +%s.%N); echo "$e - $s" | bc; }
report() { # $1 = step name
    local pid=$2
    local rss hwm fds
    rss=$(awk '/^VmRSS/ {print $2}' "/proc/$pid/status")
    hwm=$(awk '/^VmHWM/ {print $2}' "/proc/$pid/status")
    fds=$(ls "/proc/$pid/fd" | wc -l)
    printf '%-28s rss %6d MiB  hwm %6d MiB  fds %6d\n' "$1" $((rss / 1024)) $((hwm / 1024)) "$fds"
}

drop 3
native=$(secs find "$tree" -printf '%s\n')
entries=$(find "$tree" | wc -l)
printf 'native find            %8.2f s  (%d entries, %.2f us/entry)\n' "$native" "$entries" \
    "$(echo "$native * 1000000 / $entries" | bc -l)"

drop 3
"$bin" -o "lowerdir=$tree,upperdir=$work/upper,workdir=$work/work" "$mnt"
pid=$(pgrep -n -f "workdir=$work/work")
report "after mount" "$pid"
for pass in 1 2; do
    t=$(secs find "$mnt" -printf '%s\n')
    printf 'strata find pass %d     %8.2f s  (%.2fx native, %.2f us/entry)\n' "$pass" "$t" \
        "$(echo "$t / $native" | bc -l)" "$(echo "$t * 1000000 / $entries" | bc -l)"
    report "after pass $pass" "$pid"
done
drop 2
sleep 5
report "after drop_caches + 5 s" "$pid"
