#!/usr/bin/env bash
# Benchmark strata against its peers with the shared unionbench (../shared/bench/unionbench.py
# beside the repository): builds the release binary, then runs unionbench with strata added as
# an implementation, next to its built-ins (kernel overlayfs, fuse-overlayfs, unionfs-fuse) and
# fuse-overlayfs 2.x when installed (/opt/fo2/bin or ~/.cargo/bin; $FUSE_OVERLAYFS2 wins).
#
#   scripts/bench.sh [UNIONBENCH ARGS...]    --scale small --runs 3 unless given
#   scripts/bench.sh --scale tiny --runs 1 --workloads find
#
# Run it as root: the kernel overlayfs baseline needs it. unionbench.py --help lists its options.
set -euo pipefail

cd "$(dirname "$0")/.."
repo=$(git rev-parse --show-toplevel 2>/dev/null || pwd)
bench="$repo/../shared/bench/unionbench.py"

case "${1:-}" in
    -h|--help) sed -n '2,10p' "$0"; exit 0 ;;
esac

if [ ! -f "$bench" ]; then
    echo "bench.sh: unionbench not found at $bench" >&2
    echo "bench.sh: it lives in shared/bench/ beside the repository checkout" >&2
    exit 1
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "bench.sh: warning: not root, so no kernel overlayfs baseline" >&2
fi

# fuse-overlayfs 2.x (the Rust one), not the distribution's 1.x in /usr/bin
if [ -z "${FUSE_OVERLAYFS2:-}" ]; then
    for c in /opt/fo2/bin/fuse-overlayfs "$HOME/.cargo/bin/fuse-overlayfs"; do
        if [ -x "$c" ]; then
            export FUSE_OVERLAYFS2=$c
            break
        fi
    done
fi
if [ -n "${FUSE_OVERLAYFS2:-}" ]; then
    echo "==> fuse-overlayfs 2.x: $FUSE_OVERLAYFS2"
fi

echo "==> cargo build --release"
cargo build --release --quiet
strata="$repo/target/release/strata-fuse"

# the defaults come first: a later --scale or --runs overrides them
set -- --scale small --runs 3 "$@"
echo "==> unionbench.py $*"
exec python3 "$bench" \
    --impl "strata=$strata -o lowerdir={lowerdir},upperdir={upperdir},workdir={workdir} {mnt}" \
    "$@"
