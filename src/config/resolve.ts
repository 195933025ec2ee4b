import { ConfigError, InvalidConfig, keyPath } from './errors';
import type { LoadedFile } from './load';
import { parseMode } from './mode';
import { isInside, normalizePath, parentsOf, systemdPathProblem } from './paths';
import { systemPresets, unknownPresetProblem, type PresetSource } from './presets';
import type { DirectoryDecl, FileDecl, PermsDecl, StorageDecl } from './schema';
import { escapePath, UNIT_NAME_MAX } from './unit-name';
import { flat } from '../shared/flat';
import type { UserDb } from './userdb';
import { resolveWipe, type WipeSettings } from './wipe';

/** Owner and mode, applied only when a path is first created. */
export interface Perms { user: string; group: string; mode: number }

/** Where an entry was declared: the file and the key path inside it. */
export interface Origin { file: string; entry: string }

/** One persisted path, fully resolved: every default applied, every name checked. */
export interface Entry {
  kind: 'directory' | 'file';
  /** Absolute path on the (wiped) root. */
  path: string;
  /** The storage root that holds it (the table key, or `persistentStoragePath`). */
  storage: string;
  /** Absolute path of the persistent copy: storage + path. */
  source: string;
  /** Owner and mode of a persisted directory (files keep whatever the program gives them). */
  perms?: Perms;
  /** Files only: `auto` bind-mounts a file that exists in storage and symlinks it otherwise. */
  method?: 'auto' | 'symlink';
  /** The immediate parent's owner and mode, when declared with `parentDirectory`. */
  parentDirectory?: { path: string; perms: Perms };
  /** The declared home the entry is in (a user's entry, or any other inside it): folders made inside it belong to that user (see parentPerms). */
  home?: HomeOwner;
  hideMount: boolean;
  allowTrash: boolean;
  /** Mount options: the storage root's `mountOptions`, then the entry's own (bind mounts only). */
  mountOptions: string[];
  origin: Origin;
}

export interface HomeOwner { name: string; group: string; home: string }

/**
 * Owner and mode for a parent directory an entry may have to create: `parentDirectory` for the
 * immediate parent if declared; otherwise root:root 0755, and inside a home the user's. What is
 * created never lets others read what it holds by default (impermanence #139): the home itself,
 * the folders created inside it and /root are 0700.
 */
export function parentPerms(entry: Entry, dir: string): Perms {
  if (entry.parentDirectory && entry.parentDirectory.path === dir) return entry.parentDirectory.perms;
  const h = entry.home;
  if (h && (dir === h.home || isInside(dir, h.home))) return { user: h.name, group: h.group, mode: 0o700 };
  if (dir === '/root') return ROOT_PRIVATE;
  return ROOT_DEFAULT;
}

/** Folders that hold secrets: persisted with 0700 unless a mode is declared. */
const PRIVATE_FOLDERS = new Set(['.ssh', '.gnupg']);

export interface StorageRoot { path: string; origin: Origin }

export interface ResolvedConfig {
  files: string[];
  storages: StorageRoot[];
  entries: Entry[];
  /** `[drift] ignore` of every file: absolute paths, where "*" stands for one whole path component. */
  driftIgnore: string[];
  /** The `[wipe]` table, if one file declares it. */
  wipe?: WipeSettings;
  /**
   * Set when the user database was read from a copy in storage (the config persists
   * /etc/passwd or /etc/group, see UserDb.read): the ids of its users and groups by name. The
   * generator then writes owners as numbers, since systemd-tmpfiles looks names up before
   * that copy is mounted, on a root whose /etc/passwd may not have them.
   */
  ids?: { users: Record<string, number>; groups: Record<string, number> };
}

const ROOT_DEFAULT: Perms = { user: 'root', group: 'root', mode: 0o755 };
const ROOT_PRIVATE: Perms = { user: 'root', group: 'root', mode: 0o700 };

/**
 * Turns loaded config files into the list of persisted paths. Pure apart from the user database
 * it is handed. Every problem is collected; if there is any, InvalidConfig is thrown and nothing
 * is returned, so that a bad config never activates half a setup.
 */
