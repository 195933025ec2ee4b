#!/bin/bash
# Makes a bootable btrfs disk image for the qemu wipe test from the cached base tree (base.sh):
#   top level: @pristine (read-only: Debian + this package + the test config), @root (a snapshot
#   of it, what the kernel boots), @persist (the storage), @keep (a sibling the wipe must not touch)
# and builds the initrd of FLAVOR (dracut | initramfs-tools) in the pristine's chroot, for its kernel.
#   test/qemu/image.sh FLAVOR OUTDIR [METHOD]  -> OUTDIR/disk.img OUTDIR/vmlinuz OUTDIR/initrd.img
# METHOD tmpfs (default btrfs): [wipe] method = "tmpfs" (the disk's @root gives /usr and a copy of
# /etc to a tmpfs root), /persist mounted by the initrd (x-initrd.mount), and /etc/passwd, group,
# shadow and gshadow persisted, where only the storage copies have the user alice.
# Needs npm run build first (packaging/install.sh installs dist/).
set -euo pipefail
flavor=$1 out=$2 method=${3:-btrfs}
here=$(cd "$(dirname "$0")/../.." && pwd)
base=$("$here/test/qemu/base.sh")
# The `hello` .deb for `wipe update -- apt-get install -y hello` (no network in the VM): in the
# image's apt cache, downloaded once (bookworm's, as the base tree's package lists) into the cache.
debs=${IMPERMANENCE_QEMU_CACHE:-/var/cache/impermanence-qemu}/debs-1
if ! ls "$debs"/hello_*.deb >/dev/null 2>&1; then
  { mkdir -p "$debs.tmp" && (cd "$debs.tmp" && apt-get download -q hello >&2) && mkdir -p "$debs" && mv "$debs.tmp"/hello_*.deb "$debs/"; } \
    || echo "image.sh: could not download hello: the WIPE_APT=1 test will fail" >&2
fi
mkdir -p "$out"
rm -f "$out/disk.img"
truncate -s 4G "$out/disk.img"
mkfs.btrfs -q -f -L impwipe "$out/disk.img" >/dev/null
unshare -m --propagation private -- bash -euo pipefail -c '
  here=$1 base=$2 flavor=$3 out=$4 method=$5 debs=$6
  mnt=$out/mnt; mkdir -p "$mnt"
  mount -o loop "$out/disk.img" "$mnt"
  p=$mnt/@pristine
  btrfs -q subvolume create "$p"
  cp -a "$base/." "$p/"
  rm -f "$p/.complete"
  cp "$debs"/hello_*.deb "$p/var/cache/apt/archives/" 2>/dev/null || true
  # The apt package cache, built here in seconds rather than by each apt-get under emulation.
  chroot "$p" apt-cache gencaches >/dev/null
  sh "$here/packaging/install.sh" "$p"
  cp /usr/bin/node "$p/usr/bin/node"
  mkdir -p "$p/persist" "$p/etc/impermanence/persist.d"
  echo "LABEL=impwipe /persist btrfs subvol=@persist 0 0" > "$p/etc/fstab"
  cat > "$p/etc/impermanence/persist.d/10-wipetest.toml" <<TOML
[wipe]
method = "btrfs"
device = "LABEL=impwipe"
subvolume = "@root"
from = "@pristine"
keep = { days = 30, count = 5 }
timeout = 5

[persistence."/persist"]
directories = ["/srv/kept"]
TOML
  if [ "$method" = tmpfs ]; then
    echo "LABEL=impwipe /persist btrfs subvol=@persist,x-initrd.mount 0 0" > "$p/etc/fstab"
    cat > "$p/etc/impermanence/persist.d/10-wipetest.toml" <<TOML
[wipe]
method = "tmpfs"
size = "768M"

[persistence."/persist"]
directories = ["/srv/kept"]
files = ["/etc/passwd", "/etc/group", "/etc/shadow", "/etc/gshadow"]

[persistence."/persist".users.alice]
directories = ["kept"]
TOML
    # The storage, with alice only in its copies of the user files; mounted on /persist while
    # the initrd is built, as on the running system (impermanencectl wipe config checks the config).
    btrfs -q subvolume create "$mnt/@persist"
    mkdir -p "$mnt/@persist/etc"
    cp -p "$p/etc/passwd" "$p/etc/group" "$p/etc/shadow" "$p/etc/gshadow" "$mnt/@persist/etc/"
    echo "alice:x:1000:1000:Alice:/home/alice:/bin/bash" >> "$mnt/@persist/etc/passwd"
    echo "alice:x:1000:" >> "$mnt/@persist/etc/group"
    echo "alice:!:19000:0:99999:7:::" >> "$mnt/@persist/etc/shadow"
    echo "alice:!::" >> "$mnt/@persist/etc/gshadow"
    mount --bind "$mnt/@persist" "$p/persist"
  fi
  ver=$(ls "$p/lib/modules" | head -n1)
  mount --rbind /dev "$p/dev"; mount -t proc proc "$p/proc"; mount -t sysfs sys "$p/sys"; mount -t tmpfs tmpfs "$p/run"
  if [ "$flavor" = dracut ]; then
    chroot "$p" dracut -q --no-hostonly --force --add impermanence --add-drivers "virtio_blk virtio_pci btrfs" /boot/initrd.img-$ver "$ver"
    # dracut goes on without a module whose install() failed: make that an error here.
    listed=$(chroot "$p" lsinitrd "/boot/initrd.img-$ver")
    grep -q "etc/impermanence/wipe.conf" <<<"$listed" || { echo "image.sh: the impermanence dracut module is not in the initrd" >&2; exit 1; }
  else
    chroot "$p" update-initramfs -c -k "$ver" >/dev/null
  fi
  umount -R "$p/dev" "$p/proc" "$p/sys" "$p/run"
  if [ "$method" = tmpfs ]; then umount "$p/persist"; fi
  cp "$p/boot/vmlinuz-$ver" "$out/vmlinuz"
  cp "$p/boot/initrd.img-$ver" "$out/initrd.img"
  btrfs property set "$p" ro true
  btrfs -q subvolume snapshot "$p" "$mnt/@root"
  [ -e "$mnt/@persist" ] || btrfs -q subvolume create "$mnt/@persist"
  btrfs -q subvolume create "$mnt/@keep"
  echo sibling > "$mnt/@keep/file"
  umount "$mnt"
  rmdir "$mnt"
' bash "$here" "$base" "$flavor" "$out" "$method" "$debs"
echo "$out"
