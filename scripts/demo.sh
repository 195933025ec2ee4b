#!/usr/bin/env bash
# The main job on the embedded example config, with no change to this system: check the config,
# generate what systemd would get at boot into a temporary folder, show it, verify it with
# systemd-analyze (when installed), and show what a mistake looks like.
set -euo pipefail
cd "$(dirname "$0")/.."
ctl() { node dist/impermanencectl.js "$@"; }
# The units name impermanence-prepare where the package installs it; here, the build (so that verify finds it).
export IMPERMANENCE_PREPARE="$PWD/dist/impermanence-prepare.js"
out=$(mktemp -d)
chmod 0755 "$out"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$out"
}
trap cleanup EXIT
if [ -t 1 ]; then say() { printf '\n\033[1m$ %s\033[0m\n' "$*"; }; else say() { printf '\n$ %s\n' "$*"; }; fi

say impermanencectl check --config examples/persist.d --root examples/root
ctl check --config examples/persist.d --root examples/root

say 'impermanencectl generate --config examples/persist.d --root examples/root --out $out/generator'
ctl generate --config examples/persist.d --root examples/root --out "$out/generator"
(cd "$out/generator" && find . -maxdepth 1 -name '*.mount' | sort | head -8 && echo "…")

say cat home-bird-.ssh.mount
fold -s -w 100 "$out/generator/home-bird-.ssh.mount"   # one long Environment= line, folded to fit
say grep … impermanence/persistent.conf
grep -E '/home/bird/\.ssh|/var/lib/colord|secret_file' "$out/generator/impermanence/persistent.conf"

