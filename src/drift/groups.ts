import { addClosed, isClosedMode, type ClosedDir } from './report';

/**
 * The grouping rules of drift: how what was written on the root (or in a storage root) is cut
 * into items. Below the deepest folder holding persisted paths ("known" folders), each child is
 * a group, and so is each subfolder of such a child: /var/lib/foo and /var/lib/bar, or
 * ~/.config/a and ~/.config/b, are told apart, while the files right inside /var/lib/foo belong
 * to it. The files right inside a known folder are items of their own (see LOOSE_FILES_MAX).
 * Every walk (walk.ts, walker.ts) and the live watch (live-drift.ts) group by groupOf().
 */

/** What was counted in one group. */
export interface Group {
  files: number;
  bytes: number;
  isDirectory: boolean;
  /** the deepest folder holding all its counted files */
  common?: string;
  /** the folders in it not everyone may list, with what was counted right inside each (see DriftItem.closed) */
  closed?: ClosedDir[];
}

/**
 * The files right inside a folder that holds persisted paths (a home with a persisted ~/.ssh,
 * /etc with a persisted file) are drift items of their own, up to this many per folder; beyond,
 * they are one item for all of them, so that a user writing a million files in their home makes
 * one item, not a million (the daemon's memory and the reports stay bounded).
 */
export const LOOSE_FILES_MAX = 64;

/** The group key of the files right inside known folder `dir`, once they are one item. NUL is in no path. */
export function looseKey(dir: string): string {
  return (dir === '/' ? '' : dir) + '/\0';
}

/** The folder of a looseKey(); undefined for any other key. */
export function looseDir(key: string): string | undefined {
  return key.endsWith('/\0') ? key.slice(0, -2) || '/' : undefined;
}

/**
 * The group of `path` (not "/"), given the known folders and what is at a path now (`isDir`:
 * true, false, or undefined when nothing is there). A child of the deepest known folder above
 * `path` is a group when it is a folder (or gone: looked at as the group it may have been), one
 * of the folder's loose files (looseKey) when it is a file; a subfolder of that child is a group
 * of its own; anything deeper belongs to the subfolder's group.
 */
export function groupOf(path: string, known: Set<string>, isDir: (p: string) => boolean | undefined): string {
  // The ends of path's components, and the number of components of its deepest known proper ancestor.
  const ends: number[] = [];
  let deepest = 0;
  for (let i = 1; i <= path.length; i++) {
    if (i < path.length && path.charCodeAt(i) !== 47 /* / */) continue;
    ends.push(i);
    if (i < path.length && known.has(path.slice(0, i))) deepest = ends.length;
  }
  const n = ends.length;
  const prefix = (c: number) => (c === 0 ? '/' : path.slice(0, ends[c - 1]));
  if (n === deepest + 1) return isDir(path) === false ? looseKey(prefix(deepest)) : path;
  if (n === deepest + 2) return isDir(path) ? path : prefix(deepest + 1);
  return prefix(deepest + 2);
}

/** Records `st`, the folder at `path` in group `g`, if not everyone may list it: the index of the closed folder its contents count towards. */
export function closedChain(g: Group, path: string, st: { uid: number; gid: number; mode: number }, parent: number): number {
  if (!isClosedMode(st.mode)) return parent;
  return addClosed((g.closed ??= []), { path, uid: st.uid, gid: st.gid, mode: st.mode & 0o7777, parent });
}

/** Counts a file (or a folder's files) in group `g` and in the closed folder `chain` of it, if any. */
export function count(g: Group, chain: number, files: number, bytes: number): void {
  g.files += files;
  g.bytes += bytes;
  if (chain < 0) return;
  const c = g.closed![chain]!;
  c.files += files;
  c.bytes += bytes;
}

/** The longest common folder of two folders. */
export function commonDir(a: string | undefined, b: string): string {
  if (a === undefined || a === b) return b;
  let c = a;
  while (c !== '/' && !(b.startsWith(c) && (b.length === c.length || b.charCodeAt(c.length) === 47 /* / */))) c = c.slice(0, c.lastIndexOf('/')) || '/';
  return c;
}
