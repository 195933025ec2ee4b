import { symlinkSync } from 'node:fs';
import { join } from 'node:path';
import { InvalidConfig } from '../../src/config/errors';
import { loadConfig } from '../../src/config/load';
import { readConfig } from '../../src/config/read';
import { persistedUserFiles, UserDb } from '../../src/config/userdb';
import { collect, planUnits } from '../../src/generator/plan';
import { tree } from '../helpers';

/**
 * A tmpfs root (or a root rolled back to a snapshot) has the /etc/passwd of the image, without
 * the users added since; when the config persists /etc/passwd, the generator reads the copy in
 * storage, which is what /etc/passwd will be once mounted.
 */
const ROOT_PASSWD = 'root:x:0:0:root:/root:/bin/bash\nmessagebus:x:100:101::/nonexistent:/usr/sbin/nologin\n';
const ROOT_GROUP = 'root:x:0:\nmessagebus:x:101:\n';
const STORED_PASSWD = `${ROOT_PASSWD}carol:x:1000:1000:Carol:/home/carol:/bin/bash\n`;
const STORED_GROUP = `${ROOT_GROUP}carol:x:1000:\nmusic:x:1005:carol\n`;

const loadedFrom = (text: string) => loadConfig([tree({ 'a.toml': text })]);

describe('persistedUserFiles: where the config keeps /etc/passwd and /etc/group', () => {
  it('as declared files, inside a declared folder, with persistentStoragePath, not in a disabled storage', () => {
    expect(persistedUserFiles(loadedFrom('[persistence."/persist"]\nfiles = ["/etc/passwd", "/etc/machine-id"]\n'))).toEqual({ passwd: '/persist/etc/passwd' });
    expect(persistedUserFiles(loadedFrom('[persistence."/persist"]\ndirectories = ["/etc"]\n'))).toEqual({ passwd: '/persist/etc/passwd', group: '/persist/etc/group' });
    expect(persistedUserFiles(loadedFrom('[persistence."/persist"]\nfiles = [{ file = "/etc/group", persistentStoragePath = "/state" }, { file = "/etc//passwd" }]\n'))).toEqual({
      passwd: '/persist/etc/passwd', group: '/state/etc/group',
    });
    expect(persistedUserFiles(loadedFrom('[persistence."/persist"]\nenable = false\nfiles = ["/etc/passwd"]\n'))).toEqual({});
    expect(persistedUserFiles(loadedFrom('[persistence."/persist"]\ndirectories = ["/var/lib/etcd", "//etc/"]\nfiles = ["/srv/passwd"]\n'))).toEqual({ passwd: '/persist/etc/passwd', group: '/persist/etc/group' });
    expect(persistedUserFiles(loadedFrom('[persistence."/persist"]\nfiles = ["/etc/passwd-"]\ndirectories = ["/etc/ssh", "/var/lib"]\n'))).toEqual({});
    // The user database is not in a home: a user's table never moves it.
    expect(persistedUserFiles(loadedFrom('[persistence."/persist".users.root]\nfiles = ["/etc/passwd"]\n'))).toEqual({});
  });
});

describe('UserDb.read with the config: the storage copy wins over the root', () => {
  const root = tree({ 'etc/passwd': ROOT_PASSWD, 'etc/group': ROOT_GROUP, 'persist/etc/passwd': STORED_PASSWD, 'persist/etc/group': STORED_GROUP });
  const persisting = loadedFrom('[persistence."/persist"]\nfiles = ["/etc/passwd", "/etc/group"]\n');

  it('reads users and groups from the copies in storage, under the root', () => {
    const db = UserDb.read(root, persisting);
    expect(db.user('carol')).toEqual({ name: 'carol', uid: 1000, gid: 1000, home: '/home/carol' });
    expect(db.gidOf('music')).toBe(1005);
    expect(db.fromStorage).toBe(true);
    expect([db.passwdFile, db.groupFile]).toEqual([join(root, 'persist/etc/passwd'), join(root, 'persist/etc/group')]);
  });

  it('without the config, or when the config does not persist them, reads the root', () => {
    for (const db of [UserDb.read(root), UserDb.read(root, loadedFrom('[persistence."/persist"]\nfiles = ["/etc/hostname"]\n'))]) {
      expect(db.user('carol')).toBeUndefined();
      expect(db.fromStorage).toBe(false);
      expect(db.passwdFile).toBe(join(root, 'etc/passwd'));
    }
  });

  it('a copy not yet in storage (a first boot adopts the root file) or not a regular file: the root file, each file on its own', () => {
    const first = tree({ 'etc/passwd': ROOT_PASSWD, 'etc/group': ROOT_GROUP, 'persist/etc/group': STORED_GROUP });
    const db = UserDb.read(first, persisting);
    expect(db.user('carol')).toBeUndefined();
    expect(db.gidOf('music')).toBe(1005);
    expect([db.passwdFile, db.groupFile]).toEqual([join(first, 'etc/passwd'), join(first, 'persist/etc/group')]);

    const linked = tree({ 'etc/passwd': ROOT_PASSWD, 'etc/group': ROOT_GROUP, 'elsewhere/passwd': STORED_PASSWD, 'persist/etc/.keep': '' });
    symlinkSync(join(linked, 'elsewhere/passwd'), join(linked, 'persist/etc/passwd'));
    const l = UserDb.read(linked, persisting);
    expect(l.user('carol')).toBeUndefined();
    expect(l.fromStorage).toBe(false);
  });
});

