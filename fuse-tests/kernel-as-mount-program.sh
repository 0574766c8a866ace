#!/bin/sh
# Harness self-check: a stand-in "mount program" with the arguments of strata-fuse that mounts
# kernel overlayfs instead (redirect_dir=on,index=on; userxattr is passed through). With
#   STRATA_FUSE_BIN=$PWD/fuse-tests/kernel-as-mount-program.sh cargo test --release --test differential
# every differential test compares the kernel with itself and must pass; a failure there is a
# harness bug (a false positive). With -f it stays until the mount goes away, like a daemon.
set -eu
fg=0
opts=
while [ $# -gt 1 ]; do
    case "$1" in
        -f) fg=1; shift ;;
        -o) opts="${opts:+$opts,}$2"; shift 2 ;;
        *) shift ;;
    esac
done
mnt="$1"
case ",$opts," in
    *,upperdir=*) features=redirect_dir=on,index=on ;;
    *) features= ;;
esac
case ",$opts," in *,userxattr,*) features= ;; esac
mount -t overlay overlay -o "$opts${features:+,$features}" "$mnt"
if [ "$fg" = 1 ]; then
    while mountpoint -q "$mnt"; do sleep 0.1; done
fi
