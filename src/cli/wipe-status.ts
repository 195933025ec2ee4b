import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { KEEP_PREVIOUS, type WipeSettings } from '../config/wipe';
import { printable } from '../shared/printable';
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

/** Old roots named YYYY-MM-DD_HHMMSS[.N] in a subvolume list, newest first, with what the next wipe does to them. */
export function oldRootsOf(paths: readonly string[], wipe: Extract<WipeSettings, { method: 'btrfs' }>, now: number): OldRoot[] {
  const prefix = `${wipe.oldRoots}/`;
  const roots = paths
    .filter((p) => p.startsWith(prefix) && !p.slice(prefix.length).includes('/'))
    .map((p) => p.slice(prefix.length))
    .flatMap((name) => {
      const m = /^(\d{4}-\d\d-\d\d)_(\d\d)(\d\d)(\d\d)/.exec(name);
      return m ? [{ name, time: Date.parse(`${m[1]}T${m[2]}:${m[3]}:${m[4]}Z`) }] : [];
    })
    .sort((a, b) => (a.name < b.name ? 1 : -1));
  // The next wipe adds one old root first: it counts against keep.count.
  return roots.map((r, i) => {
    let expires: string | null = null;
    if (wipe.keep.days > 0 && now - r.time > wipe.keep.days * 86_400_000) expires = `older than ${wipe.keep.days} days`;
    else if (wipe.keep.count > 0 && i + 2 > wipe.keep.count) expires = `beyond the ${wipe.keep.count} newest`;
    return { ...r, expires };
  });
}

/** `impermanencectl wipe status`: the config, this boot's wipe, and for btrfs the pristine and the old roots. */
export function wipeStatus(wipe: WipeSettings, json: boolean, out: (s: string) => void): number {
  const last = lastWipe();
  let subvolumes: string[] | undefined;
  let listError: string | undefined;
  if (wipe.method === 'btrfs') {
    const r = spawnSync('btrfs', ['subvolume', 'list', '-a', '/'], { encoding: 'utf8' });
    if (r.status === 0) subvolumes = r.stdout.split('\n').map((l) => /^ID \d+ gen \d+ top level \d+ path (?:<FS_TREE>\/)?(.*)$/.exec(l)?.[1]).filter((p): p is string => !!p);
    else listError = (r.stderr || r.error?.message || 'btrfs subvolume list failed').trim();
  }
  const roots = wipe.method === 'btrfs' && subvolumes ? oldRootsOf(subvolumes, wipe, Date.now()) : undefined;
  const pristine = wipe.method === 'btrfs' && wipe.from !== 'empty' && subvolumes ? subvolumes.includes(wipe.from) : undefined;
  // wipe update keeps the previous pristines as FROM.<UTC time>, newest first.
  const previous = wipe.method === 'btrfs' && wipe.from !== 'empty' && subvolumes ? previousPristines(subvolumes, wipe.from) : undefined;
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
