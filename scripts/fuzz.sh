#!/bin/sh
# Run every cargo-fuzz target (fuzz/) for SECONDS each (default 60) and print, per target,
# libFuzzer's last status line (runs, cov, ft, corpus, exec/s). Needs the nightly toolchain and
# cargo-fuzz (`cargo install cargo-fuzz`).
# Usage: scripts/fuzz.sh [SECONDS] [TARGET...]
# The growing corpus is kept in $CARGO_TARGET_DIR/fuzz-corpus/TARGET (committed seeds in
# fuzz/seeds/TARGET and regressions in fuzz/regressions/TARGET are read, never written);
# crashes go to $CARGO_TARGET_DIR/fuzz-corpus/artifacts/TARGET/. Copy a crash input into
# fuzz/regressions/TARGET/ once fixed: tests/fuzz_smoke.rs replays it on every test run.
# JOBS=N runs N targets at once (default 1).
set -eu
cd "$(dirname "$0")/.."
SECS=${1:-60}
[ $# -gt 0 ] && shift
TARGETS=${*:-$(sed -n 's/^name = "\(.*\)"$/\1/p' fuzz/Cargo.toml | grep -v '^strata-fuzz$')}
TD=${CARGO_TARGET_DIR:-$PWD/target}
WORK=$TD/fuzz-corpus
JOBS=${JOBS:-1}
export CARGO_TARGET_DIR=$TD/fuzz
cargo +nightly fuzz build
run_one() {
    t=$1
    mkdir -p "$WORK/$t" "$WORK/artifacts/$t"
    extra=""
    [ -d "fuzz/regressions/$t" ] && extra="fuzz/regressions/$t"
    # shellcheck disable=SC2086
    if cargo +nightly fuzz run "$t" "$WORK/$t" "fuzz/seeds/$t" $extra -- \
        -max_total_time="$SECS" -rss_limit_mb=2048 -artifact_prefix="$WORK/artifacts/$t/" \
        >"$WORK/$t.log" 2>&1; then
        status=ok
    else
        status="CRASH (see $WORK/$t.log, inputs in $WORK/artifacts/$t/)"
    fi
    line=$(grep -a '^#[0-9].*cov:' "$WORK/$t.log" | tail -n 1)
    printf '%-18s %s  %s\n' "$t" "$status" "$line"
}
fail=0
n=0
for t in $TARGETS; do
    run_one "$t" > "$WORK.$t.out" &
    n=$((n + 1))
    if [ "$n" -ge "$JOBS" ]; then wait; n=0; fi
done
wait
for t in $TARGETS; do
    cat "$WORK.$t.out"
    grep -q CRASH "$WORK.$t.out" && fail=1
    rm -f "$WORK.$t.out"
done
exit $fail
