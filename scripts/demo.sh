#!/usr/bin/env bash
# A short demo of strata.
#  1. strata-fuse: two lower layers and an upper layer showing an override, a whiteout and an
#     opaque directory; then a write through the mount lands in the upper dir.
#  2. The image loop: import a small busybox image, run a command in it, run it detached,
#     change it with exec, commit it to a new image (with a new CMD), run the new image with
#     a published port (pasta) and talk to it, stop it, clean up.
# Needs root for part 1 (trusted.* xattrs, mknod of the 0/0 whiteout) and built
# target/release/strata-fuse and target/release/strata. Exits non-zero if anything fails.
set -euo pipefail

cd "$(dirname "$0")/.."
BIN="${STRATA_FUSE_BIN:-$PWD/target/release/strata-fuse}"
STRATA="${STRATA_BIN:-$PWD/target/release/strata}"
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
    if [ -x "$STRATA" ] && [ -d "$T/store" ]; then
        for c in box web; do "$STRATA" --root "$T/store" rm -f "$c" >/dev/null 2>&1 || true; done
    fi
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

# ---- 2. the image loop: import, run, change, commit, run the new image -------------------
if [ ! -x "$STRATA" ]; then
    echo "demo: $STRATA not found; run: cargo build --release" >&2
    exit 1
fi
BUSYBOX=$(command -v busybox || echo /bin/busybox)
mkdir -p "$T/rootfs/bin" "$T/rootfs/etc"
cp "$BUSYBOX" "$T/rootfs/bin/busybox"
for a in $("$BUSYBOX" --list); do [ "$a" = busybox ] || ln -s busybox "$T/rootfs/bin/$a"; done
printf 'root:x:0:0:root:/root:/bin/sh\n' > "$T/rootfs/etc/passwd"
printf 'root:x:0:\n' > "$T/rootfs/etc/group"
s() { "$STRATA" --root "$T/store" "$@"; }

step s import -q "$T/rootfs" demo/busybox:1
step s images
step s run --rm demo/busybox:1 sh -c 'echo "hello from $(hostname), pid $$ in its own namespaces"; id; ls /'
step s run -d --name box demo/busybox:1 sleep 600
step s exec box sh -c 'mkdir -p /www && echo "<h1>made inside a strata container</h1>" > /www/index.html'
step s ps
step s diff box
step s commit -q -a demo -m "add a web page" -c 'CMD ["httpd", "-f", "-v", "-p", "8080", "-h", "/www"]' box demo/web:2
step s stop -t 1 box
step s history demo/web:2
if command -v pasta >/dev/null && [ -r /dev/net/tun ] && [ -w /dev/net/tun ]; then
    step s run -d --name web -p 18080:8080 demo/web:2
else
    echo "(no pasta or /dev/net/tun: the new image runs on the host network, port 18080)"
    step s run -d --name web demo/web:2 httpd -f -v -p 18080 -h /www
fi
page=""
for _ in $(seq 50); do
    page=$(curl -s http://127.0.0.1:18080/ 2>/dev/null || true)
    [ -n "$page" ] && break
    sleep 0.1
done
printf '\n%s$ curl http://127.0.0.1:18080/%s\n%s\n' "$B" "$N" "$page"
[ "$page" = "<h1>made inside a strata container</h1>" ]
step s stop web
step s logs web
step s ps -a
step s rm box web
echo
echo "demo: ok"
