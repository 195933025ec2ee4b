#!/bin/bash
# Builds (once) the cached Debian bookworm tree the qemu ZFS test boots: the wipe test's base tree
# (base.sh) plus Debian's ZFS from contrib (zfs-dkms, zfsutils-linux, zfs-dracut), the module built
# by dkms in the chroot for the tree's own kernel (natively: the chroot runs on the host's CPU).
# Cached in /var/cache/impermanence-qemu/zfs-base-<version>; never committed.
#   test/qemu/zfs-base.sh        prints the cached tree's path (building it if missing)
set -euo pipefail
VERSION=1
cache=${IMPERMANENCE_QEMU_CACHE:-/var/cache/impermanence-qemu}
zbase=$cache/zfs-base-$VERSION
if [ -e "$zbase/.complete" ]; then echo "$zbase"; exit 0; fi
here=$(cd "$(dirname "$0")/../.." && pwd)
base=$("$here/test/qemu/base.sh")
exec 9>"$cache/zfs-base.lock"; flock 9
if [ -e "$zbase/.complete" ]; then echo "$zbase"; exit 0; fi
work=$zbase.tmp
if [ -d "$work" ]; then
  if grep -q " $work/" /proc/self/mountinfo; then echo "zfs-base.sh: $work still has mounts" >&2; exit 1; fi
  rm -rf "$work"
fi
cp -a "$base" "$work"
rm -f "$work/.complete"
# contrib in the tree's own sources (never the host's).
echo 'deb http://deb.debian.org/debian bookworm main contrib' > "$work/etc/apt/sources.list"
ver=$(ls "$work/lib/modules" | head -n1)
unshare -m --propagation private -- sh -ec '
  w=$1 ver=$2
  mount --rbind /dev "$w/dev"; mount -t proc proc "$w/proc"; mount -t sysfs sys "$w/sys"; mount -t tmpfs tmpfs "$w/run"
  export DEBIAN_FRONTEND=noninteractive
  chroot "$w" apt-get update -q >&2
  # dracut (not only dracut-core): zfs-dracut depends on it; it replaces initramfs-tools here.
  chroot "$w" apt-get install -y -q --no-install-recommends "linux-headers-$ver" dkms zfs-dkms zfsutils-linux zfs-dracut dracut >&2
  # zfs-dkms'"'"'s postinst builds for the kernels with headers (the tree'"'"'s own); in case it did not:
  if [ ! -e "$w/lib/modules/$ver/updates/dkms/zfs.ko" ]; then
    zv=$(chroot "$w" dpkg-query -W -f "\${Version}" zfs-dkms | sed "s/-.*//")
    chroot "$w" dkms install "zfs/$zv" -k "$ver" >&2
  fi
  test -e "$w/lib/modules/$ver/updates/dkms/zfs.ko" || { echo "zfs-base.sh: no zfs.ko for $ver" >&2; exit 1; }
  chroot "$w" apt-get clean
' sh "$work" "$ver"
rm -f "$work"/boot/initrd.img-* "$work"/boot/initramfs-*
touch "$work/.complete"
mv "$work" "$zbase"
echo "$zbase"
