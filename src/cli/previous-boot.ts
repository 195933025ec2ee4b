import { spawnSync } from 'node:child_process';
import { lstatSync, mkdirSync, mkdtempSync, readdirSync, rmdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { normalizePath } from '../config/paths';
import type { WipeSettings } from '../config/wipe';
import { printable, printablePath } from '../shared/printable';
import { diffOffline, printReport } from './diff';
import { listSubvolumes, rankOldRoots } from './old-roots';
import type { OutputOptions } from './output';

type Print = (s: string) => void;

export class PreviousBootError extends Error {}

export type BtrfsWipe = Extract<WipeSettings, { method: 'btrfs' }>;

/** The [wipe] device as a /dev path (LABEL=, UUID=, … looked up with blkid). */
export function wipeDevice(wipe: BtrfsWipe): string {
  if (wipe.device.startsWith('/dev/')) return wipe.device;
  const r = spawnSync('blkid', ['-l', '-o', 'device', '-t', wipe.device], { encoding: 'utf8' });
  const device = r.stdout.trim();
  if (!device) throw new PreviousBootError(`device ${wipe.device} ([wipe] device) not found`);
  return device;
}

/**
 * Mounts the top level of the wipe's btrfs (read-only unless `writable`) on a private folder
 * under /run, hands it to `use`, and unmounts it.
 */
export async function withTopLevel<T>(wipe: WipeSettings, writable: boolean, use: (top: string, device: string) => Promise<T>): Promise<T> {
  if (wipe.method !== 'btrfs') throw new PreviousBootError(`[wipe] method = "${wipe.method}" has no subvolumes to work on (only btrfs has)`);
  const device = wipeDevice(wipe);
  const top = mkdtempSync('/run/impermanence-top-');
  const m = spawnSync('mount', ['-o', `${writable ? 'rw' : 'ro'},subvolid=5`, device, top], { encoding: 'utf8' });
  if (m.status !== 0) {
    rmdirSync(top);
    throw new PreviousBootError(`cannot mount the top level of ${device}: ${m.stderr.trim()}`);
  }
  try {
    return await use(top, device);
  } finally {
    // Cleanup never hides the result (or the error) of `use`: a failure here is only told.
    let u = spawnSync('umount', [top], { encoding: 'utf8' });
    if (u.status !== 0) u = spawnSync('umount', ['-l', top], { encoding: 'utf8' });
    if (u.status !== 0) {
      process.stderr.write(`impermanencectl: warning: cannot unmount ${printablePath(top)}: ${printable((u.stderr || u.error?.message || '').trim())}\n`);
    } else {
      try {
        rmdirSync(top);
      } catch (e) {
        process.stderr.write(`impermanencectl: warning: cannot remove ${printablePath(top)}: ${printable((e as Error).message)}\n`);
      }
    }
  }
}

/** The kept old root of boot `boot` (1: the previous boot, the newest old root), on the mounted top level. */
async function withOldRoot<T>(wipe: WipeSettings, boot: number, use: (oldRoot: string, name: string) => Promise<T>): Promise<T> {
  if (wipe.method !== 'btrfs') throw new PreviousBootError(`[wipe] method = "${wipe.method}" keeps no old roots (only btrfs does)`);
  return withTopLevel(wipe, false, async (top) => {
    // Ranked as the wipe ranks them, by creation (old-roots.ts); by name only when btrfs cannot
    // list the subvolumes (then a boot whose clock was wrong is out of place).
    const listed = listSubvolumes(top);
    let names: string[];
    if ('subvolumes' in listed) names = rankOldRoots(listed.subvolumes, wipe.oldRoots);
    else {
      try {
        names = rankOldRoots(readdirSync(join(top, wipe.oldRoots)).map((n) => `${wipe.oldRoots}/${n}`), wipe.oldRoots);
      } catch {
        names = [];
      }
    }
    const name = names[boot - 1];
    if (!name) throw new PreviousBootError(`no old root for boot ${boot} in ${wipe.oldRoots} on ${wipe.device} (${names.length} kept)`);
    return use(join(top, wipe.oldRoots, name), `${wipe.oldRoots}/${name}`);
  });
}

/** When the old root was made (the start of that boot), from `btrfs subvolume show`. */
function creationTime(subvolume: string): number {
  const r = spawnSync('btrfs', ['subvolume', 'show', subvolume], { encoding: 'utf8' });
  const m = /Creation time:\s*(\S+) (\S+) ([+-]\d\d)(\d\d)/.exec(r.stdout);
  if (!m) throw new PreviousBootError(`cannot read the creation time of ${subvolume}: ${r.stderr.trim()}`);
  return Date.parse(`${m[1]}T${m[2]}${m[3]}:${m[4]}`) / 1000;
}

/** `diff --previous-boot [--boot N]`: what that boot wrote outside persisted paths, from its kept old root. */
export async function diffPreviousBoot(wipe: WipeSettings, dirs: string[], required: string[], boot: number, o: OutputOptions, out: Print, err: Print): Promise<number> {
  return withOldRoot(wipe, boot, async (oldRoot, name) => {
    const since = creationTime(oldRoot);
    const report = await diffOffline(dirs, required, oldRoot, since, err);
    // The old root's mount points are empty and its storage is not mounted there: only what was written counts.
    report.items = report.items.filter((i) => i.kind === 'ephemeral');
    if (o.json === 'off' && !o.quiet && o.legend) out(`Boot ${boot} (its root is kept in ${name}):\n`);
    printReport(report, o, out);
    return report.items.length ? 3 : 0;
  });
}

/** `restore PATH [--boot N] [--to DIR]`: copies PATH back from a kept old root; never overwrites. */
export async function restore(wipe: WipeSettings, rawPath: string, boot: number, to: string | undefined, out: Print): Promise<number> {
  let path: string;
  try {
    path = normalizePath(rawPath, { relative: false });
  } catch (e) {
    throw new PreviousBootError(`${printablePath(rawPath)}: ${(e as Error).message}`);
  }
  if (path === '/') throw new PreviousBootError('give a file or folder, not /');
  const dest = to === undefined ? path : join(to, path);
  if (lstatSync(dest, { throwIfNoEntry: false })) throw new PreviousBootError(`${printablePath(dest)} exists: not overwriting it (move it away, or restore elsewhere with --to DIR)`);
  return withOldRoot(wipe, boot, async (oldRoot, name) => {
    // Every folder on the way must be a folder in the old root, never a symlink out of it.
    let at = oldRoot;
    const parts = path.split('/').filter(Boolean);
    for (const [i, part] of parts.entries()) {
      at = join(at, part);
      const st = lstatSync(at, { throwIfNoEntry: false });
      if (!st) throw new PreviousBootError(`${printablePath(path)} was not in the root of boot ${boot} (${name})`);
      if (i < parts.length - 1 && !st.isDirectory()) throw new PreviousBootError(`${printablePath(join('/', ...parts.slice(0, i + 1)))} is not a folder in ${name} (a symlink is not followed)`);
    }
    mkdirSync(dirname(dest), { recursive: true });
    const cp = spawnSync('cp', ['-a', '--reflink=auto', '--no-target-directory', at, dest], { encoding: 'utf8' });
    if (cp.status !== 0) throw new PreviousBootError(`copying ${printablePath(path)} failed: ${printable(cp.stderr.trim())}`);
    out(`restored ${printablePath(dest)} from ${name}\n`);
    return 0;
  });
}
