import { lstatSync, statSync } from 'node:fs';

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
    const st = folderStat(dir || '/');
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
  const target = root === '/' ? path : root + path;
  if (!lstatSync(target, { throwIfNoEntry: false })) return true;
  const st = folderStat(target);
  return !st || searchable(caller, st.uid, st.gid, st.mode);
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
  if (caller.uid === uid) return (mode & 0o100) !== 0;
  if (caller.gids.includes(gid)) return (mode & 0o010) !== 0;
  return (mode & 0o001) !== 0;
}
