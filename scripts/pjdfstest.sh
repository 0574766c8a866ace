#!/usr/bin/env bash
# Run the pjdfstest POSIX suite on strata and on its peers, and compare.
#
#   scripts/pjdfstest.sh [--out DIR] [IMPL...]
#
# IMPL is any of: strata kernel fuse-overlayfs fuse-overlayfs-2 (default: every one available).
#   strata            target/release/strata-fuse (built first)
#   kernel            kernel overlayfs, -o lowerdir,upperdir,workdir,redirect_dir=on,index=on
#   fuse-overlayfs    fuse-overlayfs 1.x (the fuse-overlayfs on PATH)
#   fuse-overlayfs-2  fuse-overlayfs 2.x, when $FUSE_OVERLAYFS2 names its binary
# Each runs on an empty lower dir with a fresh upper and work dir (`cd MNT && pjdfstest -p MNT`),
# the runs in parallel (the suite mostly sleeps). Prints a pass/fail table and the tests strata
# fails that the kernel passes; exits 1 if there are any. Outputs are kept in --out DIR (default
# a new temporary directory).
# Needs root. Uses $PJDFSTEST, else pjdfstest on PATH, in /opt/pjdfstest/bin or ~/.cargo/bin,
# else installs it with `cargo install pjdfstest --locked --root ~/.cargo` (a few minutes).
# pjdfstest switches to the users `nobody` and `tests`; `tests` is created if missing.
set -euo pipefail

cd "$(dirname "$0")/.."
repo=$PWD

out=""
impls=()
while [ $# -gt 0 ]; do
    case "$1" in
        --out) out=$2; shift 2 ;;
        -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
        strata|kernel|fuse-overlayfs|fuse-overlayfs-2) impls+=("$1"); shift ;;
        *) echo "pjdfstest.sh: unknown argument: $1" >&2; exit 2 ;;
    esac
done

if [ "$(id -u)" -ne 0 ]; then
    echo "pjdfstest.sh: needs root (mounts, and pjdfstest switches users)" >&2
    exit 1
fi

# --- pjdfstest itself ------------------------------------------------------------------------
pjd="${PJDFSTEST:-}"
if [ -z "$pjd" ]; then
    for c in "$(command -v pjdfstest 2>/dev/null || true)" /opt/pjdfstest/bin/pjdfstest \
             "$HOME/.cargo/bin/pjdfstest"; do
        if [ -n "$c" ] && [ -x "$c" ]; then pjd=$c; break; fi
    done
fi
if [ -z "$pjd" ]; then
    echo "==> pjdfstest not found: cargo install pjdfstest --locked --root $HOME/.cargo"
    cargo install pjdfstest --locked --root "$HOME/.cargo"
    pjd="$HOME/.cargo/bin/pjdfstest"
fi
echo "==> using $pjd"

if ! id nobody >/dev/null 2>&1; then
    echo "pjdfstest.sh: user nobody is missing (pjdfstest needs it)" >&2
    exit 1
fi
if ! id tests >/dev/null 2>&1; then
    echo "==> creating user tests"
    useradd -M -U -s /usr/sbin/nologin tests
fi

# --- implementations ------------------------------------------------------------------------
fo1=$(command -v fuse-overlayfs 2>/dev/null || true)
fo2=${FUSE_OVERLAYFS2:-}
if [ "${#impls[@]}" -eq 0 ]; then
    impls=(strata kernel)
    [ -n "$fo1" ] && impls+=(fuse-overlayfs)
    [ -n "$fo2" ] && impls+=(fuse-overlayfs-2)
fi
for i in "${impls[@]}"; do
    case "$i" in
        fuse-overlayfs) [ -n "$fo1" ] || { echo "pjdfstest.sh: fuse-overlayfs is not installed" >&2; exit 1; } ;;
        fuse-overlayfs-2) [ -n "$fo2" ] && [ -x "$fo2" ] || { echo "pjdfstest.sh: set FUSE_OVERLAYFS2 to the fuse-overlayfs 2.x binary" >&2; exit 1; } ;;
    esac
done

