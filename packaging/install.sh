#!/bin/sh
# Installs the built programs (npm run build) into DESTDIR, in the layout a distribution package
# uses. The e2e boot test installs this way into a fresh root, and the Debian, RPM and Arch
# packages install with it too, so there is one list of files and the layout is what is tested.
#   packaging/install.sh [--package] [DESTDIR]
# --package: for a package build. Enabling units is then left to the package manager's scripts
# (deb-systemd-helper, %systemd_post, systemctl preset), not done here by a symlink.
set -eu
here=$(cd "$(dirname "$0")/.." && pwd)
package=no
if [ "${1:-}" = --package ]; then package=yes; shift; fi
dest=${1:-${DESTDIR:-}}
for f in impermanence-generator impermanencectl impermanenced impermanence-notify impermanence-prepare; do
  [ -f "$here/dist/$f.js" ] || { echo "install.sh: dist/$f.js is missing: run npm run build first" >&2; exit 1; }
done
# The generator lives with the other programs; systemd finds it by a (relative) symlink.
install -Dm0755 "$here/dist/impermanence-generator.js" "$dest/usr/lib/impermanence/impermanence-generator"
install -dm0755 "$dest/usr/lib/systemd/system-generators"
ln -sfn ../../impermanence/impermanence-generator "$dest/usr/lib/systemd/system-generators/impermanence-generator"
# The generator's V8 code cache (scripts/build.mjs), where the generator looks for it; optional
# (without it, or with another Node, the generator compiles its code as usual).
for c in "$here"/dist/impermanence-generator.*.cache; do
  if [ -f "$c" ]; then install -Dm0644 "$c" "$dest/usr/lib/impermanence/${c##*/}"; fi
done
install -Dm0755 "$here/dist/impermanencectl.js" "$dest/usr/bin/impermanencectl"
install -Dm0755 "$here/dist/impermanenced.js" "$dest/usr/lib/impermanence/impermanenced"
install -Dm0755 "$here/dist/impermanence-prepare.js" "$dest/usr/lib/impermanence/impermanence-prepare"
install -Dm0755 "$here/dist/impermanence-notify.js" "$dest/usr/bin/impermanence-notify"
install -Dm0755 "$here/dist/impermanence-fanotify" "$dest/usr/lib/impermanence/impermanence-fanotify"
install -Dm0755 "$here/dist/impermanence-pathwatch" "$dest/usr/lib/impermanence/impermanence-pathwatch"
install -Dm0755 "$here/dist/impermanence-walk" "$dest/usr/lib/impermanence/impermanence-walk"
# mount(8) runs /sbin/mount.TYPE for the generated Type=impermanence units (on merged-/usr
# systems /sbin is /usr/sbin).
install -Dm0755 "$here/dist/mount.impermanence" "$dest/usr/sbin/mount.impermanence"
# The daemon's one native module (journald's native protocol), beside it where require() looks.
for m in unix-dgram bindings file-uri-to-path; do
  [ -d "$here/node_modules/$m" ] || { echo "install.sh: node_modules/$m is missing: run npm ci first" >&2; exit 1; }
  install -dm0755 "$dest/usr/lib/impermanence/node_modules/$m"
  (cd "$here/node_modules/$m" && find . -type f \( -name '*.js' -o -name '*.json' -o -name '*.node' \) ! -path './test/*' ! -path './build/Release/obj.target/*' \
    -exec install -Dm0644 {} "$dest/usr/lib/impermanence/node_modules/$m/{}" \;)
