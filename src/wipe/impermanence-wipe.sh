#!/bin/sh
# impermanence-wipe: the wipe at boot, run in the initrd before the root is mounted (dracut and
# mkinitcpio: impermanence-wipe.service; initramfs-tools: scripts/local-premount/impermanence).
# A POSIX shell script over the tools the initrd already carries (btrfs, blkid, mount, date, stat):
# no runtime beyond them, readable by whoever has to trust it with their disk, and each step is
# one btrfs operation that is atomic on its own, so a journal of one file makes it resumable.
#
# Settings: /etc/impermanence/wipe.conf in the initrd, written from the [wipe] table by
# `impermanencectl wipe config` when the initrd is built. Kernel command line:
#   impermanence.wipe=0        boot without wiping (rescue)
#   impermanence.wipe.device=  use this device instead of the one baked in (LABEL=…, UUID=…, /dev/…)
#
# btrfs, with the filesystem's top level mounted on a private folder:
#   1. refuse, without touching anything, when: a hibernation image is waiting (a resume=
#      device or any swap holds a suspend signature: wiping under a hibernated kernel corrupts
#      the filesystem, impermanence #250); the device is missing or not btrfs; the kernel boots
#      another subvolume than the one configured; the pristine is missing; a declared storage
#      root has content inside the root subvolume (the wipe would take it away).
#   2. write OLD_ROOTS/.wipe-in-progress (the journal), then move the root to OLD_ROOTS/<UTC time>
#      (a rename: atomic). A root never written since the last wipe made it is deleted instead.
#   3. snapshot the pristine (or create an empty subvolume) as ROOT.new, rename it to ROOT,
#      sync, remove the journal. At the next boot, a missing root with the journal present means
#      "power cut during a wipe: make the root again"; without the journal it is an error.
#   4. delete old roots older than keep.days or beyond the keep.count newest: nested subvolumes
#      first (deepest first, found by btrfs's own list, so never outside that old root's tree).
# A refusal leaves /run/impermanence/wipe-failed (shown after boot by the failed unit
# impermanence-wipe-check.service) and exits 1; the boot goes on, unwiped.
set -u
export PATH=/usr/sbin:/usr/bin:/sbin:/bin:$PATH
CONF=${IMPERMANENCE_WIPE_CONF:-/etc/impermanence/wipe.conf}
RUN=${IMPERMANENCE_WIPE_RUN:-/run/impermanence}
TOP=$RUN/wipe-top
CMDLINE=${IMPERMANENCE_WIPE_CMDLINE:-/proc/cmdline}
mounted=

