#!/usr/bin/env bash
# Run the unionmount-testsuite (github.com/amir73il/unionmount-testsuite) on strata, kernel
# overlayfs or fuse-overlayfs, one suite process per test so that one failure does not hide
# the rest.
#
#   scripts/unionmount.sh [--impl strata|kernel|fuse-overlayfs]... [--bin PATH] [--out DIR]
#                         [--jobs N] [--timeout S] [--mode 'SUITE ARGS']... [SUITE ARGS...]
#   scripts/unionmount.sh --fetch-only
#
#   --impl I     what to test (repeatable; default strata)
#   --bin PATH   the mount program for strata / fuse-overlayfs (default: strata-fuse from
#                $STRATA_FUSE_BIN, else $CARGO_TARGET_DIR or target/ release build, built first)
#   --out DIR    where logs and results go (default: a new temporary directory)
#   --jobs N     tests run at once (default: twice the CPUs; the suite often waits on
#                sync, mount and python start-up)
#   --timeout S  seconds one test may take before it is killed (default 300)
#   --mode ARGS  one suite configuration, e.g. '--ov=2 --samefs --meta' (repeatable); the
#                suite arguments given directly form one more; default '--ov --samefs'
#   SUITE ARGS   the suite's own arguments: --ov[=N] [--samefs|--maxfs=M] [--meta] [--verify]
#                [--xdev] [--ts=0|1] [TEST...] (without --fuse, which is added for FUSE impls)
#
# The suite is found at $UNIONMOUNT_TESTSUITE, default
# ${STRATA_TEST_CACHE:-/var/cache/strata-test}/unionmount-testsuite; if missing it is cloned
# there (pinned commit f48a57d). Its code is never copied into this repository.
#
# Everything runs in a private mount namespace (unshare -m), each test in a nested one: the
# layers and the union live in a tmpfs in a temporary directory (UNIONMOUNT_BASEDIR and
# UNIONMOUNT_MNTPOINT), never /base or /mnt.
#
# Mount options. For the kernel the suite itself adds redirect_dir=on (the module default here
# is off), index=on with --verify and metacopy=on with --meta. With --fuse=SUBTYPE it runs
#   mount -t fuse.SUBTYPE SUBTYPE MNT -orw -olowerdir=L1:L2,upperdir=U,workdir=W
# and nothing else: it ignores --meta ("metacopy not supported") and adds no index, xino or
# redirect_dir option (--verify still turns on its stricter inode-number checks). mount(8)
# runs /sbin/mount.fuse.SUBTYPE SUBTYPE MNT -o rw,lowerdir=... -t fuse.SUBTYPE, with PATH
# cleared; inside the namespace a read-only overlay on /usr/sbin adds that file, a wrapper
# around scripts/unionmount-mount-helper, which runs `BIN -o OPTS MNT` (appending metacopy=on
# for --meta). strata works as redirect_dir=on,index=on whatever it is given.
#
# Output: per impl and mode, DIR/IMPL/MODE/TEST.log (suite output and the mount command
# lines; on failure also TEST.layers/, a copy of the layers), DIR/IMPL/MODE/results.tsv
# (test, pass|fail|timeout, seconds, last line of the log) and one summary line, printed and
# kept in DIR/IMPL/MODE/summary (DIR/summary.txt collects those of every run kept in DIR):
#   strata --ov=2 --samefs: 57/58 passed, 1 failed: rename-file (41 s)
# Exit status 1 if any test failed, 2 on usage or setup errors. Needs root.
set -euo pipefail

SUITE_REPO=https://github.com/amir73il/unionmount-testsuite
SUITE_COMMIT=f48a57d

here=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$here")
self="$here/$(basename "$0")"

die() { echo "unionmount.sh: $*" >&2; exit 2; }

# ---------------------------------------------------------------------------------------------
# Stage 3: one test, in its own mount namespace.
#   UM_STAGE=test unshare -m ... unionmount.sh IMPL MODEDIR TEST SUITE-ARGS...
# ---------------------------------------------------------------------------------------------

# PIDs of the FUSE daemons started in this mount namespace
ns_daemons() {
    local me p
    [ -n "$UM_BIN_REAL" ] || return 0
    me=$(readlink /proc/self/ns/mnt)
    for p in /proc/[0-9]*; do
        [ "$(readlink "$p/ns/mnt" 2>/dev/null)" = "$me" ] || continue
        [ "$(readlink "$p/exe" 2>/dev/null)" = "$UM_BIN_REAL" ] || continue
        echo "${p#/proc/}"
    done
}

