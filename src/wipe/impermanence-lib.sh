# shellcheck shell=sh disable=SC2034
# impermanence-lib.sh: what the initrd's impermanence-wipe and impermanence-tmpfs-root share,
# sourced by both from the folder they are in (installed beside them, in the system and in the
# initrd). Before sourcing, set PROG (the name on each message). Sets NL, RUN, CMDLINE_TEXT (the
# kernel command line, read once, without a process) and CMDLINE_PARAMS (its parameters, split
# and unquoted once); defines say, status and cmdline.
NL='
'
RUN=${IMPERMANENCE_WIPE_RUN:-/run/impermanence}
CMDLINE_TEXT=
{ read -r CMDLINE_TEXT < "${IMPERMANENCE_WIPE_CMDLINE:-/proc/cmdline}"; } 2>/dev/null

say() { printf '%s: %s\n' "$PROG" "$*" >&2; }
# status FILE TEXT: the one outcome in RUN (wipe-failed, wipe-skipped or wipe-done), read after boot.
status() { mkdir -p "$RUN" && rm -f "$RUN/wipe-failed" "$RUN/wipe-skipped" "$RUN/wipe-done" && printf '%s\n' "$2" > "$RUN/$1"; }
# CMDLINE_PARAMS: the parameters, one a line, as the kernel's next_arg() (lib/cmdline.c) splits
# them: words split on blanks outside double quotes (a quote anywhere in a word opens or closes
# them), then a value's leading quote and its trailing one removed
# (rootflags="subvol=@root,compress=zstd"), or a whole parameter's ("rootflags=subvol=@root").
# The kernel mounts the root with that value, and systemd removes these quotes too: a word taken
# with its quotes would name another subvolume than the one booted. Inside quotes, a run of
# blanks reads as one space.
CMDLINE_PARAMS=
cmdline_add() {
  q=
  case $1 in \"*) set -- "${1#\"}"; q=yes ;; esac
  case $1 in
    *=*)
      p=${1%%=*} val=${1#*=}
      case $val in \"*) val=${val#\"}; q=yes ;; esac
      if [ -n "$q" ]; then val=${val%\"}; fi
      CMDLINE_PARAMS=$CMDLINE_PARAMS$p=$val$NL ;;
    *) if [ -n "$q" ]; then set -- "${1%\"}"; fi; CMDLINE_PARAMS=$CMDLINE_PARAMS$1$NL ;;
  esac
}
word='' quoted=''
set -f
for w in $CMDLINE_TEXT; do
  if [ -n "$quoted" ]; then word="$word $w"; else word=$w; fi
  # Each quote in the word opens or closes.
  r=$w
  while :; do
    case $r in *\"*) r=${r#*\"}; if [ -n "$quoted" ]; then quoted=; else quoted=yes; fi ;; *) break ;; esac
  done
  if [ -z "$quoted" ]; then cmdline_add "$word"; word=; fi
done
# A quote never closed: the rest of the line is one parameter, as for the kernel.
[ -z "$word" ] || cmdline_add "$word"
set +f
unset word quoted w r p val q
# Sets v to the value of a kernel command line parameter, last one wins ("" if absent).
cmdline() {
  v=
  cmdline_ifs=$IFS; IFS=$NL; set -f
  for param in $CMDLINE_PARAMS; do
    case $param in "$1="*) v=${param#"$1="} ;; esac
  done
  IFS=$cmdline_ifs; set +f
}
