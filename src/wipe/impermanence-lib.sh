# shellcheck shell=sh disable=SC2034
# impermanence-lib.sh: what the initrd's impermanence-wipe and impermanence-tmpfs-root share,
# sourced by both from the folder they are in (installed beside them, in the system and in the
# initrd). Before sourcing, set PROG (the name on each message). Sets NL, RUN and CMDLINE_TEXT
# (the kernel command line, read once, without a process); defines say, status and cmdline.
NL='
'
RUN=${IMPERMANENCE_WIPE_RUN:-/run/impermanence}
CMDLINE_TEXT=
{ read -r CMDLINE_TEXT < "${IMPERMANENCE_WIPE_CMDLINE:-/proc/cmdline}"; } 2>/dev/null

say() { printf '%s: %s\n' "$PROG" "$*" >&2; }
# status FILE TEXT: the one outcome in RUN (wipe-failed, wipe-skipped or wipe-done), read after boot.
status() { mkdir -p "$RUN" && rm -f "$RUN/wipe-failed" "$RUN/wipe-skipped" "$RUN/wipe-done" && printf '%s\n' "$2" > "$RUN/$1"; }
# Sets v to the value of a kernel command line option, last one wins ("" if absent).
cmdline() {
  v=
  set -f
  for word in $CMDLINE_TEXT; do
    case $word in "$1="*) v=${word#"$1="} ;; esac
  done
  set +f
}
