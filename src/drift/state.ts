import { readdirSync, readlinkSync, statSync } from 'node:fs';
import type { Entry } from '../config/resolve';
import { mountUnitName } from '../config/unit-name';
import { storageIsMounted } from './mountinfo';

/** How an entry stands on the running system. */
export type EntryState = 'mounted' | 'unmounted' | 'linked' | 'unlinked' | 'replaced';
export type Method = 'bind' | 'symlink';

export interface EntryStatus {
  method: Method;
  state: EntryState;
  unit: string;
  /** Set when the entry is unmounted because its storage root is not a mounted filesystem of its own. */
  storageUnmounted?: boolean;
}

export interface SystemView {
  /** Mount points, as seen from the root (already prefixed with `root` for a sandbox). */
  mountPoints: Set<string>;
  /** The root the entries live under: "/" on a real system, a folder for a sandbox. */
  root: string;
  /**
   * The mount units the generator wrote this boot (see generatedMounts), which tell a file that
   * was bind-mounted from one that was symlinked; unknown (an image, a sandbox): a file is
   * expected to be bind-mounted when storage holds it.
   */
  generated?: Set<string>;
}

/**
 * The method an entry was activated with, and whether it is in place. Every entry of a storage
 * root that is not mounted is *unmounted*: nothing of it is kept, whatever stands at its path
 * (impermanence-prepare refuses to activate it at boot). A file is bind-mounted when a mount
 * stands at its path or the generator wrote a mount unit for it; a symlink to its source is in
 * place (`linked`) even when the source has become a file since (a program wrote through the
 * symlink: the content is kept); another file standing there replaced the symlink.
 */
export function entryStatus(entry: Entry, view: SystemView, sourceIsFile: (source: string) => boolean): EntryStatus {
  const at = view.root === '/' ? entry.path : view.root + entry.path;
  const mounted = view.mountPoints.has(at);
  let unit = '';
  try {
    unit = mountUnitName(entry.path);
  } catch {
    // refused by the config already; never let it stop a status
  }
  if (!storageIsMounted(entry.storage, view.root, view.mountPoints)) {
    return { method: entry.kind === 'directory' || mounted ? 'bind' : 'symlink', state: 'unmounted', unit, storageUnmounted: true };
  }
  if (entry.kind === 'directory') return { method: 'bind', state: mounted ? 'mounted' : 'unmounted', unit };
  if (mounted) return { method: 'bind', state: 'mounted', unit };
  let target: string | undefined;
  let missing = false;
  try {
    target = readlinkSync(at);
  } catch (err) {
    missing = (err as NodeJS.ErrnoException).code === 'ENOENT';
  }
  if (target === entry.source) return { method: 'symlink', state: 'linked', unit: '' };
  const bound = view.generated
    ? view.generated.has(unit)
    : entry.method === 'auto' && sourceIsFile(view.root === '/' ? entry.source : view.root + entry.source);
  if (bound) return { method: 'bind', state: 'unmounted', unit };
  return { method: 'symlink', state: missing ? 'unlinked' : 'replaced', unit: '' };
}

/** Where systemd keeps what generators wrote this boot. */
export const GENERATOR_DIR = '/run/systemd/generator';

let generatedCache: { dir: string; mtimeMs: number; names: Set<string> } | undefined;

/** The mount units in the generator folder under `root`, or undefined where there is none (re-read only when it changes). */
export function generatedMounts(root: string): Set<string> | undefined {
  const dir = (root === '/' ? '' : root) + GENERATOR_DIR;
  let mtimeMs: number;
  try {
    mtimeMs = statSync(dir).mtimeMs;
  } catch {
    return undefined;
  }
  if (generatedCache?.dir === dir && generatedCache.mtimeMs === mtimeMs) return generatedCache.names;
  const names = new Set(readdirSync(dir).filter((n) => n.endsWith('.mount')));
  generatedCache = { dir, mtimeMs, names };
  return names;
}
