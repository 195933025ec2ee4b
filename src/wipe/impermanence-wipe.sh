#!/bin/sh
# impermanence-wipe: the wipe at boot, run in the initrd before the root is mounted (dracut and
# mkinitcpio: impermanence-wipe.service; initramfs-tools: scripts/local-premount/impermanence).
# A POSIX shell script over btrfs and common tools (blkid, mount, date, stat, awk, sort, dd, mv,
# rm…: the list each initrd hook installs, packaging/*): no runtime beyond them, readable by
# whoever has to trust it with their disk, and each step is one btrfs operation that is atomic on
# its own, so a journal of one file makes it resumable.
#
# Settings: /etc/impermanence/wipe.conf in the initrd, written from the [wipe] table by
# `impermanencectl wipe config` when the initrd is built. Kernel command line:
#   impermanence.wipe=0        boot without wiping (rescue)
#   impermanence.wipe.device=  use this device instead of the one baked in (LABEL=…, UUID=…, /dev/…)
#
# btrfs, with the filesystem's top level mounted on a private folder:
#   1. refuse, without touching anything, when: a hibernation image is waiting (any swap, or the
#      resume= device at resume_offset=, holds a suspend signature: wiping under a hibernated
#      kernel corrupts the filesystem, impermanence #250); there is no btrfs command; the device
#      is missing or not btrfs; the kernel boots another subvolume than the one configured; the
#      pristine is missing; a declared storage root has content inside the root subvolume (the
#      wipe would take it away).
#   2. delete a leftover ROOT.new (a wipe cut short), then snapshot the pristine (or create an
#      empty subvolume) as ROOT.new, while the root is still in place: a refusal up to here
#      leaves the root as it was, and the boot goes on with it.
#   3. write OLD_ROOTS/.wipe-in-progress (the journal), move the root to OLD_ROOTS/<UTC time>,
#      rename ROOT.new to ROOT (renames: atomic), record the fresh root's UUID in
#      OLD_ROOTS/.fresh-root, remove the journal. If that rename fails, the root is moved back;
#      only if that fails too is there no root, and the refusal says so and how to put it back
#      from a rescue shell. At the next boot, a missing root with the journal present means
#      "power cut during a wipe: make the root again"; without the journal it is an error. A root
#      never written since the last wipe made it (its UUID is the one recorded, its generation
#      still its creation generation) is deleted, once the fresh root is in place, instead of kept.
#   4. delete old roots older than keep.days (by their names) or beyond the keep.count newest (by
#      btrfs's creation generation, not by name: the initrd's clock may be wrong), never the one
#      just moved, and none by age when one is named later than now: nested subvolumes first
#      (deepest first, found by btrfs's own list, so never outside that old root's tree).
#      Deleting only unlinks them (no --commit-after): btrfs's cleaner frees their blocks later,
#      in the background, and resumes after a power cut.
#
# ZFS (the pool imported by zfs-dracut): refuse, without touching anything, when there is no zfs
# command, the kernel boots another dataset than the one configured (root=, read as zfs-dracut
# reads it; for root=zfs:AUTO or none, the pools' bootfs property), the dataset or its snapshot is
# missing, or a declared storage root has content on the dataset (mounted read-only to look); then
# zfs rollback -r DATASET@SNAPSHOT. Nothing of the previous root is kept.
#
# A power cut, and why there is no sync: every step is a metadata operation (create a file,
# rename, create or snapshot a subvolume, unlink, delete a subvolume) and nothing here fsyncs, so
# none goes to btrfs's log tree; they all join the running transaction, and btrfs commits
# transactions whole and in order. After a power cut the filesystem is as of the last committed
# transaction: the steps above up to some point, in order, never a later one without an earlier
# one. The script resumes from each such point: nothing done, or a leftover ROOT.new deleted (the
# next boot wipes); a fresh ROOT.new, with or without the journal (the root is there: the leftover
# is deleted and made again, the journal written again); the root moved (the journal says make it
# again: ROOT.new is deleted and made again); the fresh root renamed with the journal still there
# (the root is there and unused: moved, then deleted as such if its UUID was recorded too, else
# kept as an old root, which only takes a place in keep.count); the unused old root deleted or the
# journal removed (a wipe done); some old roots expired (the rest expire at the next boot). The
# same holds when the root is moved back after a failed rename: the root is there again. A kept
# old root is only ever renamed into OLD_ROOTS or deleted by the retention rules, so no point loses
# one. What the booted system writes afterwards joins later transactions, so it is never on disk
# without the wipe before it. Two commits happen anyway: a snapshot is made by a transaction commit
# (the ioctl waits for it), and unmounting the top level, the only mount of the filesystem in the
# initrd, commits before the root is mounted (if that unmount fails, a btrfs filesystem sync
# commits before the fallback umount -l). A sync between the steps would add a commit (a disk
# flush) each and make nothing safer; the journal's content (the old root's name) may be lost in a
# cut, its presence is what counts.
# A refusal leaves /run/impermanence/wipe-failed (shown after boot by the failed unit
# impermanence-wipe-check.service) and exits 1; the boot goes on, unwiped. Only when the root was
# moved and can be neither replaced nor moved back is there no root to boot: the refusal says
# "THERE IS NO ROOT" and the commands that put it back.
# Speed: the wipe is on every boot's path, and starting a process costs milliseconds in an initrd
# (more under emulation), so shell builtins do what they can: helpers set a variable rather than
# print into $(…) (a subshell is a process), the kernel command line is read once, one `date`
# gives the new old root's name and the retention's cutoff, one `btrfs subvolume show` each tells
# the root's and the fresh root's UUID and generations, old roots' ages are compared as numbers,
# one `btrfs subvolume list` (with awk and sort) ranks every old root, and a nested subvolume is
# looked for only when deleting an old root fails because it has one.
set -u
export PATH="/usr/sbin:/usr/bin:/sbin:/bin:$PATH" LC_ALL=C
CONF=${IMPERMANENCE_WIPE_CONF:-/etc/impermanence/wipe.conf}
# udev's database: the disks it has probed (IMPERMANENCE_WIPE_UDEV for the tests).
UDEV=${IMPERMANENCE_WIPE_UDEV:-/run/udev/data}
# When the script started, from /proc/uptime (a builtin read): the last line says how long it took.
up=; { read -r up _ < /proc/uptime; } 2>/dev/null; STARTED=$up
PROG=impermanence-wipe
# say, status, cmdline; RUN, NL, CMDLINE_TEXT, CMDLINE_PARAMS.
case $0 in */*) LIB=${0%/*}/impermanence-lib.sh ;; *) LIB=./impermanence-lib.sh ;; esac
[ -r "$LIB" ] || { printf '%s: NOT WIPING: %s is missing (rebuild the initrd)\n' "$PROG" "$LIB" >&2; exit 1; }
# shellcheck source=src/wipe/impermanence-lib.sh
. "$LIB"
TOP=$RUN/wipe-top
mounted=
probed=

cleanup() {
  # Unmounting commits. A lazy unmount of a busy top level may not: commit first, or the booted
  # system's first writes could join the transaction that created a fresh empty root, which
  # would then look never written (and be deleted as unused at the next wipe).
  if [ -n "$mounted" ]; then
    umount "$TOP" 2>/dev/null || {
      [ "${WIPE_METHOD:-}" != btrfs ] || btrfs filesystem sync "$TOP" >/dev/null 2>&1
      umount -l "$TOP" 2>/dev/null
    }
    mounted=
  fi
  rmdir "$TOP" 2>/dev/null
  :
}
# rescue: set (by put_back) once the root is not in place: there is none to boot, and what to do.
rescue=
refuse() {
  say "NOT WIPING: $*"
  if [ -z "$rescue" ]; then
    say "the root was not wiped; the boot goes on with it as it is"
    status wipe-failed "$*"
  else
    say "THERE IS NO ROOT to boot on ${dev:-$WIPE_DEVICE}: $rescue"
    status wipe-failed "$*; THERE IS NO ROOT to boot: $rescue"
  fi
  cleanup
  exit 1
}
# put_back OLD_ROOT OR: sets rescue, for a root that is not in place: mounting it will fail; from
# a rescue shell, the commands that make OLD_ROOTS/OLD_ROOT the root again; OR another way.
put_back() {
  rescue="mounting $WIPE_SUBVOLUME will fail. Put the old root back from a rescue shell: mkdir -p /mnt && mount -t btrfs -o subvolid=5 $dev /mnt && mv /mnt/$WIPE_OLD_ROOTS/$1 /mnt/$WIPE_SUBVOLUME && umount /mnt; $2"
}
skip() {
  say "not wiping: $*"
  status wipe-skipped "$*"
  cleanup
  exit 0
}
is_subvolume() { [ -d "$1" ] && [ ! -L "$1" ] && [ "$(stat -c %i "$1" 2>/dev/null)" = 256 ]; }
# One stat for several paths: probe PATH… sets probed; probed_subvolume PATH then tells whether
# PATH was a subvolume (inode 256: a subvolume's root; stat does not follow a symlink).
probe() { probed=$NL$(stat -c '%i %n' "$@" 2>/dev/null)$NL; }
probed_subvolume() { [ -d "$1" ] && [ ! -L "$1" ] && case $probed in *"${NL}256 $1$NL"*) true ;; *) false ;; esac; }
# Whether folder $1 has anything in it (globs: no process).
has_content() {
  for e in "$1"/* "$1"/.[!.]* "$1"/..?*; do [ -e "$e" ] || [ -L "$e" ] && return 0; done
  return 1
}
# check_storages TOP WHERE WIPED KIND: refuses if a declared storage root (WIPE_STORAGES, one a
# line, taken as written: no globbing) is, under TOP (the root's top), a subvolume (probed) or a
# folder with anything in it: the wipe would take it away. WHERE names the root, WIPED what the
# wipe does, KIND where the storage belongs, in the message.
check_storages() {
  top=$1 where=$2 wiped=$3 kind=$4
  old_ifs=$IFS; IFS=$NL; set -f
  # shellcheck disable=SC2086
  set -- $WIPE_STORAGES
  IFS=$old_ifs; set +f
  for s in "$@"; do
    [ -n "$s" ] || continue
    if probed_subvolume "$top$s"; then refuse "storage root $s is a subvolume inside $where: it would be $wiped (keep storage in its own $kind beside the root)"; fi
    if [ -d "$top$s" ] && has_content "$top$s"; then
      refuse "storage root $s has content inside $where: it would be $wiped (mount the storage's own $kind on $s, and move that content there)"
    fi
  done
}
# Sets dev to the node of LABEL=, UUID=, PARTLABEL=, PARTUUID= or a path to a device node (""
# if not there yet): udev's /dev/disk/by-* link first (no process to start), blkid without one.
device_node() {
  dev=
  case $1 in
    /dev/*) [ -b "$1" ] && dev=$1 ;;
    LABEL=* | UUID=* | PARTLABEL=* | PARTUUID=*)
      k=${1%%=*}; v=${1#*=}
      case $k in LABEL) p=/dev/disk/by-label/$v ;; UUID) p=/dev/disk/by-uuid/$v ;; PARTLABEL) p=/dev/disk/by-partlabel/$v ;; *) p=/dev/disk/by-partuuid/$v ;; esac
      if [ -b "$p" ]; then dev=$p; else dev=$(blkid -l -o device -t "$1" 2>/dev/null); fi ;;
  esac
  :
}
# Sets image to the device holding a hibernation image, if any (fails if none). Every disk: what
# udev's probe noted when the disk appeared (ID_FS_TYPE in its database, read without starting a
# process; blkid probing every disk took seconds in an initrd under emulation), and blkid's own
# probe of the disks udev has not probed yet (still in its queue when the wipe starts after
# initrd-root-device.target), or of every disk where there is no udev. Then the resume= device itself.
hibernation_image() {
  image=
  if [ -d "$UDEV" ]; then
    unprobed=
    for d in /sys/class/block/*; do
      mm=; size=0
      { read -r mm < "$d/dev"; read -r size < "$d/size"; } 2>/dev/null
      # Empty ones (a loop device with no file, a drive with no medium) hold nothing.
      if [ -z "$mm" ] || [ "$size" = 0 ]; then continue; fi
      f=$UDEV/b$mm
      if [ ! -f "$f" ]; then
        # Its node in /dev, from the kernel's uevent.
        n=${d##*/}
        while IFS= read -r l; do case $l in DEVNAME=*) n=${l#DEVNAME=} ;; esac; done < "$d/uevent"
        unprobed="$unprobed/dev/$n$NL"
        continue
      fi
      while IFS= read -r l; do
        case $l in E:ID_FS_TYPE=swsuspend) image=$f; break ;; esac
      done < "$f"
      [ -z "$image" ] || break
    done
    if [ -n "$image" ]; then
      # b<major>:<minor> -> its name, from the kernel's uevent.
      mm=${image#"$UDEV"/b}; image=/dev/block/$mm
      while IFS= read -r l; do case $l in DEVNAME=*) image=/dev/${l#DEVNAME=} ;; esac; done < "/sys/dev/block/$mm/uevent"
    elif [ -n "$unprobed" ]; then
      old_ifs=$IFS; IFS=$NL; set -f
      # One blkid for them all; -c /dev/null: a probe of each, no cache. A disk it cannot read is
      # passed over.
      # shellcheck disable=SC2086
      image=$(blkid -c /dev/null -o device -t TYPE=swsuspend $unprobed 2>/dev/null)
      IFS=$old_ifs; set +f
      image=${image%%"$NL"*}
    fi
  else
    image=$(blkid -o device -t TYPE=swsuspend 2>/dev/null)
    image=${image%%"$NL"*}
  fi
  [ -z "$image" ] || return 0
  cmdline resume
  [ -n "$v" ] || return 1
  device_node "$v"
  [ -n "$dev" ] || return 1
  # The swap header's signature is the last 10 bytes of its first page, which is resume_offset=
  # pages into the device: a swap file's first page in its filesystem (0, or none, for a swap
  # partition). The kernel takes the number as sscanf %llu does: leading digits, else 0.
  cmdline resume_offset
  off=${v%%[!0-9]*}
  while :; do case $off in 0?*) off=${off#0} ;; *) break ;; esac; done
  # A page is 4096 bytes on x86 and most kernels, 65536 on some arm64 and ppc64le ones: both are
  # read, unless the first finds a swap area's own signature (then that is the page size, and no
  # image is written over it).
  for page in 4096 65536; do
    sig=$(dd if="$dev" bs=1 skip=$((${off:-0} * page + page - 10)) count=10 2>/dev/null | tr -d '\000')
    case $sig in
      S1SUSPEND | S2SUSPEND | ULSUSPEND | LINHIB0001) image=$dev; return 0 ;;
      SWAPSPACE2 | SWAP-SPACE) return 1 ;;
    esac
  done
  return 1
}
# Sets num to an old root's name (YYYY-MM-DD_HHMMSS[.N]) as the number YYYYMMDDHHMMSS; fails for
# other names.
name_number() {
  num=
  case $1 in [0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]_[0-9][0-9][0-9][0-9][0-9][0-9]*) ;; *) return 1 ;; esac
  # The time is the 6 digits after "_" (what follows them, such as ".1", is not part of it).
  t=${1#???????????}; r=${t#??????}; t=${t%"$r"}
  d=${1%%_*}; num=${d%%-*}; d=${d#*-}; num=$num${d%%-*}${d#*-}$t
}
# Deletes the subvolume at TOP/$1 and every subvolume nested in it, deepest first. The nested
# ones come from btrfs's own list of subvolume paths (from the top level), kept only if they
# start with "$1/": nothing outside that tree is touched, and no symlink is followed.
delete_tree() {
  is_subvolume "$TOP/$1" || { say "$1 is not a subvolume: left alone"; return 1; }
  btrfs subvolume list "$TOP" 2>/dev/null |
    awk -v pre="$1/" '{ sub(/^ID [0-9]+ gen [0-9]+ top level [0-9]+ path /, "") } index($0, pre) == 1 { print gsub("/", "/") "\t" $0 }' |
    sort -rn | cut -f2- |
    while IFS= read -r p; do
      if ! is_subvolume "$TOP/$p" || ! btrfs subvolume delete "$TOP/$p" >/dev/null; then say "could not delete nested subvolume $p"; fi
    done
  btrfs subvolume delete "$TOP/$1" >/dev/null
}
# show SUBVOLUME: sets uuid, gen and ogen (its UUID, its generation, the generation it was created
# in; "" if unknown) from one btrfs subvolume show.
show() {
  uuid='' gen='' ogen=''
  while IFS= read -r l; do
    case $l in
      *"Gen at creation:"*) ogen=${l##*[!0-9]} ;;
      *Generation:*) gen=${l##*[!0-9]} ;;
      *"Parent UUID:"* | *"Received UUID:"*) ;;
      *UUID:*) uuid=${l##*[[:space:]]} ;;
    esac
  done <<SHOW
$(btrfs subvolume show "$1" 2>/dev/null)
SHOW
  # "-": no UUID (a subvolume made by a kernel older than UUIDs), which identifies nothing.
  case $uuid in *-*-*-*-*) ;; *) uuid='' ;; esac
}
has_nested() {
  btrfs subvolume list -o "$TOP/$1" 2>/dev/null | grep -q .
}

