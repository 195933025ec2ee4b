import { keyPath } from './errors';
import type { UserDb } from './userdb';

/**
 * `impermanencectl import nix`: NixOS's evaluated `environment.persistence` (what
 * `nix eval --json .#nixosConfigurations.HOST.config.environment.persistence` prints, through
 * examples/nixos-export.nix) turned into our TOML, with the same option names. Pure: the caller
 * reads the JSON and writes the text.
 *
 * An evaluated submodule carries every option with its value, defaults included, and the
 * module's internal ones (dirPath, filePath, home, defaultPerms, enableDebugging, assertions).
 * A value equal to impermanence's default for its place cannot be told from one not written, so
 * it is left out: our defaults apply, which are impermanence's, except that `.ssh`, `.gnupg`,
 * what is below /root and the folders created inside a home are made 0700 rather than 0755
 * (impermanence #139). Whatever has no equivalent here is named, in `notes` and as comments.
 */
export interface ImportedConfig {
  /** The TOML file, comments first. */
  text: string;
  /** One line each: what was not carried over, or differs, naming the NixOS option. */
  notes: string[];
}

/** The input is not environment.persistence: nothing can be made of it. */
export class ImportError extends Error {}

type Json = null | boolean | number | string | Json[] | { [key: string]: Json };
type Obj = { [key: string]: Json };

/** Options an evaluated storage table holds (impermanence's submodule-options.nix). */
const STORAGE_KEYS = new Set(['enable', 'persistentStoragePath', 'hideMounts', 'allowTrash', 'enableDebugging', 'enableWarnings', 'directories', 'files', 'users', 'assertions']);
/** Options removed from impermanence (examples/nixos-export.nix leaves them out: their value is an error). */
const REMOVED_KEYS = new Set(['allowOther', 'removePrefixDirectory', 'defaultDirectoryMethod']);
const USER_KEYS = new Set(['directories', 'files', 'assertions']);
const DIRECTORY_KEYS = new Set(['directory', 'user', 'group', 'mode', 'hideMount', 'allowTrash', 'persistentStoragePath', 'home', 'enableDebugging', 'assertions', 'defaultPerms', 'dirPath']);
const FILE_KEYS = new Set(['file', 'parentDirectory', 'method', 'filePath', 'persistentStoragePath', 'home', 'enableDebugging', 'assertions']);
/** A file's parentDirectory is a set of the directory options (all internal but user, group, mode). */
const PARENT_KEYS = DIRECTORY_KEYS;
/**
 * NixOS's pathsNeededForBoot (nixos/lib/utils.nix): a persisted directory among them is
 * bind-mounted in the initrd there; here every mount is made before local-fs.target.
 */
const NEEDED_FOR_BOOT = new Set(['/', '/nix', '/nix/store', '/var', '/var/log', '/var/lib', '/var/lib/nixos', '/etc', '/usr']);
/** NixOS's own state: carried over, but nothing on another distribution uses it. */
const NIXOS_ONLY = /^\/(nix|etc\/nixos|var\/lib\/nixos)(\/|$)/;

interface Perms { user?: string; group?: string; mode?: string }

/** The storage table written, and the entries of each user, in order. */
interface Table {
  storage: string;
  enable: boolean;
  hideMounts: boolean;
  allowTrash: boolean;
  directories: string[];
  files: string[];
  users: Map<string, { home: string | undefined; directories: string[]; files: string[] }>;
}