describe('the config against a persisted user database', () => {
  const config = `[persistence."/persist"]
files = ["/etc/passwd", "/etc/group"]
directories = [{ directory = "/srv/music", user = "carol", group = "music", mode = "0750" }]
[persistence."/persist".users.carol]
directories = ["Documents"]
`;

  it('resolves a user only the storage copy has, with its home, and gives the ids by name', () => {
    const root = tree({ 'etc/passwd': ROOT_PASSWD, 'etc/group': ROOT_GROUP, 'persist/etc/passwd': STORED_PASSWD, 'persist/etc/group': STORED_GROUP });
    const c = readConfig([tree({ 'a.toml': config })], root);
    expect(c.entries.find((e) => e.path === '/home/carol/Documents')?.perms).toEqual({ user: 'carol', group: 'carol', mode: 0o755 });
    expect(c.ids?.users).toMatchObject({ root: 0, carol: 1000 });
    expect(c.ids?.groups).toMatchObject({ carol: 1000, music: 1005 });
  });

  it('an unknown user is named as missing from the file read (the storage copy)', () => {
    const root = tree({ 'etc/passwd': STORED_PASSWD, 'etc/group': STORED_GROUP, 'persist/etc/passwd': ROOT_PASSWD, 'persist/etc/group': ROOT_GROUP });
    let err: unknown;
    try {
      readConfig([tree({ 'a.toml': config })], root);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(InvalidConfig);
    const messages = (err as InvalidConfig).problems.map((p) => p.message).join('\n');
    expect(messages).toContain(`persistence."/persist".users.carol: unknown user "carol": not in ${join(root, 'persist/etc/passwd')}`);
    expect(messages).toContain(`group: unknown group "music": not in ${join(root, 'persist/etc/group')}`);
  });

  it('the generator writes owners as numbers then (tmpfiles looks names up before the copy is mounted); by name otherwise', () => {
    const root = tree({ 'etc/passwd': ROOT_PASSWD, 'etc/group': ROOT_GROUP, 'persist/etc/passwd': STORED_PASSWD, 'persist/etc/group': STORED_GROUP });
    const plan = (c: ReturnType<typeof readConfig>) => {
      const out = collect();
      planUnits(c, { outputDir: '/run/systemd/generator', statSource: () => undefined, statRoot: () => undefined }, out);
      return [...out.files].filter(([name]) => name.endsWith('.conf') && name.includes('persist')).map(([, text]) => text).join('');
    };
    const numeric = plan(readConfig([tree({ 'a.toml': config })], root));
    expect(numeric).toMatch(/^d \/home\/carol :0700 :1000 :1000 -$/m);
    expect(numeric).toMatch(/^d \/home\/carol\/Documents :0755 :1000 :1000 -$/m);
    expect(numeric).toMatch(/^d \/srv\/music :0750 :1000 :1005 -$/m);
    expect(numeric).toMatch(/^d \/srv :0755 :0 :0 -$/m);
    expect(numeric).toMatch(/^L \/etc\/passwd - - - - \/persist\/etc\/passwd$/m);

    // The same users in the root's own /etc/passwd, not persisted: names, as before.
    const plain = tree({ 'etc/passwd': STORED_PASSWD, 'etc/group': STORED_GROUP });
    const named = plan(readConfig([tree({ 'a.toml': config.replace('files = ["/etc/passwd", "/etc/group"]\n', '') })], plain));
    expect(named).toMatch(/^d \/home\/carol :0700 :carol :carol -$/m);
    expect(named).toMatch(/^d \/srv\/music :0750 :carol :music -$/m);
  });
});
