/**
 * impermanencectl's commands that ask impermanenced, against the real daemon on a private bus,
 * over a sandbox root where /var/log is really bind-mounted (a private mount namespace): JSON
 * documents that match their schema, --no-legend and -q, `reload` saying what it did, and
 * `monitor` printing readable lines when the mount goes away.
 */
import { join } from 'node:path';
import { SCHEMAS } from '../../src/cli/json-schema';
import { runOnBus, type PrivateBus } from '../dbus/harness';
import { ctlOnBus, sandboxRoot, startBus, startDaemon, type Daemon } from '../dbus/daemon';

jest.setTimeout(60_000);

let bus: PrivateBus;
let daemon: Daemon;
let root: string;
const ctl = (...args: string[]) => ctlOnBus(bus, args);
const valid = (schema: keyof typeof SCHEMAS, doc: unknown) => expect(SCHEMAS[schema].safeParse(doc).error).toBeUndefined();

beforeAll(async () => {
  root = sandboxRoot({
    configName: '10.toml',
    config: '[persistence."/persistent"]\ndirectories = ["/var/log", "/var/lib/bluetooth"]\n',
    dirs: ['var/log', 'persistent/var/log', 'var/lib/bluetooth', 'persistent/var/lib/bluetooth'],
  });
  bus = await startBus();
  daemon = await startDaemon({ bus, root, args: ['--no-watch'], bindMounts: ['var/log', 'var/lib/bluetooth'] });
});

afterAll(async () => {
  await daemon?.stop();
  await bus?.stop();
});

describe('impermanencectl on the bus', () => {
  it('status: text, -q (only the exit code), JSON of its schema', async () => {
    const text = await ctl('status');
    expect(text.code).toBe(0);
    expect(text.stdout).toMatch(/^State: ok\nVersion: .*\nEntries: 2 \(2 in place\)\n/);
    expect(await ctl('status', '-q')).toMatchObject({ code: 0, stdout: '', stderr: '' });
    const doc = JSON.parse((await ctl('status', '--json=short')).stdout);
    valid('status', doc);
    expect(doc).toMatchObject({ version: 1, state: 'ok', entry_count: 2, active_count: 2, storage_roots: ['/persistent'] });
  });

  it('list: a legend unless --no-legend or -q; JSON of its schema', async () => {
    const text = (await ctl('list')).stdout;
    expect(text).toMatch(/^PATH +KIND +STATE +STORAGE\n/);
    expect(text).toMatch(/\n2 entries listed\.\n$/);
    const bare = (await ctl('list', '--no-legend')).stdout;
    expect(bare).toBe('/var/lib/bluetooth  directory  mounted  /persistent\n/var/log            directory  mounted  /persistent\n');
    expect((await ctl('list', '-q')).stdout).toBe(bare);
    const doc = JSON.parse((await ctl('list', '--json')).stdout);
    valid('list', doc);
    expect(doc.entries.map((e: { path: string }) => e.path)).toEqual(['/var/lib/bluetooth', '/var/log']);
  });

  it('reload says what it did; -q says nothing; --json gives the state after it', async () => {
    expect(await ctl('reload')).toMatchObject({ code: 0, stdout: 'Reloaded: 2 entries from 1 config file, 2 in place; state ok.\n' });
    expect(await ctl('reload', '--quiet')).toMatchObject({ code: 0, stdout: '', stderr: '' });
    const doc = JSON.parse((await ctl('reload', '--json')).stdout);
    valid('reload', doc);
    expect(doc).toMatchObject({ reloaded: true, state: 'ok', entry_count: 2 });
  });

  it('diff over the bus: JSON of its schema', async () => {
    const r = await ctl('diff', '--json', '--since', 'all');
    valid('diff', JSON.parse(r.stdout));
  });

  it('monitor prints a readable line when a persisted path goes away; --json one object per line of its schema', async () => {
    const text = ctlOnBus(bus, ['monitor'], { timeoutMs: 9000 });
    const json = ctlOnBus(bus, ['monitor', '--json'], { timeoutMs: 9000 });
    await new Promise((r) => setTimeout(r, 2500)); // time to start and subscribe, on a loaded machine too
    // Anyone may send a signal to a connection by its unique name, past every match rule: one
    // that is not the daemon's is not printed.
    const names = (await runOnBus(bus, ['busctl', '--system', 'list', '--unique', '--no-legend'])).stdout.split('\n').map((l) => l.split(/\s+/)[0]!).filter((n) => n.startsWith(':'));
    for (const n of names) {
      const spoof = ['busctl', '--system', 'emit', `--destination=${n}`, '/org/impermanence/Manager', 'org.impermanence.Manager', 'DriftAppeared', 'a(sssutss)', '1', 'ephemeral', '/spoofed', 'forged', '1', '1', 'x', 'y'];
      expect((await runOnBus(bus, spoof)).code).toBe(0);
    }
    const umount = await runOnBus(bus, ['nsenter', '-t', String(daemon.pid), '-m', 'umount', join(root, 'var/log')]);
    expect(umount.code).toBe(0);
    // Scan so that the drift (and its signals) follows at once, whatever the daemon's own pace.
    await ctl('diff', '--since', 'all');
    const events = (await json).stdout.trim().split('\n').map((l) => JSON.parse(l));
    for (const e of events) valid('monitor', e);
    expect(events).toContainEqual(expect.objectContaining({ event: 'drift-appeared', items: expect.arrayContaining([expect.objectContaining({ kind: 'unmounted', path: '/var/log' })]) }));
    const [first, ...rest] = (await text).stdout.split('\n');
    expect(first).toBe('Monitoring impermanenced (org.impermanence.Manager); interrupt to stop.');
    const lines = rest.join('\n');
    expect(lines).toMatch(/^\d\d:\d\d:\d\d \/var\/log: unmounted: not mounted from \/persistent\/var\/log/m);
    expect(lines).not.toContain('/spoofed');
    expect(events).not.toContainEqual(expect.objectContaining({ items: expect.arrayContaining([expect.objectContaining({ path: '/spoofed' })]) }));
    expect(lines).not.toMatch(/org\.impermanence|org\.freedesktop/); // no raw D-Bus names…
    expect(lines).not.toMatch(/[[{]"/); // …nor bodies
  });
});