export function resolveConfig(loaded: readonly LoadedFile[], users: UserDb, presets: PresetSource = systemPresets()): ResolvedConfig {
  const problems: ConfigError[] = [];
  const fail = (origin: Origin, problem: string) => problems.push(new ConfigError(origin.file, origin.entry, problem));

  // Storage-wide options may be set in several files; they must agree.
  interface StorageState { path: string; origin: Origin; enable?: [boolean, Origin]; hideMounts?: [boolean, Origin]; allowTrash?: [boolean, Origin]; mountOptions?: [string[], Origin] }
  const storages = new Map<string, StorageState>();
  /** Each declared user's home (its owner) and where it was last declared: every declaration must agree. */
  const homes = new Map<string, { owner: HomeOwner; origin: Origin }>();
  const declared: Array<{ decl: StorageDecl; storage: string; file: string; key: string }> = [];
  const driftIgnore: string[] = [];

  for (const { file, config } of loaded) {
    config.drift?.ignore?.forEach((raw, i) => {
      try {
        driftIgnore.push(normalizePath(raw, { relative: false }));
      } catch (err) {
        fail({ file, entry: `drift.ignore[${i}]` }, (err as Error).message);
      }
    });
    for (const [key, decl] of Object.entries(config.persistence ?? {})) {
      const origin = { file, entry: keyPath(['persistence', key]) };
      let storage: string;
      try {
        storage = storageRoot(key);
      } catch (err) {
        fail(origin, `storage root: ${(err as Error).message}`);
        continue;
      }
      const state = storages.get(storage) ?? { path: storage, origin };
      storages.set(storage, state);
      for (const option of ['enable', 'hideMounts', 'allowTrash'] as const) {
        const value = decl[option];
        if (value === undefined) continue;
        const before = state[option];
        if (before && before[0] !== value) {
          fail(origin, `${option} = ${value} conflicts with ${option} = ${before[0]} in ${before[1].file}; set it once`);
        } else state[option] = [value, origin];
      }
      if (decl.mountOptions) {
        const before = state.mountOptions;
        const options = checkMountOptions(decl.mountOptions, (p) => fail({ file, entry: `${origin.entry}.mountOptions` }, p));
        if (before && before[0].join(',') !== decl.mountOptions.join(',')) {
          fail(origin, `mountOptions = ${JSON.stringify(decl.mountOptions)} conflicts with ${JSON.stringify(before[0])} in ${before[1].file}; set it once`);
        } else if (options) state.mountOptions = [options, origin];
      }
      declared.push({ decl, storage, file, key });
    }
  }

  const entries: Entry[] = [];
  /** `include` lists, expanded once every entry written out is known (those win over a preset's). */
  const includes: Array<{ context: Context; at: string; names: string[]; owner: HomeOwner | undefined }> = [];
  for (const { decl, storage, file, key } of declared) {
    const state = storages.get(storage)!;
    if (state.enable && !state.enable[0]) continue;
    const defaults = { hideMount: state.hideMounts?.[0] ?? false, allowTrash: state.allowTrash?.[0] ?? false, mountOptions: [...new Set(state.mountOptions?.[0] ?? [])] };
    const base = ['persistence', key];

    const context: Context = { file, storage, defaults, users, fail };
    const at = keyPath(base);
    decl.directories?.forEach((d, i) => push(directoryEntry(context, d, `${at}.directories[${i}]`, undefined)));
    decl.files?.forEach((f, i) => push(fileEntry(context, f, `${at}.files[${i}]`, undefined)));
    if (decl.include) includes.push({ context, at, names: decl.include, owner: undefined });

    for (const [name, userDecl] of Object.entries(decl.users ?? {})) {
      const origin = { file, entry: keyPath([...base, 'users', name]) };
      const record = users.user(name);
      if (!record) {
        fail(origin, `unknown user ${JSON.stringify(name)}: not in ${users.passwdFile}`);
        continue;
      }
      let home: string;
      try {
        home = normalizePath(userDecl.home ?? record.home, { relative: false });
      } catch (err) {
        const where = userDecl.home !== undefined ? keyPath([...base, 'users', name, 'home']) : origin.entry;
        fail({ file, entry: where }, `home: ${(err as Error).message}${userDecl.home === undefined ? ` (from ${users.passwdFile}; set home = "…")` : ''}`);
        continue;
      }
      const known = homes.get(name);
      if (known && known.owner.home !== home) {
        fail(origin, `home ${JSON.stringify(home)} conflicts with home ${JSON.stringify(known.owner.home)} in ${known.origin.file}`);
        continue;
      }
      const owner: HomeOwner = { name, group: users.primaryGroup(record), home };
      homes.set(name, { owner, origin });
      userDecl.directories?.forEach((d, i) => push(directoryEntry(context, d, `${origin.entry}.directories[${i}]`, owner)));
      userDecl.files?.forEach((f, i) => push(fileEntry(context, f, `${origin.entry}.files[${i}]`, owner)));
      if (userDecl.include) includes.push({ context, at: origin.entry, names: userDecl.include, owner });
    }
  }

  // A preset's entry is left out when the same path, or a folder holding it, is already declared
  // (written out, or by a preset included before): presets add to a config, they never clash with it.
  const covered = entries.map((e) => e.path);
  const isCovered = (path: string) => covered.some((c) => c === path || isInside(path, c));
  for (const { context, at, names, owner } of includes) {
    names.forEach((name, i) => {
      const where = { file: context.file, entry: `${at}.include[${i}]` };
      let preset;
      try {
        preset = presets.get(name);
      } catch (err) {
        if (!(err instanceof InvalidConfig)) throw err;
        problems.push(...err.problems);
        return;
      }
      if (!preset) return fail(where, unknownPresetProblem(presets, name));
      const part = owner ? preset.decl.home : preset.decl;
      if (!part?.directories?.length && !part?.files?.length) {
        return fail(where, owner
          ? `preset ${JSON.stringify(name)} has no paths in a home (no [home] table in ${preset.file}): include it from the storage root, not from users.${owner.name}`
          : `preset ${JSON.stringify(name)} has only paths in a home (its [home] table): include it from users.<name>, as users.<name>.include = [${JSON.stringify(name)}]`);
      }
      const inPreset = (kind: string, j: number) => `${where.entry} (preset ${name}: ${owner ? 'home.' : ''}${kind}[${j}])`;
      const add = (entry: Entry | undefined) => {
        if (!entry || isCovered(entry.path)) return;
        covered.push(entry.path);
        entries.push(entry);
      };
      part.directories?.forEach((d, j) => add(directoryEntry(context, d, inPreset('directories', j), owner)));
      part.files?.forEach((f, j) => add(fileEntry(context, f, inPreset('files', j), owner)));
    });
  }

  function push(entry: Entry | undefined) {
    if (entry) entries.push(entry);
  }

  // An entry declared outside users.<name> but inside a declared home: the folders made on its way
  // inside that home belong to the user too, whichever entry comes first (else the home itself
  // could be made root:root 0755 first, and its user could not write in it). The deepest home wins.
  if (homes.size) {
    const owners = [...homes.values()].map((h) => h.owner).sort((a, b) => b.home.length - a.home.length);
    for (const e of entries) {
      if (e.home) continue;
      const h = owners.find((o) => isInside(e.path, o.home));
      if (h) e.home = h;
    }
  }

  checkOverlaps(entries, [...storages.values()].filter((s) => !s.enable || s.enable[0]), fail);
  const wipe = resolveWipe(loaded, fail);
  if (problems.length) throw new InvalidConfig(problems);
  return {
    files: loaded.map((l) => l.file),
    storages: [...storages.values()].filter((s) => !s.enable || s.enable[0]).map(({ path, origin }) => ({ path, origin })),
    entries,
    driftIgnore,
    ...(wipe ? { wipe } : {}),
    ...(users.fromStorage
      ? { ids: { users: Object.fromEntries(users.all().map((u) => [u.name, u.uid])), groups: Object.fromEntries(users.allGroups().map((g) => [g.name, g.gid])) } }
      : {}),
  };
}