wipe_btrfs() {
  : "${WIPE_DEVICE:?}" "${WIPE_SUBVOLUME:?}" "${WIPE_FROM:=empty}" "${WIPE_OLD_ROOTS:=old_roots}"
  : "${WIPE_KEEP_DAYS:=30}" "${WIPE_KEEP_COUNT:=0}" "${WIPE_TIMEOUT:=30}" "${WIPE_STORAGES:=}"
  # Without it the wipe could move the root and not make another: refuse before touching anything.
  command -v btrfs >/dev/null 2>&1 || refuse "no btrfs command in the initrd (install btrfs-progs and rebuild the initrd)"
  cmdline rootflags; flags=$v
  booted=
  old_ifs=$IFS; IFS=,; set -f
  for f in $flags; do
    case $f in
      subvol=*) booted=${f#subvol=} ;;
      subvolid=*) IFS=$old_ifs; refuse "rootflags=$flags names the root by subvolume id, which changes at every wipe: use rootflags=subvol=$WIPE_SUBVOLUME" ;;
    esac
  done
  IFS=$old_ifs; set +f
  while :; do case $booted in /*) booted=${booted#/} ;; */) booted=${booted%/} ;; *) break ;; esac; done
  [ -n "$booted" ] || refuse "the kernel command line has no rootflags=subvol=$WIPE_SUBVOLUME: the wipe makes a new root subvolume, which only subvol= finds"
  [ "$booted" = "$WIPE_SUBVOLUME" ] || refuse "the kernel boots subvolume $booted (rootflags=subvol=), the wipe is configured for $WIPE_SUBVOLUME"

  i=0
  device_node "$WIPE_DEVICE"
  while [ -z "$dev" ] && [ "$i" -lt "$WIPE_TIMEOUT" ]; do
    sleep 1; i=$((i + 1)); device_node "$WIPE_DEVICE"
  done
  [ -n "$dev" ] || refuse "device $WIPE_DEVICE not found after ${WIPE_TIMEOUT}s (wrong device in [wipe] device?)"

  [ -d "$TOP" ] || mkdir -p "$TOP" || refuse "cannot create $TOP"
  # -t btrfs: anything else fails to mount, and only then is blkid asked what it holds.
  if ! mount -t btrfs -o subvolid=5,rw,noatime "$dev" "$TOP" 2>/dev/null; then
    fstype=$(blkid -o value -s TYPE "$dev" 2>/dev/null)
    [ "$fstype" = btrfs ] || refuse "device $WIPE_DEVICE ($dev) holds ${fstype:-no known filesystem}, not btrfs (wrong device in [wipe] device?)"
    refuse "cannot mount the top level of $WIPE_DEVICE ($dev)"
  fi
  mounted=yes
  root=$TOP/$WIPE_SUBVOLUME
  old=$TOP/$WIPE_OLD_ROOTS
  journal=$old/.wipe-in-progress
  fresh=$old/.fresh-root
  # The pristine, the root and the storage roots inside it, in one stat.
  set -- "$TOP/$WIPE_FROM" "$root"
  old_ifs=$IFS; IFS=$NL; set -f
  for s in $WIPE_STORAGES; do [ -z "$s" ] || set -- "$@" "$root$s"; done
  IFS=$old_ifs; set +f
  probe "$@"
  if [ "$WIPE_FROM" != empty ] && ! probed_subvolume "$TOP/$WIPE_FROM"; then
    refuse "the pristine subvolume $WIPE_FROM is missing on $WIPE_DEVICE (make it with impermanencectl wipe init, or set from = \"empty\")"
  fi
  if [ -e "$old" ] && [ ! -d "$old" ]; then refuse "$WIPE_OLD_ROOTS on $WIPE_DEVICE is not a folder"; fi
  [ -d "$old" ] || mkdir -p "$old" || refuse "cannot create $WIPE_OLD_ROOTS on $WIPE_DEVICE"

  # One date for the new old root's name and the retention's cutoff (GNU date -f: one time a line).
  cutoff=0
  # shellcheck disable=SC2046
  set -- $(date -u -f - +'%Y-%m-%d_%H%M%S %Y%m%d%H%M%S' 2>/dev/null <<DATES
now
$WIPE_KEEP_DAYS days ago
DATES
)
  if [ $# = 4 ]; then
    name=$1; [ "$WIPE_KEEP_DAYS" -le 0 ] || cutoff=$4
  else
    # A date without -f (busybox): two.
    name=$(date -u +%Y-%m-%d_%H%M%S)
    [ "$WIPE_KEEP_DAYS" -le 0 ] || cutoff=$(date -u -d "@$(($(date -u +%s) - WIPE_KEEP_DAYS * 86400))" +%Y%m%d%H%M%S) || refuse "date cannot compute $WIPE_KEEP_DAYS days ago"
  fi
  # now, as a number, for the retention; without it the old root would have no name.
  name_number "$name" || refuse "date gave no time (${name:-nothing}): no name for the old root (is date in the initrd? rebuild it)"
  now=$num
  # present: the root is in place (moved back if the wipe cannot finish). unused: it was never
  # written since the last wipe made it.
  present='' unused=''
  if [ -e "$root" ] || [ -L "$root" ]; then
    probed_subvolume "$root" || refuse "$WIPE_SUBVOLUME on $WIPE_DEVICE is not a subvolume"
    # Storage on the root itself would be wiped with it.
    check_storages "$root" "the root subvolume $WIPE_SUBVOLUME" wiped "filesystem or subvolume"
    present=yes
    n=0; base=$name
    while [ -e "$old/$name" ] || [ -L "$old/$name" ]; do n=$((n + 1)); name=$base.$n; done
    # Unused: the fresh root the last wipe made (its UUID, recorded then) and never written since
    # (still at its creation generation). The generations alone are not enough: a subvolume
    # created and filled in one transaction (such as a system just moved into a new root) has them
    # equal too, and stays so.
    show "$root"
    made=''; { read -r made < "$fresh"; } 2>/dev/null
    if [ -n "$uuid" ] && [ "$uuid" = "$made" ] && [ -n "$gen" ] && [ "$gen" = "$ogen" ] && ! has_nested "$WIPE_SUBVOLUME"; then unused=yes; fi
  else
    # No root: if the wipe cannot make one, the refusal says how to put one there.
    remake="btrfs subvolume snapshot /mnt/$WIPE_FROM /mnt/$WIPE_SUBVOLUME"
    [ "$WIPE_FROM" != empty ] || remake="btrfs subvolume create /mnt/$WIPE_SUBVOLUME"
    j=; { read -r j < "$journal"; } 2>/dev/null
    put_back "${j:-<the newest old root>}" "or, in place of that mv, make a fresh one: $remake"
    [ -e "$journal" ] || refuse "the root subvolume $WIPE_SUBVOLUME is missing on $WIPE_DEVICE"
    say "the root subvolume is missing and a wipe was in progress ($j): making it again"
  fi

  # The fresh root first, while the root is still in place: up to the move, a refusal leaves the
  # root as it was. A leftover ROOT.new is a wipe's that was cut short (see "A power cut" above).
  if [ -e "$root.new" ] || [ -L "$root.new" ]; then
    delete_tree "$WIPE_SUBVOLUME.new" || refuse "cannot delete the leftover $WIPE_SUBVOLUME.new (if it is not a subvolume, the wipe did not make it: move it away)"
  fi
  say "WIPE-STEP-CREATE $WIPE_SUBVOLUME from $WIPE_FROM"
  if [ "$WIPE_FROM" = empty ]; then
    btrfs subvolume create "$root.new" >/dev/null || refuse "cannot create $WIPE_SUBVOLUME.new"
  else
    # Commits the transaction (a snapshot is taken at commit): the steps above are on disk.
    btrfs subvolume snapshot "$TOP/$WIPE_FROM" "$root.new" >/dev/null || refuse "cannot snapshot $WIPE_FROM as $WIPE_SUBVOLUME.new"
  fi
  show "$root.new"; made=$uuid
  if [ -n "$present" ]; then
    # No sync before the move: the journal's creation is in the same transaction as the move or
    # an earlier one (see "A power cut" above).
    printf '%s\n' "$name" > "$journal" || refuse "cannot write $WIPE_OLD_ROOTS/.wipe-in-progress"
    say "WIPE-STEP-MOVE $WIPE_SUBVOLUME -> $WIPE_OLD_ROOTS/$name"
    # A rename that fails has done nothing: the root is still in place.
    mv "$root" "$old/$name" || refuse "cannot move $WIPE_SUBVOLUME to $WIPE_OLD_ROOTS/$name"
  fi
  if ! mv "$root.new" "$root"; then
    if [ -n "$present" ]; then
      if mv "$old/$name" "$root"; then
        rm -f "$journal"
        refuse "cannot rename $WIPE_SUBVOLUME.new to $WIPE_SUBVOLUME: the root is back in place"
      fi
      put_back "$name" "or reboot: the next boot's wipe makes the root again (the journal $WIPE_OLD_ROOTS/.wipe-in-progress says a wipe was cut short) and keeps $WIPE_OLD_ROOTS/$name"
      refuse "cannot rename $WIPE_SUBVOLUME.new to $WIPE_SUBVOLUME, nor move $WIPE_OLD_ROOTS/$name back to $WIPE_SUBVOLUME"
    fi
    refuse "cannot rename $WIPE_SUBVOLUME.new to $WIPE_SUBVOLUME"
  fi
  # Recorded after the rename: only a root the wipe made and put in place is ever named here. Lost
  # in a power cut, the next wipe keeps that root as an old root even if unused (the safe side).
  printf '%s\n' "$made" > "$fresh" || say "cannot write $WIPE_OLD_ROOTS/.fresh-root: the next wipe keeps this root even if it is never used"
  # moved: the old root this boot made, if kept.
  moved=''
  [ -z "$present" ] || moved=$name
  if [ -n "$unused" ]; then
    # Made by the last wipe and never written since (that boot stopped before the root was used).
    if btrfs subvolume delete "$old/$name" >/dev/null; then
      moved=''
      say "the root was never written since the last wipe: deleted, not kept"
    else
      say "could not delete the unused root, kept as $WIPE_OLD_ROOTS/$name"
    fi
  fi
  rm -f "$journal"
  say "WIPE-STEP-DONE fresh $WIPE_SUBVOLUME from $WIPE_FROM"

  # Retention. The newest are the last made: old roots are ranked by btrfs's creation
  # generation, then subvolume ID (both only grow), not by name. A name comes from the initrd's
  # clock, which may be behind (no RTC, a dead CMOS battery: the root just moved would look the
  # oldest) or start at the same second at every boot (.10 sorts before .2). The root moved at this
  # boot is the newest, and is never expired.
  # roots: "CGEN ID NAME" a line, newest first, from one btrfs subvolume list: the subvolumes
  # directly in OLD_ROOTS named as old roots (a name may hold spaces or glob characters: split on
  # lines only, unglobbed).
  roots=$(btrfs subvolume list -c "$TOP" 2>/dev/null |
    awk -v pre="$WIPE_OLD_ROOTS/" '
      /^ID [0-9]+ gen [0-9]+ cgen [0-9]+ top level [0-9]+ path / {
        p = $0; sub(/^ID [0-9]+ gen [0-9]+ cgen [0-9]+ top level [0-9]+ path /, "", p)
        if (index(p, pre) != 1) next
        n = substr(p, length(pre) + 1)
        if (index(n, "/") == 0 && n ~ /^[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]_[0-9][0-9][0-9][0-9][0-9][0-9]/) print $6 " " $2 " " n
      }' |
    sort -rn -k1,1 -k2,2)
  pos=0 kept=0
  if [ -n "$moved" ]; then pos=1 kept=1; fi
  old_ifs=$IFS; IFS=$NL; set -f
  # The age of each comes from its name, unless a name is later than now: then the clock is behind,
  # or was wrong when that one was named, and no age can be trusted.
  if [ "$cutoff" -gt 0 ]; then
    for l in $roots; do
      l=${l#* }; l=${l#* }
      name_number "$l"
      if [ "$num" -gt "$now" ]; then
        say "$WIPE_OLD_ROOTS/$l is named later than now ($name): the clock is behind, or was wrong; no old root is expired by age at this boot"
        cutoff=0
        break
      fi
    done
  fi
  for l in $roots; do
    l=${l#* }; l=${l#* }
    [ "$l" != "$moved" ] || continue
    pos=$((pos + 1))
    why=
    if [ "$WIPE_KEEP_COUNT" -gt 0 ] && [ "$pos" -gt "$WIPE_KEEP_COUNT" ]; then why="beyond the $WIPE_KEEP_COUNT newest"; fi
    name_number "$l"
    if [ "$cutoff" -gt 0 ] && [ "$num" -lt "$cutoff" ]; then why="older than $WIPE_KEEP_DAYS days"; fi
    if [ -z "$why" ]; then kept=$((kept + 1)); continue; fi
    say "WIPE-STEP-EXPIRE $WIPE_OLD_ROOTS/$l ($why)"
    # btrfs refuses (ENOTEMPTY) to delete a subvolume holding another: only then list them.
    btrfs subvolume delete "$old/$l" >/dev/null 2>&1 || delete_tree "$WIPE_OLD_ROOTS/$l" || say "could not delete $WIPE_OLD_ROOTS/$l"
  done
  IFS=$old_ifs; set +f
  status wipe-done "fresh $WIPE_SUBVOLUME from $WIPE_FROM on $WIPE_DEVICE; $kept old roots kept in $WIPE_OLD_ROOTS"
  cleanup
  { read -r up _ < /proc/uptime; } 2>/dev/null
  say "WIPE-STEP-END $kept old roots kept (uptime ${STARTED:-?} s -> ${up:-?} s)"
}
wipe_zfs() {
  : "${WIPE_DATASET:?}" "${WIPE_SNAPSHOT:?}"
  command -v zfs >/dev/null 2>&1 || refuse "no zfs command in the initrd (install zfs-dracut, or zfs-initramfs, and rebuild the initrd)"
  # The dataset the kernel boots, read as zfs-dracut reads root= and rootfstype= (decode_root_args
  # in its zfs-lib.sh): root=zfs:DATASET, root=ZFS=DATASET, or root=DATASET with rootfstype=zfs
  # ("+" for a space); no root=, root=zfs, root=zfs: and root=zfs:AUTO boot the first bootfs
  # property of the imported pools. Another dataset (another boot environment, booted to rescue)
  # is refused, as another subvolume is with btrfs: the rollback would wipe what this boot leaves.
  cmdline root; arg=$v booted='' how="root=$v"
  case $arg in
    '' | zfs | zfs: | zfs:AUTO) ;;
    ZFS=* | zfs:*) booted=${arg#zfs:}; booted=${booted#ZFS=} ;;
    *)
      cmdline rootfstype
      [ "$v" = zfs ] || refuse "the kernel boots root=$arg, not a ZFS dataset (root=zfs:$WIPE_DATASET), the wipe is configured for $WIPE_DATASET"
      booted=$arg ;;
  esac
  while :; do case $booted in *+*) booted="${booted%%+*} ${booted#*+}" ;; *) break ;; esac; done
  if [ -z "$booted" ]; then
    # One zpool, as zfs-dracut asks it (the tool it imports the pools with, so in the initrd). With
    # no zpool, or no pool naming a bootfs (then zfs-dracut finds no root to mount either), which
    # dataset boots cannot be told here: the wipe goes on with the configured one, as it did
    # before it looked.
    if command -v zpool >/dev/null 2>&1; then
      while IFS= read -r l; do case $l in '' | -) ;; *) booted=$l; break ;; esac; done <<BOOTFS
