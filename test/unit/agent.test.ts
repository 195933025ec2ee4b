import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { appendIgnore, configPath, readNotifyConfig, setEnabled } from '../../src/agent/config';
import { compose, itemsFromRows, type Item } from '../../src/agent/message';
import { tempDir } from './helpers';

const HOME = '/home/bird';
const item = (over: Partial<Item>): Item => ({ kind: 'ephemeral', path: '/home/bird/x', detail: '', files: 1, bytes: 10, suggestion: '[persistence."/persistent".users.bird]\ndirectories = ["x"]', ...over });

describe('what a notification says', () => {
  it('names a single file as a file, and a folder by its count', () => {
    const file = item({ path: '/home/bird/notes.txt', suggestion: '[persistence."/persistent".users.bird]\nfiles = ["notes.txt"]' });
    expect(compose([file], { home: HOME, markup: false }).summary).toBe('~/notes.txt will be lost at reboot');
    expect(compose([item({ files: 2 })], { home: HOME, markup: false }).summary).toBe('2 files in ~/x will be lost at reboot');
  });

  it('puts what breaks persistence first, as critical, and lists the rest', () => {
    const n = compose(
      [item({ path: '/home/bird/a', files: 3 }), item({ kind: 'unmounted', path: '/home/bird/Documents', detail: 'not mounted from /persistent/home/bird/Documents', files: 0 }), item({ kind: 'orphan', path: '/persistent/old', bytes: 2_000_000 })],
      { home: HOME, markup: false },
    );
    expect(n.summary).toBe('~/Documents is not in place: what is written there will be lost at reboot (and 2 more)');
    expect(n.urgency).toBe(2);
    expect(n.icon).toBe('dialog-error');
    expect(n.body.split('\n')).toEqual(['• ~/Documents: unmounted', '• ~/a: 3 files, 10 B', '• /persistent/old: orphan']);
    expect(n.actions).toEqual(['default', 'Details', 'ignore', 'Ignore these 3']);
  });

  it('sums many places of lost files, and says so at most five lines long', () => {
    const many = Array.from({ length: 7 }, (_, i) => item({ path: `/var/lib/app${i}`, files: 10, bytes: 1000 * (i + 1) }));
    const n = compose(many, { home: HOME, markup: false });
    expect(n.summary).toBe('70 files in 7 places will be lost at reboot');
    expect(n.body).toContain('• and 2 more (Details)');
    expect(n.urgency).toBe(1);
  });

  it('escapes markup in bodies for servers that read markup; orphans are low urgency', () => {
    const n = compose([item({ kind: 'orphan', path: '/persistent/<b>&', suggestion: 'remove it yourself' })], { home: HOME, markup: true });
    expect(n.body).not.toMatch(/<b>|&[^a]/);
    expect(n.body).toContain('Nothing was deleted');
    expect(n.urgency).toBe(0);
  });

  it('refuses rows that are not a(sssuts)', () => {
    expect(() => itemsFromRows([['ephemeral', '/x', '', 1, 1, '']])).toThrow(/a\(sssuts\)/); // bytes must be a u64
    expect(itemsFromRows([['ephemeral', '/x', 'd', 1, 5n, 's']])).toEqual([{ kind: 'ephemeral', path: '/x', detail: 'd', files: 1, bytes: 5, suggestion: 's' }]);
  });
});

describe('the user config', () => {
  it('lives in $XDG_CONFIG_HOME, else ~/.config', () => {
    expect(configPath({ XDG_CONFIG_HOME: '/x/cfg' }, HOME)).toBe('/x/cfg/impermanence/notify.toml');
    expect(configPath({ XDG_CONFIG_HOME: 'relative' }, HOME)).toBe('/home/bird/.config/impermanence/notify.toml');
  });

  it('is edited by appending or replacing one line: comments and other settings stay', () => {
    const file = join(tempDir(), 'impermanence', 'notify.toml');
    expect(readNotifyConfig(file, HOME)).toEqual({ enable: true, scope: 'all', details: ['xdg-open'], ignore: [] });
    appendIgnore(file, '/home/bird/.cache/x', HOME);
    appendIgnore(file, '/var/lib/y', HOME);
    setEnabled(file, false);
    setEnabled(file, true);
    setEnabled(file, false);
    const text = readFileSync(file, 'utf8');
    expect(text.match(/^enable =/gm)).toHaveLength(1);
    expect(text).toContain('# impermanence-notify');
    expect(readNotifyConfig(file, HOME)).toEqual({ enable: false, scope: 'all', details: ['xdg-open'], ignore: ['/home/bird/.cache/x', '/var/lib/y'] });
  });

  it('names the file and the problem when it is wrong', () => {
    const file = join(tempDir(), 'notify.toml');
    writeFileSync(file, 'scope = "everything"\n');
    expect(() => readNotifyConfig(file, HOME)).toThrow(new RegExp(`^${file}: scope: `));
    writeFileSync(file, 'enabel = false\n');
    expect(() => readNotifyConfig(file, HOME)).toThrow(/enabel/);
    writeFileSync(file, '[[ignore]]\npath = "relative/x"\n');
    expect(() => readNotifyConfig(file, HOME)).toThrow(/not absolute/);
    writeFileSync(file, 'enable = \n');
    expect(() => readNotifyConfig(file, HOME)).toThrow(new RegExp(`^${file}: `));
  });
});
