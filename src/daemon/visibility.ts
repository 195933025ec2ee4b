import { statSync } from 'node:fs';

/** Who is asking: a bus caller's user and groups. */
export interface Caller { uid: number; gids: number[] }

/**
 * Whether `caller` could see that `path` exists: root sees everything; anyone else must be able
 * to search (x) every directory above it, by the usual owner/group/other rule. Paths under a
 * private home are thus hidden from other users, as `ls` would hide them.
 */
export function canSee(caller: Caller, path: string, root = '/'): boolean {
  if (caller.uid === 0) return true;
  const parts = path.split('/').filter(Boolean);
  let dir = root === '/' ? '' : root;
  for (let i = 0; i < parts.length; i++) {
    const st = statSync(dir || '/', { throwIfNoEntry: false });
    if (!st || !searchable(caller, st.uid, st.gid, st.mode)) return false;
    dir += '/' + parts[i];
  }
  return true;
}

/**
 * Whether `caller` could see what a drift item says about `path`: the path itself (canSee) and,
 * for a folder, what is inside it (a count and size of the files in /root are /root's secret).
 */
export function canSeeContents(caller: Caller, path: string, root = '/'): boolean {
  if (caller.uid === 0) return true;
  if (!canSee(caller, path, root)) return false;
  const st = statSync(root === '/' ? path : root + path, { throwIfNoEntry: false });
  return !st?.isDirectory() || searchable(caller, st.uid, st.gid, st.mode);
}

function searchable(caller: Caller, uid: number, gid: number, mode: number): boolean {
  if (caller.uid === uid) return (mode & 0o100) !== 0;
  if (caller.gids.includes(gid)) return (mode & 0o010) !== 0;
  return (mode & 0o001) !== 0;
}
