#!/bin/bash
# Builds (once) the cached Debian bookworm tree the qemu wipe test boots: systemd, btrfs-progs,
# the cloud kernel, initramfs-tools + busybox and dracut-core side by side (the `dracut` package
# conflicts with initramfs-tools, dracut-core does not), and libstdc++ for the host's node binary.
# Cached in /var/cache/impermanence-qemu/base-<version>; never committed. ~2-4 min on 2 cores.
#   test/qemu/base.sh            prints the cached tree's path (building it if missing)
set -euo pipefail
VERSION=1
cache=${IMPERMANENCE_QEMU_CACHE:-/var/cache/impermanence-qemu}
base=$cache/base-$VERSION
if [ -e "$base/.complete" ]; then echo "$base"; exit 0; fi
mkdir -p "$cache"
exec 9>"$cache/base.lock"; flock 9
if [ -e "$base/.complete" ]; then echo "$base"; exit 0; fi
export DEBIAN_FRONTEND=noninteractive
command -v debootstrap >/dev/null && command -v qemu-system-x86_64 >/dev/null && command -v mkfs.btrfs >/dev/null || {
  apt-get update -q >&2
  apt-get install -o DPkg::Lock::Timeout=600 -y -q --no-install-recommends debootstrap qemu-system-x86 btrfs-progs ca-certificates >&2
}
work=$base.tmp
# Never rm -rf a tree with /dev bound: the binds below live only in a private mount namespace.
if [ -d "$work" ]; then
  if grep -q " $work/" /proc/self/mountinfo; then echo "base.sh: $work still has mounts" >&2; exit 1; fi
  rm -rf "$work"
fi
debootstrap --variant=minbase --include=systemd,systemd-sysv,dbus,udev,kmod,procps,iproute2,util-linux \
  bookworm "$work" http://deb.debian.org/debian >&2
unshare -m --propagation private -- sh -ec '
  w=$1
  mount --rbind /dev "$w/dev"; mount -t proc proc "$w/proc"; mount -t sysfs sys "$w/sys"
  chroot "$w" apt-get install -y -q --no-install-recommends linux-image-cloud-amd64 initramfs-tools busybox \
    dracut-core kpartx cpio btrfs-progs libstdc++6 e2fsprogs zstd >&2
  chroot "$w" apt-get clean
' sh "$work"
echo 'root:root' | chroot "$work" chpasswd
echo wipetest > "$work/etc/hostname"
# Autologin on the serial console, so that the test can drive it.
mkdir -p "$work/etc/systemd/system/serial-getty@ttyS0.service.d"
cat > "$work/etc/systemd/system/serial-getty@ttyS0.service.d/autologin.conf" <<'UNIT'
[Service]
ExecStart=
ExecStart=-/sbin/agetty --autologin root --noclear --keep-baud 115200 %I $TERM
UNIT
rm -f "$work"/boot/initrd.img-* "$work"/boot/initramfs-*
touch "$work/.complete"
mv "$work" "$base"
echo "$base"
