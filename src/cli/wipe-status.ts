import { readFileSync } from 'node:fs';
import { KEEP_PREVIOUS, type WipeSettings } from '../config/wipe';
import { printable } from '../shared/printable';
import { listSubvolumes, oldRootTime, rankOldRoots, type Subvolume } from './old-roots';
import { previousPristines } from './pristine';

/** What the initrd's wipe left in /run at this boot: done, failed (refused) or skipped, and why. */
export function lastWipe(run = '/run/impermanence'): { result: 'done' | 'failed' | 'skipped' | 'none'; message: string } {
  for (const result of ['failed', 'skipped', 'done'] as const) {
    try {
      return { result, message: readFileSync(`${run}/wipe-${result}`, 'utf8').trim() };
    } catch {
      // not this one
    }
  }
  return { result: 'none', message: 'no wipe ran at this boot (no /run/impermanence/wipe-*)' };
}

export interface OldRoot { name: string; time: number; expires: string | null }

/**
 * The old roots in a subvolume list (`btrfs subvolume list -c`; names alone are ranked by name),
 * newest first as the wipe ranks them (old-roots.ts), with what the next wipe does to them.
 */
export function oldRootsOf(subvolumes: readonly (Subvolume | string)[], wipe: Extract<WipeSettings, { method: 'btrfs' }>, now: number): OldRoot[] {
  const roots = rankOldRoots(subvolumes, wipe.oldRoots).map((name) => ({ name, time: oldRootTime(name)! }));
  // As the wipe: when an old root is named later than now, the clock is behind or was wrong when
  // that one was named, and none is expired by age.
  const byAge = wipe.keep.days > 0 && roots.every((r) => r.time <= now);
  // The next wipe adds one old root first, the newest (the root it moves): it counts against keep.count.
  return roots.map((r, i) => {
    let expires: string | null = null;
    if (byAge && now - r.time > wipe.keep.days * 86_400_000) expires = `older than ${wipe.keep.days} days`;
    else if (wipe.keep.count > 0 && i + 2 > wipe.keep.count) expires = `beyond the ${wipe.keep.count} newest`;
    return { ...r, expires };
  });
}

/** `impermanencectl wipe status`: the config, this boot's wipe, and for btrfs the pristine and the old roots. */
export function wipeStatus(wipe: WipeSettings, json: boolean, out: (s: string) => void): number {
  const last = lastWipe();
  let subvolumes: Subvolume[] | undefined;
  let listError: string | undefined;
  if (wipe.method === 'btrfs') {
    // Every subvolume of the root's filesystem, with its creation generation (the old roots' rank).
    const r = listSubvolumes('/', true);
    if ('error' in r) listError = r.error;
    else subvolumes = r.subvolumes;
  }
  const paths = subvolumes?.map((s) => s.path);
  const roots = wipe.method === 'btrfs' && subvolumes ? oldRootsOf(subvolumes, wipe, Date.now()) : undefined;
  const pristine = wipe.method === 'btrfs' && wipe.from !== 'empty' && paths ? paths.includes(wipe.from) : undefined;
  // wipe update keeps the previous pristines as FROM.<UTC time>, newest first.
  const previous = wipe.method === 'btrfs' && wipe.from !== 'empty' && paths ? previousPristines(paths, wipe.from) : undefined;
  if (json) {
    out(JSON.stringify({ method: wipe.method, lastWipe: last, pristine: pristine ?? null, previousPristines: previous ?? null, oldRoots: roots ?? null, error: listError ?? null }, null, 2) + '\n');
    return last.result === 'failed' ? 3 : 0;
  }
  out(`method: ${wipe.method}\nthis boot: ${last.result}: ${printable(last.message)}\n`);
  if (wipe.method === 'btrfs') {
    out(`root: ${wipe.subvolume} on ${wipe.device}, made from ${wipe.from === 'empty' ? 'an empty subvolume' : `${wipe.from}${pristine === false ? ' (MISSING)' : ''}`}\n`);
    if (previous?.length) out(`previous pristines (kept by wipe update; it keeps the ${KEEP_PREVIOUS} newest): ${previous.join(', ')}\n`);
    if (listError) out(`old roots: cannot list subvolumes: ${printable(listError)}\n`);
    else {
      out(`old roots in ${wipe.oldRoots} (keep ${wipe.keep.days || 'any number of'} days, ${wipe.keep.count || 'any number'}): ${roots!.length}\n`);
      for (const r of roots!) out(`  ${r.name}${r.expires ? `  (deleted at the next wipe: ${r.expires})` : ''}\n`);
    }
  }
  return last.result === 'failed' ? 3 : 0;
}
