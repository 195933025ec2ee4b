import { lstatSync, readdirSync } from 'node:fs';
import { parentsOf } from '../config/paths';
import type { ResolvedConfig } from '../config/resolve';
import type { UserDb } from '../config/userdb';
import { entryStatus } from './state';
import { DEFAULT_IGNORE, ignoreMatcher } from './ignore';
import { describe, rank, suggestFor, type DriftItem, type DriftReport } from './report';

export interface ScanOptions {
  /** The root the config applies to: "/" on a running system, a folder for an image or sandbox. */
  root: string;
  config: ResolvedConfig;
  users: UserDb;
  /** Mount points as seen from here (host paths). */
  mountPoints: Set<string>;
  /** Only files changed since this time (seconds since the epoch) count as ephemeral; 0: all. */
  since: number;
  /** Config folders (host paths): not reported as orphans when they live in storage. */
  configDirs?: string[];
  onProgress?: (scanned: number) => void;
  signal?: AbortSignal;
}

interface Group { files: number; bytes: number; isDirectory: boolean; /** the deepest folder holding all its counted files */ common?: string }

/** The longest common folder of two folders. */
function commonDir(a: string | undefined, b: string): string {
  if (a === undefined || a === b) return b;
  const pa = a.split('/');
  const pb = b.split('/');
  let i = 0;
  while (i < pa.length && i < pb.length && pa[i] === pb[i]) i++;
  return pa.slice(0, i).join('/') || '/';
}

/**
 * The full drift report: never changes anything. Walks the root (one filesystem, like
 * `find -xdev`, and never into a mount point, a persisted path, a storage root or an ignored
 * path) for what was written outside persisted paths, walks each storage root for what no entry
 * declares, and checks each entry's mount or symlink and each storage directory's owner and mode.
 */
export async function scanDrift(opts: ScanOptions): Promise<DriftReport> {
  const { config, root } = opts;
  const host = (p: string) => (root === '/' ? p : p === '/' ? root : root + p);
  const items: DriftItem[] = [];
  let scanned = 0;
  const progress = () => {
    scanned++;
    if (scanned % 4096 === 0) opts.onProgress?.(scanned);
  };

  // Entries: in place, unmounted or replaced.
  const isFile = (p: string) => lstatSync(p, { throwIfNoEntry: false })?.isFile() ?? false;
  for (const entry of config.entries) {
    const status = entryStatus(entry, { mountPoints: opts.mountPoints, root }, isFile);
    const declared = `declared in ${entry.origin.file}: ${entry.origin.entry}`;
    if (status.state === 'unmounted' || status.state === 'unlinked') {
      const what = status.method === 'bind' ? `not mounted from ${entry.source}` : `not a symlink to ${entry.source}`;
      items.push({ kind: 'unmounted', path: entry.path, files: 0, bytes: 0, detail: `${what}: writes there are lost at reboot`, suggestion: declared });
    } else if (status.state === 'replaced') {
      items.push({
        kind: 'replaced', path: entry.path, files: 0, bytes: 0,
        detail: `something else replaced the symlink to ${entry.source} (a program writing by rename?): its content is lost at reboot; persist the parent directory instead`,
        suggestion: declared,
      });
    }
  }

  // Ephemeral: written on the root outside everything persisted.
  const entryPaths = new Set(config.entries.map((e) => e.path));
  const storages = new Set([...config.storages.map((s) => s.path), ...config.entries.map((e) => e.storage)]);
  const known = new Set<string>(['/']);
  for (const e of config.entries) for (const d of parentsOf(e.path)) known.add(d);
  const ignored = ignoreMatcher([...DEFAULT_IGNORE, ...config.driftIgnore]);
  const rootDev = lstatSync(host('/')).dev;
  // Mount points below the root, as paths on it.
  const mounts = new Set<string>();
  for (const m of opts.mountPoints) {
    if (root === '/') mounts.add(m);
    else if (m.startsWith(root + '/')) mounts.add(m.slice(root.length));
  }
  const groups = await walk({
    start: '/', host, dev: rootDev, since: opts.since, known, signal: opts.signal, progress,
    skip: (p) => entryPaths.has(p) || storages.has(p) || mounts.has(p) || ignored(p),
  });
  const homes = config.entries.length ? homesOf(opts.users) : [];
  for (const [group, g] of groups) {
    if (g.files === 0) continue;
    // Report the deepest folder that holds everything written in the group: /var/lib/foo rather than /var/lib.
    const path = g.common ?? group;
    items.push({ kind: 'ephemeral', path, files: g.files, bytes: g.bytes, detail: describe({ kind: 'ephemeral', ...g }), suggestion: suggestFor(path, g.isDirectory, config, homes) });
  }

  // Orphans: content in storage no entry declares.
  const configDirs = new Set(opts.configDirs ?? []);
  for (const storage of storages) {
    const inStorage = config.entries.filter((e) => e.storage === storage);
    const sources = new Set(inStorage.map((e) => e.path));
    const storageKnown = new Set<string>(['/']);
    for (const e of inStorage) for (const d of parentsOf(e.path)) storageKnown.add(d);
    // A config kept in storage (found with impermanence.config=) is declared by being used.
    const configHere = [...configDirs].filter((d) => d.startsWith(host(storage) + '/')).map((d) => d.slice(host(storage).length));
    for (const c of configHere) for (const d of parentsOf(c)) storageKnown.add(d);
    const st = lstatSync(host(storage), { throwIfNoEntry: false });
    if (!st?.isDirectory()) continue;
    const orphans = await walk({
      start: '/', host: (p) => host(p === '/' ? storage : storage + p), dev: st.dev, since: 0, known: storageKnown, signal: opts.signal, progress,
      skip: (p) => sources.has(p) || configHere.includes(p),
    });
    for (const [group, g] of orphans) {
      if (g.files === 0) continue;
      items.push({ kind: 'orphan', path: storage + (g.common ?? group), files: g.files, bytes: g.bytes, detail: describe({ kind: 'orphan', ...g }), suggestion: 'remove it from storage yourself if it is not needed, or declare it again' });
    }
  }

  // Attributes: storage directories whose owner or mode differ from the declaration.
  for (const entry of config.entries) {
    if (entry.kind !== 'directory' || !entry.perms) continue;
    const st = lstatSync(host(entry.source), { throwIfNoEntry: false });
    if (!st?.isDirectory()) continue;
    const uid = opts.users.uidOf(entry.perms.user);
    const gid = opts.users.gidOf(entry.perms.group);
    const mode = st.mode & 0o7777;
    const problems: string[] = [];
    if (uid !== undefined && uid !== st.uid) problems.push(`owner ${opts.users.userName(st.uid)}, declared ${entry.perms.user}`);
    if (gid !== undefined && gid !== st.gid) problems.push(`group ${opts.users.groupName(st.gid)}, declared ${entry.perms.group}`);
    if (mode !== entry.perms.mode) problems.push(`mode ${mode.toString(8).padStart(4, '0')}, declared ${entry.perms.mode.toString(8).padStart(4, '0')}`);
    if (problems.length) {
      items.push({ kind: 'attributes', path: entry.source, files: 0, bytes: 0, detail: `${problems.join('; ')} (reported, never re-applied)`, suggestion: `declared in ${entry.origin.file}: ${entry.origin.entry}` });
    }
  }

  opts.onProgress?.(scanned);
  return { items: rank(items), scanned, since: opts.since };
}

