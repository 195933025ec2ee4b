/**
 * `impermanencectl diff` through the real daemon on a private bus: answered from the live watch
 * (no walk) while it is complete, with a write made right before the call in the answer (the
 * barrier through impermanence-fanotify); `--rescan` walks; `--no-watch` falls back to a walk.
 * Walks are counted by the daemon's own log line ("Full drift scan: N files walked"), not timed.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Message, sessionBus, type MessageBus } from '@jellybrick/dbus-next';
import { itemsFromRows } from '../../src/bus/codec';
import { runOnBus, type PrivateBus } from '../dbus/harness';
import { ctlOnBus, sandboxRoot, startBus, startDaemon as startImpermanenced, type Daemon } from '../dbus/daemon';

jest.setTimeout(60_000);

let bus: PrivateBus;
let root: string;
let daemon: Daemon | undefined;
const log = () => daemon?.log() ?? '';

const walks = () => (log().match(/Full drift scan: \d+ files walked/g) ?? []).length;
const ctl = (...args: string[]) => ctlOnBus(bus, args);
/** The ephemeral items of `impermanencectl diff`: path → files. */
async function diff(...args: string[]): Promise<Record<string, number>> {
  const r = await ctl('diff', '--json=short', ...args);
  expect([0, 3]).toContain(r.code);
  const items = (JSON.parse(r.stdout) as { items: Array<{ kind: string; path: string; files: number }> }).items;
  return Object.fromEntries(items.filter((i) => i.kind === 'ephemeral').map((i) => [i.path, i.files]));
}

async function until(what: string, pred: () => boolean): Promise<void> {
  const start = Date.now();
  while (!pred()) {
    if (Date.now() - start > 20_000) throw new Error(`${what}: not in 20 s\n${log()}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** The daemon over the sandbox, /var/log bind-mounted; ready once its first look (a full walk) is done. */
async function startDaemon(...extra: string[]): Promise<void> {
  daemon = await startImpermanenced({ bus, root, args: extra, bindMounts: ['var/log'], ready: (l) => /Full drift scan: \d+ files walked/.test(l) });
}

async function stopDaemon(): Promise<void> {
  await daemon?.stop();
  daemon = undefined;
}

beforeAll(async () => {
  root = sandboxRoot({ prefix: 'impermanence-difflive-', configName: '10.toml', config: '[persistence."/persistent"]\ndirectories = ["/var/log"]\n', dirs: ['var/log', 'persistent/var/log'] });
  bus = await startBus();
});

afterAll(async () => {
  await stopDaemon();
  await bus?.stop();
});

describe('diff through a daemon whose live watch runs', () => {
  beforeAll(() => startDaemon());
  afterAll(() => stopDaemon());

  it('answers without walking, and a write made right before the call is in the answer', async () => {
    const before = walks();
    for (let i = 0; i < 5; i++) {
      // Two writes in a row: the second falls inside the watcher's rate limit (100 ms), which the barrier does not wait out.
      mkdirSync(join(root, `var/lib/fresh-${i}`), { recursive: true });
      writeFileSync(join(root, `var/lib/fresh-${i}/state`), 'x');
      writeFileSync(join(root, `var/lib/fresh-${i}/more`), 'y');
      expect(await diff()).toMatchObject({ [`/var/lib/fresh-${i}`]: 2 });
    }
    expect(walks()).toBe(before);
    expect(log()).not.toMatch(/not the live drift/);
  });

  it('counts a write made a moment before a Scan sent at once (no process start-up between them to hide a race)', async () => {
    const client: MessageBus = sessionBus({ busAddress: bus.address });
    try {
      const scan = async () => {
        const reply = await client.call(new Message({ destination: 'org.impermanence.Manager', path: '/org/impermanence/Manager', interface: 'org.impermanence.Manager', member: 'Scan', signature: 'a{sv}', body: [{}] }));
        return Object.fromEntries(itemsFromRows(reply!.body[0]).map((i) => [i.path, i.files]));
      };
      await scan();
      const before = walks();
      for (let i = 0; i < 20; i++) {
        // The second write lands inside the watcher's rate limit (100 ms) after the first.
        mkdirSync(join(root, `var/lib/at-once-${i}`), { recursive: true });
        writeFileSync(join(root, `var/lib/at-once-${i}/a`), 'x');
        await new Promise((r) => setTimeout(r, 5));
        writeFileSync(join(root, `var/lib/at-once-${i}/b`), 'x');
        expect(await scan()).toMatchObject({ [`/var/lib/at-once-${i}`]: 2 });
      }
      expect(walks()).toBe(before);
    } finally {
      client.disconnect();
    }
  });

  it('--rescan walks the root again', async () => {
    const before = walks();
    mkdirSync(join(root, 'var/lib/rescanned'));
    writeFileSync(join(root, 'var/lib/rescanned/state'), 'z');
    expect(await diff('--rescan')).toMatchObject({ '/var/lib/fresh-0': 2, '/var/lib/rescanned': 1 });
    expect(walks()).toBe(before + 1);
  });

  it('refuses a "rescan" that is not a boolean, naming it', async () => {
    const r = await runOnBus(bus, ['busctl', `--address=${bus.address}`, 'call', 'org.impermanence.Manager', '/org/impermanence/Manager', 'org.impermanence.Manager', 'Scan', 'a{sv}', '1', 'rescan', 's', 'yes']);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/option "rescan" takes a b/);
  });
});

describe('diff through a daemon started with --no-watch', () => {
  beforeAll(() => startDaemon('--no-watch'));
  afterAll(() => stopDaemon());

  it('walks the root, says why, and finds what was written meanwhile', async () => {
    const before = walks();
    mkdirSync(join(root, 'var/lib/unwatched'));
    writeFileSync(join(root, 'var/lib/unwatched/state'), 'x');
    expect(await diff()).toMatchObject({ '/var/lib/unwatched': 1 });
    expect(walks()).toBe(before + 1);
    expect(log()).toMatch(/a full scan, not the live drift \(the writes on the root are not watched\)/);
  });
});