# unmount everything below $1, deepest first
umount_below() {
    local m
    for _ in 1 2 3; do
        m=$(awk -v d="$1" '$5 == d || index($5, d "/") == 1 { print $5 }' /proc/self/mountinfo | sort -r)
        [ -n "$m" ] || return 0
        for x in $m; do umount "$x" 2>/dev/null || umount -l "$x" 2>/dev/null || true; done
    done
}

stage_test() {
    local impl=$1 dir=$2 test=$3
    shift 3
    local w="$UM_TMP/w.$BASHPID" log="$dir/$test.log" rc=0 start end status msg
    mkdir -p "$w/base" "$w/mnt"
    : >"$log"
    export UM_FUSE_LOG="$log"
    local fuse=()
    [ "$impl" = kernel ] || fuse=("--fuse=$UM_SUBTYPE")
    start=$(date +%s.%N)
    (
        cd "$UM_SUITE"
        exec env UNIONMOUNT_BASEDIR="$w/base" UNIONMOUNT_MNTPOINT="$w/mnt" \
            PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 \
            timeout -k 10 "$UM_TIMEOUT" python3 ./run "$1" "${fuse[@]}" "${@:2}" "$test"
    ) >>"$log" 2>&1 || rc=$?
    end=$(date +%s.%N)
    # the suite leaves the union mounted at the end of a run
    umount_below "$w"
    local left="" n
    for n in $(seq 50); do
        left=$(ns_daemons)
        [ -n "$left" ] || break
        sleep 0.1
    done
    if [ -n "$left" ]; then
        echo "unionmount.sh: daemon(s) $left still running 5 s after unmount: killed" >>"$log"
        kill -9 $left 2>/dev/null || true
    fi
    if [ "$rc" -eq 0 ]; then
        status=pass
        msg=""
    else
        status=fail
        [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ] && status=timeout
        msg=$(grep -a -v -e '^[[:space:]]*$' -e '=> exit 0$' "$log" | tail -n 1 | tr '\t' ' ' | cat -v || true)
        [ "$status" = timeout ] && msg="killed after ${UM_TIMEOUT}s; last line: $msg"
        cp -a "$w/base" "$dir/$test.layers" 2>/dev/null || true
    fi
    rm -rf "$w"
    printf '%s\t%s\t%.1f\t%s\n' "$test" "$status" "$(awk -v a="$start" -v b="$end" 'BEGIN { print b - a }')" "$msg" >"$dir/$test.result"
}

if [ "${UM_STAGE:-}" = test ]; then
    stage_test "$@"
    exit 0
fi

# ---------------------------------------------------------------------------------------------
# Stage 2: every run, in a private mount namespace.
#   UM_STAGE=ns unshare -m ... unionmount.sh (settings in UM_* variables)
# ---------------------------------------------------------------------------------------------

# the suite's test list for these suite arguments (the `tests = [...]` lists of its `run`)
suite_tests() {
    python3 - "$UM_SUITE/run" "$@" <<'EOF'
import ast, sys
tree = ast.parse(open(sys.argv[1]).read())
args = sys.argv[2:]
base, renames, exdev = None, [], []
for node in ast.walk(tree):
    if isinstance(node, ast.Assign) and isinstance(node.value, ast.List) and base is None \
            and any(isinstance(t, ast.Name) and t.id == "tests" for t in node.targets):
        base = [e.value for e in node.value.elts]
    if isinstance(node, ast.AugAssign) and isinstance(node.target, ast.Name) \
            and node.target.id == "tests" and isinstance(node.value, ast.List):
        names = [e.value for e in node.value.elts]
        (exdev if "rename-exdev" in names else renames).extend(names)
if not base:
    sys.exit("cannot find the test list in " + sys.argv[1])
named = [a for a in args if not a.startswith("-")]
if named:
    print("\n".join(named))
else:
    print("\n".join(base + (exdev if "--xdev" in args else renames)))
EOF
}

