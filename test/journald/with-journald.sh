#!/bin/bash
# Runs COMMAND next to a private systemd-journald, then stops it.
#
#   test/journald/with-journald.sh COMMAND [ARGS...]
#
# Needs root. Everything happens in new mount, PID and network namespaces
# (unshare -m --propagation private -p -f --kill-child --mount-proc -n):
#   - tmpfs on /run and on /var/log/journal, so the host's /run, journal and
#     journald are never seen or touched;
#   - /run/systemd/journald.conf.d/ (on that tmpfs) keeps the journal volatile
#     and turns off kmsg reading and all forwarding (wall, console, syslog, kmsg);
#   - journald's own log goes to our stderr (SYSTEMD_LOG_TARGET=console), not kmsg;
#   - the network namespace keeps journald away from the kernel's audit netlink;
#   - the PID namespace guarantees cleanup: if this script dies, unshare's
#     --kill-child takes every process in it, journald included.
# Inside COMMAND: the socket is /run/systemd/journal/socket, the journal files are in
# $JOURNAL_DIR (= /run/log/journal), journald's PID is $JOURNALD_PID and its
# stderr is in $JOURNALD_LOG.
set -euo pipefail

if [ -z "${WITH_JOURNALD_INNER:-}" ]; then
  export WITH_JOURNALD_INNER=1
  exec unshare --mount --propagation private --pid --fork --kill-child --mount-proc --net \
    /bin/bash "$0" "$@"
fi

mount -t tmpfs -o mode=0755 tmpfs /run
if [ -d /var/log/journal ]; then mount -t tmpfs -o mode=0755 tmpfs /var/log/journal; fi
mkdir -p /run/systemd/journal /run/systemd/journald.conf.d
cat >/run/systemd/journald.conf.d/test.conf <<'EOF'
[Journal]
Storage=volatile
ReadKMsg=no
ForwardToSyslog=no
ForwardToKMsg=no
ForwardToConsole=no
ForwardToWall=no
RateLimitBurst=0
EOF

export JOURNALD_LOG=/run/journald.log
export JOURNAL_DIR=/run/log/journal
start=$(date +%s%N)
SYSTEMD_LOG_TARGET=console /lib/systemd/systemd-journald </dev/null >"$JOURNALD_LOG" 2>&1 &
export JOURNALD_PID=$!
stop_journald() {
  kill "$JOURNALD_PID" 2>/dev/null || true
  wait "$JOURNALD_PID" 2>/dev/null || true
}
trap stop_journald EXIT

for _ in $(seq 500); do
  [ -S /run/systemd/journal/socket ] && break
  kill -0 "$JOURNALD_PID" 2>/dev/null || break
  sleep 0.01
done
if [ ! -S /run/systemd/journal/socket ]; then
  echo "with-journald: journald did not come up" >&2
  cat "$JOURNALD_LOG" >&2
  exit 97
fi
export JOURNALD_STARTUP_MS=$(( ($(date +%s%N) - start) / 1000000 ))

set +e
"$@"
rc=$?
set -e
exit "$rc"