say() { printf 'impermanence-wipe: %s\n' "$*" >&2; }
cleanup() {
  if [ -n "$mounted" ]; then umount "$TOP" 2>/dev/null || umount -l "$TOP" 2>/dev/null; mounted=; fi
  rmdir "$TOP" 2>/dev/null
  :
}
status() { mkdir -p "$RUN" && rm -f "$RUN/wipe-failed" "$RUN/wipe-skipped" "$RUN/wipe-done" && printf '%s\n' "$2" > "$RUN/$1"; }
refuse() {
  say "NOT WIPING: $*"
  say "the root was not wiped; the boot goes on with it as it is"
  status wipe-failed "$*"
  cleanup
  exit 1
}
skip() {
  say "not wiping: $*"
  status wipe-skipped "$*"
  cleanup
  exit 0
}
# The value of a kernel command line option, last one wins ("" if absent).
cmdline() {
  v=
  for word in $(cat "$CMDLINE" 2>/dev/null); do
    case $word in "$1="*) v=${word#"$1="} ;; esac
  done
  printf '%s' "$v"
}
is_subvolume() { [ -d "$1" ] && [ ! -L "$1" ] && [ "$(stat -c %i "$1" 2>/dev/null)" = 256 ]; }
# LABEL=, UUID=, PARTLABEL=, PARTUUID= or a path to a device node ("" if not there yet).
device_node() {
  case $1 in
    /dev/*) [ -b "$1" ] && printf '%s' "$1" ;;
    LABEL=* | UUID=* | PARTLABEL=* | PARTUUID=*)
      d=$(blkid -l -o device -t "$1" 2>/dev/null)
      if [ -z "$d" ]; then
        k=${1%%=*}; v=${1#*=}
        case $k in LABEL) p=/dev/disk/by-label/$v ;; UUID) p=/dev/disk/by-uuid/$v ;; PARTLABEL) p=/dev/disk/by-partlabel/$v ;; *) p=/dev/disk/by-partuuid/$v ;; esac
        [ -b "$p" ] && d=$p
      fi
      printf '%s' "$d" ;;
  esac
}
# Prints the device holding a hibernation image, if any.
hibernation_image() {
  for d in $(blkid -o device -t TYPE=swsuspend 2>/dev/null); do printf '%s' "$d"; return 0; done
  r=$(cmdline resume)
  [ -n "$r" ] || return 1
  d=$(device_node "$r")
  [ -n "$d" ] || return 1
  # The swap header's signature is the last 10 bytes of its first page (4096 on x86).
  sig=$(dd if="$d" bs=1 skip=4086 count=10 2>/dev/null | tr -d '\000')
  case $sig in S1SUSPEND | S2SUSPEND | ULSUSPEND | LINHIB0001) printf '%s' "$d"; return 0 ;; esac
  return 1
}
# Epoch seconds of an old root's name (YYYY-MM-DD_HHMMSS[.N]); fails for other names.
name_time() {
  case $1 in [0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]_[0-9][0-9][0-9][0-9][0-9][0-9]*) ;; *) return 1 ;; esac
  date -u -d "$(printf '%s' "$1" | sed 's/^\(..........\)_\(..\)\(..\)\(..\).*/\1 \2:\3:\4/')" +%s 2>/dev/null
}
# Deletes the subvolume at TOP/$1 and every subvolume nested in it, deepest first. The nested
# ones come from btrfs's own list of subvolume paths (from the top level), kept only if they
# start with "$1/": nothing outside that tree is touched, and no symlink is followed.
delete_tree() {
  is_subvolume "$TOP/$1" || { say "$1 is not a subvolume: left alone"; return 1; }
  btrfs subvolume list "$TOP" 2>/dev/null | sed -n 's/^ID [0-9]* gen [0-9]* top level [0-9]* path //p' |
    while IFS= read -r p; do
      case $p in "$1"/*) printf '%s\n' "$p" | awk '{ n = gsub("/", "/"); print n "\t" $0 }' ;; esac
    done | sort -rn | cut -f2- |
    while IFS= read -r p; do
      is_subvolume "$TOP/$p" && btrfs subvolume delete "$TOP/$p" >/dev/null || say "could not delete nested subvolume $p"
    done
  btrfs subvolume delete "$TOP/$1" >/dev/null
}
has_nested() {
  btrfs subvolume list -o "$TOP/$1" 2>/dev/null | grep -q .
}

wipe_btrfs() {
  : "${WIPE_DEVICE:?}" "${WIPE_SUBVOLUME:?}" "${WIPE_FROM:=empty}" "${WIPE_OLD_ROOTS:=old_roots}"
  : "${WIPE_KEEP_DAYS:=30}" "${WIPE_KEEP_COUNT:=0}" "${WIPE_TIMEOUT:=30}" "${WIPE_STORAGES:=}"
  flags=$(cmdline rootflags)
  booted=
  for f in $(printf '%s' "$flags" | tr ',' ' '); do
    case $f in
      subvol=*) booted=${f#subvol=} ;;
      subvolid=*) refuse "rootflags=$flags names the root by subvolume id, which changes at every wipe: use rootflags=subvol=$WIPE_SUBVOLUME" ;;
    esac
  done
  while :; do case $booted in /*) booted=${booted#/} ;; */) booted=${booted%/} ;; *) break ;; esac; done
  [ -n "$booted" ] || refuse "the kernel command line has no rootflags=subvol=$WIPE_SUBVOLUME: the wipe makes a new root subvolume, which only subvol= finds"
  [ "$booted" = "$WIPE_SUBVOLUME" ] || refuse "the kernel boots subvolume $booted (rootflags=subvol=), the wipe is configured for $WIPE_SUBVOLUME"

  i=0
  dev=$(device_node "$WIPE_DEVICE")
  while [ -z "$dev" ] && [ "$i" -lt "$WIPE_TIMEOUT" ]; do
    sleep 1; i=$((i + 1)); dev=$(device_node "$WIPE_DEVICE")
  done
  [ -n "$dev" ] || refuse "device $WIPE_DEVICE not found after ${WIPE_TIMEOUT}s (wrong device in [wipe] device?)"
  fstype=$(blkid -o value -s TYPE "$dev" 2>/dev/null)
  [ "$fstype" = btrfs ] || refuse "device $WIPE_DEVICE ($dev) holds ${fstype:-no known filesystem}, not btrfs (wrong device in [wipe] device?)"

  mkdir -p "$TOP" || refuse "cannot create $TOP"
  mount -t btrfs -o subvolid=5,rw,noatime "$dev" "$TOP" || refuse "cannot mount the top level of $WIPE_DEVICE ($dev)"
  mounted=yes
  root=$TOP/$WIPE_SUBVOLUME
  old=$TOP/$WIPE_OLD_ROOTS
  journal=$old/.wipe-in-progress
  if [ "$WIPE_FROM" != empty ] && ! is_subvolume "$TOP/$WIPE_FROM"; then
    refuse "the pristine subvolume $WIPE_FROM is missing on $WIPE_DEVICE (make it with impermanencectl wipe init, or set from = \"empty\")"
  fi
  if [ -e "$old" ] && [ ! -d "$old" ]; then refuse "$WIPE_OLD_ROOTS on $WIPE_DEVICE is not a folder"; fi
  mkdir -p "$old" || refuse "cannot create $WIPE_OLD_ROOTS on $WIPE_DEVICE"

  if [ -e "$root" ] || [ -L "$root" ]; then
    is_subvolume "$root" || refuse "$WIPE_SUBVOLUME on $WIPE_DEVICE is not a subvolume"
    # Storage on the root itself would be wiped with it.
    old_ifs=$IFS; IFS='