export function importNix(data: unknown, opts: { source: string; users: UserDb }): ImportedConfig {
  const notes: string[] = [];
  const note = (where: Array<string | number>, what: string) => notes.push(`${keyPath(['environment', 'persistence', ...where])}: ${what}`);
  if (!isObj(data)) throw new ImportError(`expected environment.persistence: an object of storage roots, not ${describe(data)}`);
  const tables = new Map<string, Table>();
  const unknown = new Map<string, string[]>();
  const unknownKey = (key: string, where: Array<string | number>) => {
    const at = keyPath(['environment', 'persistence', ...where]);
    const list = unknown.get(key) ?? [];
    list.push(at);
    unknown.set(key, list);
  };

  for (const [name, value] of Object.entries(data)) {
    if (!isObj(value)) throw new ImportError(`${keyPath(['environment', 'persistence', name])}: expected a storage root (an object), not ${describe(value)}`);
    const s = value;
    for (const key of Object.keys(s)) {
      if (REMOVED_KEYS.has(key)) note([name, key], 'removed from impermanence (no effect there); not carried over');
      else if (!STORAGE_KEYS.has(key)) unknownKey(key, [name]);
    }
    const storage = str(s.persistentStoragePath, [name, 'persistentStoragePath']) ?? name;
    if (!storage.startsWith('/')) throw new ImportError(`${keyPath(['environment', 'persistence', name])}: the storage root ${JSON.stringify(storage)} is not an absolute path`);
    const enable = bool(s.enable, [name, 'enable']) ?? true;
    if (bool(s.enableDebugging, [name, 'enableDebugging'])) note([name, 'enableDebugging'], 'no equivalent (the generator and impermanence-prepare always log to the journal); not carried over');
    if (bool(s.enableWarnings, [name, 'enableWarnings']) === false) note([name, 'enableWarnings'], 'no equivalent (impermanencectl check reports every problem); not carried over');

    let table = tables.get(storage);
    if (table) {
      // Two NixOS tables with the same persistentStoragePath: one table here.
      if (table.enable !== enable) {
        note([name], `${enable ? 'enabled' : 'disabled'}, but another table of the storage ${storage} is ${table.enable ? 'enabled' : 'disabled'}: ${enable ? 'imported as enabled' : 'its entries are not carried over'}`);
        if (!enable) continue;
        table.enable = true;
      }
    } else {
      table = {
        storage,
        enable,
        hideMounts: bool(s.hideMounts, [name, 'hideMounts']) ?? false,
        allowTrash: bool(s.allowTrash, [name, 'allowTrash']) ?? false,
        directories: [],
        files: [],
        users: new Map(),
      };
      tables.set(storage, table);
    }
    const t = table;

    const system: Perms = { user: 'root', group: 'root', mode: '0755' };
    listOf(s.directories, [name, 'directories']).forEach((item, i) => {
      const line = directory(item, [name, 'directories', i], undefined, system, t, note, unknownKey);
      if (line) t.directories.push(line);
    });
    listOf(s.files, [name, 'files']).forEach((item, i) => {
      const line = file(item, [name, 'files', i], undefined, system, t, note, unknownKey);
      if (line) t.files.push(line);
    });
    if (s.users !== undefined && s.users !== null) {
      if (!isObj(s.users)) throw new ImportError(`${keyPath(['environment', 'persistence', name, 'users'])}: expected an object of users, not ${describe(s.users)}`);
      for (const [user, u] of Object.entries(s.users)) {
        if (!isObj(u)) throw new ImportError(`${keyPath(['environment', 'persistence', name, 'users', user])}: expected a user's table (an object), not ${describe(u)}`);
        for (const key of Object.keys(u)) {
          if (key === 'home') note([name, 'users', user, 'home'], 'removed from impermanence (the home comes from users.users); not carried over');
          else if (!USER_KEYS.has(key)) unknownKey(key, [name, 'users', user]);
        }
        const record = opts.users.user(user);
        const into = t.users.get(user) ?? { home: undefined, directories: [], files: [] };
        t.users.set(user, into);
        const owner = { name: user, homes: new Set<string>() };
        const defaults: Perms = { user, mode: '0755' }; // the group: users.users.<name>.group, in each entry's defaultPerms
        listOf(u.directories, [name, 'users', user, 'directories']).forEach((item, i) => {
          const line = directory(item, [name, 'users', user, 'directories', i], owner, defaults, t, note, unknownKey);
          if (line) into.directories.push(line);
        });
        listOf(u.files, [name, 'users', user, 'files']).forEach((item, i) => {
          const line = file(item, [name, 'users', user, 'files', i], owner, defaults, t, note, unknownKey);
          if (line) into.files.push(line);
        });
        if ([...into.directories, ...into.files].some((line) => /^(\{ (directory|file) = )?"[^"]*\//.test(line))) {
          note([name, 'users', user], 'folders created inside the home (such as .config for .config/app) are 0700 and the user\'s here, 0755 on NixOS; give parentDirectory to choose');
        }
        const [home, ...others] = owner.homes;
        if (others.length) note([name, 'users', user], `entries in several homes (${[...owner.homes].join(', ')}); ${home} is used`);
        if (!record) {
          note([name, 'users', user], `no user ${JSON.stringify(user)} in ${opts.users.passwdFile}: create it before impermanencectl check`);
          if (home) into.home ??= home;
        } else if (home && home !== record.home) into.home ??= home;
      }
    }
  }

  for (const [key, places] of unknown) {
    notes.push(`${places[0]}${places.length > 1 ? ` (and ${places.length - 1} more)` : ''}: unknown option ${JSON.stringify(key)}; not carried over`);
  }
  return { text: render([...tables.values()], opts.source, notes), notes };
}

type Note = (where: Array<string | number>, what: string) => void;
type Unknown = (key: string, where: Array<string | number>) => void;
type Owner = { name: string; homes: Set<string> } | undefined;

/**
 * What a directory or file entry starts with: a bare path is carried over as it is (`bare`, its
 * TOML); an object gets its keys checked and its path taken. Undefined: the path is left out (noted).
 */
function entryStart(kind: 'directory' | 'file', item: Json, at: Array<string | number>, owner: Owner, note: Note, unknownKey: Unknown): { bare: string } | { item: Obj; path: string } | undefined {
  if (typeof item === 'string') return checkedPath(item, at, owner, undefined, note) === undefined ? undefined : { bare: toml(relativeTo(item, owner)) };
  if (!isObj(item)) throw new ImportError(`${keyPath(['environment', 'persistence', ...at])}: expected a ${kind} (a string or an object), not ${describe(item)}`);
  const keys = kind === 'directory' ? DIRECTORY_KEYS : FILE_KEYS;
  for (const key of Object.keys(item)) if (!keys.has(key)) unknownKey(key, at);
  const raw = str(item[kind], [...at, kind]);
  if (raw === undefined) throw new ImportError(`${keyPath(['environment', 'persistence', ...at])}: no "${kind}"`);
  const fullKey = kind === 'directory' ? 'dirPath' : 'filePath';
  const path = checkedPath(raw, at, owner, str(item.home, [...at, 'home']), note, str(item[fullKey], [...at, fullKey]));
  return path === undefined ? undefined : { item, path };
}

function directory(entry: Json, at: Array<string | number>, owner: Owner, defaults: Perms, t: Table, note: Note, unknownKey: Unknown): string | undefined {
  const start = entryStart('directory', entry, at, owner, note, unknownKey);
  if (!start || 'bare' in start) return start?.bare;
  const { item, path } = start;
  const fields: Array<[string, string]> = [['directory', toml(path)]];
  fields.push(...perms(item, at, defaultsOf(item, at, defaults)));
  const hide = bool(item.hideMount, [...at, 'hideMount']);
  if (hide !== undefined && hide !== t.hideMounts) fields.push(['hideMount', String(hide)]);
  const trash = bool(item.allowTrash, [...at, 'allowTrash']);
  if (trash !== undefined && trash !== t.allowTrash) fields.push(['allowTrash', String(trash)]);
  storageOf(item, at, t, fields);
  const name = path.slice(path.lastIndexOf('/') + 1);
  const mode = item.mode ?? defaultsOf(item, at, defaults).mode;
  if ((name === '.ssh' || name === '.gnupg' || (!owner && path.startsWith('/root/'))) && (mode === undefined || mode === '0755')) {
    note(at, `${path} is created 0700 here (impermanence #139), 0755 on NixOS; add mode = "0755" to keep NixOS's`);
  }
  if (!owner) {
    const abs = path;
    if (NEEDED_FOR_BOOT.has(abs)) note(at, `${abs} is bind-mounted in the initrd on NixOS with a systemd initrd (pathsNeededForBoot); here it is mounted once the initrd is done, before local-fs.target`);
    if (NIXOS_ONLY.test(abs)) note(at, `${abs} is NixOS's own state: carried over, but nothing else uses it; remove it if this system is not NixOS`);
  }
  return fields.length === 1 ? fields[0]![1] : `{ ${fields.map(([k, v]) => `${k} = ${v}`).join(', ')} }`;
}

function file(entry: Json, at: Array<string | number>, owner: Owner, defaults: Perms, t: Table, note: Note, unknownKey: Unknown): string | undefined {
  const start = entryStart('file', entry, at, owner, note, unknownKey);
  if (!start || 'bare' in start) return start?.bare;
  const { item, path } = start;
  const fields: Array<[string, string]> = [['file', toml(path)]];
  const parent = item.parentDirectory;
  if (parent !== undefined && parent !== null) {
    if (!isObj(parent)) throw new ImportError(`${keyPath(['environment', 'persistence', ...at, 'parentDirectory'])}: expected an object, not ${describe(parent)}`);
    for (const key of Object.keys(parent)) if (!PARENT_KEYS.has(key)) unknownKey(key, [...at, 'parentDirectory']);
    const set = perms(parent, [...at, 'parentDirectory'], defaultsOf(parent, [...at, 'parentDirectory'], defaults));
    if (set.length) {
      const immediate = owner ? path.includes('/') : path.lastIndexOf('/') > 0;
      if (immediate) fields.push(['parentDirectory', `{ ${set.map(([k, v]) => `${k} = ${v}`).join(', ')} }`]);
      else if (!owner) note([...at, 'parentDirectory'], 'the parent is "/", which is never created; not carried over');
      else fields.push(['parentDirectory', `{ ${set.map(([k, v]) => `${k} = ${v}`).join(', ')} }`]); // the home itself
    }
  }
  const method = str(item.method, [...at, 'method']);
  if (method !== undefined && method !== 'auto') {
    if (method === 'symlink') fields.push(['method', toml(method)]);
    else note([...at, 'method'], `unknown method ${JSON.stringify(method)} (auto or symlink); not carried over`);
  }
  storageOf(item, at, t, fields);
  return fields.length === 1 ? fields[0]![1] : `{ ${fields.map(([k, v]) => `${k} = ${v}`).join(', ')} }`;
}

/**
 * The entry's path as we write it: absolute for the system, relative to the home in a user's
 * table. NixOS joins a home entry to the home with every slash collapsed (concatPaths), so
 * "/Downloads" there is "Downloads" here; its dirPath/filePath say where it really is.
 */
function checkedPath(raw: string, at: Array<string | number>, owner: Owner, home: string | undefined, note: Note, full?: string): string | undefined {
  if (!owner) return raw;
  if (home) owner.homes.add(home);
  if (home && full && full.startsWith(`${home}/`)) return full.slice(home.length + 1);
  const rel = raw.replace(/^\/+/, '');
  if (rel === '') {
    note(at, 'the home itself, which cannot be persisted as an entry of its own; not carried over');
    return undefined;
  }
  return rel;
}

function relativeTo(raw: string, owner: Owner): string {
  return owner ? raw.replace(/^\/+/, '') : raw;
}

/** The owner and mode impermanence gives by default at this place: the entry's defaultPerms when evaluated. */
function defaultsOf(item: Obj, at: Array<string | number>, fallback: Perms): Perms {
  const d = item.defaultPerms;
  if (!isObj(d)) return fallback;
  return { user: str(d.user, [...at, 'defaultPerms', 'user']), group: str(d.group, [...at, 'defaultPerms', 'group']), mode: str(d.mode, [...at, 'defaultPerms', 'mode']) };
}

/** user, group and mode that differ from the defaults of their place. */
function perms(item: Obj, at: Array<string | number>, defaults: Perms): Array<[string, string]> {
  const out: Array<[string, string]> = [];
  for (const key of ['user', 'group', 'mode'] as const) {
    const value = item[key];
    if (value === undefined || value === null) continue;
    const text = typeof value === 'number' ? String(value) : str(value, [...at, key])!;
    if (text !== defaults[key]) out.push([key, toml(text)]);
  }
  return out;
}

function storageOf(item: Obj, at: Array<string | number>, t: Table, fields: Array<[string, string]>): void {
  const storage = str(item.persistentStoragePath, [...at, 'persistentStoragePath']);
  if (storage !== undefined && storage !== t.storage) fields.push(['persistentStoragePath', toml(storage)]);
}

function render(tables: Table[], source: string, notes: string[]): string {
  const lines = [`# Imported from NixOS's environment.persistence (${oneLine(source)}) by impermanencectl import nix.`];
  if (notes.length) {
    lines.push('# Not carried over, or different here:');
    for (const n of notes) lines.push(`#   ${oneLine(n)}`);
  }
  for (const t of tables) {
    const header = `persistence.${toml(t.storage)}`;
    lines.push('', `[${header}]`);
    if (!t.enable) lines.push('enable = false');
    if (t.hideMounts) lines.push('hideMounts = true');
    if (t.allowTrash) lines.push('allowTrash = true');
    list(lines, 'directories', t.directories);
    list(lines, 'files', t.files);
    for (const [name, u] of t.users) {
      if (!u.directories.length && !u.files.length) continue;
      lines.push('', `[${header}.users.${bareKey(name)}]`);
      if (u.home !== undefined) lines.push(`home = ${toml(u.home)}`);
      list(lines, 'directories', u.directories);
      list(lines, 'files', u.files);
    }
  }
  return lines.join('\n') + '\n';
}

function list(lines: string[], key: string, items: string[]): void {
  if (!items.length) return;
  lines.push(`${key} = [`);
  for (const item of items) lines.push(`  ${item},`);
  lines.push(']');
}

/** A TOML basic string. JSON's escapes are TOML's, but for DEL, which TOML wants escaped too. */
export function toml(text: string): string {
  return JSON.stringify(text).replace(/\u007f/g, '\\u007F');
}

function bareKey(key: string): string {
  return /^[A-Za-z0-9_-]+$/.test(key) ? key : toml(key);
}

/** A comment line cannot hold a line break or a control character. */
function oneLine(text: string): string {
  // eslint-disable-next-line no-control-regex
  return text.replace(/[\u0000-\u001f\u007f]/g, (c) => `\\x${c.charCodeAt(0).toString(16).padStart(2, '0')}`);
}

function isObj(v: unknown): v is Obj {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function describe(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'a list';
  return typeof v === 'string' ? `the string ${JSON.stringify(v.length > 40 ? v.slice(0, 40) + '…' : v)}` : `a ${typeof v}`;
}

function str(v: Json | undefined, at: Array<string | number>): string | undefined {
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'string') throw new ImportError(`${keyPath(['environment', 'persistence', ...at])}: expected a string, not ${describe(v)}`);
  return v;
}

function bool(v: Json | undefined, at: Array<string | number>): boolean | undefined {
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'boolean') throw new ImportError(`${keyPath(['environment', 'persistence', ...at])}: expected true or false, not ${describe(v)}`);
  return v;
}

function listOf(v: Json | undefined, at: Array<string | number>): Json[] {
  if (v === undefined || v === null) return [];
  if (!Array.isArray(v)) throw new ImportError(`${keyPath(['environment', 'persistence', ...at])}: expected a list, not ${describe(v)}`);
  return v;
}

