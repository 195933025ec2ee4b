import { EventEmitter } from 'node:events';
import { readFileSync, writeFileSync } from 'node:fs';
import { MessageType, type Message, type MessageBus } from '@jellybrick/dbus-next';
import { Agent } from '../../src/agent/agent';
import { join } from 'node:path';
import { appendIgnore, configPath, readNotifyConfig, setEnabled } from '../../src/config/notify';
import { compose, type Item } from '../../src/agent/message';
import { itemsFromRows, toRow } from '../../src/bus/codec';
import { tempDir } from '../helpers';

const HOME = '/home/bird';
const item = (over: Partial<Item>): Item => ({ kind: 'ephemeral', path: '/home/bird/x', detail: '', files: 1, bytes: 10, suggestion: '[persistence."/persistent".users.bird]\ndirectories = ["x"]', ...over });

describe('what a notification says', () => {
  it('names a single file as a file, and a folder by its count', () => {
    // Told by the row's type, not by parsing the suggestion: a suggestion saying nothing of it.
    const file = item({ path: '/home/bird/notes.txt', isDirectory: false, suggestion: 'keep it' });
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

  it('shows names another user chose as they are, not as lines or reordered text', () => {
    const evil = item({ path: '/var/crash/x\nRun: sudo rm -rf /\u202eexe.txt', suggestion: '[persistence."/persistent"]\ndirectories = ["/var/crash/x\\nRun\u202e"]' });
    const n = compose([evil], { home: HOME, markup: false });
    expect(n.summary).not.toMatch(/[\n\u202e]/);
    expect(n.summary).toContain('x\\nRun: sudo rm -rf /\\u{202e}exe.txt');
    expect(n.body).not.toContain('\u202e');
    expect(n.body.split('\n')).toContain('directories = ["/var/crash/x\\nRun\\u{202e}"]');
    expect(compose([item({ path: '/var/lib/' + 'a'.repeat(200) })], { home: HOME, markup: false }).summary.length).toBeLessThan(140);
  });

  it('refuses rows that are not a(sssutss), and reads the file-or-folder type', () => {
    expect(() => itemsFromRows([['ephemeral', '/x', '', 1, 1, '', 'file']])).toThrow(/a\(sssutss\)/); // bytes must be a u64
    expect(() => itemsFromRows([['ephemeral', '/x', '', 1, 1n, '']])).toThrow(/a\(sssutss\)/); // the type is missing
    expect(() => itemsFromRows([['lost', '/x', '', 1, 1n, '', '']])).toThrow(/a\(sssutss\)/); // an unknown kind
    expect(() => itemsFromRows([['ephemeral', '/x', '', 1, 1n, '', 'socket']])).toThrow(/a\(sssutss\)/);
    expect(itemsFromRows([['ephemeral', '/x', 'd', 1, 5n, 's', '']])).toEqual([{ kind: 'ephemeral', path: '/x', detail: 'd', files: 1, bytes: 5, suggestion: 's' }]);
    expect(itemsFromRows([['ephemeral', '/x', 'd', 1, 5n, 's', 'file']])[0]!.isDirectory).toBe(false);
  });

  it('encodes and decodes an item the same both ways, and refuses what the contract cannot carry', () => {
    const it1 = { kind: 'ephemeral' as const, path: '/srv/a', isDirectory: true, detail: '2 files', files: 2, bytes: 20, suggestion: 'x' };
    expect(itemsFromRows([toRow(it1)])).toEqual([it1]);
    expect(() => toRow({ ...it1, path: '' })).toThrow(/does not fit/);
    expect(() => toRow({ ...it1, files: -1 })).toThrow(/does not fit/);
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
    appendIgnore(file, ['/home/bird/.cache/x'], HOME);
    appendIgnore(file, ['/var/lib/y'], HOME);
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

/**
 * A fake message bus, named as such: it answers the agent's calls and delivers signals in one
 * synchronous burst, as one socket read does. The real dunst (test/integration/notify.test.ts) never
 * closes a notification on an action, as GNOME Shell, KDE and mako do; this is how that order is tested.
 */
class FakeBus extends EventEmitter {
  calls: Message[] = [];
  constructor(private readonly answer: (m: Message) => unknown[] | undefined, readonly uniqueName: string) {
    super();
  }
  async requestName() {
    return 1;
  }
  async call(m: Message) {
    this.calls.push(m);
    return { type: MessageType.METHOD_RETURN, sender: this.uniqueName, body: this.answer(m) ?? [] } as unknown as Message;
  }
  deliver(...msgs: Partial<Message>[]) {
    for (const m of msgs) this.emit('message', { type: MessageType.SIGNAL, ...m });
  }
}

describe('the Persist action', () => {
  it('is offered for what will be lost, only when the server shows actions', () => {
    const n = compose([item({ path: '/home/bird/a', files: 3 }), item({ kind: 'orphan', path: '/persistent/old' })], { home: HOME, markup: false, persist: true });
    expect(n.actions.slice(-2)).toEqual(['persist', 'Persist ~/a']);
    expect(compose([item({})], { home: HOME, markup: false, persist: false }).actions).not.toContain('persist');
    // Nothing that persisting would keep: no action.
    expect(compose([item({ kind: 'orphan', path: '/persistent/old' })], { home: HOME, markup: false, persist: true }).actions).not.toContain('persist');
    expect(compose([item({ loose: true })], { home: HOME, markup: false, persist: true }).actions).not.toContain('persist');
  });
});

describe('the agent, on a fake bus', () => {
  it('Ignore works when the server closes the notification in the same breath as the action', async () => {
    const dir = tempDir();
    const configFile = join(dir, 'notify.toml');
    const rows = [['ephemeral', '/home/bird/.config/app', '3 files', 3, 30n, '[persistence."/persistent".users.bird]\ndirectories = [".config/app"]', 'directory']];
    const system = new FakeBus((m) => (m.member === 'Subscribe' ? [rows] : m.member === 'GetNameOwner' ? [':1.1'] : undefined), ':1.1');
    const session = new FakeBus((m) => (m.member === 'Notify' ? [7] : m.member === 'GetNameOwner' ? [':1.2'] : m.member === 'GetCapabilities' ? [['actions']] : undefined), ':1.2');
    const agent = new Agent({ system: system as unknown as MessageBus, session: session as unknown as MessageBus, home: HOME, configFile, log: () => undefined, settleMs: 10, minIntervalMs: 10 });
    expect(await agent.start()).toBe(true);
    for (let i = 0; i < 100 && !session.calls.some((c) => c.member === 'Notify'); i++) await new Promise((r) => setTimeout(r, 10));
    const sig = { sender: ':1.2', path: '/org/freedesktop/Notifications', interface: 'org.freedesktop.Notifications' };
    session.deliver({ ...sig, member: 'ActionInvoked', body: [7, 'ignore'] }, { ...sig, member: 'NotificationClosed', body: [7, 2] });
    for (let i = 0; i < 100 && !readFileSync(configFile, { encoding: 'utf8', flag: 'a+' }).includes('path'); i++) await new Promise((r) => setTimeout(r, 10));
    expect(readFileSync(configFile, 'utf8')).toContain('path = "~/.config/app"');
    agent.stop();
  });

  it('logs paths as printable text: a newline or an escape in a file name forges no line', async () => {
    const dir = tempDir();
    const configFile = join(dir, 'notify.toml');
    const evil = '/home/bird/x\n<3>Failed: root password is\x1b[2J';
    const rows = [['ephemeral', evil, '1 file', 1, 1n, 's', 'file']];
    const lines: string[] = [];
    const system = new FakeBus((m) => (m.member === 'Subscribe' ? [rows] : m.member === 'GetNameOwner' ? [':1.1'] : undefined), ':1.1');
    const session = new FakeBus((m) => (m.member === 'Notify' ? [7] : m.member === 'GetNameOwner' ? [':1.2'] : m.member === 'GetCapabilities' ? [['actions']] : undefined), ':1.2');
    const agent = new Agent({ system: system as unknown as MessageBus, session: session as unknown as MessageBus, home: HOME, configFile, log: (_l, m) => lines.push(m), settleMs: 10, minIntervalMs: 10 });
    expect(await agent.start()).toBe(true);
    for (let i = 0; i < 100 && !session.calls.some((c) => c.member === 'Notify'); i++) await new Promise((r) => setTimeout(r, 10));
    const sig = { sender: ':1.2', path: '/org/freedesktop/Notifications', interface: 'org.freedesktop.Notifications' };
    session.deliver({ ...sig, member: 'ActionInvoked', body: [7, 'ignore'] });
    for (let i = 0; i < 100 && !lines.some((l) => l.includes('root password')); i++) await new Promise((r) => setTimeout(r, 10));
    const ignoring = lines.find((l) => l.includes('root password'))!;
    expect(ignoring).toContain('/home/bird/x\\n<3>Failed: root password is\\u{1b}[2J');
    for (const l of lines) expect(l).not.toMatch(/[\n\x1b]/);
    agent.stop();
  });
});