interface Context {
  file: string;
  storage: string;
  defaults: { hideMount: boolean; allowTrash: boolean; mountOptions: string[] };
  users: UserDb;
  fail: (origin: Origin, problem: string) => void;
}

function directoryEntry(ctx: Context, item: string | DirectoryDecl, at: string, owner: HomeOwner | undefined): Entry | undefined {
  const decl = typeof item === 'string' ? { directory: item } : item;
  const entry = baseEntry(ctx, 'directory', decl.directory, decl.persistentStoragePath, decl.parentDirectory, at, owner);
  if (!entry) return undefined;
  const secret = PRIVATE_FOLDERS.has(entry.path.slice(entry.path.lastIndexOf('/') + 1)) || entry.path.startsWith('/root/');
  const mode = secret ? 0o700 : 0o755;
  const fallback = owner ? { user: owner.name, group: owner.group, mode } : { ...ROOT_DEFAULT, mode };
  entry.perms = checkPerms(ctx, decl, fallback, entry.origin, '');
  if (!entry.perms) return undefined;
  entry.hideMount = decl.hideMount ?? ctx.defaults.hideMount;
  entry.allowTrash = decl.allowTrash ?? ctx.defaults.allowTrash;
  if (!withMountOptions(ctx, entry, decl.mountOptions)) return undefined;
  return entry;
}

