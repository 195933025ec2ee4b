#!/bin/sh
# npm run package:deb — builds the Debian package from the working tree (tracked and new files,
# as git sees them; node_modules and dist are rebuilt inside): a copy in a temporary folder,
# dpkg-buildpackage there, the .deb and a lintian report in out/deb/.
#   IMPERMANENCE_DEB_VERSION=0.1.0+1 npm run package:deb   # the same tree, another version
# Needs: dpkg-dev debhelper gcc libc6-dev (and lintian for the report), Node >= 20 and npm.
# Node not installed as a Debian package (a tarball, nvm): IMPERMANENCE_DEB_NODEPS=1 skips
# dpkg's check of the build dependencies (dpkg-buildpackage -d).
set -eu
here=$(cd "$(dirname "$0")/.." && pwd)
out=${IMPERMANENCE_DEB_OUT:-$here/out/deb}
work=$(mktemp -d "${TMPDIR:-/tmp}/impermanence-deb.XXXXXX")
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/src" "$out"
cd "$here"
# tar keeps modes and symlinks; deleted-but-tracked files are skipped.
# shellcheck disable=SC2016 # the inner sh expands them
git ls-files -co --exclude-standard -z | xargs -0 sh -c 'for f; do [ -e "$f" ] || [ -L "$f" ] && printf "%s\0" "$f"; done' sh \
  | tar --null -T - -cf - | tar -xf - -C "$work/src"
if [ -n "${IMPERMANENCE_DEB_VERSION:-}" ]; then
  sed -i "1s/([^)]*)/($IMPERMANENCE_DEB_VERSION)/" "$work/src/debian/changelog"
fi
cd "$work/src"
dpkg-buildpackage -b -us -uc ${IMPERMANENCE_DEB_NODEPS:+-d} >"$work/build.log" 2>&1 || { tail -40 "$work/build.log" >&2; echo "package-deb: dpkg-buildpackage failed" >&2; exit 1; }
cd "$work"
version=$(dpkg-parsechangelog -l src/debian/changelog -S Version)
arch=$(dpkg --print-architecture)
cp "impermanence_${version}_${arch}.deb" "$out/"
echo "$out/impermanence_${version}_${arch}.deb"
if [ "${IMPERMANENCE_DEB_LINTIAN:-1}" != 0 ] && command -v lintian >/dev/null; then
  lintian --info --display-info --pedantic "impermanence_${version}_${arch}.changes" >"$out/lintian-${version}.txt" 2>&1 || true
  grep -v '^N:' "$out/lintian-${version}.txt" | sed 's/^/lintian: /' >&2 || true
fi
