import { spawn } from 'node:child_process';
import { closeSync, constants, fstatSync, lstatSync, opendirSync, openSync, readdirSync, readFileSync, readlinkSync } from 'node:fs';
import { posix } from 'node:path';
import { SHADOWED_DIR, type Shadowed } from '../activate/prepare';
import { formatMode } from '../config/mode';
import { isInside, parentsOf } from '../config/paths';
import type { ResolvedConfig } from '../config/resolve';
import type { UserDb } from '../config/userdb';
import { escapePath } from '../config/unit-name';
import { bootTime } from './boot';
import { entryStatus, generatedMounts } from './state';
import { DEFAULT_IGNORE, ignoreMatcher } from './ignore';
import { addClosed, describe, foldNested, isClosedMode, rank, suggestFor, type ClosedDir, type DriftItem, type DriftReport } from './report';

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
  /** impermanence-walk (src/drift/native/walk.c): the fast, descriptor-based walk; without it, a slower walk in Node. */
  walker?: string;
}

interface Group {
  files: number;
  bytes: number;
  isDirectory: boolean;
  /** the deepest folder holding all its counted files */
  common?: string;
  /** the folders in it not everyone may list, with what was counted right inside each (see DriftItem.closed) */
  closed?: ClosedDir[];
}

/** Records `st`, the folder at `path` in group `g`, if not everyone may list it: the index of the closed folder its contents count towards. */
function closedChain(g: Group, path: string, st: { uid: number; gid: number; mode: number }, parent: number): number {
  if (!isClosedMode(st.mode)) return parent;
  return addClosed((g.closed ??= []), { path, uid: st.uid, gid: st.gid, mode: st.mode & 0o7777, parent });
}

/** Counts a file (or a folder's files) in group `g` and in the closed folder `chain` of it, if any. */
function count(g: Group, chain: number, files: number, bytes: number): void {
  g.files += files;
  g.bytes += bytes;
  if (chain < 0) return;
  const c = g.closed![chain]!;
  c.files += files;
  c.bytes += bytes;
}

/**
 * The files right inside a folder that holds persisted paths (a home with a persisted ~/.ssh,
 * /etc with a persisted file) are drift items of their own, up to this many per folder; beyond,
 * they are one item for all of them, so that a user writing a million files in their home makes
 * one item, not a million (the daemon's memory and the reports stay bounded).
 */
export const LOOSE_FILES_MAX = 64;

/** The group key of the files right inside known folder `dir`, once they are one item. NUL is in no path. */
export function looseKey(dir: string): string {
  return (dir === '/' ? '' : dir) + '/\0';
}

/** The folder of a looseKey(); undefined for any other key. */
export function looseDir(key: string): string | undefined {
  return key.endsWith('/\0') ? key.slice(0, -2) || '/' : undefined;
}

/**
 * The files right inside known folder `dir` (changed since `since`), read as a stream (never the
 * whole listing at once) by descriptor: one group per file up to LOOSE_FILES_MAX, else one group
 * under looseKey(dir). Yields to the event loop now and then.
 */
async function looseFiles(rootHost: string, dir: string, since: number, skip: (p: string) => boolean): Promise<Map<string, Group>> {
  const out = new Map<string, Group>();
  const fd = openBeneath(rootHost, dir);
  if (fd === undefined) return out;
  const all: Group = { files: 0, bytes: 0, isDirectory: false };
  let handle;
  try {
    handle = opendirSync(`/proc/self/fd/${fd}`);
  } catch {
    closeSync(fd);
    return out;
  }
  // A folder not everyone may list: the count of its files is shown to those who may.
  const chain = closedChain(all, dir, fstatSync(fd), -1);
  try {
    let n = 0;
    for (let d = handle.readSync(); d; d = handle.readSync()) {
      if (++n % 2048 === 0) await new Promise((r) => setImmediate(r));
      if (d.isDirectory()) continue;
      const path = dir === '/' ? `/${d.name}` : `${dir}/${d.name}`;
      if (skip(path)) continue;
      const st = lstatSync(`/proc/self/fd/${fd}/${d.name}`, { throwIfNoEntry: false });
      if (!st || st.isDirectory() || (since && st.ctimeMs / 1000 < since)) continue;
      count(all, chain, 1, st.size);
      if (all.files <= LOOSE_FILES_MAX) out.set(path, { files: 1, bytes: st.size, isDirectory: false });
      else if (out.size) out.clear();
    }
  } finally {
    handle.closeSync();
    closeSync(fd);
  }
  if (all.files > LOOSE_FILES_MAX) out.set(looseKey(dir), all);
  return out;
}

