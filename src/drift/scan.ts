import { lstatSync, readdirSync, readFileSync, readlinkSync } from 'node:fs';
import { posix } from 'node:path';
import { SHADOWED_DIR, type Shadowed } from '../activate/prepare';
import { formatMode } from '../config/mode';
import { isInside, parentsOf } from '../config/paths';
import type { ResolvedConfig } from '../config/resolve';
import type { UserDb } from '../config/userdb';
import { escapePath } from '../config/unit-name';
import { bootTime } from './boot';
import { looseDir, type Group } from './groups';
import { RootLayout } from './layout';
import { describe, foldNested, rank, type DriftItem, type DriftReport } from './report';
import { entryStatus, generatedMounts } from './state';
import { walk } from './walk';
import { walkNative } from './walker';

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

/** What to walk in a storage root for orphans: content in it no entry declares. */
export interface StorageWalk {
  storage: string;
  /** Folders in it (as paths below it) holding declared paths: their children start groups. */
  known: Set<string>;
  /** Declared paths below it (the entries' sources, and what file sources link to). */
  sources: Set<string>;
  /** Config folders kept in it (declared by being used). */
  configHere: string[];
  dev: number;
}

/** The storage roots to walk for orphans (those that are folders now), and what is declared in each. */
export function storageWalks(layout: RootLayout, configDirList: string[] = []): StorageWalk[] {
  const { config } = layout;
  const host = (p: string) => layout.host(p);
  const configDirs = new Set(configDirList);
  const out: StorageWalk[] = [];
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
    if (st?.isDirectory()) out.push({ storage, known: storageKnown, sources, configHere, dev: st.dev });
  }
  return out;
}

/** The host path of `p`, a path below storage root `storage`. */
function storageHost(layout: RootLayout, storage: string): (p: string) => string {
  return (p) => layout.host(p === '/' ? storage : storage + p);
}

/** The orphan items of one storage root, from its walk's groups. */
function orphanItems(storage: string, groups: Map<string, Group>): DriftItem[] {
  const items: DriftItem[] = [];
  for (const [group, g] of groups) {
    if (g.files === 0) continue;
    const loose = looseDir(group);
    const path = storage + (loose === undefined ? (g.common ?? group) : loose === '/' ? '' : loose);
    const detail = describe({ kind: 'orphan', ...g }) + (loose === undefined ? '' : ` (files right inside ${path}, not in a folder of their own)`);
    items.push({
      kind: 'orphan', path, files: g.files, bytes: g.bytes, detail, suggestion: 'remove it from storage yourself if it is not needed, or declare it again',
      ...(loose === undefined ? {} : { loose: true as const }), ...(g.closed?.length ? { closed: g.closed } : {}),
    });
  }
  return items;
}

/** The orphans of one storage root now (the live watch's re-measure after a change in it), walked in Node. */
export async function storageDrift(layout: RootLayout, s: StorageWalk): Promise<DriftItem[]> {
  const { sources, configHere } = s;
  const groups = await walk({ start: '/', host: storageHost(layout, s.storage), dev: s.dev, since: 0, known: s.known, progress: () => undefined, skip: (p) => sources.has(p) || configHere.includes(p) });
  return orphanItems(s.storage, groups);
}

/** Storage directories whose owner or mode differ from the declaration (reported, never re-applied). */
export function attributeDrift(config: ResolvedConfig, root: string, users: UserDb): DriftItem[] {
  const items: DriftItem[] = [];
  const prefix = root === '/' ? '' : root;
  for (const entry of config.entries) {
    if (entry.kind !== 'directory' || !entry.perms) continue;
    const st = lstatSync(prefix + entry.source, { throwIfNoEntry: false });
    if (!st?.isDirectory()) continue;
    const uid = users.uidOf(entry.perms.user);
    const gid = users.gidOf(entry.perms.group);
    const mode = st.mode & 0o7777;
    const problems: string[] = [];
    if (uid !== undefined && uid !== st.uid) problems.push(`owner ${users.userName(st.uid)}, declared ${entry.perms.user}`);
    if (gid !== undefined && gid !== st.gid) problems.push(`group ${users.groupName(st.gid)}, declared ${entry.perms.group}`);
    if (mode !== entry.perms.mode) problems.push(`mode ${formatMode(mode)}, declared ${formatMode(entry.perms.mode)}`);
    if (problems.length) {
      items.push({ kind: 'attributes', path: entry.source, files: 0, bytes: 0, detail: `${problems.join('; ')} (reported, never re-applied)`, suggestion: `declared in ${entry.origin.file}: ${entry.origin.entry}` });
    }
  }
  return items;
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
  const storages = storageWalks(layout, opts.configDirs);

  // The native walks all start at once (each on both cores): the root, for what was written
  // outside everything persisted, and each storage root; the rest is checked meanwhile.
  const native = opts.walker;
  const walks = native
    ? [
        walkNative(native, { host, since: opts.since, known: layout.known, skips: layout.skipList(), signal: opts.signal }),
        ...storages.map((s) => walkNative(native, { host: storageHost(layout, s.storage), since: 0, known: s.known, skips: { exact: [...s.sources, ...s.configHere], globs: [] }, signal: opts.signal })),
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

  for (const [i, s] of storages.entries()) {
    const { sources, configHere } = s;
    const orphans = done
      ? counted(done[i + 1]!)
      : await walk({ start: '/', host: storageHost(layout, s.storage), dev: s.dev, since: 0, known: s.known, signal: opts.signal, progress, skip: (p) => sources.has(p) || configHere.includes(p) });
    items.push(...orphanItems(s.storage, orphans));
  }
  items.push(...attributeDrift(config, root, opts.users));

  opts.onProgress?.(scanned);
  return { items: rank(foldNested(items)), scanned, since: opts.since };
}