# a directory name for the suite options of a mode: --ov=2 --samefs --meta -> ov2-samefs-meta
slug() {
    local a s=""
    for a in "$@"; do [[ "$a" == -* ]] && s+=" $a"; done
    s=${s# }
    s=${s//--/}
    s=${s//=/}
    s=${s// /-}
    echo "$s"
}

# /sbin/mount.fuse.SUBTYPE inside this namespace: a read-only overlay of /usr/sbin
install_helper() {
    local impl=$1 extra=$2 sbin="$UM_TMP/sbin.$impl"
    local real_sbin
    real_sbin=$(readlink -f /sbin)
    mountpoint -q "$real_sbin" && umount "$real_sbin"
    mkdir -p "$sbin"
    cat >"$sbin/mount.fuse.$UM_SUBTYPE" <<EOF
#!/bin/sh
# generated by scripts/unionmount.sh
UM_FUSE_BIN='$UM_BIN' UM_FUSE_EXTRA_OPTS='$extra' exec '$here/unionmount-mount-helper' "\$@"
EOF
    chmod 755 "$sbin/mount.fuse.$UM_SUBTYPE"
    mount -t overlay -o "ro,lowerdir=$sbin:$real_sbin" strata-unionmount-helper "$real_sbin" ||
        die "cannot add mount.fuse.$UM_SUBTYPE to $real_sbin (overlay mount failed)"
    [ -x "/sbin/mount.fuse.$UM_SUBTYPE" ] || die "/sbin/mount.fuse.$UM_SUBTYPE is not visible"
}

stage_ns() {
    mount -t tmpfs -o mode=755 strata-unionmount "$UM_TMP"
    local total_fail=0 impl mode
    local -a modes
    mapfile -t modes < <(printf '%s' "$UM_MODES" | tr '\037' '\n')
    for impl in $UM_IMPLS; do
        case "$impl" in
            strata) UM_SUBTYPE=strata; UM_BIN=$UM_STRATA_BIN ;;
            fuse-overlayfs) UM_SUBTYPE=fuse-overlayfs; UM_BIN=$UM_FO_BIN ;;
            kernel) UM_SUBTYPE=""; UM_BIN="" ;;
        esac
        UM_BIN_REAL=""
        [ -z "$UM_BIN" ] || UM_BIN_REAL=$(readlink -f "$UM_BIN")
        export UM_SUBTYPE UM_BIN UM_BIN_REAL
        for mode in "${modes[@]}"; do
            # shellcheck disable=SC2206
            local args=($mode)
            local extra=""
            if [ "$impl" != kernel ]; then
                [[ " $mode " == *" --meta "* ]] && extra="metacopy=on"
                install_helper "$impl" "$extra"
            fi
            local dir="$UM_OUT/$impl/$(slug "${args[@]}")"
            rm -rf "$dir"
            mkdir -p "$dir"
            local tests
            mapfile -t tests < <(suite_tests "${args[@]}")
            local t0 t1 running=0 test
            t0=$(date +%s)
            for test in "${tests[@]}"; do
                UM_STAGE=test unshare -m --propagation private "$self" "$impl" "$dir" "$test" \
                    "${args[@]}" &
                running=$((running + 1))
                if [ "$running" -ge "$UM_JOBS" ]; then
                    wait -n || true
                    running=$((running - 1))
                fi
            done
            wait
            t1=$(date +%s)
            : >"$dir/results.tsv"
            local passed=0 failed=() r
            for test in "${tests[@]}"; do
                r="$dir/$test.result"
                if [ -f "$r" ]; then
                    cat "$r" >>"$dir/results.tsv"
                    rm -f "$r"
                else
                    printf '%s\tfail\t0\tno result (harness error)\n' "$test" >>"$dir/results.tsv"
                fi
            done
            while IFS=$'\t' read -r test st _ _; do
                if [ "$st" = pass ]; then passed=$((passed + 1)); else failed+=("$test"); fi
            done <"$dir/results.tsv"
            local line="$impl $mode: $passed/${#tests[@]} passed"
            if [ "${#failed[@]}" -gt 0 ]; then
                line+=", ${#failed[@]} failed: ${failed[*]}"
                total_fail=$((total_fail + 1))
            fi
            line+=" ($((t1 - t0)) s)"
            echo "$line"
            echo "$line" >"$dir/summary"
        done
    done
    umount "$UM_TMP" 2>/dev/null || true
    # every run kept in this output directory, this one's and earlier ones
    cat "$UM_OUT"/*/*/summary >"$UM_OUT/summary.txt" 2>/dev/null || true
    [ "$total_fail" -eq 0 ]
}

if [ "${UM_STAGE:-}" = ns ]; then
    rc=0
    stage_ns || rc=$?
    exit "$rc"
fi

# ---------------------------------------------------------------------------------------------
# Stage 1: arguments, the suite, the binaries; then stage 2 in a new mount namespace.
# ---------------------------------------------------------------------------------------------
impls=()
bin=""
out=""
jobs=$((2 * $(nproc)))
timeout_s=300
modes=()
suite_args=()
fetch_only=0
while [ $# -gt 0 ]; do
    case "$1" in
        --impl) impls+=("$2"); shift 2 ;;
        --impl=*) impls+=("${1#*=}"); shift ;;
        --bin) bin=$2; shift 2 ;;
        --out) out=$2; shift 2 ;;
        --jobs) jobs=$2; shift 2 ;;
        --timeout) timeout_s=$2; shift 2 ;;
        --mode) modes+=("$2"); shift 2 ;;
        --fetch-only) fetch_only=1; shift ;;
        -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
        --fuse*) die "--fuse is added by this script (use --impl)" ;;
        --) shift; suite_args+=("$@"); break ;;
        *) suite_args+=("$1"); shift ;;
    esac