done
install -Dm0644 "$here/units/impermanence.service" "$dest/usr/lib/systemd/system/impermanence.service"
install -Dm0644 "$here/packaging/impermanence.preset" "$dest/usr/lib/systemd/system-preset/80-impermanence.preset"
# Prometheus metrics for node_exporter's textfile collector: `systemctl enable --now impermanence-metrics.timer`.
install -Dm0644 "$here/units/impermanence-metrics.service" "$dest/usr/lib/systemd/system/impermanence-metrics.service"
install -Dm0644 "$here/units/impermanence-metrics.timer" "$dest/usr/lib/systemd/system/impermanence-metrics.timer"
# The desktop agent: a user unit, enabled for everyone on the first install only (what
# `systemctl --global preset` does with the preset file: an admin's later `systemctl --global
# disable` is kept on upgrades), plus XDG autostart for sessions without systemd, and the
# desktop entry its notifications name.
first_install=yes
[ -e "$dest/usr/lib/systemd/user/impermanence-notify.service" ] && first_install=no
install -Dm0644 "$here/units/impermanence-notify.service" "$dest/usr/lib/systemd/user/impermanence-notify.service"
install -Dm0644 "$here/packaging/impermanence-notify.preset" "$dest/usr/lib/systemd/user-preset/80-impermanence.preset"
if [ "$first_install" = yes ] && [ "$package" = no ]; then
  install -dm0755 "$dest/etc/systemd/user/graphical-session.target.wants"
  ln -sf /usr/lib/systemd/user/impermanence-notify.service "$dest/etc/systemd/user/graphical-session.target.wants/impermanence-notify.service"