interface WalkOptions {
  start: string;
  host: (logical: string) => string;
  dev: number;
  since: number;
  /** Directories whose children each start a group of their own. */
  known: Set<string>;
  skip: (logical: string) => boolean;
  signal?: AbortSignal;
  progress: () => void;
}

/**
 * Walks one filesystem below `start`, grouping files: a child of a known directory starts a
 * group, everything below it counts towards that group. Yields to the event loop now and then,
 * so that a daemon keeps answering during a long scan, and stops when `signal` is aborted.
 */
async function walk(w: WalkOptions): Promise<Map<string, Group>> {
  const groups = new Map<string, Group>();
  const stack: Array<{ dir: string; group: Group | undefined }> = [{ dir: w.start, group: undefined }];
  let sinceYield = 0;
  while (stack.length) {
    const { dir, group } = stack.pop()!;
    let names;
    try {
      names = readdirSync(w.host(dir), { withFileTypes: true });
    } catch {
      continue; // vanished or unreadable: nothing to report from it
    }
    // Below a folder that holds persisted paths, each child is a group of its own.
    const startsGroups = w.known.has(dir);
    for (const d of names) {
      const path = dir === '/' ? `/${d.name}` : `${dir}/${d.name}`;
      if (w.skip(path)) continue;
      let g = group;
      if (startsGroups) {
        g = { files: 0, bytes: 0, isDirectory: d.isDirectory() };
        groups.set(path, g);
      }
      if (++sinceYield >= 2048) {
        sinceYield = 0;
        await new Promise((r) => setImmediate(r));
        if (w.signal?.aborted) throw new Error('scan cancelled');
      }
      if (d.isDirectory()) {
        const st = lstatSync(w.host(path), { throwIfNoEntry: false });
        if (st && st.dev === w.dev) stack.push({ dir: path, group: g });
        continue;
      }
      w.progress();
      if (!g) continue;
      const st = lstatSync(w.host(path), { throwIfNoEntry: false, bigint: false });
      if (!st || (w.since && st.ctimeMs / 1000 < w.since)) continue;
      g.files++;
      g.bytes += st.size;
      if (g.isDirectory) g.common = commonDir(g.common, dir);
    }
  }
  return groups;
}

function homesOf(users: UserDb) {
  return users.all().filter((u) => u.home.startsWith('/') && u.home.length > 1);
}