if [[ " ${impls[*]} " == *" strata "* ]]; then
    echo "==> cargo build --release"
    cargo build --release --quiet
fi
strata_bin="$repo/target/release/strata-fuse"

if [ -z "$out" ]; then
    out=$(mktemp -d /tmp/strata-pjdfstest.XXXXXX)
fi
mkdir -p "$out"
out=$(cd "$out" && pwd)
# pjdfstest runs parts of the suite as nobody and tests: they must reach the mount points
chmod 755 "$out"

# mount IMPL DIR: mount DIR/mnt over DIR/{lower,upper,work}
mount_impl() {
    local impl=$1 d=$2
    local o="lowerdir=$d/lower,upperdir=$d/upper,workdir=$d/work"
    case "$impl" in
        strata) "$strata_bin" -o "$o" "$d/mnt" ;;
        kernel) mount -t overlay overlay -o "$o,redirect_dir=on,index=on" "$d/mnt" ;;
        fuse-overlayfs) "$fo1" -o "$o" "$d/mnt" ;;
        fuse-overlayfs-2) "$fo2" -o "$o" "$d/mnt" ;;
    esac
}

# run_one IMPL: mount, run the suite, unmount; the result is in $out/IMPL.txt
run_one() {
    local impl=$1 d="$out/$1"
    rm -rf "$d"
    mkdir -p "$d"/{lower,upper,work,mnt}
    chmod 755 "$d" "$d"/*
    if ! mount_impl "$impl" "$d" >"$d.mount.log" 2>&1; then
        echo "$impl: mount failed: $(cat "$d.mount.log")" >&2
        return 1
    fi
    local rc=0
    (cd "$d/mnt" && timeout 1800 "$pjd" -p "$d/mnt") >"$out/$impl.txt" 2>"$out/$impl.err" || rc=$?
    umount "$d/mnt" 2>/dev/null || umount -l "$d/mnt" || true
    # pjdfstest exits 1 when a test failed; anything else (or no summary) is a broken run
    if ! grep -q '^Summary:' "$out/$impl.txt"; then
        echo "$impl: pjdfstest did not finish (exit $rc): $(tail -n 3 "$out/$impl.err")" >&2
        return 1
    fi
}

echo "==> running pjdfstest on: ${impls[*]} (outputs in $out)"
pids=()
for i in "${impls[@]}"; do
    run_one "$i" &
    pids+=($!)
done
broken=0
for p in "${pids[@]}"; do
    wait "$p" || broken=1
done

# failed NAME: the failing test names of one run, sorted
failed() { { grep -E 'FAILED[[:space:]]*$' "$out/$1.txt" || true; } | awk '{print $1}' | sort -u; }
# count NAME WORD: the number before WORD in the summary line
count() { sed -n "s/^Summary:.* \([0-9][0-9]*\) $2.*/\1/p" "$out/$1.txt" | head -n 1; }

echo
printf '%-18s %8s %8s %8s %10s\n' implementation passed failed skipped pass/run
for i in "${impls[@]}"; do
    if ! grep -q '^Summary:' "$out/$i.txt" 2>/dev/null; then
        printf '%-18s %8s\n' "$i" "(no result)"
        continue
    fi
    p=$(count "$i" passed); f=$(count "$i" failed); s=$(count "$i" skipped)
    printf '%-18s %8s %8s %8s %10s\n' "$i" "$p" "$f" "$s" "$p/$((p + f))"
done

status=$broken
if grep -qs '^Summary:' "$out/strata.txt" && grep -qs '^Summary:' "$out/kernel.txt"; then
    failed strata >"$out/strata.failed"
    failed kernel >"$out/kernel.failed"
    echo
    echo "tests strata fails:"
    sed 's/^/  /' "$out/strata.failed"
    regressions=$(comm -23 "$out/strata.failed" "$out/kernel.failed")
    echo
    if [ -n "$regressions" ]; then
        echo "tests strata fails that kernel overlayfs passes:"
        echo "$regressions" | sed 's/^/  /'
        status=1
    else
        echo "tests strata fails that kernel overlayfs passes: none"
    fi
fi
echo
echo "outputs: $out/IMPL.txt"
exit "$status"