'
    for s in $WIPE_STORAGES; do
      [ -n "$s" ] || continue
      if is_subvolume "$root$s"; then refuse "storage root $s is a subvolume inside the root subvolume $WIPE_SUBVOLUME: it would be wiped (keep storage in its own subvolume beside the root)"; fi
      if [ -d "$root$s" ] && [ -n "$(ls -A "$root$s" 2>/dev/null)" ]; then
        refuse "storage root $s has content inside the root subvolume $WIPE_SUBVOLUME: it would be wiped (mount the storage's own filesystem or subvolume on $s, and move that content there)"
      fi
    done
    IFS=$old_ifs
    name=$(date -u +%Y-%m-%d_%H%M%S)
    n=0; base=$name
    while [ -e "$old/$name" ]; do n=$((n + 1)); name=$base.$n; done
    printf '%s\n' "$name" > "$journal.tmp" && sync && mv "$journal.tmp" "$journal" && sync || refuse "cannot write $WIPE_OLD_ROOTS/.wipe-in-progress"
    gen=$(btrfs subvolume show "$root" 2>/dev/null | sed -n 's/^[[:space:]]*Generation:[[:space:]]*//p')
    ogen=$(btrfs subvolume show "$root" 2>/dev/null | sed -n 's/^[[:space:]]*Gen at creation:[[:space:]]*//p')
    say "WIPE-STEP-MOVE $WIPE_SUBVOLUME -> $WIPE_OLD_ROOTS/$name"
    if [ -n "$gen" ] && [ "$gen" = "$ogen" ] && ! has_nested "$WIPE_SUBVOLUME"; then
      # Made by the last wipe and never written since (that boot stopped before the root was used).
      btrfs subvolume delete "$root" >/dev/null || refuse "cannot delete the unused root $WIPE_SUBVOLUME"
      say "the root was never written since the last wipe: deleted, not kept"
    else
      mv "$root" "$old/$name" || refuse "cannot move $WIPE_SUBVOLUME to $WIPE_OLD_ROOTS/$name"
    fi
  elif [ -e "$journal" ]; then
    say "the root subvolume is missing and a wipe was in progress ($(cat "$journal" 2>/dev/null)): making it again"
  else
    refuse "the root subvolume $WIPE_SUBVOLUME is missing on $WIPE_DEVICE"
  fi

  if [ -e "$root.new" ]; then delete_tree "$WIPE_SUBVOLUME.new" || refuse "cannot delete the leftover $WIPE_SUBVOLUME.new"; fi
  say "WIPE-STEP-CREATE $WIPE_SUBVOLUME from $WIPE_FROM"
  if [ "$WIPE_FROM" = empty ]; then
    btrfs subvolume create "$root.new" >/dev/null || refuse "cannot create $WIPE_SUBVOLUME.new"
  else
    btrfs subvolume snapshot "$TOP/$WIPE_FROM" "$root.new" >/dev/null || refuse "cannot snapshot $WIPE_FROM as $WIPE_SUBVOLUME.new"
  fi
  btrfs filesystem sync "$TOP" >/dev/null 2>&1
  mv "$root.new" "$root" || refuse "cannot rename $WIPE_SUBVOLUME.new to $WIPE_SUBVOLUME"
  btrfs filesystem sync "$TOP" >/dev/null 2>&1; sync
  rm -f "$journal"; sync
  say "WIPE-STEP-DONE fresh $WIPE_SUBVOLUME from $WIPE_FROM"

  # Retention: newest first; names sort by time.
  now=$(date -u +%s)
  i=0 kept=0
  for name in $(ls -1 "$old" | sort -r); do
    t=$(name_time "$name") || continue
    is_subvolume "$old/$name" || continue
    i=$((i + 1))
    why=
    if [ "$WIPE_KEEP_COUNT" -gt 0 ] && [ "$i" -gt "$WIPE_KEEP_COUNT" ]; then why="beyond the $WIPE_KEEP_COUNT newest"; fi
    if [ "$WIPE_KEEP_DAYS" -gt 0 ] && [ $((now - t)) -gt $((WIPE_KEEP_DAYS * 86400)) ]; then why="older than $WIPE_KEEP_DAYS days"; fi
    if [ -z "$why" ]; then kept=$((kept + 1)); continue; fi
    say "WIPE-STEP-EXPIRE $WIPE_OLD_ROOTS/$name ($why)"
    delete_tree "$WIPE_OLD_ROOTS/$name" || say "could not delete $WIPE_OLD_ROOTS/$name"
  done
  status wipe-done "fresh $WIPE_SUBVOLUME from $WIPE_FROM on $WIPE_DEVICE; $kept old roots kept in $WIPE_OLD_ROOTS"
  cleanup
}

