import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { escapePath, mountUnitName } from '../../src/config/unit-name';
import { run } from '../helpers';

/** The real systemd-escape is the reference. */
function systemdEscape(path: string): string {
  const r = spawnSync('systemd-escape', ['--path', '--', path], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(r.stderr);
  return r.stdout.trimEnd();
}

describe('escapePath', () => {
  const paths = [
    '/',
    '/var/log',
    '/home/bird/.ssh',
    '/.hidden',
    '/home/bird/VirtualBox VMs',
    '/etc/NetworkManager/system-connections',
    '/srv/a-b--c',
    '/srv/back\\slash',
    '/srv/ünïcödé/日本語',
    '/srv/emoji/🙂',
    '/srv/colon:and_under.score',
    '/srv/"quote"/\'single\'',
    '/srv/percent%d/dollar$HOME',
    '/srv/tab\there',
    '/srv/trailing/',
    '//srv//double',
    '/srv/a.b/.c/..d',
    '/srv/~tilde/+plus/=eq/@at/,comma',
  ];
  it.each(paths)('%j matches systemd-escape --path', (path) => {
    expect(escapePath(path)).toBe(systemdEscape(path));
  });
});

/** Runs systemd-analyze verify on one mount unit file named `name` for `where`; returns its output and status. */
function verifyMount(name: string, where: string) {
  const dir = mkdtempSync(join(tmpdir(), 'impermanence-hash-'));
  try {
    writeFileSync(join(dir, name), `[Mount]\nWhat=/persistent${where}\nWhere=${where}\nType=none\nOptions=bind\n`);
    const r = run('systemd-analyze', ['verify', '--man=no', name], { cwd: dir, env: { SYSTEMD_UNIT_PATH: `${dir}:`, SYSTEMD_LOG_LEVEL: 'notice' } });
    return { code: r.code, output: r.stdout + r.stderr };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

describe('long paths: hashed unit names, as systemd names them (unit_name_hash_long)', () => {
  const longPaths = [
    '/srv' + '/abcdefghi'.repeat(30),
    '/home/bird/' + 'a-b'.repeat(80), // escaped "-" is 4 characters: 250 bytes escape to 600+
    '/srv/' + 'ü'.repeat(100) + '/x',
    '/srv/' + 'x'.repeat(246), // 251 + ".mount": exactly 256, the first length systemd hashes
  ];
  it.each(longPaths)('%# cuts the name to 255 characters with a hash that systemd 252 accepts for Where=', (path) => {
    const name = mountUnitName(path);
    expect(escapePath(path).length + '.mount'.length).toBeGreaterThanOrEqual(256);
    expect(name).toHaveLength(255);
    expect(name).toMatch(/^[A-Za-z0-9:_.\\-]{232}_[0-9a-f]{16}\.mount$/);
    expect(name.slice(0, 232)).toBe(escapePath(path).slice(0, 232));
    // systemd checks that a mount unit's name is unit_name_from_path(Where=): ours must be its.
    expect(verifyMount(name, path)).toEqual({ code: 0, output: '' });
  });

  it('a wrong hash is refused by systemd (the check above is not vacuous)', () => {
    const path = longPaths[0]!;
    const name = mountUnitName(path);
    const wrong = name.replace(/_([0-9a-f])/, (_m, c: string) => `_${c === '0' ? '1' : '0'}`);
    const r = verifyMount(wrong, path);
    expect(r.code).not.toBe(0);
    expect(r.output).toContain("Where= setting doesn't match unit name");
  });

  it('the host systemd-escape (252) does not hash: its name for a long path is too long to be a unit', () => {
    const r = spawnSync('systemd-escape', ['--path', '--suffix=mount', longPaths[0]!], { encoding: 'utf8' });
    const printed = r.stdout.trim();
    // systemd-escape 252 prints the plain escape (no unit_name_hash_long); PID 1 hashes it.
    if (printed.length <= 255) expect(printed).toBe(mountUnitName(longPaths[0]!));
    else expect(printed).toBe(escapePath(longPaths[0]!) + '.mount');
  });
});
