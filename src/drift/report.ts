import { isInside } from '../config/paths';
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
  /** Whether it is a folder or a file on disk; absent when not known (loose files, orphans). */
  isDirectory?: boolean;
  /** Files (not directories) it holds, and their size in bytes. */
  files: number;
  bytes: number;
  /** What is wrong, for a person. */
  detail: string;
  /** The config lines that would persist it (ephemeral), or what declares it (others). */
  suggestion: string;
  /**
   * Set on the one item that stands for the files right inside a folder holding persisted paths
   * (`path`) once they are too many to be items of their own (see LOOSE_FILES_MAX in scan.ts).
   */
  loose?: true;
  /**
   * The folders inside it that not everyone may list (mode without r-x for owner, group and
   * others alike), with what was counted right inside each (not below a deeper one), so that a
   * caller is shown only what it could count itself (see shownCounts). Absent when there is none.
   */
  closed?: ClosedDir[];
}

/**
 * A folder not everyone may list, inside a drift item, as it was when counted; `parent`: the index
 * of the closed folder it lies in (-1: none). uid -1: the folders past MAX_CLOSED_DIRS, together,
 * shown to root only.
 */
export interface ClosedDir { path: string; uid: number; gid: number; mode: number; files: number; bytes: number; parent: number }

/** Closed folders kept per item; past this many, one record stands for the rest (shown to root only). */
export const MAX_CLOSED_DIRS = 32;

/** Whether everyone may list a folder of this mode (read and search for owner, group and others). */
export function isClosedMode(mode: number): boolean {
  return (mode & 0o555) !== 0o555;
}

/**
 * Adds closed folder `rec` (parent index set) to `list`, or finds it: its index. Past
 * MAX_CLOSED_DIRS, the one catch-all record's (uid -1).
 */
export function addClosed(list: ClosedDir[], rec: Omit<ClosedDir, 'files' | 'bytes'>): number {
  if (rec.uid >= 0) {
    const known = list.findIndex((c) => c.uid >= 0 && c.path === rec.path);
    if (known >= 0) return known;
    if (list.length < MAX_CLOSED_DIRS) return list.push({ path: rec.path, uid: rec.uid, gid: rec.gid, mode: rec.mode, parent: rec.parent, files: 0, bytes: 0 }) - 1;
  }
  const rest = list.findIndex((c) => c.uid < 0);
  if (rest >= 0) return rest;
  return list.push({ path: '', uid: -1, gid: -1, mode: 0, files: 0, bytes: 0, parent: -1 }) - 1;
}

/**
 * The counts of an item that a caller may see: without the files in folders it could not list
 * (by the owner/group/other rule, as `ls` would: read and search on each closed folder on the way
 * down from the item). `cut`: whether anything was left out.
 */
export function shownCounts(item: DriftItem, canList: (c: ClosedDir) => boolean): { files: number; bytes: number; cut: boolean } {
  let files = item.files;
  let bytes = item.bytes;
  const closed = item.closed ?? [];
  const hidden: boolean[] = [];
  for (const [i, c] of closed.entries()) {
    hidden[i] = (c.parent >= 0 && hidden[c.parent] === true) || c.uid < 0 || !canList(c);
    if (!hidden[i]) continue;
    files -= c.files;
    bytes -= c.bytes;
  }
  return { files, bytes, cut: files !== item.files || bytes !== item.bytes };
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

/**
 * Folds each ephemeral or orphan item that lies inside another of the same kind into it: a folder
 * with files of its own and a subfolder are one item, so that the suggestions of one report,
 * applied together, never declare a path inside another (which the config refuses).
 */
export function foldNested(items: DriftItem[]): DriftItem[] {
  const out: DriftItem[] = [];
  const open = new Map<DriftKind, DriftItem>(); // per kind, the last kept item
  // Sorted with "/" below every other character, so that what is inside a path comes right after it.
  // Each key made once (not per comparison: 10,000 items made half a million strings).
  const keyed = items.map((item) => ({ item, key: item.path.replace(/\//g, '\0') }));
  keyed.sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
  for (const { item } of keyed) {
    // The files right inside a folder are not what is below it: never an outer item.
    if ((item.kind !== 'ephemeral' && item.kind !== 'orphan') || item.loose) {
      out.push(item);
      continue;
    }
    const outer = open.get(item.kind);
    if (outer && (item.path === outer.path || isInside(item.path, outer.path))) {
      outer.files += item.files;
      outer.bytes += item.bytes;
      if (item.closed?.length) {
        // The inner item's closed folders join the outer's (their parents renumbered).
        const list = (outer.closed = (outer.closed ?? []).map((c) => ({ ...c })));
        const at: number[] = [];
        for (const [i, c] of item.closed.entries()) {
          const parent = c.parent >= 0 ? at[c.parent]! : -1;
          const index = addClosed(list, { ...c, parent });
          list[index]!.files += c.files;
          list[index]!.bytes += c.bytes;
          at[i] = index;
        }
      }
      outer.detail = describe(outer);
      continue;
    }
    const kept = { ...item };
    open.set(item.kind, kept);
    out.push(kept);
  }
  return out;
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

/** Where a suggestion names the storage root when the config declares none. */
export const NO_STORAGE = '<no storage root is declared: name your mounted storage here>';

/**
 * The config that would persist `path`: a `users.<name>` entry when it is inside a home,
 * a system entry otherwise, in the first storage root (or a placeholder when there is none).
 */
export function suggestFor(path: string, isDirectory: boolean, config: ResolvedConfig, homes: UserRecord[]): string {
  // With no storage root declared, none is invented: the placeholder says there is none yet.
  const storage = config.storages[0]?.path ?? NO_STORAGE;
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
