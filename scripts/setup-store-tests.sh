#!/bin/sh
# Install the tools the image/store tests use (Debian): buildah and skopeo make and export
# the test images, umoci unpacks them for comparison, busybox-static is their content,
# fuse3 gives fusermount3, util-linux gives setpriv (rootless variants run as nobody).
set -eu
if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi
$SUDO apt-get update -q
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends \
    buildah skopeo umoci busybox-static fuse3 util-linux tar gzip