/** The longest common folder of two folders. */
function commonDir(a: string | undefined, b: string): string {
  if (a === undefined || a === b) return b;
  let c = a;
  while (c !== '/' && !(b.startsWith(c) && (b.length === c.length || b.charCodeAt(c.length) === 47 /* / */))) c = c.slice(0, c.lastIndexOf('/')) || '/';
  return c;
}

/** Entries not in place: unmounted, unlinked or replaced. */
export function entryDrift(config: ResolvedConfig, root: string, mountPoints: Set<string>): DriftItem[] {
  const items: DriftItem[] = [];
  const isFile = (p: string) => lstatSync(p, { throwIfNoEntry: false })?.isFile() ?? false;
  const shadowed = readShadowed(root);
  const generated = generatedMounts(root);
  const prefix = root === '/' ? '' : root;
  for (const entry of config.entries) {
    const status = entryStatus(entry, { mountPoints, root, generated }, isFile);
    const declared = `declared in ${entry.origin.file}: ${entry.origin.entry}`;
    if (status.state === 'unmounted' || status.state === 'unlinked') {
      const what = status.storageUnmounted
        ? `the storage ${entry.storage} is not mounted (a folder on the wiped root)`
        : status.method === 'bind' ? `not mounted from ${entry.source}` : `not a symlink to ${entry.source}`;
      items.push({ kind: 'unmounted', path: entry.path, isDirectory: entry.kind === 'directory', files: 0, bytes: 0, detail: `${what}: writes there are lost at reboot`, suggestion: declared });
    } else if (status.state === 'replaced') {
      // A file older than the activation of its storage root was there first: the symlink was
      // never made (tmpfiles never replaces a file). A newer one replaced the symlink.
      const changed = lstatSync(prefix + entry.path, { throwIfNoEntry: false })?.ctimeMs;
      const before = changed !== undefined && changed / 1000 < activatedAt(root, entry.storage);
      items.push({
        kind: 'replaced', path: entry.path, isDirectory: entry.kind === 'directory', files: 0, bytes: 0,
        detail: before
          ? `a file was already here when ${entry.storage} was activated, so the symlink to ${entry.source} was never made: its content is lost at reboot; move it into storage (mv ${entry.path} ${entry.source}) and reboot`
          : `something replaced the symlink to ${entry.source} after it was made (a program writing by rename, such as sed -i or an editor?): its content is lost at reboot; persist the parent directory instead`,
        suggestion: declared,
      });
    } else if (status.state === 'mounted') {
      const s = shadowed.get(entry.path);
      if (s && s.source === entry.source) {
        items.push({
          kind: 'shadowed', path: entry.path, isDirectory: entry.kind === 'directory', files: s.files, bytes: s.bytes,
          detail: `${describe({ kind: 'shadowed', ...s })}: they were on the root before ${entry.source} was mounted over it, and storage does not hold them`,
          suggestion: `to see them: mount --bind / /mnt && ls -a /mnt${entry.path}; copy what you need into ${entry.source}`,
        });
      }
    }
  }
  return items;
}

/** Where the symlink at `host` (the logical path `logical`) points, as a normalized logical path; undefined if it is no symlink. */
function linkTarget(host: string, logical: string): string | undefined {
  let target: string;
  try {
    target = readlinkSync(host);
  } catch {
    return undefined;
  }
  return posix.resolve(posix.dirname(logical), target);
}

