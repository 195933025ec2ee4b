/**
 * impermanence-prepare's adoption, on real files (root, to set owners, device nodes, ACLs and
 * xattrs): what the root holds and storage lacks is copied into storage whole, and nothing in
 * storage is ever overwritten. The storage check is a unit test (test/unit/prepare.test.ts).
 */
import { spawnSync } from 'node:child_process';
import { closeSync, fstatSync, renameSync, rmSync, chownSync, existsSync, lchownSync, lstatSync, mkdirSync, readdirSync, readFileSync, readlinkSync, symlinkSync, utimesSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { adoptAll, openChecked } from '../../src/activate/prepare';
import type { PreparePlan } from '../../src/generator/plan';
import { tempDir } from '../helpers';

const isRoot = process.getuid?.() === 0;
const sh = (script: string, ...args: string[]) => {
  const r = spawnSync('sh', ['-ec', script, 'sh', ...args], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`${script}: ${r.stderr}`);
  return r.stdout;
};
const plan = (mounts: PreparePlan['mounts']): PreparePlan => ({ storage: '/persistent', tmpfiles: '/dev/null', mounts });

(isRoot ? describe : describe.skip)('adoption', () => {
  it('copies a folder the root holds and storage lacks: owner, mode, times, ACLs, xattrs, hard links, symlinks, special files', () => {
    const root = tempDir();
    const etc = join(root, 'srv/app');
    mkdirSync(join(etc, 'sub'), { recursive: true });
    writeFileSync(join(etc, 'conf'), 'setting = 1\n', { mode: 0o640 });
    chownSync(join(etc, 'conf'), 1000, 1000);
    sh('ln "$1/conf" "$1/sub/hardlink"; ln -s ../conf "$1/sub/link"; mkfifo "$1/fifo"; mknod "$1/null" c 1 3', etc);
    sh('setfacl -m u:1001:r "$1/conf"; setfattr -n user.origin -v root "$1/conf"; chmod 2750 "$1/sub"', etc);
    utimesSync(join(etc, 'conf'), 1_000_000, 1_000_000);
    mkdirSync(join(root, 'persistent/srv'), { recursive: true });

    const result = adoptAll(plan([{ kind: 'directory', path: '/srv/app', source: '/persistent/srv/app' }]), root);
    expect(result).toEqual({ adopted: ['/srv/app'], shadowed: [], problems: [] });
    const kept = join(root, 'persistent/srv/app');
    expect(readFileSync(join(kept, 'conf'), 'utf8')).toBe('setting = 1\n');
    const st = lstatSync(join(kept, 'conf'));
    expect([st.uid, st.gid, st.mode & 0o7777, st.mtimeMs, st.nlink]).toEqual([1000, 1000, 0o640, 1_000_000_000, 2]);
    expect(lstatSync(join(kept, 'sub/hardlink')).ino).toBe(st.ino);
    expect(readlinkSync(join(kept, 'sub/link'))).toBe('../conf');
    expect(lstatSync(join(kept, 'fifo')).isFIFO()).toBe(true);
    expect(lstatSync(join(kept, 'null')).isCharacterDevice()).toBe(true);
    expect(lstatSync(join(kept, 'sub')).mode & 0o7777).toBe(0o2750);
    expect(sh('getfacl -cp "$1/conf"', kept)).toContain('user:1001:r--');
    expect(sh('getfattr --only-values -n user.origin "$1/conf"', kept)).toBe('root');
    // The original stays where it was (it is mounted over next), and no temporary copy is left.
    expect(readFileSync(join(etc, 'conf'), 'utf8')).toBe('setting = 1\n');
    expect(readdirSync(join(root, 'persistent/srv'))).toEqual(['app']);
  });

  it('fills an empty storage folder (as tmpfiles made it), and adopts a file storage lacks', () => {
    const root = tempDir();
    mkdirSync(join(root, 'var/lib/app'), { recursive: true });
    writeFileSync(join(root, 'var/lib/app/state'), 'state');
    mkdirSync(join(root, 'persistent/var/lib/app'), { recursive: true });
    mkdirSync(join(root, 'etc'));
    writeFileSync(join(root, 'etc/machine-id'), '0123456789abcdef0123456789abcdef\n', { mode: 0o444 });
    mkdirSync(join(root, 'persistent/etc'));
    const result = adoptAll(plan([
      { kind: 'directory', path: '/var/lib/app', source: '/persistent/var/lib/app' },
      { kind: 'file', path: '/etc/machine-id', source: '/persistent/etc/machine-id' },
    ]), root);
    expect(result.adopted).toEqual(['/var/lib/app', '/etc/machine-id']);
    expect(readFileSync(join(root, 'persistent/var/lib/app/state'), 'utf8')).toBe('state');
    expect(readFileSync(join(root, 'persistent/etc/machine-id'), 'utf8')).toBe('0123456789abcdef0123456789abcdef\n');
    expect(lstatSync(join(root, 'persistent/etc/machine-id')).mode & 0o777).toBe(0o444);
    expect(readdirSync(join(root, 'persistent/etc'))).toEqual(['machine-id']);
  });

  it('never overwrites storage: storage wins, and what only the root holds is reported as shadowed', () => {
    const root = tempDir();
    mkdirSync(join(root, 'etc/app/new'), { recursive: true });
    writeFileSync(join(root, 'etc/app/both'), 'root copy');
    writeFileSync(join(root, 'etc/app/new/only-on-root'), '12345');
    mkdirSync(join(root, 'persistent/etc/app'), { recursive: true });
    writeFileSync(join(root, 'persistent/etc/app/both'), 'storage copy');
    writeFileSync(join(root, 'etc/machine-id'), 'root id\n');
    writeFileSync(join(root, 'persistent/etc/machine-id'), 'stored id\n');
    const result = adoptAll(plan([
      { kind: 'directory', path: '/etc/app', source: '/persistent/etc/app' },
      { kind: 'file', path: '/etc/machine-id', source: '/persistent/etc/machine-id' },
    ]), root);
    expect(result).toEqual({ adopted: [], shadowed: [{ path: '/etc/app', source: '/persistent/etc/app', files: 1, bytes: 5 }], problems: [] });
    expect(readFileSync(join(root, 'persistent/etc/app/both'), 'utf8')).toBe('storage copy');
    expect(existsSync(join(root, 'persistent/etc/app/new'))).toBe(false);
    expect(readFileSync(join(root, 'persistent/etc/machine-id'), 'utf8')).toBe('stored id\n');
  });

  it('adopts nothing from an empty folder, a missing path or the wrong type', () => {
    const root = tempDir();
    mkdirSync(join(root, 'srv/empty'), { recursive: true });
    writeFileSync(join(root, 'srv/file'), 'x');
    mkdirSync(join(root, 'persistent'));
    const result = adoptAll(plan([
      { kind: 'directory', path: '/srv/empty', source: '/persistent/srv/empty' },
      { kind: 'directory', path: '/srv/missing', source: '/persistent/srv/missing' },
      { kind: 'directory', path: '/srv/file', source: '/persistent/srv/file' },
    ]), root);
    expect(result).toEqual({ adopted: [], shadowed: [], problems: [] });
    expect(readdirSync(join(root, 'persistent'))).toEqual([]);
  });

  it('refuses to copy through a symlink a user planted, and keeps a crashed attempt\'s partial copy', () => {
    const root = tempDir();
    mkdirSync(join(root, 'home/bird/real/app'), { recursive: true });
    writeFileSync(join(root, 'home/bird/real/app/secret'), 'x');
    symlinkSync('real', join(root, 'home/bird/.config'));
    lchownSync(join(root, 'home/bird/.config'), 1000, 1000);
    mkdirSync(join(root, 'persistent/home/bird'), { recursive: true });
    // A partial copy left by a power cut stays: after a reboot it may be all that is left.
    mkdirSync(join(root, 'srv/app'), { recursive: true });
    writeFileSync(join(root, 'srv/app/a'), 'a');
    mkdirSync(join(root, 'persistent/srv/.app.impermanence-adopt'), { recursive: true });
    writeFileSync(join(root, 'persistent/srv/.app.impermanence-adopt/partial'), 'p');
    const result = adoptAll(plan([
      { kind: 'directory', path: '/home/bird/.config/app', source: '/persistent/home/bird/.config/app' },
      { kind: 'directory', path: '/srv/app', source: '/persistent/srv/app' },
    ]), root);
    expect(result.problems).toEqual([expect.stringMatching(/^\/home\/bird\/\.config\/app: not adopted into \/persistent\/home\/bird\/\.config\/app: .*\/home\/bird\/\.config is a symlink made by uid 1000$/)]);
    expect(result.adopted).toEqual(['/srv/app']);
    expect(readdirSync(join(root, 'persistent/srv')).sort()).toEqual(['.app.impermanence-adopt', 'app']);
    expect(readFileSync(join(root, 'persistent/srv/.app.impermanence-adopt/partial'), 'utf8')).toBe('p');
  });

  it('checks what it copies through a descriptor: a symlink, a FIFO or another folder swapped in after the look is refused', () => {
    const root = tempDir();
    mkdirSync(join(root, 'srv/app'), { recursive: true });
    mkdirSync(join(root, 'etc-secrets'));
    const seen = lstatSync(join(root, 'srv/app'));
    const fd = openChecked(join(root, 'srv/app'), 'directory', seen);
    expect(fstatSync(fd).ino).toBe(seen.ino);
    closeSync(fd);
    // Swapped for a symlink to somewhere else after the lstat: O_NOFOLLOW refuses it.
    renameSync(join(root, 'srv/app'), join(root, 'srv/app.old'));
    symlinkSync(join(root, 'etc-secrets'), join(root, 'srv/app'));
    expect(() => openChecked(join(root, 'srv/app'), 'directory', seen)).toThrow(/ELOOP|ENOTDIR/) // O_DIRECTORY|O_NOFOLLOW on a symlink: ENOTDIR;
    // Another folder of the same name: not the one looked at.
    rmSync(join(root, 'srv/app'));
    mkdirSync(join(root, 'srv/app'));
    expect(() => openChecked(join(root, 'srv/app'), 'directory', seen)).toThrow(/changed while it was being adopted/);
    // A FIFO where a file was: refused at once, not waited on.
    writeFileSync(join(root, 'srv/f'), 'x');
    const file = lstatSync(join(root, 'srv/f'));
    rmSync(join(root, 'srv/f'));
    expect(spawnSync('mkfifo', [join(root, 'srv/f')]).status).toBe(0);
    expect(() => openChecked(join(root, 'srv/f'), 'file', file)).toThrow(/changed while it was being adopted/);
    // A parent that became a symlink: the descriptor says where it really leads.
    const real = lstatSync(join(root, 'srv/app.old'));
    renameSync(join(root, 'srv'), join(root, 'srv2'));
    symlinkSync(join(root, 'srv2'), join(root, 'srv'));
    expect(() => openChecked(join(root, 'srv/app.old'), 'directory', real)).toThrow(/reached through a symlink/);
  });
});
