#!/usr/bin/env bash
# Start-up time of an image pulled in full vs lazily (eStargz), behind a throttling proxy.
#
#   scripts/bench-lazy.sh [--size MB] [--rate MBPS] [--latency MS] [--debian]
#
# A local docker-registry on 127.0.0.1 holds the image, pushed with
# `strata push --compression estargz`; strata reaches it only through a proxy of this script
# (python3) that sends at most RATE MB/s and waits LATENCY ms before each request, so the
# result does not depend on loopback speed. Two images: a synthetic one of SIZE MB (default
# 200: a few small files and big incompressible ones), and with --debian the cached Debian
# minbase of scripts/debian-minbase.sh. For each: time and bytes of
#   full:  strata pull        + strata mount + the first read (cat of a few small files)
#   lazy:  strata pull --lazy + strata mount + the first read
# and the time of a cold sequential read of a big file through the lazy layer compared with
# the same read of the fully pulled layer (the cost of the second FUSE hop, once cached).
# Needs root (mounts), docker-registry, python3. Prints a Markdown table.
set -euo pipefail

size=200 rate=20 latency=10 debian=0
while [ $# -gt 0 ]; do
    case "$1" in
    --size) size=$2; shift 2 ;;
    --rate) rate=$2; shift 2 ;;
    --latency) latency=$2; shift 2 ;;
    --debian) debian=1; shift ;;
    *) echo "usage: $0 [--size MB] [--rate MBPS] [--latency MS] [--debian]" >&2; exit 2 ;;
    esac
done

here=$(cd "$(dirname "$0")/.." && pwd)
strata=${STRATA_BIN:-${CARGO_TARGET_DIR:-$here/target}/release/strata}
[ -x "$strata" ] || { echo "build first: cargo build --release ($strata missing)" >&2; exit 1; }
work=$(mktemp -d /tmp/strata-bench-lazy.XXXXXX)
pids=()
cleanup() {
    for m in $(awk '{print $5}' /proc/self/mountinfo | grep "^$work" | sort -r); do
        umount -l "$m" 2>/dev/null || true
    done
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
rport=$(free_port)
mkdir -p "$work/registry"
cat > "$work/registry.yml" <<YML
version: 0.1
log:
  level: error
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $work/registry
http:
  addr: 127.0.0.1:$rport
YML
docker-registry serve "$work/registry.yml" > "$work/registry.log" 2>&1 &
pids+=($!)

cat > "$work/proxy.py" <<'PY'
import os, socket, sys, threading, time
listen, upstream, rate, latency, counter = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]) * 1e6, float(sys.argv[4]) / 1000, sys.argv[5]
lock = threading.Lock(); total = [0]; bucket = [0.0, time.monotonic()]
def take(n):
    # a shared token bucket: all connections together get `rate` bytes per second
    while True:
        with lock:
            now = time.monotonic(); bucket[0] = min(rate / 10, bucket[0] + (now - bucket[1]) * rate); bucket[1] = now
            if bucket[0] >= n: bucket[0] -= n; total[0] += n; return
        time.sleep(0.002)
def down(src, dst):
    try:
        while True:
            b = src.recv(65536)
            if not b: break
            for i in range(0, len(b), 16384):
                take(len(b[i:i+16384])); dst.sendall(b[i:i+16384])
    except OSError: pass
    for s in (src, dst):
        try: s.shutdown(socket.SHUT_RDWR)
        except OSError: pass
def up(src, dst):
    try:
        while True:
            b = src.recv(65536)
            if not b: break
            time.sleep(latency)  # each request waits
            dst.sendall(b)
    except OSError: pass
def dump():
    while True:
        with lock: n = total[0]
        open(counter + ".tmp", "w").write(str(n)); os.replace(counter + ".tmp", counter)
        time.sleep(0.05)
threading.Thread(target=dump, daemon=True).start()
l = socket.socket(); l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); l.bind(("127.0.0.1", listen)); l.listen(64)
while True:
    c, _ = l.accept(); u = socket.create_connection(("127.0.0.1", upstream))
    threading.Thread(target=up, args=(c, u), daemon=True).start()
    threading.Thread(target=down, args=(u, c), daemon=True).start()
