#!/bin/sh
# impermanence-tmpfs-root: [wipe] method = "tmpfs", in a systemd initrd (dracut:
# impermanence-tmpfs-root.service), once the disk's root is mounted on ROOT (/sysroot) and before
# the initrd looks into it. The root becomes a fresh tmpfs (size and mode from [wipe]) holding:
#   /usr   the disk's /usr, bind-mounted read-only (the programs, as systemd.volatile=yes does);
#   /etc   a copy of the disk's /etc (Debian, Arch and Fedora keep fstab, PAM, the enabled units,
#          the machine ID there: an empty /etc, as systemd.volatile=yes leaves it, does not boot
#          them to a login), thrown away at the next boot like everything else;
#   the disk's other top-level names as empty folders (same owner and mode: mount points such as
#   /persist, /home, /var, /tmp) and its top-level symlinks (/bin -> usr/bin on a merged /usr).
# Whatever a boot writes is gone at the next; what is kept comes from the storage, which must be
# mounted by the initrd (x-initrd.mount in the disk's /etc/fstab) so that the generator finds the
# config and the users on it (README "Wiping the root", tmpfs).
# Nothing on the disk is written. A refusal leaves /run/impermanence/wipe-failed (the failed unit
# impermanence-wipe-check.service shows it after boot), exits 1, and the boot goes on with the
# disk's root as it is. Kernel command line: impermanence.wipe=0 boots the disk's root (rescue).
#   impermanence-tmpfs-root [ROOT]
set -u
export PATH="/usr/sbin:/usr/bin:/sbin:/bin:$PATH"
CONF=${IMPERMANENCE_WIPE_CONF:-/etc/impermanence/wipe.conf}
ROOT=${1:-/sysroot}
PROG=impermanence-tmpfs-root
# say, status, cmdline; RUN, NL, CMDLINE_TEXT, CMDLINE_PARAMS.
case $0 in */*) LIB=${0%/*}/impermanence-lib.sh ;; *) LIB=./impermanence-lib.sh ;; esac
[ -r "$LIB" ] || { printf '%s: NOT A TMPFS ROOT: %s is missing (rebuild the initrd)\n' "$PROG" "$LIB" >&2; exit 1; }
# shellcheck source=src/wipe/impermanence-lib.sh
. "$LIB"
STAGE=$RUN/tmpfs-root
staged=

refuse() {
  say "NOT A TMPFS ROOT: $*"
  say "the boot goes on with the disk's root as it is"
  if [ -n "$staged" ]; then umount -R -l "$STAGE" 2>/dev/null; fi
  rmdir "$STAGE/root" "$STAGE/disk" "$STAGE" 2>/dev/null
  status wipe-failed "$*"
  exit 1
}
# Makes $2 a folder with the owner and mode of $1.
same_folder() {
  mkdir -p "$2" && chown "$(stat -c %u:%g "$1")" "$2" && chmod "$(stat -c %a "$1")" "$2"
}

[ -r "$CONF" ] || refuse "$CONF is not in the initrd (rebuild the initrd after declaring [wipe])"
# shellcheck source=/dev/null
. "$CONF"
[ "${WIPE_METHOD:-}" = tmpfs ] || exit 0
cmdline impermanence.wipe
case $v in
  0 | no | off | false)
    say "not making a tmpfs root: impermanence.wipe=$v on the kernel command line"
    status wipe-skipped "impermanence.wipe=$v on the kernel command line: booted the disk's root"
    exit 0 ;;
esac
: "${WIPE_SIZE:=25%}" "${WIPE_MODE:=0755}"
say "WIPE-STEP-START method tmpfs (size $WIPE_SIZE, mode $WIPE_MODE)"
if [ ! -d "$ROOT/usr" ] || [ -L "$ROOT/usr" ]; then refuse "the disk's root on $ROOT has no /usr folder: a tmpfs root takes /usr from it"; fi
if [ ! -d "$ROOT/etc" ] || [ -L "$ROOT/etc" ]; then refuse "the disk's root on $ROOT has no /etc folder: a tmpfs root starts from a copy of it"; fi
# The staging folder is a private mount: the kernel moves no mount whose parent is shared, and
# systemd makes every mount shared. It holds the new root and, to go back to, the disk's root.
NEW=$STAGE/root DISK=$STAGE/disk
mkdir -p "$STAGE" || refuse "cannot create $STAGE"
mount --bind "$STAGE" "$STAGE" || refuse "cannot bind-mount $STAGE"
staged=yes
mount --make-private "$STAGE" || refuse "cannot make $STAGE a private mount"
mkdir -p "$NEW" "$DISK" || refuse "cannot create $NEW"
mount -o rbind "$ROOT" "$DISK" || refuse "cannot bind-mount the disk's root"
mount -t tmpfs -o "mode=$WIPE_MODE,size=$WIPE_SIZE" impermanence-root "$NEW" || refuse "cannot mount a tmpfs (size=$WIPE_SIZE, mode=$WIPE_MODE)"
for entry in "$DISK"/*; do
  name=${entry##*/}
  case $name in usr | etc | '*') continue ;; esac
  if [ -L "$entry" ]; then
    cp -P -p "$entry" "$NEW/$name" || refuse "cannot copy the symlink /$name"
  elif [ -d "$entry" ]; then
    same_folder "$entry" "$NEW/$name" || refuse "cannot create /$name"
  fi
done
{ same_folder "$DISK/etc" "$NEW/etc" && cp -a "$DISK/etc/." "$NEW/etc/"; } || refuse "cannot copy /etc into the tmpfs (is size = \"$WIPE_SIZE\" too small?)"
same_folder "$DISK/usr" "$NEW/usr" || refuse "cannot create /usr"
mount -o rbind "$DISK/usr" "$NEW/usr" || refuse "cannot bind-mount the disk's /usr"
mount -o remount,bind,ro "$NEW/usr" || refuse "cannot make /usr read-only"
# The disk's root leaves $ROOT (its /usr stays mounted through the bind), the tmpfs takes its
# place; if that move fails, the disk's root goes back.
umount "$ROOT" 2>/dev/null || umount -l "$ROOT" || refuse "cannot unmount the disk's root from $ROOT"
if ! mount -o move "$NEW" "$ROOT"; then
  mount -o move "$DISK" "$ROOT" || say "cannot put the disk's root back on $ROOT either"
  refuse "cannot move the tmpfs onto $ROOT"
fi
umount -R -l "$STAGE"
rmdir "$NEW" "$DISK" "$STAGE" 2>/dev/null
say "WIPE-STEP-DONE tmpfs root (size $WIPE_SIZE, mode $WIPE_MODE), /usr read-only from the disk, /etc copied from it"
status wipe-done "tmpfs root (size $WIPE_SIZE, mode $WIPE_MODE): /usr read-only from the disk, /etc copied from it"
exit 0
