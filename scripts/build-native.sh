#!/usr/bin/env bash
# Builds the native helpers into dist/: impermanence-fanotify (the daemon's whole-filesystem write
# watcher, src/drift/native/fanotify-watch.c), impermanence-pathwatch (mount changes and inotify on the
# persisted paths and storage folders, src/drift/native/path-watch.c), impermanence-walk (the drift walk,
# src/drift/native/walk.c) and mount.impermanence (the mount(8) helper that mounts persisted paths
# by file descriptor, src/generator/native/mount-impermanence.c). Needs a C compiler and the libc/kernel headers
# (Debian: gcc libc6-dev). CC, CFLAGS, CPPFLAGS and LDFLAGS are honoured for packaging (hardening flags).
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p dist
# shellcheck disable=SC2086 # word-splitting of the flag variables is intended
${CC:-cc} -O2 -Wall -Wextra -Werror ${CPPFLAGS:-} ${CFLAGS:-} ${LDFLAGS:-} \
  -o dist/impermanence-fanotify src/drift/native/fanotify-watch.c
${CC:-cc} -O2 -Wall -Wextra -Werror ${CPPFLAGS:-} ${CFLAGS:-} ${LDFLAGS:-} -o dist/impermanence-pathwatch src/drift/native/path-watch.c
${CC:-cc} -O2 -Wall -Wextra -Werror -pthread ${CPPFLAGS:-} ${CFLAGS:-} ${LDFLAGS:-} -o dist/impermanence-walk src/drift/native/walk.c
${CC:-cc} -O2 -Wall -Wextra -Werror ${CPPFLAGS:-} ${CFLAGS:-} ${LDFLAGS:-} -o dist/mount.impermanence src/generator/native/mount-impermanence.c