function fileEntry(ctx: Context, item: string | FileDecl, at: string, owner: HomeOwner | undefined): Entry | undefined {
  const decl: FileDecl = typeof item === 'string' ? { file: item } : item;
  const entry = baseEntry(ctx, 'file', decl.file, decl.persistentStoragePath, decl.parentDirectory, at, owner);
  if (!entry) return undefined;
  entry.method = decl.method ?? 'auto';
  entry.hideMount = ctx.defaults.hideMount;
  if (!withMountOptions(ctx, entry, decl.mountOptions)) return undefined;
  return entry;
}

/** An entry with its path, storage and parentDirectory resolved; every field present, so all entries share one shape. */
function baseEntry(
  ctx: Context,
  kind: Entry['kind'],
  rawPath: string,
  rawStorage: string | undefined,
  parentDecl: PermsDecl | undefined,
  at: string,
  owner: HomeOwner | undefined,
): Entry | undefined {
  const origin = { file: ctx.file, entry: flat(at) };
  let path: string;
  let storage = ctx.storage;
  try {
    path = owner ? `${owner.home}/${normalizePath(rawPath, { relative: true })}` : normalizePath(rawPath, { relative: false });
    if (rawStorage !== undefined) storage = storageRoot(rawStorage, 'persistentStoragePath: ');
    // What systemd would refuse at boot is refused here, by `check`, before a reboot.
    const bad = systemdPathProblem(path) ?? systemdPathProblem(storage + path);
    if (bad) throw new Error(bad);
  } catch (err) {
    ctx.fail(origin, (err as Error).message);
    return undefined;
  }
  const entry: Entry = {
    kind, path, storage, source: flat(storage + path), perms: undefined, method: undefined,
    parentDirectory: undefined, home: owner, hideMount: false, allowTrash: false, mountOptions: [], origin,
  };
  if (parentDecl) {
    // As impermanence: `parentDirectory` sets the immediate parent only.
    const immediate = path.slice(0, path.lastIndexOf('/'));
    if (!immediate) {
      ctx.fail(origin, 'parentDirectory is set, but the parent is "/", which is never created');
      return undefined;
    }
    const perms = checkPerms(ctx, parentDecl, parentPerms(entry, immediate), origin, 'parentDirectory.');
    if (!perms) return undefined;
    entry.parentDirectory = { path: immediate, perms };
  }
  return entry;
}

/** The entry's mount options after its storage root's; false (and a problem reported) when one is refused. */
function withMountOptions(ctx: Context, entry: Entry, own: string[] | undefined): boolean {
  const checked = own ? checkMountOptions(own, (p) => ctx.fail({ file: ctx.file, entry: `${entry.origin.entry}.mountOptions` }, p)) : [];
  if (!checked) return false;
  // The storage root's own array (once each, see defaults) when the entry adds none (most entries; never changed after this).
  entry.mountOptions = checked.length ? [...new Set([...ctx.defaults.mountOptions, ...checked])] : ctx.defaults.mountOptions;
  return true;
}

/** What mount.impermanence applies to a bind mount (the rest of mount(8)'s options make no sense for one). */
export const KERNEL_MOUNT_OPTIONS = ['ro', 'rw', 'nosuid', 'suid', 'nodev', 'dev', 'noexec', 'exec', 'noatime', 'relatime', 'strictatime', 'nodiratime', 'diratime'];

/**
 * Mount options as the config may give them: those mount.impermanence applies, and options for
 * other programs, which start with x- or X- (x-gvfs-show, X-fstrim.notrim). Undefined (and each
 * problem reported) when one is refused.
 */
function checkMountOptions(options: string[], fail: (problem: string) => void): string[] | undefined {
  let ok = true;
  for (const o of options) {
    if (!/^[A-Za-z0-9_.:=@+-]+$/.test(o)) {
      fail(`mount option ${JSON.stringify(o)} is not one word (no commas, spaces, quotes or control characters)`);
      ok = false;
    } else if (!KERNEL_MOUNT_OPTIONS.includes(o) && !/^[xX]-./.test(o)) {
      fail(`unknown mount option ${JSON.stringify(o)}: a persisted path takes ${KERNEL_MOUNT_OPTIONS.join(', ')}, and options for other programs starting with x- or X-`);
      ok = false;
    }
  }
  return ok ? options : undefined;
}

