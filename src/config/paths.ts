/**
 * Normalizes a path from the config: collapses repeated slashes and drops a trailing one.
 * Refuses what cannot be persisted safely: empty paths, control characters, `.` and `..`
 * components (they would let an entry point somewhere other than it reads).
 * Returns the normalized path or throws with what is wrong.
 */
export function normalizePath(raw: string, opts: { relative: boolean }): string {
  if (!opts.relative && NORMAL.test(raw)) return raw; // fast path: already normal
  if (raw === '') throw new Error('path is empty');
  // eslint-disable-next-line no-control-regex
  if (/[\u0000-\u001f\u007f]/.test(raw)) throw new Error(`path ${JSON.stringify(raw)} contains a control character`);
  const absolute = raw.startsWith('/');
  if (!opts.relative && !absolute) {
    throw new Error(`path ${JSON.stringify(raw)} is relative; write it from the root, such as "/${raw.replace(/^\.\//, '')}"`);
  }
  if (opts.relative && absolute) {
    throw new Error(`path ${JSON.stringify(raw)} is absolute; home paths are written relative to the home, such as "${raw.replace(/^\/+/, '')}"`);
  }
  const parts = raw.split('/').filter((p) => p !== '');
  for (const part of parts) {
    if (part === '.' || part === '..') {
      throw new Error(`path ${JSON.stringify(raw)} contains "${part}"; write the path without "." or ".." components`);
    }
  }
  if (parts.length === 0) throw new Error(absolute ? 'the root directory "/" itself cannot be persisted' : 'path is empty');
  return (absolute ? '/' : '') + parts.join('/');
}

/** An absolute path with no empty, "." or ".." component and no control character. */
// eslint-disable-next-line no-control-regex
const NORMAL = /^(?:\/(?!\.\.?(?:\/|$))[^/\u0000-\u001f\u007f]+)+$/;

/** The parent directories of an absolute normalized path, outermost first, without "/". */
export function parentsOf(path: string): string[] {
  const out: string[] = [];
  let i = path.indexOf('/', 1);
  while (i !== -1) {
    out.push(path.slice(0, i));
    i = path.indexOf('/', i + 1);
  }
  return out;
}

/** True when `inner` is strictly below `outer` (both absolute and normalized). */
export function isInside(inner: string, outer: string): boolean {
  // No `outer + '/'`: this runs for every entry against every storage root.
  return inner.length > outer.length && inner.startsWith(outer) && (outer === '/' || inner.charCodeAt(outer.length) === 0x2f);
}

/** Linux's and systemd's limits: NAME_MAX bytes per component, PATH_MAX bytes with the final NUL. */
const NAME_MAX = 255;
const PATH_MAX = 4096;

/**
 * Why systemd (or the kernel) would refuse a normalized absolute path as a mount point or
 * source, or `undefined` if it would not. systemd reads Where= with its surrounding whitespace
 * stripped, so a path ending in a space gets a unit whose name does not match its Where=
 * ("Where= setting doesn't match unit name", the unit is refused); systemd's path_is_valid()
 * refuses a component longer than NAME_MAX bytes or a path of PATH_MAX bytes or more, as the
 * kernel does (ENAMETOOLONG); a lone UTF-16 surrogate cannot be written as UTF-8 at all.
 * Control characters, "." and ".." were refused by normalizePath.
 */
export function systemdPathProblem(path: string): string | undefined {
  if (path.endsWith(' ')) {
    return `path ${JSON.stringify(path)} ends with a space, which systemd strips from Where= and What=: its mount unit would be refused; rename it`;
  }
  if (/[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/.test(path)) {
    return `path ${JSON.stringify(path)} is not valid Unicode (a lone surrogate): it has no UTF-8 name`;
  }
  if (path.length * 3 < NAME_MAX) return undefined; // at most 3 bytes per UTF-16 unit: nothing can be too long
  const bytes = Buffer.byteLength(path);
  if (bytes >= PATH_MAX) return `path is ${bytes} bytes long; Linux and systemd allow at most ${PATH_MAX - 1}`;
  for (const part of path.split('/')) {
    if (part.length * 3 <= NAME_MAX) continue;
    const n = Buffer.byteLength(part);
    if (n > NAME_MAX) return `the name ${JSON.stringify(part.slice(0, 40) + '…')} in the path is ${n} bytes long; Linux and systemd allow at most ${NAME_MAX}`;
  }
  return undefined;
}
