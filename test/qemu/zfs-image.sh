#!/bin/bash
# Makes a bootable ZFS disk image for the qemu ZFS test from the cached ZFS tree (zfs-base.sh):
#   pool rpool on the whole disk: rpool/root (mountpoint=/, what the kernel boots with
#   root=zfs:rpool/root) with the snapshot rpool/root@blank taken right after install (Debian +
#   this package + the test config), rpool/persist (the storage, mountpoint=legacy, on /persist
#   from /etc/fstab); the initrd built by dracut + zfs-dracut in the tree's chroot, for its kernel.
# The host has no ZFS module (and must not load one), so the pool is made by an installer VM: the
# same kernel and initrd booting an ext4 image of the ZFS tree (vda), creating the pool on the
# disk (vdb) and unpacking the tree (a tar on vdc) into rpool/root, then exporting the pool.
#   test/qemu/zfs-image.sh OUTDIR     -> OUTDIR/disk.img OUTDIR/vmlinuz OUTDIR/initrd.img
# Needs npm run build first (packaging/install.sh installs dist/).
set -euo pipefail
out=$1
here=$(cd "$(dirname "$0")/../.." && pwd)
zbase=$("$here/test/qemu/zfs-base.sh")
mkdir -p "$out"
tree=$out/tree
# Never rm -rf a tree with /dev bound (binds below live only in a private mount namespace).
if [ -d "$tree" ]; then
  if grep -q " $tree/" /proc/self/mountinfo; then echo "zfs-image.sh: $tree still has mounts" >&2; exit 1; fi
  rm -rf "$tree"
fi
rm -f "$out/disk.img" "$out/installer.img" "$out/tree.tar"
cp -a "$zbase" "$tree"
rm -f "$tree/.complete"
# One hostid for the installer and the booted system (the initrd imports with it).
chroot "$tree" zgenhostid -f 1a2b3c4d
ver=$(ls "$tree/lib/modules" | head -n1)
# The installer: the ZFS tree as it is, and its script (run by systemd.run=, then poweroff).
cat > "$tree/zfs-install" <<'SH'
#!/bin/sh
exec >/dev/ttyS0 2>&1
set -eux
modprobe zfs
zpool create -f -o ashift=12 -o cachefile=none -O mountpoint=none -O atime=off -O compression=lz4 -R /mnt rpool /dev/vdb
zfs create -o mountpoint=/ -o canmount=noauto rpool/root
zfs mount rpool/root
tar -C /mnt -xpf /dev/vdc
zfs snapshot rpool/root@blank
zfs create -o mountpoint=legacy rpool/persist
zfs list -t all
zpool export rpool
echo ZFS-INSTALL-OK
SH
chmod +x "$tree/zfs-install"
size=$(( $(du -sm "$tree" | cut -f1) + 600 ))
mkfs.ext4 -q -F -L zfsinst -d "$tree" "$out/installer.img" "${size}M"
rm "$tree/zfs-install"
# The system: this package and the test config.
sh "$here/packaging/install.sh" "$tree"
cp /usr/bin/node "$tree/usr/bin/node"
mkdir -p "$tree/persist" "$tree/etc/impermanence/persist.d"
echo "rpool/persist /persist zfs defaults 0 0" > "$tree/etc/fstab"
cat > "$tree/etc/impermanence/persist.d/10-zfstest.toml" <<'TOML'
[wipe]
method = "zfs"
dataset = "rpool/root"
snapshot = "blank"

[persistence."/persist"]
directories = ["/srv/kept"]
TOML
unshare -m --propagation private -- bash -euo pipefail -c '
  t=$1 ver=$2
  mount --rbind /dev "$t/dev"; mount -t proc proc "$t/proc"; mount -t sysfs sys "$t/sys"; mount -t tmpfs tmpfs "$t/run"
  chroot "$t" dracut -q --no-hostonly --force --add "impermanence zfs" --add-drivers "virtio_blk virtio_pci ext4 zfs" /boot/initrd.img-$ver "$ver"
' bash "$tree" "$ver"
cp "$tree/boot/vmlinuz-$ver" "$out/vmlinuz"
cp "$tree/boot/initrd.img-$ver" "$out/initrd.img"
# What goes into rpool/root: the tree without the module's build and the compiler (the module
# itself stays), docs, apt lists or /boot: writing to a pool under emulation is slow (below).
tar -C "$tree" --exclude=./usr/src --exclude=./var/lib/dkms --exclude=./usr/lib/gcc --exclude=./usr/libexec/gcc \
  --exclude=./usr/include --exclude=./usr/share/doc --exclude=./usr/share/man --exclude=./usr/share/locale \
  --exclude=./var/lib/apt/lists --exclude='./boot/*' -cf "$out/tree.tar" .
truncate -s 4G "$out/disk.img"
timeout 1800 qemu-system-x86_64 -accel tcg,thread=multi -cpu max -m 1536 -smp 2 -display none -monitor none -serial stdio -no-reboot \
  -drive "file=$out/installer.img,format=raw,if=virtio" -drive "file=$out/disk.img,format=raw,if=virtio,cache=unsafe" \
  -drive "file=$out/tree.tar,format=raw,if=virtio,readonly=on" \
  -kernel "$out/vmlinuz" -initrd "$out/initrd.img" \
  -append "root=/dev/vda rw console=ttyS0 impermanence.wipe=0 modprobe.blacklist=kvm,kvm_intel,kvm_amd rcupdate.rcu_cpu_stall_suppress=1 nosoftlockup systemd.show_status=false systemd.default_timeout_start_sec=900 systemd.run=/zfs-install systemd.run_success_action=poweroff systemd.run_failure_action=poweroff" \
  < /dev/null > "$out/install.log" 2>&1 || true
grep -q '^ZFS-INSTALL-OK' "$out/install.log" || { echo "zfs-image.sh: the installer VM did not make the pool; $out/install.log ends:" >&2; tail -40 "$out/install.log" >&2; exit 1; }
rm -rf "$tree" "$out/installer.img" "$out/tree.tar"
echo "$out"
