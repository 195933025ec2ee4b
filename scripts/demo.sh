#!/usr/bin/env bash
# The main job on the embedded example config, with no change to this system: check the config,
# generate what systemd would get at boot into a temporary folder, show it, verify it with
# systemd-analyze (when installed), and show what a mistake looks like.
set -euo pipefail
cd "$(dirname "$0")/.."
ctl() { node dist/impermanencectl.js "$@"; }
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
if [ -t 1 ]; then say() { printf '\n\033[1m$ %s\033[0m\n' "$*"; }; else say() { printf '\n$ %s\n' "$*"; }; fi

say impermanencectl check --config examples/persist.d --root examples/root
ctl check --config examples/persist.d --root examples/root

say impermanencectl generate --config examples/persist.d --root examples/root --out "$out/generator"
ctl generate --config examples/persist.d --root examples/root --out "$out/generator"
(cd "$out/generator" && find . -maxdepth 1 -name '*.mount' | sort | head -8 && echo "…")

say cat home-bird-.ssh.mount
cat "$out/generator/home-bird-.ssh.mount"
say grep … impermanence/tmpfiles.conf
grep -E '/home/bird/\.ssh|/var/lib/colord|secret_file' "$out/generator/impermanence/tmpfiles.conf"

if command -v systemd-analyze >/dev/null; then
  say systemd-analyze verify '*.mount *.service *.target'
  (cd "$out/generator" && SYSTEMD_UNIT_PATH="$PWD:" systemd-analyze verify --man=no ./*.mount ./*.service ./*.target && echo "all units pass")
fi

say 'impermanencectl check   # a config with a mistake: nothing is generated from it'
mkdir "$out/bad"
printf '[persistence."/persistent"]\ndirectories = ["/var/log", "var/lib/foo"]\n' > "$out/bad/10-bad.toml"
cat "$out/bad/10-bad.toml"
ctl check --config "$out/bad" --root examples/root || echo "(exit $?)"