$(zpool list -H -o bootfs 2>/dev/null)
BOOTFS
    fi
    how="the first bootfs property of the imported pools, root=zfs:AUTO"
  fi
  if [ -n "$booted" ] && [ "$booted" != "$WIPE_DATASET" ]; then
    refuse "the kernel boots the dataset $booted ($how), the wipe is configured for $WIPE_DATASET"
  fi
  zfs list -H -o name "$WIPE_DATASET" >/dev/null 2>&1 || refuse "dataset $WIPE_DATASET not found (pool ${WIPE_DATASET%%/*} not imported, or wrong dataset in [wipe] dataset?)"
  zfs list -H -o name "$WIPE_DATASET@$WIPE_SNAPSHOT" >/dev/null 2>&1 || refuse "snapshot $WIPE_DATASET@$WIPE_SNAPSHOT not found (make it with zfs snapshot $WIPE_DATASET@$WIPE_SNAPSHOT, or name another in [wipe] snapshot)"
  # Storage on the dataset itself would be rolled back with it: look, read-only, before.
  if [ -n "$WIPE_STORAGES" ]; then
    mkdir -p "$TOP" || refuse "cannot create $TOP"
    # zfsutil mounts a dataset whose mountpoint zfs manages; mount(8) rejects it for
    # mountpoint=legacy, which mounts like any filesystem.
    opts=ro,zfsutil
    [ "$(zfs get -H -o value mountpoint "$WIPE_DATASET" 2>/dev/null)" != legacy ] || opts=ro
    mount -t zfs -o "$opts" "$WIPE_DATASET" "$TOP" || refuse "cannot mount $WIPE_DATASET read-only ($opts) to check the storage roots"
    mounted=yes
    check_storages "$TOP" "the dataset $WIPE_DATASET" "rolled back" dataset
    cleanup
  fi
  say "WIPE-STEP-ROLLBACK $WIPE_DATASET to @$WIPE_SNAPSHOT"
  zfs rollback -r "$WIPE_DATASET@$WIPE_SNAPSHOT" || refuse "zfs rollback -r $WIPE_DATASET@$WIPE_SNAPSHOT failed"
  say "WIPE-STEP-DONE rolled $WIPE_DATASET back to @$WIPE_SNAPSHOT"
  status wipe-done "rolled $WIPE_DATASET back to @$WIPE_SNAPSHOT"
}

cmdline impermanence.wipe
case $v in 0 | no | off | false) skip "impermanence.wipe=$v on the kernel command line" ;; esac
[ -r "$CONF" ] || refuse "$CONF is not in the initrd (rebuild the initrd after declaring [wipe])"
# shellcheck source=/dev/null
. "$CONF"
cmdline impermanence.wipe.device
[ -z "$v" ] || WIPE_DEVICE=$v
if hibernation_image; then
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
