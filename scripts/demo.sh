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

say impermanencectl generate --config examples/persist.d --root examples/root --out "$out/generator"
ctl generate --config examples/persist.d --root examples/root --out "$out/generator"
(cd "$out/generator" && find . -maxdepth 1 -name '*.mount' | sort | head -8 && echo "…")

say cat home-bird-.ssh.mount
cat "$out/generator/home-bird-.ssh.mount"
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
ctl check --config "$out/bad" --root examples/root || echo "(exit $?)"

# ── The daemon: org.impermanence.Manager on a private bus, over a sandboxed root ──────────────
if ! command -v dbus-daemon >/dev/null || [ ! -f /usr/share/dbus-1/system.conf ]; then
  echo; echo "(skipping the daemon tour: install dbus-daemon and dbus-system-bus-common to see it)"
  exit 0
fi
root="$out/root"
mkdir -p "$root/etc" "$root/persistent"
cp examples/root/etc/passwd examples/root/etc/group "$root/etc/"
mkdir -p "$root/etc/impermanence" && cp -r examples/persist.d "$root/etc/impermanence/persist.d"
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

# In a private mount namespace (when we may make one), two entries are really bind-mounted.
daemon=(node dist/impermanenced.js --root "$root")
if [ "$(id -u)" = 0 ] && command -v unshare >/dev/null; then
  mkdir -p "$root/var/log" "$root/persistent/var/log" "$root/home/bird/.ssh" "$root/persistent/home/bird/.ssh"
  unshare -m --propagation private sh -c 'mount --bind "$1/persistent" "$1/persistent" && mount --bind "$1/persistent/var/log" "$1/var/log" && mount --bind "$1/persistent/home/bird/.ssh" "$1/home/bird/.ssh" && shift && exec "$@"' \
    sh "$root" "${daemon[@]}" 2>"$out/daemon.log" &
else
  "${daemon[@]}" 2>"$out/daemon.log" &
fi
pids+=($!)
for _ in $(seq 100); do busctl --address="$DBUS_SYSTEM_BUS_ADDRESS" status org.impermanence.Manager >/dev/null 2>&1 && break; sleep 0.05; done

say busctl introspect org.impermanence.Manager /org/impermanence/Manager
busctl introspect org.impermanence.Manager /org/impermanence/Manager | sed -n '1p;/^org\.impermanence\.Manager/,$p'
say impermanencectl status
ctl status || echo "(exit $?: degraded, as most entries of this sandbox are not mounted)"
say 'impermanencectl list | head'
ctl list | head -8
say "busctl get-property org.impermanence.Manager /org/impermanence/Manager/entry/_2fvar_2flog org.impermanence.Entry State Source Unit"
busctl get-property org.impermanence.Manager /org/impermanence/Manager/entry/_2fvar_2flog org.impermanence.Entry State Source Unit
say 'busctl call … GetEntry s var/log   # bad input gets a named D-Bus error'
busctl call org.impermanence.Manager /org/impermanence/Manager org.impermanence.Manager GetEntry s var/log || true
say 'impermanencectl reload --no-ask-password   # as nobody: polkit decides (and there is no polkit here)'
if [ "$(id -u)" = 0 ] && command -v setpriv >/dev/null; then
  setpriv --reuid=nobody --regid=nogroup --clear-groups node dist/impermanencectl.js reload --no-ask-password || echo "(exit $?)"
fi
say 'impermanencectl reload   # as root'
ctl reload && echo reloaded
say 'what the daemon logged (stderr here; journald under systemd, with IMPERMANENCE_PATH= fields)'
grep -m3 -E 'IMPERMANENCE_PATH=/(var/log|etc/machine-id)|Loaded' "$out/daemon.log" || true
