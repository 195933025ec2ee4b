import { lstatSync, statSync } from 'node:fs';

import type { Caller } from '../bus/freedesktop';

/** Who is asking: a bus caller's user and groups (as the bus vouches for them, bus/freedesktop). */
export type { Caller };

/**
 * Whether `caller` could see that `path` exists: root sees everything; anyone else must be able
 * to search (x) every directory above it, by the usual owner/group/other rule. Paths under a
 * private home are thus hidden from other users, as `ls` would hide them.
 */
export function canSee(caller: Caller, path: string, root = '/', stat: FolderStat = folderStat): boolean {
  if (caller.uid === 0) return true;
  const parts = path.split('/').filter(Boolean);
  let dir = root === '/' ? '' : root;
  for (let i = 0; i < parts.length; i++) {
    const st = stat(dir || '/');
    if (!st || !searchable(caller, st.uid, st.gid, st.mode)) return false;
    dir += '/' + parts[i];
  }
  return true;
}

/**
 * Whether `caller` could see what a drift item says about `path`: its name, as `ls` of its
 * folder would show it (canSee, and read permission on that folder: a 0711 home lets others
 * reach a file whose name they know, not learn the names), and, for a folder, what is inside it
 * (a count and size of the files in /root are /root's secret).
 */
export function canSeeContents(caller: Caller, path: string, root = '/', stat: FolderStat = folderStat): boolean {
  if (caller.uid === 0) return true;
  if (!canSee(caller, path, root, stat)) return false;
  const parent = path.slice(0, path.lastIndexOf('/')) || '/';
  const parentStat = stat(root === '/' ? parent : root + (parent === '/' ? '' : parent));
  if (!parentStat || !allowed(caller, parentStat.uid, parentStat.gid, parentStat.mode, 0o4)) return false;
  const target = root === '/' ? path : root + path;
  if (!lstatSync(target, { throwIfNoEntry: false })) return true;
  const st = stat(target);
  return !st || searchable(caller, st.uid, st.gid, st.mode);
}

/** Whether `caller` could list a folder of this owner, group and mode (read and search), as `ls` would. */
export function canListFolder(caller: Caller, uid: number, gid: number, mode: number): boolean {
  if (caller.uid === 0) return true;
  return allowed(caller, uid, gid, mode, 0o4) && allowed(caller, uid, gid, mode, 0o1);
}

/** A folder's owner, group and mode, or undefined if it is none (see folderStat). */
export type FolderStat = (path: string) => { uid: number; gid: number; mode: number } | undefined;

/**
 * canSee and canSeeContents for one caller over many paths at once (a list of 10,000 entries):
 * each folder on the way is looked at once, not once per path below it. Meant to be used for one
 * answer and dropped: what it saw of the folders is not kept up to date.
 */
export function visibilityFor(caller: Caller, root = '/') {
  const seen = new Map<string, ReturnType<FolderStat>>();
  const stat: FolderStat = (path) => {
    if (seen.has(path)) return seen.get(path);
    const st = folderStat(path);
    const kept = st && { uid: st.uid, gid: st.gid, mode: st.mode };
    seen.set(path, kept);
    return kept;
  };
  return {
    canSee: (path: string, under = root) => canSee(caller, path, under, stat),
    canSeeContents: (path: string) => canSeeContents(caller, path, root, stat),
  };
}

/**
 * A folder's owner and mode; undefined if it is not a folder. A symlink is followed only when
 * root owns it (like /home → /var/home): one a user planted is not a way in.
 */
function folderStat(path: string) {
  const st = lstatSync(path, { throwIfNoEntry: false });
  if (!st) return undefined;
  if (st.isDirectory()) return st;
  if (st.isSymbolicLink() && st.uid === 0) {
    const target = statSync(path, { throwIfNoEntry: false });
    return target?.isDirectory() ? target : undefined;
  }
  return undefined;
}

function searchable(caller: Caller, uid: number, gid: number, mode: number): boolean {
  return allowed(caller, uid, gid, mode, 0o1);
}

/** The owner/group/other rule for one permission bit (4 read, 1 search). */
export function allowed(caller: Caller, uid: number, gid: number, mode: number, bit: number): boolean {
  if (caller.uid === uid) return (mode & (bit << 6)) !== 0;
  if (caller.gids.includes(gid)) return (mode & (bit << 3)) !== 0;
  return (mode & bit) !== 0;
}
