import { readlinkSync } from 'node:fs';
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
}

/**
 * The method an entry was activated with, and whether it is in place. Every entry of a storage
 * root that is not mounted is *unmounted*: nothing of it is kept, whatever stands at its path
 * (impermanence-prepare refuses to activate it at boot). A file is expected to be
 * bind-mounted when a mount stands at its path or when the generator would have chosen `bind`
 * (method auto and a regular file in storage); otherwise a symlink to its source is expected.
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
  if (entry.method === 'auto' && sourceIsFile(view.root === '/' ? entry.source : view.root + entry.source)) {
    return { method: 'bind', state: 'unmounted', unit };
  }
  let target: string | undefined;
  try {
    target = readlinkSync(at);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    return { method: 'symlink', state: code === 'ENOENT' ? 'unlinked' : 'replaced', unit: '' };
  }
  return { method: 'symlink', state: target === entry.source ? 'linked' : 'replaced', unit: '' };
}