if command -v systemd-analyze >/dev/null; then
  say systemd-analyze verify '*.mount *.target impermanence-prepare@persistent.service'
  (cd "$out/generator" && SYSTEMD_UNIT_PATH="$PWD:" systemd-analyze verify --man=no ./*.mount ./*.target impermanence-prepare@persistent.service && echo "all units pass")
fi

say 'impermanencectl check   # a config with a mistake: nothing is generated from it'
mkdir "$out/bad"
printf '[persistence."/persistent"]\ndirectories = ["/var/log", "var/lib/foo"]\n' > "$out/bad/10-bad.toml"
cat "$out/bad/10-bad.toml"
ctl check --config "$out/bad" --root examples/root 2>&1 | fold -s -w 100 || true
ctl check --config "$out/bad" --root examples/root 2>/dev/null || echo "(exit $?)"

# ── The daemon: org.impermanence.Manager on a private bus, over a sandboxed root ──────────────
if ! command -v dbus-daemon >/dev/null || [ ! -f /usr/share/dbus-1/system.conf ]; then
  echo; echo "(skipping the daemon tour: install dbus-daemon and dbus-system-bus-common to see it)"
  exit 0
fi
root="$out/root"
[ -n "$out" ] && [ -d "$out" ] || exit 1 # everything below writes only under $out
mkdir -p "$root/etc/impermanence/persist.d" "$root/persistent"
cp examples/root/etc/passwd examples/root/etc/group "$root/etc/"
# A small config of its own, so that every entry can really be mounted in the sandbox.
printf '%s\n' '[persistence."/persistent"]' 'directories = ["/var/log", "/var/lib/bluetooth"]' 'files = ["/etc/machine-id"]' '' \
  '[persistence."/persistent".users.bird]' 'directories = ["Documents", { directory = ".ssh", mode = "0700" }]' \
  > "$root/etc/impermanence/persist.d/10-demo.toml"
# A system-like bus: Debian's system bus policy plus ours, listening in the sandbox.
{
  echo '<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN" "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">'
  echo "<busconfig><type>system</type><listen>unix:path=$out/bus</listen><auth>EXTERNAL</auth>"
  sed -n '/<policy/,/<\/policy>/p' /usr/share/dbus-1/system.conf
  echo "<includedir>$PWD/dbus</includedir></busconfig>"
} > "$out/bus.conf"
dbus-daemon --config-file="$out/bus.conf" --nofork --print-address=1 > "$out/address" 2>/dev/null &
pids+=($!)
for _ in $(seq 50); do [ -S "$out/bus" ] && break; sleep 0.05; done
export DBUS_SYSTEM_BUS_ADDRESS="unix:path=$out/bus"

# In a private mount namespace (when we may make one), every entry is really bind-mounted.
daemon=(node dist/impermanenced.js --root "$root")
mounted=
if [ "$(id -u)" = 0 ] && command -v unshare >/dev/null && command -v nsenter >/dev/null; then
  for d in var/log var/lib/bluetooth home/bird/Documents home/bird/.ssh etc; do mkdir -p "$root/$d" "$root/persistent/$d"; done
  echo 0123456789abcdef0123456789abcdef > "$root/persistent/etc/machine-id"
  : > "$root/etc/machine-id"
  chown -R 1000:1000 "$root/home/bird" "$root/persistent/home/bird" && chmod 0700 "$root/home/bird/.ssh" "$root/persistent/home/bird/.ssh"
  # unshare without --fork: the daemon keeps this PID, in the new namespace (nsenter -t finds it).
  unshare -m --propagation private sh -c 'r=$1; shift; mount --bind "$r/persistent" "$r/persistent" &&
    for p in var/log var/lib/bluetooth home/bird/Documents home/bird/.ssh etc/machine-id; do mount --bind "$r/persistent/$p" "$r/$p" || exit 1; done &&
    exec "$@"' sh "$root" "${daemon[@]}" 2>"$out/daemon.log" &
  mounted=1
else
  "${daemon[@]}" 2>"$out/daemon.log" &
fi
daemon_pid=$!
pids+=($daemon_pid)
for _ in $(seq 100); do busctl --address="$DBUS_SYSTEM_BUS_ADDRESS" status org.impermanence.Manager >/dev/null 2>&1 && break; sleep 0.05; done

say busctl tree org.impermanence.Manager
busctl tree org.impermanence.Manager
say impermanencectl status
ctl status || echo "(exit $?: degraded: some entries are not in place)"
say impermanencectl list
ctl list

# Programs write outside persisted paths: lost at the next boot, unless the config keeps them.
# Whole seconds: what the set-up wrote must be a second older than $since, and the program's
# writes no older than it.
sleep 1
since=$(date +%s)
sleep 1
mkdir -p "$root/var/lib/app" "$root/home/bird/.config/app"
head -c 40000 /dev/urandom > "$root/var/lib/app/state.db"
echo '{"theme": "dark"}' > "$root/home/bird/.config/app/settings.json"
echo '{"window": [800, 600]}' > "$root/home/bird/.config/app/window.json"
say "impermanencectl diff --since $since   # written since then, outside persisted paths"
ctl diff --since "$since" || echo "(exit $?: there is drift)"

say "impermanence-notify --print   # the desktop notification bird gets (scope = \"home\")"
printf 'scope = "home"\n' > "$out/notify.toml"
HOME=/home/bird node dist/impermanence-notify.js --print --config "$out/notify.toml"

if [ -n "$mounted" ]; then
  node dist/impermanencectl.js monitor > "$out/monitor.log" &
  monitor=$!
  pids+=($monitor)
  sleep 0.5
  say "umount /var/log   # in the daemon's namespace: a persisted path goes away, live"
  nsenter -t "$daemon_pid" -m umount "$root/var/log"
  sleep 1.5
  kill -TERM "$monitor" 2>/dev/null || true
  wait "$monitor" 2>/dev/null || true
  say 'impermanencectl monitor   # what it printed meanwhile'
  cat "$out/monitor.log"
  say 'impermanencectl list --no-legend | grep /var/log'
  ctl list --no-legend | grep /var/log
  say 'impermanencectl diff --since all | head -2'
  ctl diff --since all | head -2 || true
fi

say 'busctl call … GetEntry s var/log   # bad input gets a named D-Bus error'
busctl call org.impermanence.Manager /org/impermanence/Manager org.impermanence.Manager GetEntry s var/log 2>&1 || true
say 'impermanencectl reload --no-ask-password   # as nobody: polkit decides (there is none here)'
if [ "$(id -u)" = 0 ] && command -v setpriv >/dev/null; then
  { setpriv --reuid=nobody --regid=nogroup --clear-groups node dist/impermanencectl.js reload --no-ask-password || echo "(exit $?)"; } 2>&1 | fold -s -w 100
fi
say 'impermanencectl reload   # as root'
ctl reload
say 'what the daemon logged (a file here: no <N> prefixes; the journal under systemd, with fields)'
grep -m4 -E 'Serving|Reload|/var/log' "$out/daemon.log" | fold -s -w 100 || true