done

suite=${UNIONMOUNT_TESTSUITE:-${STRATA_TEST_CACHE:-/var/cache/strata-test}/unionmount-testsuite}
if [ ! -f "$suite/run" ]; then
    echo "==> unionmount-testsuite not found at $suite: cloning $SUITE_REPO ($SUITE_COMMIT)"
    mkdir -p "$(dirname "$suite")"
    tmp_clone="$suite.clone.$$"
    rm -rf "$tmp_clone"
    if git clone -q "$SUITE_REPO" "$tmp_clone" && git -C "$tmp_clone" checkout -q "$SUITE_COMMIT"; then
        mv "$tmp_clone" "$suite"
    else
        rm -rf "$tmp_clone"
        echo "unionmount.sh: could not fetch the unionmount-testsuite. Provide a checkout of" >&2
        echo "  $SUITE_REPO at commit $SUITE_COMMIT at $suite," >&2
        echo "  or point UNIONMOUNT_TESTSUITE at one." >&2
        exit 2
    fi
fi
suite=$(cd "$suite" && pwd)
[ "$fetch_only" -eq 1 ] && { echo "==> unionmount-testsuite at $suite"; exit 0; }

[ "$(id -u)" -eq 0 ] || die "needs root (the suite mounts and unmounts)"
command -v unshare >/dev/null || die "unshare (util-linux) is missing"
command -v python3 >/dev/null || die "python3 is missing"
[[ "$jobs" =~ ^[1-9][0-9]*$ ]] || die "--jobs needs a positive number"

[ "${#impls[@]}" -gt 0 ] || impls=(strata)
strata_bin=""
fo_bin=""
for i in "${impls[@]}"; do
    case "$i" in
        kernel) ;;
        strata)
            strata_bin=${bin:-${STRATA_FUSE_BIN:-}}
            if [ -z "$strata_bin" ]; then
                echo "==> cargo build --release --bin strata-fuse"
                (cd "$repo" && cargo build --release --quiet --bin strata-fuse)
                strata_bin="${CARGO_TARGET_DIR:-$repo/target}/release/strata-fuse"
            fi
            strata_bin=$(command -v "$strata_bin" || true)
            [ -x "$strata_bin" ] || die "strata-fuse binary not found (${bin:-${STRATA_FUSE_BIN:-}})"
            strata_bin=$(readlink -f "$strata_bin") ;;
        fuse-overlayfs)
            fo_bin=$(command -v "${bin:-fuse-overlayfs}" || true)
            [ -n "$fo_bin" ] || die "fuse-overlayfs is not installed"
            fo_bin=$(readlink -f "$fo_bin") ;;
        *) die "unknown --impl $i (strata, kernel or fuse-overlayfs)" ;;
    esac
done

[ "${#suite_args[@]}" -eq 0 ] || modes+=("${suite_args[*]}")
[ "${#modes[@]}" -gt 0 ] || modes=("--ov --samefs")
for m in "${modes[@]}"; do
    [[ "$m" == --ov* ]] || die "suite arguments must start with --ov[=N] (got '$m')"
done

if [ -z "$out" ]; then
    out=$(mktemp -d /tmp/unionmount-out.XXXXXX)
fi
mkdir -p "$out"
out=$(cd "$out" && pwd)
tmp=$(mktemp -d /tmp/strata-unionmount.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
echo "==> suite $suite ($(git -C "$suite" log -1 --format=%h 2>/dev/null || echo '?')), logs in $out"

rc=0
UM_STAGE=ns UM_SUITE="$suite" UM_OUT="$out" UM_TMP="$tmp" UM_JOBS="$jobs" \
    UM_TIMEOUT="$timeout_s" UM_IMPLS="${impls[*]}" UM_STRATA_BIN="$strata_bin" \
    UM_FO_BIN="$fo_bin" UM_MODES="$(printf '%s\037' "${modes[@]}")" \
    unshare -m --propagation private "$self" || rc=$?
exit "$rc"