fi
install -Dm0644 "$here/packaging/impermanence-notify.desktop" "$dest/etc/xdg/autostart/impermanence-notify.desktop"
install -Dm0644 "$here/packaging/impermanence-notify.desktop" "$dest/usr/share/applications/impermanence-notify.desktop"
install -Dm0644 "$here/dbus/org.impermanence.Manager.conf" "$dest/usr/share/dbus-1/system.d/org.impermanence.Manager.conf"
install -Dm0644 "$here/dbus/org.impermanence.Manager.service" "$dest/usr/share/dbus-1/system-services/org.impermanence.Manager.service"
install -Dm0644 "$here/dbus/org.impermanence.Manager.xml" "$dest/usr/share/dbus-1/interfaces/org.impermanence.Manager.xml"
install -Dm0644 "$here/packaging/org.impermanence.policy" "$dest/usr/share/polkit-1/actions/org.impermanence.policy"
install -dm0755 "$dest/usr/lib/impermanence/persist.d" "$dest/etc/impermanence/persist.d"
install -Dm0644 "$here/README.md" "$dest/usr/share/doc/impermanence/README.md"
install -Dm0644 "$here/examples/persist.d/10-system.toml" "$dest/usr/share/doc/impermanence/examples/10-system.toml"
install -Dm0644 "$here/examples/persist.d/20-desktop.toml" "$dest/usr/share/doc/impermanence/examples/20-desktop.toml"
# The wipe (README "Wiping the root"): the initrd script and unit, the dracut module, the
# initramfs-tools hook and script, the mkinitcpio hook, and the after-boot check of a refusal.
install -Dm0755 "$here/src/wipe/impermanence-wipe.sh" "$dest/usr/lib/impermanence/impermanence-wipe"
# What both initrd scripts source, from their own folder.
install -Dm0644 "$here/src/wipe/impermanence-lib.sh" "$dest/usr/lib/impermanence/impermanence-lib.sh"
install -Dm0644 "$here/units/impermanence-wipe.service" "$dest/usr/lib/impermanence/impermanence-wipe.service"
install -Dm0755 "$here/src/wipe/impermanence-tmpfs-root.sh" "$dest/usr/lib/impermanence/impermanence-tmpfs-root"
install -Dm0644 "$here/units/impermanence-tmpfs-root.service" "$dest/usr/lib/impermanence/impermanence-tmpfs-root.service"
install -Dm0755 "$here/packaging/dracut/90impermanence/module-setup.sh" "$dest/usr/lib/dracut/modules.d/90impermanence/module-setup.sh"
install -Dm0755 "$here/packaging/initramfs-tools/hooks/impermanence" "$dest/usr/share/initramfs-tools/hooks/impermanence"
install -Dm0755 "$here/packaging/initramfs-tools/scripts/local-premount/impermanence" "$dest/usr/share/initramfs-tools/scripts/local-premount/impermanence"
install -Dm0644 "$here/packaging/mkinitcpio/install/impermanence" "$dest/usr/lib/initcpio/install/impermanence"
install -Dm0644 "$here/units/impermanence-wipe-check.service" "$dest/usr/lib/systemd/system/impermanence-wipe-check.service"
install -dm0755 "$dest/usr/lib/systemd/system/sysinit.target.wants"
ln -sf ../impermanence-wipe-check.service "$dest/usr/lib/systemd/system/sysinit.target.wants/impermanence-wipe-check.service"
# Package-manager hooks: after a transaction on the running root, say that it is lost at the next
# boot and how to keep it (impermanencectl wipe update -- …): apt, dnf5 (libdnf5's actions
# plugin) and pacman; each calls the one script, which is silent without [wipe].
install -Dm0755 "$here/packaging/hooks/impermanence-pkg-hook" "$dest/usr/lib/impermanence/impermanence-pkg-hook"
install -Dm0644 "$here/packaging/hooks/80impermanence.apt" "$dest/etc/apt/apt.conf.d/80impermanence"
install -Dm0644 "$here/packaging/hooks/impermanence.actions" "$dest/etc/dnf/libdnf5-plugins/actions.d/impermanence.actions"
install -Dm0644 "$here/packaging/hooks/impermanence.hook" "$dest/usr/share/libalpm/hooks/impermanence.hook"
# Presets: config fragments a config includes by name (include = ["ssh", "networkmanager"]).
for f in "$here"/presets/*.toml; do
  [ -f "$f" ] || continue
  install -Dm0644 "$f" "$dest/usr/share/impermanence/presets/$(basename "$f")"
done
# Man pages and shell completions, when the tree has them (each part is optional; sources such
# as *.md or *.in templates are skipped: only built files are installed):
#   man/*.[1-8], dist/man/*.[1-8], dist/man/manN/*.N      -> /usr/share/man/manN/
#   {,dist/}completions/bash/NAME or .../NAME.bash      -> /usr/share/bash-completion/completions/NAME
#   {,dist/}completions/zsh/_NAME or .../_NAME[.zsh]    -> /usr/share/zsh/vendor-completions/_NAME (Debian; site-functions elsewhere)
#   {,dist/}completions/fish/NAME.fish or .../NAME.fish -> /usr/share/fish/vendor_completions.d/NAME.fish
for f in "$here"/man/*.[1-8] "$here"/dist/man/*.[1-8] "$here"/dist/man/man[1-8]/*.[1-8]; do
  [ -f "$f" ] || continue
  section=${f##*.}
  install -Dm0644 "$f" "$dest/usr/share/man/man$section/$(basename "$f")"
done
zshdir=${IMPERMANENCE_ZSH_COMPLETIONS:-/usr/share/zsh/vendor-completions}
for c in "$here/completions" "$here/dist/completions"; do
  for f in "$c"/bash/* "$c"/*.bash; do
    [ -f "$f" ] || continue; case "$f" in *.in) continue;; esac
    install -Dm0644 "$f" "$dest/usr/share/bash-completion/completions/$(basename "$f" .bash)"
  done
  for f in "$c"/zsh/_* "$c"/_*; do
    [ -f "$f" ] || continue; case "$f" in *.in) continue;; esac
    install -Dm0644 "$f" "$dest$zshdir/$(basename "$f" .zsh)"
  done
  for f in "$c"/fish/*.fish "$c"/*.fish; do
    [ -f "$f" ] || continue
    install -Dm0644 "$f" "$dest/usr/share/fish/vendor_completions.d/$(basename "$f")"
  done
done
exit 0
