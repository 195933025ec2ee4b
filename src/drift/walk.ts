import { closeSync, constants, fstatSync, lstatSync, opendirSync, openSync } from 'node:fs';
import { closedChain, commonDir, count, LOOSE_FILES_MAX, looseKey, type Group } from './groups';

/**
 * The drift walk in Node (the fallback when impermanence-walk is not installed, and the live
 * re-measure of one group): by file descriptor, never following a symlink.
 */

/**
 * The files right inside known folder `dir` (changed since `since`), read as a stream (never the
 * whole listing at once) by descriptor: one group per file up to LOOSE_FILES_MAX, else one group
 * under looseKey(dir). Yields to the event loop now and then.
 */
export async function looseFiles(rootHost: string, dir: string, since: number, skip: (p: string) => boolean): Promise<Map<string, Group>> {
  const out = new Map<string, Group>();
  const fd = openBeneath(rootHost, dir);
  if (fd === undefined) return out;
  const all: Group = { files: 0, bytes: 0, isDirectory: false };
  let handle;
  try {
    handle = opendirSync(`/proc/self/fd/${fd}`);
  } catch {
    closeSync(fd);
    return out;
  }
  // A folder not everyone may list: the count of its files is shown to those who may.
  const chain = closedChain(all, dir, fstatSync(fd), -1);
  try {
    let n = 0;
    for (let d = handle.readSync(); d; d = handle.readSync()) {
      if (++n % 2048 === 0) await new Promise((r) => setImmediate(r));
      if (d.isDirectory()) continue;
      const path = dir === '/' ? `/${d.name}` : `${dir}/${d.name}`;
      if (skip(path)) continue;
      const st = lstatSync(`/proc/self/fd/${fd}/${d.name}`, { throwIfNoEntry: false });
      if (!st || st.isDirectory() || (since && st.ctimeMs / 1000 < since)) continue;
      count(all, chain, 1, st.size);
      if (all.files <= LOOSE_FILES_MAX) out.set(path, { files: 1, bytes: st.size, isDirectory: false });
      else if (out.size) out.clear();
    }
  } finally {
    handle.closeSync();
    closeSync(fd);
  }
  if (all.files > LOOSE_FILES_MAX) out.set(looseKey(dir), all);
  return out;
}


export interface WalkOptions {
  start: string;
  /** The group the start folder's files count towards, if any. */
  initial?: Group;
  /** The closed folder (index in initial.closed) the start folder's files count towards; -1: none. */
  initialChain?: number;
  host: (logical: string) => string;
  dev: number;
  since: number;
  /** Directories whose children each start a group of their own. */
  known: Set<string>;
  skip: (logical: string) => boolean;
  signal?: AbortSignal;
  progress: () => void;
}

/**
 * Walks one filesystem below `start`, grouping files: a child of a known directory, or of a
 * child of one, starts a group; everything below it counts towards that group. Yields to the event loop now and then,
 * so that a daemon keeps answering during a long scan, and stops when `signal` is aborted.
 */
export async function walk(w: WalkOptions): Promise<Map<string, Group>> {
  const groups = new Map<string, Group>();
  // chain: the closed folder (index in group.closed) the folder's files count towards; -1: none.
  const stack: Array<{ dir: string; group: Group | undefined; chain: number }> = [{ dir: w.start, group: w.initial, chain: w.initialChain ?? -1 }];
  const rootHost = w.host('/');
  const knownSeen: string[] = [];
  let sinceYield = 0;
  while (stack.length) {
    const { dir, group, chain } = stack.pop()!;
    // Each folder by descriptor (see openBeneath), its entries looked at through it.
    const fd = openBeneath(rootHost, dir);
    if (fd === undefined) continue; // vanished, unreadable, or a symlink now: nothing to report from it
    const at = `/proc/self/fd/${fd}`;
    let names;
    try {
      // Read as a stream: a folder of a million files is never listed whole in memory.
      try {
        names = opendirSync(at);
      } catch {
        continue;
      }
      // Groups (see groupOf): every child of a known folder; every subfolder of such a child.
      const known = w.known.has(dir);
      if (known) knownSeen.push(dir);
      const childOfKnown = !known && dir !== '/' && w.known.has(dir.slice(0, dir.lastIndexOf('/')) || '/');
      for (let d = names.readSync(); d; d = names.readSync()) {
        const path = dir === '/' ? `/${d.name}` : `${dir}/${d.name}`;
        if (w.skip(path)) continue;
        // The files right inside a known folder are listed at the end (see looseFiles).
        if (known && !d.isDirectory()) continue;
        let g = group;
        if (known || (childOfKnown && d.isDirectory())) {
          g = { files: 0, bytes: 0, isDirectory: d.isDirectory() };
          groups.set(path, g);
        }
        if (++sinceYield >= 2048) {
          sinceYield = 0;
          await new Promise((r) => setImmediate(r));
          if (w.signal?.aborted) throw new Error('scan cancelled');
        }
        if (d.isDirectory()) {
          const st = lstatSync(`${at}/${d.name}`, { throwIfNoEntry: false });
          if (st?.isDirectory() && st.dev === w.dev) stack.push({ dir: path, group: g, chain: g ? closedChain(g, path, st, g === group ? chain : -1) : -1 });
          continue;
        }
        w.progress();
        if (!g) continue;
        const st = lstatSync(`${at}/${d.name}`, { throwIfNoEntry: false, bigint: false });
        if (!st || (w.since && st.ctimeMs / 1000 < w.since)) continue;
        count(g, g === group ? chain : -1, 1, st.size);
        if (g.isDirectory) g.common = commonDir(g.common, dir);
      }
    } finally {
      names?.closeSync();
      closeSync(fd);
    }
  }
  for (const dir of knownSeen) for (const [key, g] of await looseFiles(rootHost, dir, w.since, w.skip)) groups.set(key, g);
  return groups;
}

const DIR_NOFOLLOW = constants.O_RDONLY | constants.O_DIRECTORY | constants.O_NOFOLLOW;

/**
 * Opens the folder at logical path `logical` below `rootHost` (the root or a storage root,
 * whose own path is trusted) one component at a time, each opened through its parent's
 * descriptor without following a symlink: `/proc/self/fd/N/NAME` with O_NOFOLLOW is
 * openat(N, NAME, O_NOFOLLOW). A folder swapped for a symlink before or during a walk done as
 * root makes the open fail, so the walk never follows it. Undefined when it cannot be opened.
 */
export function openBeneath(rootHost: string, logical: string): number | undefined {
  let fd: number;
  try {
    fd = openSync(rootHost, constants.O_RDONLY | constants.O_DIRECTORY);
  } catch {
    return undefined;
  }
  for (const name of logical.split('/')) {
    if (!name) continue;
    let next: number;
    try {
      next = openSync(`/proc/self/fd/${fd}/${name}`, DIR_NOFOLLOW);
    } catch {
      closeSync(fd);
      return undefined;
    }
    closeSync(fd);
    fd = next;
  }
  return fd;
}

