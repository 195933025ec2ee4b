/**
 * The kept old roots of the btrfs wipe, ranked as the initrd's wipe ranks them for keep.count
 * (src/wipe/impermanence-wipe.sh, "Retention"): newest first by btrfs's creation generation,
 * then subvolume ID (both only grow), never by name. A name comes from the initrd's clock, which
 * may be behind (no RTC, a dead CMOS battery) or start at the same second at every boot (.10
 * sorts before .9): `wipe status` and `diff --previous-boot` / `restore` must pick the same old
 * roots as the wipe does.
 */
import { spawnSync } from 'node:child_process';

/** An old root's name: YYYY-MM-DD_HHMMSS, then anything (".1" for a second one in that second); the groups: the date, the hours, minutes and seconds. */
const OLD_ROOT_NAME = /^(\d{4}-\d\d-\d\d)_(\d\d)(\d\d)(\d\d)/;

/** The UTC time an old root is named for (ms since the epoch), or undefined for another name. */
export function oldRootTime(name: string): number | undefined {
  const m = OLD_ROOT_NAME.exec(name);
  return m ? Date.parse(`${m[1]}T${m[2]}:${m[3]}:${m[4]}Z`) : undefined;
}

/** A subvolume from `btrfs subvolume list -c`: its path from the top level, its ID, the generation it was created in. */
export interface Subvolume {
  path: string;
  id: number;
  cgen: number;
}

/** The lines of `btrfs subvolume list -c [-a]` (a path may hold spaces; `-a` prefixes some with <FS_TREE>/). */
export function parseSubvolumeList(text: string): Subvolume[] {
  return text.split('\n').flatMap((l) => {
    const m = /^ID (\d+) gen \d+ cgen (\d+) top level \d+ path (?:<FS_TREE>\/)?(.*)$/.exec(l);
    return m ? [{ id: Number(m[1]), cgen: Number(m[2]), path: m[3]! }] : [];
  });
}

/** `btrfs subvolume list -c` of the filesystem at `at` (`all`: -a, every subvolume, from the filesystem of `at`). */
export function listSubvolumes(at: string, all = false): { subvolumes: Subvolume[] } | { error: string } {
  const r = spawnSync('btrfs', ['subvolume', 'list', '-c', ...(all ? ['-a'] : []), at], { encoding: 'utf8' });
  if (r.status !== 0) return { error: (r.stderr || r.error?.message || 'btrfs subvolume list failed').trim() };
  return { subvolumes: parseSubvolumeList(r.stdout) };
}

/**
 * The names of the old roots directly in `oldRoots` among `subvolumes`, newest first, by creation
 * as the wipe ranks them. Names alone (strings: no btrfs list to rank them by, e.g. read from the
 * folder when btrfs cannot list) are ranked by name, the best left then, wrong when the clock was.
 */
export function rankOldRoots(subvolumes: readonly (Subvolume | string)[], oldRoots: string): string[] {
  const prefix = `${oldRoots}/`;
  const roots = subvolumes
    .map((s) => (typeof s === 'string' ? { path: s } : s))
    .filter((s) => s.path.startsWith(prefix) && !s.path.slice(prefix.length).includes('/') && OLD_ROOT_NAME.test(s.path.slice(prefix.length)))
    .map((s) => ({ ...s, name: s.path.slice(prefix.length) }));
  if (roots.every((r): r is typeof r & Subvolume => 'cgen' in r)) {
    return roots.sort((a, b) => b.cgen - a.cgen || b.id - a.id).map((r) => r.name);
  }
  return roots.map((r) => r.name).sort((a, b) => (a < b ? 1 : a > b ? -1 : 0));
}