/**
 * A storage root, normalized, or an error saying why systemd could not use it: as a path (see
 * systemdPathProblem), and as the instance of impermanence-prepare@.service, whose name systemd
 * never shortens (unit_name_from_path_instance refuses a name that is too long).
 */
function storageRoot(raw: string, prefix = ''): string {
  const path = normalizePath(raw, { relative: false });
  const bad = systemdPathProblem(path);
  if (bad) throw new Error(prefix + bad);
  const unit = `impermanence-prepare@${escapePath(path)}.service`;
  if (unit.length > UNIT_NAME_MAX) {
    throw new Error(`${prefix}the storage root is too long for its unit ${unit.slice(0, 40)}…: ${unit.length} characters escaped, systemd allows ${UNIT_NAME_MAX}`);
  }
  return path;
}

function checkPerms(ctx: Context, decl: PermsDecl, fallback: Perms, origin: Origin, prefix: string): Perms | undefined {
  let ok = true;
  let mode = fallback.mode;
  if (decl.mode !== undefined) {
    try {
      mode = parseMode(decl.mode);
    } catch (err) {
      ctx.fail(origin, `${prefix}mode: ${(err as Error).message}`);
      ok = false;
    }
  }
  if (decl.user !== undefined && !ctx.users.hasUser(decl.user)) {
    ctx.fail(origin, `${prefix}user: unknown user ${JSON.stringify(decl.user)}: not in ${ctx.users.passwdFile}`);
    ok = false;
  }
  if (decl.group !== undefined && !ctx.users.hasGroup(decl.group)) {
    ctx.fail(origin, `${prefix}group: unknown group ${JSON.stringify(decl.group)}: not in ${ctx.users.groupFile}`);
    ok = false;
  }
  if (!ok) return undefined;
  if (decl.user === undefined && decl.group === undefined && decl.mode === undefined) return fallback; // shared, not copied
  return { user: decl.user ?? fallback.user, group: decl.group ?? fallback.group, mode };
}

/**
 * Refuses what cannot be mounted as declared: the same path twice, a path inside another
 * persisted path (the outer bind mount would hide or shadow it), a path inside a storage root,
 * a storage root inside a persisted path, and parents declared with two different owners or modes.
 */
function checkOverlaps(entries: Entry[], storages: Array<{ path: string }>, fail: (o: Origin, p: string) => void) {
  const byPath = new Map<string, Entry>();
  const where = (e: Entry) => `${e.origin.file}: ${e.origin.entry}`;
  for (const e of entries) {
    const first = byPath.get(e.path);
    if (first) fail(e.origin, `duplicate: ${e.path} is already persisted by ${where(first)}`);
    else byPath.set(e.path, e);
  }
  const storagePaths = [...new Set([...storages.map((s) => s.path), ...entries.map((e) => e.storage)])];
  const explicitParents = new Map<string, Entry>();
  // Folders whose whole chain of parents holds no persisted path: many entries share a few.
  const clear = new Set<string>();
  for (const e of entries) {
    if (byPath.get(e.path) !== e) continue;
    if (!clear.has(e.path.slice(0, e.path.lastIndexOf('/')))) {
      const parents = parentsOf(e.path);
      const outer = parents.map((dir) => byPath.get(dir)).find((o) => o !== undefined);
      if (outer) fail(e.origin, `${e.path} is inside ${outer.path}, which is already persisted by ${where(outer)}; persist only one of them`);
      else for (const dir of parents) clear.add(dir);
    }
    for (const storage of storagePaths) {
      if (e.path === storage || isInside(e.path, storage)) fail(e.origin, `${e.path} is inside the storage root ${storage}`);
      else if (isInside(storage, e.path)) fail(e.origin, `the storage root ${storage} is inside ${e.path}; a storage root cannot be persisted`);
    }
    if (e.parentDirectory) {
      const { path, perms: mine } = e.parentDirectory;
      const other = explicitParents.get(path);
      const theirs = other?.parentDirectory?.perms;
      if (other && theirs && (theirs.user !== mine.user || theirs.group !== mine.group || theirs.mode !== mine.mode)) {
        fail(e.origin, `parentDirectory of ${path} differs from the one declared by ${where(other)}; declare it the same way or once`);
      } else explicitParents.set(path, e);
    }
  }
}
