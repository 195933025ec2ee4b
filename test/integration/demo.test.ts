/**
 * `npm run demo` (scripts/demo.sh) shows the headline: `impermanencectl diff` on the sandbox
 * with the config lines that keep what would be lost, the desktop notification a user gets, a
 * persisted path going unmounted live; in 100 columns, log lines without <N> prefixes.
 */
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { REPO } from '../helpers';

jest.setTimeout(180_000);

describe('the demo', () => {
  const r = spawnSync('bash', [join(REPO, 'scripts', 'demo.sh')], { encoding: 'utf8', cwd: REPO, timeout: 170_000 });
  const lines = r.stdout.split('\n');

  it('runs to the end', () => {
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
  });

  it('fits 100 columns and prints no <N> log prefix', () => {
    expect(lines.filter((l) => l.length > 100)).toEqual([]);
    expect(lines.filter((l) => /<\d>/.test(l))).toEqual([]);
  });

  it('shows diff with the config lines that keep what would be lost', () => {
    const diff = r.stdout.slice(r.stdout.indexOf('$ impermanencectl diff --since'));
    expect(diff).toMatch(/^ {2}\/var\/lib\/app +1 file, 40 kB: will be lost at reboot\n +to keep it: \[persistence."\/persistent"\] directories = \["\/var\/lib\/app"\]$/m);
    expect(diff).toMatch(/^ +\[persistence."\/persistent".users.bird\]\n +directories = \[".config\/app"\]$/m);
  });

  it('shows the notification bird would get', () => {
    expect(r.stdout).toContain('Summary: 2 files in ~/.config/app will be lost at reboot\n');
  });

  if (process.getuid?.() === 0) {
    it('shows /var/log going unmounted, live, in monitor, list and diff', () => {
      expect(r.stdout).toMatch(/^\d\d:\d\d:\d\d \/var\/log: unmounted: not mounted from \/persistent\/var\/log/m);
      expect(r.stdout).toMatch(/^\/var\/log +directory +unmounted +\/persistent$/m);
      expect(r.stdout).toMatch(/^Reloaded: 5 entries from 1 config file, 4 in place; state degraded\.$/m);
    });
  }
});
