import { lstatSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { LoadedFile } from './load';
import { isInside, normalizePath } from './paths';

/**
 * The local user database, read from /etc/passwd and /etc/group under a root. The generator
 * runs before NSS services exist and may talk to no other process, so it reads the files
 * directly; users that only exist in LDAP or systemd-homed cannot own persisted paths.
 */
export interface UserRecord { name: string; uid: number; gid: number; home: string }
export interface GroupRecord { name: string; gid: number }

export class UserDb {
  private readonly users = new Map<string, UserRecord>();
  private readonly groupsByName = new Map<string, GroupRecord>();
  private readonly groupsById = new Map<number, GroupRecord>();
  /** The files read, for messages ("not in /persist/etc/passwd"). */
  readonly passwdFile: string;
  readonly groupFile: string;

  /**
   * `source`: the folder the files came from, or each file's own path when they came from
   * different places (a persisted copy in storage, see read()). `fromStorage`: at least one
   * file is a storage copy, which the running system only sees once it is mounted.
   */
  constructor(passwd: string, group: string, source: string | { passwd: string; group: string } = '/etc', readonly fromStorage = false) {
    this.passwdFile = typeof source === 'string' ? `${source}/passwd` : source.passwd;
    this.groupFile = typeof source === 'string' ? `${source}/group` : source.group;
    for (const line of passwd.split('\n')) {
      const f = line.split(':');
      if (f.length < 7 || line.startsWith('#')) continue;
      const uid = Number(f[2]);
      const gid = Number(f[3]);
      if (!Number.isInteger(uid) || !Number.isInteger(gid)) continue;
      if (!this.users.has(f[0]!)) this.users.set(f[0]!, { name: f[0]!, uid, gid, home: f[5]! });
    }
    for (const line of group.split('\n')) {
      const f = line.split(':');
      if (f.length < 3 || line.startsWith('#')) continue;
      const gid = Number(f[2]);
      if (!Number.isInteger(gid)) continue;
      const rec = { name: f[0]!, gid };
      if (!this.groupsByName.has(rec.name)) this.groupsByName.set(rec.name, rec);
      if (!this.groupsById.has(gid)) this.groupsById.set(gid, rec);
    }
  }

  /**
   * Reads /etc/passwd and /etc/group under `root`. With the config's `loaded` files, a file the
   * config persists is read from its copy in storage when that copy is a regular file: that
   * copy is what /etc/passwd will be once mounted, and on a tmpfs root or a root rolled back to
   * a snapshot the root's own file lacks every user added since (see persistedUserFiles).
   */
  static read(root = '/', loaded: readonly LoadedFile[] = []): UserDb {
    const copies = loaded.length ? persistedUserFiles(loaded) : {};
    const pick = (name: 'passwd' | 'group') => {
      const copy = copies[name];
      if (copy) {
        try {
          if (lstatSync(join(root, copy)).isFile()) return { path: join(root, copy), text: readFileSync(join(root, copy), 'utf8'), stored: true };
        } catch {
          // not in storage yet (a first boot adopts the root's file): the root's file it is
        }
      }
      const path = join(root, 'etc', name);
      try {
        return { path, text: readFileSync(path, 'utf8'), stored: false };
      } catch {
        return { path, text: '', stored: false };
      }
    };
    const passwd = pick('passwd');
    const group = pick('group');
    if (!passwd.stored && !group.stored) return new UserDb(passwd.text, group.text, join(root, 'etc'));
    return new UserDb(passwd.text, group.text, { passwd: passwd.path, group: group.path }, true);
  }

  user(name: string): UserRecord | undefined {
    return this.users.get(name);
  }

  /** A user given by name or numeric id exists. */
  hasUser(nameOrId: string): boolean {
    if (/^\d+$/.test(nameOrId)) return true;
    return this.users.has(nameOrId);
  }

  hasGroup(nameOrId: string): boolean {
    if (/^\d+$/.test(nameOrId)) return true;
    return this.groupsByName.has(nameOrId);
  }

  all(): UserRecord[] {
    return [...this.users.values()];
  }

  /** Every group, for numeric ids (see ResolvedConfig.ids). */
  allGroups(): GroupRecord[] {
    return [...this.groupsByName.values()];
  }

  /** A user's id, from a name or a number; undefined when unknown. */
  uidOf(nameOrId: string): number | undefined {
    return /^\d+$/.test(nameOrId) ? Number(nameOrId) : this.users.get(nameOrId)?.uid;
  }

  gidOf(nameOrId: string): number | undefined {
    return /^\d+$/.test(nameOrId) ? Number(nameOrId) : this.groupsByName.get(nameOrId)?.gid;
  }

  userName(uid: number): string {
    for (const u of this.users.values()) if (u.uid === uid) return u.name;
    return String(uid);
  }

  groupName(gid: number): string {
    return this.groupsById.get(gid)?.name ?? String(gid);
  }

  /** The name of a user's primary group, or its number when the group has no entry. */
  primaryGroup(user: UserRecord): string {
    return this.groupsById.get(user.gid)?.name ?? String(user.gid);
  }
}

/**
 * Where the config persists /etc/passwd and /etc/group: the storage path of each that a storage
 * root declares as a file, or inside a declared folder (such as /etc itself), honouring
 * persistentStoragePath and `enable = false`. Read from the loaded files before they are
 * resolved (resolving needs the user database); a path that does not parse is left to
 * resolveConfig to report. Presets are not looked into: declare these files yourself.
 */
export function persistedUserFiles(loaded: readonly LoadedFile[]): { passwd?: string; group?: string } {
  const norm = (raw: string) => {
    try {
      return normalizePath(raw, { relative: false });
    } catch {
      return undefined;
    }
  };
  const disabled = new Set<string>();
  for (const { config } of loaded) {
    for (const [key, decl] of Object.entries(config.persistence ?? {})) {
      const storage = norm(key);
      if (storage && decl.enable === false) disabled.add(storage);
    }
  }
  const found: { passwd?: string; group?: string } = {};
  for (const { config } of loaded) {
    for (const [key, decl] of Object.entries(config.persistence ?? {})) {
      const root = norm(key);
      if (!root || disabled.has(root)) continue;
      const consider = (raw: string | undefined, rawStorage: string | undefined, kind: 'file' | 'directory') => {
        // Only /etc or the file itself holds them, and normalizing only drops slashes ("/", "."
        // and ".." are refused): a path without "etc" is neither, and is not normalized here
        // (this runs at every boot, for every entry, before resolve.ts normalizes them all).
        if (!raw?.includes('etc')) return;
        const path = norm(raw);
        const storage = rawStorage === undefined ? root : norm(rawStorage);
        if (!path || !storage) return;
        for (const name of ['passwd', 'group'] as const) {
          const target = `/etc/${name}`;
          if (found[name]) continue;
          if (kind === 'file' ? path === target : isInside(target, path)) found[name] = storage + target;
        }
      };
      for (const f of decl.files ?? []) typeof f === 'string' ? consider(f, undefined, 'file') : consider(f.file, f.persistentStoragePath, 'file');
      for (const d of decl.directories ?? []) typeof d === 'string' ? consider(d, undefined, 'directory') : consider(d.directory, d.persistentStoragePath, 'directory');
    }
  }
  return found;
}
