import type { ResolvedConfig } from '../config/resolve';
import type { UserRecord } from '../config/userdb';

/**
 * Drift: how the system differs from what the config declares.
 * - ephemeral: written on the wiped root outside every persisted path: lost at reboot
 * - unmounted: a declared bind mount (or symlink) that is not in place: writes there are lost
 * - replaced: a persisted symlink replaced by another file (a program writing by rename)
 * - orphan: content in storage that no entry declares any more
 * - attributes: a storage directory whose owner or mode differs from the declaration
 * - shadowed: files on the root hidden under a persisted mount, which storage does not hold
 */
export type DriftKind = 'ephemeral' | 'unmounted' | 'replaced' | 'orphan' | 'attributes' | 'shadowed';

export interface DriftItem {
  kind: DriftKind;
  /** The path on the root (for an orphan: in storage). */
  path: string;
  /** Files (not directories) it holds, and their size in bytes. */
  files: number;
  bytes: number;
  /** What is wrong, for a person. */
  detail: string;
  /** The config lines that would persist it (ephemeral), or what declares it (others). */
  suggestion: string;
}

export interface DriftReport {
  items: DriftItem[];
  /** Files looked at (for progress and benchmarks). */
  scanned: number;
  /** Written since (seconds since the epoch); 0 for everything. */
  since: number;
}

const KIND_ORDER: Record<DriftKind, number> = { unmounted: 0, replaced: 1, ephemeral: 2, shadowed: 3, attributes: 4, orphan: 5 };

/** Most urgent first: what breaks persistence, then what will be lost (largest first), then the rest. */
export function rank(items: DriftItem[]): DriftItem[] {
  return [...items].sort((a, b) => KIND_ORDER[a.kind] - KIND_ORDER[b.kind] || b.bytes - a.bytes || b.files - a.files || (a.path < b.path ? -1 : 1));
}

export function formatBytes(n: number): string {
  const units = ['B', 'kB', 'MB', 'GB', 'TB'];
  let i = 0;
  let v = n;
  while (v >= 1000 && i < units.length - 1) {
    v /= 1000;
    i++;
  }
  return i === 0 ? `${n} B` : `${v.toFixed(v < 10 ? 1 : 0)} ${units[i]}`;
}

/**
 * The config that would persist `path`: a `users.<name>` entry when it is inside a home,
 * a system entry otherwise, in the first storage root (or /persistent when there is none).
 */
export function suggestFor(path: string, isDirectory: boolean, config: ResolvedConfig, homes: UserRecord[]): string {
  const storage = config.storages[0]?.path ?? '/persistent';
  const list = isDirectory ? 'directories' : 'files';
  const home = homes.find((u) => u.home !== '/' && path.startsWith(u.home + '/'));
  if (home) return `[persistence."${storage}".users.${home.name}]\n${list} = [${JSON.stringify(path.slice(home.home.length + 1))}]`;
  return `[persistence."${storage}"]\n${list} = [${JSON.stringify(path)}]`;
}

export function describe(item: Pick<DriftItem, 'kind' | 'files' | 'bytes'>): string {
  const size = `${item.files} file${item.files === 1 ? '' : 's'}, ${formatBytes(item.bytes)}`;
  switch (item.kind) {
    case 'ephemeral':
      return `${size}: will be lost at reboot`;
    case 'orphan':
      return `${size} in storage that no entry declares`;
    case 'shadowed':
      return `${size} on the root, hidden under the mount: lost at reboot`;
    default:
      return size;
  }
}
