import { closeSync, lstatSync } from 'node:fs';
import { parentsOf } from '../config/paths';
import type { ResolvedConfig } from '../config/resolve';
import type { UserDb } from '../config/userdb';
import { closedChain, groupOf, looseDir, looseKey, type Group } from './groups';
import { DEFAULT_IGNORE, ignoreMatcher } from './ignore';
import { describe, suggestFor, type DriftItem } from './report';
import { looseFiles, openBeneath, walk } from './walk';

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
   * The group a path on the root belongs to (see groups.ts), or undefined if it is (inside) a
   * skipped path or the root itself.
   */
  groupOf(path: string): string | undefined {
    if (path === '/') return undefined;
    for (let i = path.indexOf('/', 1); ; i = path.indexOf('/', i + 1)) {
      if (this.skip(i < 0 ? path : path.slice(0, i))) return undefined;
      if (i < 0) break;
    }
    return groupOf(path, this.known, (p) => lstatSync(this.host(p), { throwIfNoEntry: false })?.isDirectory());
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

export function homesOf(users: UserDb) {
  return users.all().filter((u) => u.home.startsWith('/') && u.home.length > 1);
}
