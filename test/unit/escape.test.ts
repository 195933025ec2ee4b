import { spawnSync } from 'node:child_process';
import { escapePath, mountUnitName } from '../../src/config/unit-name';

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

  it('adds .mount and refuses names longer than systemd allows', () => {
    expect(mountUnitName('/var/log')).toBe('var-log.mount');
    const long = '/' + 'x'.repeat(250);
    expect(() => mountUnitName(long)).toThrow(/too long/);
    expect(mountUnitName('/' + 'x'.repeat(249))).toHaveLength(255);
  });
});
