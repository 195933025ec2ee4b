import { readFileSync } from 'node:fs';
import { join } from 'node:path';

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

  constructor(passwd: string, group: string, readonly source = '/etc') {
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

  static read(root = '/'): UserDb {
    const read = (f: string) => {
      try {
        return readFileSync(join(root, 'etc', f), 'utf8');
      } catch {
        return '';
      }
    };
    return new UserDb(read('passwd'), read('group'), join(root, 'etc'));
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