/** When impermanence-prepare activated a storage root this boot (it records what it found then), or else the boot. */
function activatedAt(root: string, storage: string): number {
  const record = `${root === '/' ? '' : root}${SHADOWED_DIR}/${escapePath(storage)}.json`;
  const st = lstatSync(record, { throwIfNoEntry: false });
  return st ? st.mtimeMs / 1000 : bootTime();
}

/** What impermanence-prepare found hidden under our mounts at boot, by path (see activate/prepare.ts). */
function readShadowed(root: string): Map<string, Shadowed> {
  const dir = (root === '/' ? '' : root) + SHADOWED_DIR;
  const found = new Map<string, Shadowed>();
  let names: string[] = [];
  try {
    names = readdirSync(dir).filter((n) => n.endsWith('.json'));
  } catch {
    return found;
  }
  for (const name of names) {
    try {
      for (const s of JSON.parse(readFileSync(`${dir}/${name}`, 'utf8')) as Shadowed[]) found.set(s.path, s);
    } catch {
      // being replaced, or not ours: nothing to report from it
    }
  }
  return found;
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
    // A group never holds a storage root either: persisting it would persist the storage.
    for (const s of this.storages) for (const d of parentsOf(s)) this.known.add(d);
    this.ignored = ignoreMatcher([...DEFAULT_IGNORE, ...config.driftIgnore]);
    // Mount points below the root (not the root itself), as paths on it.
    for (const m of mountPoints) {
      if (root === '/') {
        if (m !== '/') this.mounts.add(m);
      } else if (m.startsWith(root + '/')) this.mounts.add(m.slice(root.length));
    }
    this.dev = lstatSync(this.host('/')).dev;
    this.homes = config.entries.length ? homesOf(users) : [];
  }

  host(p: string): string {
    return this.root === '/' ? p : p === '/' ? this.root : this.root + p;
  }

  /** What `skip` skips, for the native walker: exact paths and globs. */
  skipList(): { exact: string[]; globs: string[] } {
    const patterns = [...DEFAULT_IGNORE, ...this.config.driftIgnore];
    return {
      exact: [...this.entryPaths, ...this.storages, ...this.mounts, ...patterns.filter((p) => !p.includes('*'))],
      globs: patterns.filter((p) => p.includes('*')),
    };
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
    if (known + 2 >= parts.length) {
      // A child of a known folder: a folder is a group; a file is one of the folder's loose files
      // (one group for all of them); a path gone is looked at as the group it may have been.
      const st = lstatSync(this.host(path), { throwIfNoEntry: false });
      return st && !st.isDirectory() ? looseKey(known >= 0 ? prefixes[known]! : '/') : path;
    }
    // A subfolder of the child is a group of its own; a file right inside the child belongs to it.
    const second = prefixes[known + 2]!;
    if (known + 3 < parts.length) return second;
    return lstatSync(this.host(second), { throwIfNoEntry: false })?.isDirectory() ? second : prefixes[known + 1];
  }

  /** Whether a group is a child of a known folder (rather than a subfolder of one). */
  isTopGroup(group: string): boolean {
    return this.known.has(group.slice(0, group.lastIndexOf('/')) || '/');
  }

  /**
   * A group's drift as it stands now (files changed since `since`): the items of the group and,
   * for a child of a known folder, of its subfolder groups, each keyed by its group.
   */
  async measure(group: string, since: number): Promise<Map<string, DriftItem | undefined>> {
    const out = new Map<string, DriftItem | undefined>([[group, undefined]]);
    const dir = looseDir(group);
    if (dir !== undefined) {
      // The files right inside a known folder: each an item (keyed by its path), or one for all.
      for (const [key, g] of await looseFiles(this.host('/'), dir, since, this.skip)) out.set(key, this.item(key, g));
      return out;
    }
    // By descriptor, never by path: a folder on the way swapped for a symlink (by the user who
    // owns it, maybe to /root) is not followed, so its target's files are never counted.
    const slash = group.lastIndexOf('/');
    const parent = openBeneath(this.host('/'), group.slice(0, slash) || '/');
    if (parent === undefined) return out;
    let st;
    try {
      st = lstatSync(`/proc/self/fd/${parent}/${group.slice(slash + 1)}`, { throwIfNoEntry: false });
    } finally {
      closeSync(parent);
    }
    if (!st) return out;
    if (!st.isDirectory()) {
      if (!since || st.ctimeMs / 1000 >= since) out.set(group, this.item(group, { files: 1, bytes: st.size, isDirectory: false }));
      return out;
    }
    const g: Group = { files: 0, bytes: 0, isDirectory: true };
    const initialChain = closedChain(g, group, st, -1);
    // A top group's subfolders are groups of their own, started by the walk; a subfolder group is walked whole.
    const known = this.isTopGroup(group) ? this.known : new Set<string>();
    const sub = await walk({ start: group, initial: g, initialChain, host: (p) => this.host(p), dev: this.dev, since, known, skip: this.skip, progress: () => undefined });
    out.set(group, this.item(group, g));
    for (const [key, sg] of sub) out.set(key, this.item(key, sg));
    return out;
  }

  item(group: string, g: Group): DriftItem | undefined {
    if (g.files === 0) return undefined;
    const closed = g.closed?.length ? { closed: g.closed } : {};
    const dir = looseDir(group);
    if (dir !== undefined) {
      const where = dir === '/' ? 'the root' : dir;
      return {
        kind: 'ephemeral', path: dir, files: g.files, bytes: g.bytes, loose: true, ...closed,
        detail: `${describe({ kind: 'ephemeral', ...g })} (files right inside ${where}, not in a folder of their own)`,
        suggestion: `persist the ones you need one by one (files = [...]), or move them into a folder of their own and persist that`,
      };
    }
    // Report the deepest folder that holds everything written in the group: /var/lib/foo rather than /var/lib.
    const path = g.common ?? group;
    return { kind: 'ephemeral', path, isDirectory: g.isDirectory, files: g.files, bytes: g.bytes, detail: describe({ kind: 'ephemeral', ...g }), suggestion: suggestFor(path, g.isDirectory, this.config, this.homes), ...closed };
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
  let scanned = 0;
  const progress = () => {
    scanned++;
    if (scanned % 4096 === 0) opts.onProgress?.(scanned);
  };

  // Orphans: content in storage no entry declares. What to walk in each storage root.
  const configDirs = new Set(opts.configDirs ?? []);
  const storageWalks: Array<{ storage: string; known: Set<string>; sources: Set<string>; configHere: string[]; dev: number }> = [];
  for (const storage of layout.storages) {
    const inStorage = config.entries.filter((e) => e.storage === storage);
    const sources = new Set(inStorage.map((e) => e.path));
    // A file's source may be a symlink to elsewhere in storage: what it points to is declared too.
    for (const e of inStorage) {
      const target = e.kind === 'file' ? linkTarget(host(e.source), e.source) : undefined;
      if (target && isInside(target, storage)) sources.add(target.slice(storage.length));
    }
    const storageKnown = new Set<string>(['/']);
    for (const p of sources) for (const d of parentsOf(p)) storageKnown.add(d);
    // A config kept in storage (found with impermanence.config=) is declared by being used.
    const configHere = [...configDirs].filter((d) => d.startsWith(host(storage) + '/')).map((d) => d.slice(host(storage).length));
    for (const c of configHere) for (const d of parentsOf(c)) storageKnown.add(d);
    const st = lstatSync(host(storage), { throwIfNoEntry: false });
    if (st?.isDirectory()) storageWalks.push({ storage, known: storageKnown, sources, configHere, dev: st.dev });
  }
  const storageHost = (storage: string) => (p: string) => host(p === '/' ? storage : storage + p);

  // The native walks all start at once (each on both cores): the root, for what was written
  // outside everything persisted, and each storage root; the rest is checked meanwhile.
  const native = opts.walker;
  const walks = native
    ? [
        walkNative(native, { host, since: opts.since, known: layout.known, skips: layout.skipList(), signal: opts.signal }),
        ...storageWalks.map((s) => walkNative(native, { host: storageHost(s.storage), since: 0, known: s.known, skips: { exact: [...s.sources, ...s.configHere], globs: [] }, signal: opts.signal })),
      ]
    : [];
  // Each rejection is seen by Promise.all below, or here when an earlier step throws first.
  for (const w of walks) w.catch(() => undefined);
  const items: DriftItem[] = entryDrift(config, root, opts.mountPoints);
  const done = native ? await Promise.all(walks) : undefined;
  const counted = (r: { groups: Map<string, Group>; scanned: number }) => {
    scanned += r.scanned;
    return r.groups;
  };

  // Ephemeral: written on the root outside everything persisted.
  const groups = done
    ? counted(done[0]!)
    : await walk({ start: '/', host, dev: layout.dev, since: opts.since, known: layout.known, signal: opts.signal, progress, skip: layout.skip });
  for (const [group, g] of groups) {
    const item = layout.item(group, g);
    if (item) items.push(item);
  }

  for (const [i, s] of storageWalks.entries()) {
    const { storage, sources, configHere } = s;
    const orphans = done
      ? counted(done[i + 1]!)
      : await walk({ start: '/', host: storageHost(storage), dev: s.dev, since: 0, known: s.known, signal: opts.signal, progress, skip: (p) => sources.has(p) || configHere.includes(p) });
    for (const [group, g] of orphans) {
      if (g.files === 0) continue;
      const loose = looseDir(group);
      const path = storage + (loose === undefined ? (g.common ?? group) : loose === '/' ? '' : loose);
      const detail = describe({ kind: 'orphan', ...g }) + (loose === undefined ? '' : ` (files right inside ${path}, not in a folder of their own)`);
      items.push({
        kind: 'orphan', path, files: g.files, bytes: g.bytes, detail, suggestion: 'remove it from storage yourself if it is not needed, or declare it again',
        ...(loose === undefined ? {} : { loose: true as const }), ...(g.closed?.length ? { closed: g.closed } : {}),
      });
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
  return { items: rank(foldNested(items)), scanned, since: opts.since };
}

interface WalkOptions {
  start: string;
  /** The group the start folder's files count towards, if any. */
  initial?: Group;
  /** The closed folder (index in initial.closed) the start folder's files count towards; -1: none. */
  initialChain?: number;
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
  // chain: the closed folder (index in group.closed) the folder's files count towards; -1: none.
  const stack: Array<{ dir: string; group: Group | undefined; chain: number }> = [{ dir: w.start, group: w.initial, chain: w.initialChain ?? -1 }];
  const rootHost = w.host('/');
  const knownSeen: string[] = [];
  let sinceYield = 0;
  while (stack.length) {
    const { dir, group, chain } = stack.pop()!;
    // Each folder by descriptor (see openBeneath), its entries looked at through it.
    const fd = openBeneath(rootHost, dir);
    if (fd === undefined) continue; // vanished, unreadable, or a symlink now: nothing to report from it
    const at = `/proc/self/fd/${fd}`;
    let names;
    try {
      // Read as a stream: a folder of a million files is never listed whole in memory.
      try {
        names = opendirSync(at);
      } catch {
        continue;
      }
      // Groups (see groupOf): every child of a known folder; every subfolder of such a child.
      const known = w.known.has(dir);
      if (known) knownSeen.push(dir);
      const childOfKnown = !known && dir !== '/' && w.known.has(dir.slice(0, dir.lastIndexOf('/')) || '/');
      for (let d = names.readSync(); d; d = names.readSync()) {
        const path = dir === '/' ? `/${d.name}` : `${dir}/${d.name}`;
        if (w.skip(path)) continue;
        // The files right inside a known folder are listed at the end (see looseFiles).
        if (known && !d.isDirectory()) continue;
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
          const st = lstatSync(`${at}/${d.name}`, { throwIfNoEntry: false });
          if (st?.isDirectory() && st.dev === w.dev) stack.push({ dir: path, group: g, chain: g ? closedChain(g, path, st, g === group ? chain : -1) : -1 });
          continue;
        }
        w.progress();
        if (!g) continue;
        const st = lstatSync(`${at}/${d.name}`, { throwIfNoEntry: false, bigint: false });
        if (!st || (w.since && st.ctimeMs / 1000 < w.since)) continue;
        count(g, g === group ? chain : -1, 1, st.size);
        if (g.isDirectory) g.common = commonDir(g.common, dir);
      }
    } finally {
      names?.closeSync();
      closeSync(fd);
    }
  }
  for (const dir of knownSeen) for (const [key, g] of await looseFiles(rootHost, dir, w.since, w.skip)) groups.set(key, g);
  return groups;
}

const DIR_NOFOLLOW = constants.O_RDONLY | constants.O_DIRECTORY | constants.O_NOFOLLOW;

/**
 * Opens the folder at logical path `logical` below `rootHost` (the root or a storage root,
 * whose own path is trusted) one component at a time, each opened through its parent's
 * descriptor without following a symlink: `/proc/self/fd/N/NAME` with O_NOFOLLOW is
 * openat(N, NAME, O_NOFOLLOW). A folder swapped for a symlink before or during a walk done as
 * root makes the open fail, so the walk never follows it. Undefined when it cannot be opened.
 */
function openBeneath(rootHost: string, logical: string): number | undefined {
  let fd: number;
  try {
    fd = openSync(rootHost, constants.O_RDONLY | constants.O_DIRECTORY);
  } catch {
    return undefined;
  }
  for (const name of logical.split('/')) {
    if (!name) continue;
    let next: number;
    try {
      next = openSync(`/proc/self/fd/${fd}/${name}`, DIR_NOFOLLOW);
    } catch {
      closeSync(fd);
      return undefined;
    }
    closeSync(fd);
    fd = next;
  }
  return fd;
}

interface NativeWalk {
  host: (logical: string) => string;
  since: number;
  known: Set<string>;
  skips: { exact: string[]; globs: string[] };
  signal?: AbortSignal;
}

/**
 * The same walk and grouping as walk(), by impermanence-walk: it walks one filesystem by file
 * descriptors (never following a symlink, even one swapped in during the walk), and prints what
 * it counted per folder as it goes. Folders are grouped here as walk() groups files, line by line
 * as they come, while the walk goes on; the files right inside a known folder, each a group of
 * its own, are listed here at the end (those folders are few and small).
 */
async function walkNative(binary: string, w: NativeWalk): Promise<{ groups: Map<string, Group>; scanned: number }> {
  const child = spawn(binary, [w.host('/'), String(w.since)], { stdio: ['pipe', 'pipe', 'pipe'] });
  const abort = () => child.kill('SIGTERM');
  w.signal?.addEventListener('abort', abort);
  child.stdin!.on('error', () => undefined); // it may exit before reading: its exit code says why
  child.stdin!.end([...w.skips.exact, ...w.skips.globs.map((g) => `glob ${g}`)].join('\n') + '\n');
  let stderr = '';
  child.stderr!.on('data', (d) => (stderr += d));
  const exited = new Promise<number>((resolve) => {
    child.once('error', (err) => {
      stderr += err.message;
      resolve(-1);
    });
    child.once('exit', (c) => resolve(c ?? -1));
  });

  const groups = new Map<string, Group>();
  const knownDirs: string[] = [];
  // Owner and mode of the folders the counted files are in and of those above them up to their
  // group, looked at once each (forgotten past 100,000: a huge tree costs no more memory).
  const modes = new Map<string, { uid: number; gid: number; mode: number } | null>();
  const folderMode = (p: string) => {
    let m = modes.get(p);
    if (m === undefined) {
      if (modes.size >= 100_000) modes.clear();
      const st = lstatSync(w.host(p), { throwIfNoEntry: false });
      modes.set(p, (m = st?.isDirectory() ? { uid: st.uid, gid: st.gid, mode: st.mode } : null));
    }
    return m ?? undefined;
  };
  let scanned = 0;
  // One line: FILES \t BYTES \t PATH, or total \t SCANNED \t -.
  const line = (text: string, start: number, end: number) => {
    const t1 = text.indexOf('\t', start);
    const t2 = t1 < 0 ? -1 : text.indexOf('\t', t1 + 1);
    if (t2 < 0 || t2 >= end) return;
    const a = text.slice(start, t1);
    if (a === 'total') {
      scanned = Number(text.slice(t1 + 1, t2));
      return;
    }
    const raw = text.slice(t2 + 1, end);
    const dir = raw.includes('\\') ? unescapePath(raw) : raw;
    if (w.known.has(dir)) {
      knownDirs.push(dir);
      return;
    }
    const key = groupOfFolder(dir, w.known);
    let g = groups.get(key);
    if (!g) groups.set(key, (g = { files: 0, bytes: 0, isDirectory: true }));
    // The folders from the group's down to this one that not everyone may list (see DriftItem.closed).
    let chain = -1;
    for (let end = key.length; ; end = dir.indexOf('/', end + 1)) {
      const last = end < 0 || end >= dir.length;
      const p = last ? dir : dir.slice(0, end);
      const st = folderMode(p);
      if (st) chain = closedChain(g, p, st, chain);
      if (last) break;
    }
    count(g, chain, Number(a), Number(text.slice(t1 + 1, t2)));
    g.common = commonDir(g.common, dir);
  };
  let rest = '';
  child.stdout!.setEncoding('utf8');
  child.stdout!.on('data', (chunk: string) => {
    const text = rest ? rest + chunk : chunk;
    let start = 0;
    for (let nl = text.indexOf('\n'); nl >= 0; nl = text.indexOf('\n', start)) {
      line(text, start, nl);
      start = nl + 1;
    }
    rest = text.slice(start);
  });
  const ended = new Promise<void>((resolve) => child.stdout!.once('close', resolve));
  const code = await exited;
  await ended;
  w.signal?.removeEventListener('abort', abort);
  if (w.signal?.aborted) throw new Error('scan cancelled');
  if (code !== 0) throw new Error(`impermanence-walk failed (${code}): ${stderr.trim()}`);
  if (rest) line(rest, 0, rest.length);

  // The files right inside a known folder: a group each, or one for all of them (see looseFiles).
  const skipped = new Set(w.skips.exact);
  for (const dir of knownDirs) for (const [key, g] of await looseFiles(w.host('/'), dir, w.since, (p) => skipped.has(p))) groups.set(key, g);
  return { groups, scanned };
}

/** The group of the files right inside `dir` (not itself known): see RootLayout.groupOf. */
function groupOfFolder(dir: string, known: Set<string>): string {
  if (dir === '/') return dir;
  // The components of dir up to the deepest known folder (0: none below the root), and in all.
  let deepest = 0;
  let n = 0;
  for (let i = 1; i <= dir.length; i++) {
    if (i < dir.length && dir.charCodeAt(i) !== 47 /* / */) continue;
    n++;
    if (known.has(dir.slice(0, i))) deepest = n;
  }
  // The known folder's child, or the child's subfolder on the way to dir.
  const want = Math.min(n, deepest + 2);
  if (want === n) return dir;
  let end = 0;
  for (let c = 0; c < want; c++) end = dir.indexOf('/', end + 1);
  return dir.slice(0, end);
}

function unescapePath(text: string): string {
  return text.replace(/\\(n|t|\\)/g, (_, c: string) => (c === 'n' ? '\n' : c === 't' ? '\t' : '\\'));
}

function homesOf(users: UserDb) {
  return users.all().filter((u) => u.home.startsWith('/') && u.home.length > 1);
}