wipe_zfs() {
  : "${WIPE_DATASET:?}" "${WIPE_SNAPSHOT:?}"
  command -v zfs >/dev/null 2>&1 || refuse "no zfs command in the initrd (install zfs-dracut, or zfs-initramfs, and rebuild the initrd)"
  zfs list -H -o name "$WIPE_DATASET" >/dev/null 2>&1 || refuse "dataset $WIPE_DATASET not found (pool ${WIPE_DATASET%%/*} not imported, or wrong dataset in [wipe] dataset?)"
  zfs list -H -o name "$WIPE_DATASET@$WIPE_SNAPSHOT" >/dev/null 2>&1 || refuse "snapshot $WIPE_DATASET@$WIPE_SNAPSHOT not found (make it with zfs snapshot $WIPE_DATASET@$WIPE_SNAPSHOT, or name another in [wipe] snapshot)"
  # Storage on the dataset itself would be rolled back with it: look, read-only, before.
  if [ -n "$WIPE_STORAGES" ]; then
    mkdir -p "$TOP" || refuse "cannot create $TOP"
    mount -t zfs -o ro,zfsutil "$WIPE_DATASET" "$TOP" || refuse "cannot mount $WIPE_DATASET read-only to check the storage roots"
    mounted=yes
    old_ifs=$IFS; IFS='
'
    for s in $WIPE_STORAGES; do
      if [ -n "$s" ] && [ -d "$TOP$s" ] && [ -n "$(ls -A "$TOP$s" 2>/dev/null)" ]; then
        refuse "storage root $s has content inside the dataset $WIPE_DATASET: it would be rolled back (keep the storage in its own dataset mounted on $s, and move that content there)"
      fi
    done
    IFS=$old_ifs
    cleanup
  fi
  say "WIPE-STEP-ROLLBACK $WIPE_DATASET to @$WIPE_SNAPSHOT"
  zfs rollback -r "$WIPE_DATASET@$WIPE_SNAPSHOT" || refuse "zfs rollback -r $WIPE_DATASET@$WIPE_SNAPSHOT failed"
  say "WIPE-STEP-DONE rolled $WIPE_DATASET back to @$WIPE_SNAPSHOT"
  status wipe-done "rolled $WIPE_DATASET back to @$WIPE_SNAPSHOT"
}

case $(cmdline impermanence.wipe) in 0 | no | off | false) skip "impermanence.wipe=$(cmdline impermanence.wipe) on the kernel command line" ;; esac
[ -r "$CONF" ] || refuse "$CONF is not in the initrd (rebuild the initrd after declaring [wipe])"
. "$CONF"
override=$(cmdline impermanence.wipe.device)
[ -z "$override" ] || WIPE_DEVICE=$override
if image=$(hibernation_image); then
  skip "a hibernation image is on $image: resuming from it, or booting past it, must find the filesystem as it was left (boot with noresume and wipe at the next boot, or mkswap it)"
fi
say "WIPE-STEP-START method ${WIPE_METHOD:-?}"
case ${WIPE_METHOD:-} in
  btrfs) wipe_btrfs ;;
  zfs) wipe_zfs ;;
  tmpfs) skip "method tmpfs: the root is a tmpfs, nothing to wipe" ;;
  *) refuse "unknown method ${WIPE_METHOD:-(none)} in $CONF" ;;
esac
exit 0
