#!/bin/sh
# Installs the built programs (npm run build) into DESTDIR, in the layout a distribution package
# uses. The e2e boot test installs this way into a fresh root, so the layout is what is tested.
#   packaging/install.sh [DESTDIR]
set -eu
here=$(cd "$(dirname "$0")/.." && pwd)
dest=${1:-${DESTDIR:-}}
for f in impermanence-generator impermanencectl; do
  [ -f "$here/dist/$f.js" ] || { echo "install.sh: dist/$f.js is missing: run npm run build first" >&2; exit 1; }
done
install -Dm0755 "$here/dist/impermanence-generator.js" "$dest/usr/lib/systemd/system-generators/impermanence-generator"
install -Dm0755 "$here/dist/impermanencectl.js" "$dest/usr/bin/impermanencectl"
install -dm0755 "$dest/usr/lib/impermanence/persist.d" "$dest/etc/impermanence/persist.d"
install -Dm0644 "$here/README.md" "$dest/usr/share/doc/impermanence/README.md"
install -Dm0644 "$here/examples/persist.d/10-system.toml" "$dest/usr/share/doc/impermanence/examples/10-system.toml"
install -Dm0644 "$here/examples/persist.d/20-desktop.toml" "$dest/usr/share/doc/impermanence/examples/20-desktop.toml"
