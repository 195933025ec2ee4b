#!/bin/sh
# npm run package:rpm — builds the RPM from the working tree with packaging/rpm/impermanence.spec:
# a source tarball of the tree (as git sees it), rpmbuild -bb in a temporary top dir, the .rpm in
# out/rpm/. On a non-RPM system (Debian: apt-get install rpm) the build dependencies cannot be
# checked against an RPM database: IMPERMANENCE_RPM_NODEPS=1 passes --nodeps.
set -eu
here=$(cd "$(dirname "$0")/.." && pwd)
out=${IMPERMANENCE_RPM_OUT:-$here/out/rpm}
version=$(sed -n 's/^Version: *//p' "$here/packaging/rpm/impermanence.spec")
top=$(mktemp -d "${TMPDIR:-/tmp}/impermanence-rpm.XXXXXX")
trap 'rm -rf "$top"' EXIT
mkdir -p "$top/SOURCES" "$out"
cd "$here"
# shellcheck disable=SC2016 # the inner sh expands them
git ls-files -co --exclude-standard -z | xargs -0 sh -c 'for f; do [ -e "$f" ] || [ -L "$f" ] && printf "%s\0" "$f"; done' sh \
  | tar --null -T - --transform "s|^|impermanence-$version/|" -czf "$top/SOURCES/impermanence-$version.tar.gz"
rpmbuild -bb ${IMPERMANENCE_RPM_NODEPS:+--nodeps} --define "_topdir $top" packaging/rpm/impermanence.spec >"$top/build.log" 2>&1 \
  || { tail -40 "$top/build.log" >&2; echo "package-rpm: rpmbuild failed" >&2; exit 1; }
# shellcheck disable=SC2016 # the inner sh expands them
find "$top/RPMS" -name '*.rpm' -exec cp {} "$out/" \; -exec sh -c 'echo "$1/$(basename "$2")"' sh "$out" {} \;
