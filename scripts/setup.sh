#!/usr/bin/env bash
# Set up a Debian/Ubuntu machine for strata: install the system packages the tests and the
# demo use (only what is missing), pjdfstest and the unionmount-testsuite (if missing), build
# the project, then run the demo.
#
#   scripts/setup.sh            install, build (release), run scripts/demo.sh
#   scripts/setup.sh --no-demo  install and build only (CI)
#
# Idempotent and quick when everything is present: dpkg -s checks, no apt-get update then.
set -euo pipefail

cd "$(dirname "$0")/.."

demo=1
for arg in "$@"; do
    case "$arg" in
        --no-demo) demo=0 ;;
        -h|--help) sed -n '2,9p' "$0"; exit 0 ;;
        *) echo "setup.sh: unknown argument: $arg" >&2; exit 2 ;;
    esac
done

PACKAGES=(fuse3 fuse-overlayfs unionfs-fuse attr acl sqlite3 git python3 skopeo buildah
          umoci podman runc uidmap docker-registry busybox-static e2fsprogs debootstrap
          passt slirp4netns fio stress-ng golang-go golang-github-containerd-stargz-snapshotter-dev
          curl apache2-utils strace)

if [ "$(id -u)" -eq 0 ]; then
    SUDO=()
elif command -v sudo >/dev/null 2>&1; then
    SUDO=(sudo)
else
    SUDO=()
fi

missing=()
for p in "${PACKAGES[@]}"; do
    if ! dpkg -s "$p" 2>/dev/null | grep -q '^Status: install ok installed'; then
        missing+=("$p")
    fi
done

if [ "${#missing[@]}" -gt 0 ]; then
    if [ "$(id -u)" -ne 0 ] && [ "${#SUDO[@]}" -eq 0 ]; then
        echo "setup.sh: need root or sudo to install: ${missing[*]}" >&2
        exit 1
    fi
    echo "==> installing: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    "${SUDO[@]}" apt-get update -q
    "${SUDO[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}"
else
    echo "==> system packages present"
fi

# FUSE needs the device; rootless tests and mounts need it usable.
if [ ! -e /dev/fuse ]; then
    echo "setup.sh: warning: /dev/fuse is missing (no FUSE in this kernel/container?)" >&2
fi

if ! command -v cargo >/dev/null 2>&1; then
    echo "setup.sh: cargo is not installed (install a Rust toolchain first)" >&2
    exit 1
fi

# pjdfstest (the POSIX suite fuse-tests/pjdfstest.rs and scripts/pjdfstest.sh run): built from
# crates.io once, a few minutes.
if command -v pjdfstest >/dev/null 2>&1 || [ -x /opt/pjdfstest/bin/pjdfstest ] \
        || [ -x "$HOME/.cargo/bin/pjdfstest" ]; then
    echo "==> pjdfstest present"
else
    echo "==> installing pjdfstest (cargo install pjdfstest --locked --root $HOME/.cargo)"
    cargo install pjdfstest --locked --root "$HOME/.cargo"
fi

# unionmount-testsuite (fuse-tests/unionmount.rs, scripts/unionmount.sh): a git checkout in
# ${STRATA_TEST_CACHE:-/var/cache/strata-test}/unionmount-testsuite (or $UNIONMOUNT_TESTSUITE),
# never part of this repository. Not fatal: without network the test reports the missing suite.
if ! scripts/unionmount.sh --fetch-only; then
    echo "setup.sh: warning: unionmount-testsuite unavailable (set STRATA_TEST_NO_UNIONMOUNT=1 to leave its test out)" >&2
fi

echo "==> building (cargo build --release)"
cargo build --release

if [ "$demo" -eq 1 ]; then
    echo "==> running the demo"
    exec scripts/demo.sh
fi