PY
pport=$(free_port)
python3 "$work/proxy.py" "$pport" "$rport" "$rate" "$latency" "$work/bytes" &
pids+=($!)
for _ in $(seq 100); do
    if (exec 3<>/dev/tcp/127.0.0.1/$rport) 2>/dev/null && (exec 3<>/dev/tcp/127.0.0.1/$pport) 2>/dev/null; then break; fi
    sleep 0.1
done
bytes() { cat "$work/bytes" 2>/dev/null || echo 0; }
now() { date +%s.%N; }
net=(--tls-verify=false --authfile /nonexistent/strata-bench-auth.json)

synthetic() { # $1 = dir
    mkdir -p "$1/etc" "$1/usr/lib" "$1/usr/share"
    echo "hello" > "$1/etc/motd"; echo bench > "$1/etc/hostname"
    for i in $(seq 1 20); do head -c 4096 /dev/urandom > "$1/usr/share/small$i"; done
    local left=$size i=0
    while [ "$left" -gt 0 ]; do
        local n=$(( left < 50 ? left : 50 ))
        head -c $((n << 20)) /dev/urandom > "$1/usr/lib/big$i.bin"
        left=$((left - n)); i=$((i + 1))
    done
}

echo "| image | mode | start-up (s) | bytes before first output | of the image |"
echo "|---|---|---|---|---|"
bench_image() { # $1 = name, $2 = rootfs dir or tar, $3 = files to cat
    local name=$1 src=$2 files=$3
    local a="$work/$name-a" r0 image_bytes
    "$strata" --root "$a" import -q "$src" "localhost/$name:1" > /dev/null
    r0=$(du -sb "$work/registry" | awk '{print $1}')
    "$strata" --root "$a" push -q "${net[@]}" --compression estargz "localhost/$name:1" "127.0.0.1:$rport/$name:1" > /dev/null
    local ref="127.0.0.1:$pport/$name:1"
    image_bytes=$(( $(du -sb "$work/registry" | awk '{print $1}') - r0 ))
    for mode in full lazy; do
        local s="$work/$name-$mode" mp="$work/$name-$mode-mnt" b0 t0 t1 b1 lazyflag=()
        [ "$mode" = lazy ] && lazyflag=(--lazy)
        b0=$(bytes); t0=$(now)
        "$strata" --root "$s" pull -q "${net[@]}" "${lazyflag[@]}" "$ref" > /dev/null
        STRATA_LAZY_NO_COMPLETE=1 "$strata" --root "$s" mount "$ref" "$mp" > /dev/null
        for f in $files; do cat "$mp/$f" > /dev/null; done
        t1=$(now); sleep 0.1; b1=$(bytes)
        printf '| %s | %s | %.2f | %s | %.1f%% |\n' "$name" "$mode" "$(echo "$t1 - $t0" | bc)" \
            "$((b1 - b0))" "$(echo "100 * ($b1 - $b0) / $image_bytes" | bc -l)"
    done
}

synthetic "$work/synthetic"
bench_image synthetic "$work/synthetic" "etc/motd etc/hostname usr/share/small1 usr/share/small2"
if [ "$debian" = 1 ]; then
    tar=$("$here/scripts/debian-minbase.sh")
    bench_image debian "$tar" "etc/os-release etc/debian_version usr/bin/ls usr/lib/x86_64-linux-gnu/libc.so.6"
fi

# The second hop, once cached: read one big file fully through the union over the lazy
# layer (all its chunks fetched first) and over the unpacked layer.
big="usr/lib/big0.bin"
cat "$work/synthetic-lazy-mnt/$big" > /dev/null
for mode in full lazy; do
    mp="$work/synthetic-$mode-mnt"
    sync; echo 3 > /proc/sys/vm/drop_caches
    t0=$(now); cat "$mp/$big" > /dev/null; t1=$(now)
    printf 'cold read of a 50 MiB file, %s layer (cached chunks): %.3f s\n' "$mode" "$(echo "$t1 - $t0" | bc)" >&2
done
