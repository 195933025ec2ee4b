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
  return inner.length > outer.length && inner.startsWith(outer === '/' ? '/' : outer + '/');
}
