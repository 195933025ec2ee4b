/**
 * impermanencectl's own behaviour, driven through the built program: usage errors.
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ctl, tempDir, tree } from '../helpers';

describe('impermanencectl usage errors', () => {
  const config = tree({ 'a.toml': '[persistence."/persistent"]\ndirectories = ["/var/log"]\n' });

  it.each([
    ['check', '--config'],
    ['generate --out -', '--config'],
    ['diff', '--config'],
    ['check', '--root'],
    ['diff', '--root'],
  ])('%s %s /nonexistent is exit 2, naming the path, and reads or scans nothing', (command, option) => {
    const r = ctl(...command.split(' '), option, '/nonexistent/impermanence');
    expect(r.code).toBe(2);
    expect(r.stderr).toBe(`impermanencectl: ${option} /nonexistent/impermanence: no such folder\n`);
    expect(r.stdout).toBe('');
  });

  it('a --config or --root that is a file, not a folder, is exit 2 too', () => {
    const file = join(tempDir(), 'persist.toml');
    writeFileSync(file, '');
    const r = ctl('check', '--config', file);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/--config .*persist\.toml: not a folder \(give the folder that holds the config files\)/);
    expect(ctl('diff', '--root', file).code).toBe(2);
  });

  it('one missing --config among good ones is still an error', () => {
    const r = ctl('check', '--config', config, '--config', '/nonexistent');
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/--config \/nonexistent: no such folder/);
    expect(ctl('check', '--config', config).code).toBe(0);
  });
});

describe('impermanencectl diff --since', () => {
  const config = tree({ 'a.toml': '[persistence."/persistent"]\ndirectories = ["/var/log"]\n' });

  it.each(['99999999999999999999', '18446744073709551615', String(Math.floor(Date.now() / 1000) + 86_400)])('--since %s, later than now, is a usage error, not the walker\'s', (since) => {
    const r = ctl('diff', '--offline', '--config', config, '--root', tempDir(), '--since', since);
    expect(r.code).toBe(2);
    expect(r.stderr).toBe(`impermanencectl diff: --since ${since} is later than now: give seconds since the epoch, "boot" or "all"\n`);
  });
});
