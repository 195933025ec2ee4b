import { lstatSync, readdirSync } from 'node:fs';
import { formatMode } from '../config/mode';
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

/** Entries not in place: unmounted, unlinked or replaced. */
export function entryDrift(config: ResolvedConfig, root: string, mountPoints: Set<string>): DriftItem[] {
  const items: DriftItem[] = [];
  const isFile = (p: string) => lstatSync(p, { throwIfNoEntry: false })?.isFile() ?? false;
  for (const entry of config.entries) {
    const status = entryStatus(entry, { mountPoints, root }, isFile);
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
  return items;
}

/**
 * How the root is laid out for drift: what is persisted, mounted, stored or ignored (never
 * looked into), and how what was written is grouped (see groupOf).
 */
export class RootLayout {
  readonly known = new Set<string>(['/']);
  readonly dev: number;
  private readonly entryPaths: Set<string>;
  readonly storages: Set<string>;
  private readonly mounts = new Set<string>();
  private readonly ignored: (p: string) => boolean;
  private readonly homes: ReturnType<typeof homesOf>;

  constructor(
    readonly config: ResolvedConfig,
    readonly root: string,
    mountPoints: Set<string>,
    users: UserDb,
  ) {
    this.entryPaths = new Set(config.entries.map((e) => e.path));
    this.storages = new Set([...config.storages.map((s) => s.path), ...config.entries.map((e) => e.storage)]);
    for (const e of config.entries) for (const d of parentsOf(e.path)) this.known.add(d);
    this.ignored = ignoreMatcher([...DEFAULT_IGNORE, ...config.driftIgnore]);
    for (const m of mountPoints) {
      if (root === '/') this.mounts.add(m);
      else if (m.startsWith(root + '/')) this.mounts.add(m.slice(root.length));
    }
    this.dev = lstatSync(this.host('/')).dev;
    this.homes = config.entries.length ? homesOf(users) : [];
  }

  host(p: string): string {
    return this.root === '/' ? p : p === '/' ? this.root : this.root + p;
  }

  isEntry(p: string): boolean {
    return this.entryPaths.has(p);
  }

  /** Never looked into: persisted paths, storage roots, mount points, ignored paths. */
  readonly skip = (p: string): boolean => this.entryPaths.has(p) || this.storages.has(p) || this.mounts.has(p) || this.ignored(p);

  /**
   * The group a path on the root belongs to, or undefined if it is (inside) a skipped path.
   * Below the deepest folder holding persisted paths, each child is a group, and so is each
   * subfolder of such a child: /var/lib/foo and /var/lib/bar, or ~/.config/a and ~/.config/b, are
   * told apart, while the files right inside /var/lib/foo belong to it. Each group is reported as
   * the deepest folder holding all its changed files.
   */
  groupOf(path: string): string | undefined {
    const parts = path.split('/').filter(Boolean);
    let cur = '';
    let known = -1; // index of the deepest known folder's last component (-1: the root)
    const prefixes: string[] = [];
    for (let i = 0; i < parts.length; i++) {
      cur += '/' + parts[i];
      prefixes.push(cur);
      if (this.skip(cur)) return undefined;
      if (i < parts.length - 1 && this.known.has(cur)) known = i;
    }
    if (known + 1 >= parts.length) return undefined;
    if (known + 2 >= parts.length) return prefixes[known + 1];
    // A subfolder of the child is a group of its own; a file right inside the child belongs to it.
    const second = prefixes[known + 2]!;
    if (known + 3 < parts.length) return second;
    return lstatSync(this.host(second), { throwIfNoEntry: false })?.isDirectory() ? second : prefixes[known + 1];
  }

  /** Whether a group is a child of a known folder (rather than a subfolder of one). */
  private isTopGroup(group: string): boolean {
    return this.known.has(group.slice(0, group.lastIndexOf('/')) || '/');
  }

  /**
   * A group's drift as it stands now (files changed since `since`): the items of the group and,
   * for a child of a known folder, of its subfolder groups, each keyed by its group.
   */
  async measure(group: string, since: number): Promise<Map<string, DriftItem | undefined>> {
    const out = new Map<string, DriftItem | undefined>([[group, undefined]]);
    const st = lstatSync(this.host(group), { throwIfNoEntry: false });
    if (!st) return out;
    if (!st.isDirectory()) {
      if (!since || st.ctimeMs / 1000 >= since) out.set(group, this.item(group, { files: 1, bytes: st.size, isDirectory: false }));
      return out;
    }
    const g: Group = { files: 0, bytes: 0, isDirectory: true };
    // A top group's subfolders are groups of their own, started by the walk; a subfolder group is walked whole.
    const known = this.isTopGroup(group) ? this.known : new Set<string>();
    const sub = await walk({ start: group, initial: g, host: (p) => this.host(p), dev: this.dev, since, known, skip: this.skip, progress: () => undefined });
    out.set(group, this.item(group, g));
    for (const [key, sg] of sub) out.set(key, this.item(key, sg));
    return out;
  }

  item(group: string, g: Group): DriftItem | undefined {
    if (g.files === 0) return undefined;
    // Report the deepest folder that holds everything written in the group: /var/lib/foo rather than /var/lib.
    const path = g.common ?? group;
    return { kind: 'ephemeral', path, files: g.files, bytes: g.bytes, detail: describe({ kind: 'ephemeral', ...g }), suggestion: suggestFor(path, g.isDirectory, this.config, this.homes) };
  }
}

/**
 * The full drift report: never changes anything. Walks the root (one filesystem, like
 * `find -xdev`, and never into a mount point, a persisted path, a storage root or an ignored
 * path) for what was written outside persisted paths, walks each storage root for what no entry
 * declares, and checks each entry's mount or symlink and each storage directory's owner and mode.
 */
export async function scanDrift(opts: ScanOptions): Promise<DriftReport> {
  const { config, root } = opts;
  const layout = new RootLayout(config, root, opts.mountPoints, opts.users);
  const host = (p: string) => layout.host(p);
  const items: DriftItem[] = entryDrift(config, root, opts.mountPoints);
  let scanned = 0;
  const progress = () => {
    scanned++;
    if (scanned % 4096 === 0) opts.onProgress?.(scanned);
  };

  // Ephemeral: written on the root outside everything persisted.
  const groups = await walk({ start: '/', host, dev: layout.dev, since: opts.since, known: layout.known, signal: opts.signal, progress, skip: layout.skip });
  for (const [group, g] of groups) {
    const item = layout.item(group, g);
    if (item) items.push(item);
  }

  // Orphans: content in storage no entry declares.
  const configDirs = new Set(opts.configDirs ?? []);
  for (const storage of layout.storages) {
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
    if (mode !== entry.perms.mode) problems.push(`mode ${formatMode(mode)}, declared ${formatMode(entry.perms.mode)}`);
    if (problems.length) {
      items.push({ kind: 'attributes', path: entry.source, files: 0, bytes: 0, detail: `${problems.join('; ')} (reported, never re-applied)`, suggestion: `declared in ${entry.origin.file}: ${entry.origin.entry}` });
    }
  }

  opts.onProgress?.(scanned);
  return { items: rank(items), scanned, since: opts.since };
}

interface WalkOptions {
  start: string;
  /** The group the start folder's files count towards, if any. */
  initial?: Group;
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
 * Walks one filesystem below `start`, grouping files: a child of a known directory, or of a
 * child of one, starts a group; everything below it counts towards that group. Yields to the event loop now and then,
 * so that a daemon keeps answering during a long scan, and stops when `signal` is aborted.
 */
async function walk(w: WalkOptions): Promise<Map<string, Group>> {
  const groups = new Map<string, Group>();
  const stack: Array<{ dir: string; group: Group | undefined }> = [{ dir: w.start, group: w.initial }];
  let sinceYield = 0;
  while (stack.length) {
    const { dir, group } = stack.pop()!;
    let names;
    try {
      names = readdirSync(w.host(dir), { withFileTypes: true });
    } catch {
      continue; // vanished or unreadable: nothing to report from it
    }
    // Groups (see groupOf): every child of a known folder; every subfolder of such a child.
    const known = w.known.has(dir);
    const childOfKnown = !known && dir !== '/' && w.known.has(dir.slice(0, dir.lastIndexOf('/')) || '/');
    for (const d of names) {
      const path = dir === '/' ? `/${d.name}` : `${dir}/${d.name}`;
      if (w.skip(path)) continue;
      let g = group;
      if (known || (childOfKnown && d.isDirectory())) {
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
