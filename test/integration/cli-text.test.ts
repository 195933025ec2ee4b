/**
 * impermanencectl's text output shows names as names (issue 13.4): a folder another user named
 * with newlines and terminal escapes cannot forge lines in root's `diff`, nor drive its terminal;
 * `list` and `status` escape the config's paths too. JSON stays raw: it is data.
 * The real daemon on a private bus, over a sandbox root; driven as root through impermanencectl.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { PrivateBus } from '../dbus/harness';
import { ctlOnBus, sandboxRoot, startBus, startDaemon, type Daemon } from '../dbus/daemon';

jest.setTimeout(60_000);

/** A folder name that, printed raw, adds a heading and a line of its own to the report. */
const FORGED = 'x\n\nNot in place (writes there are lost at reboot):\n  /etc/shadow';
/** One that clears the terminal (ESC[2J), and one with a CSI (the C1 form of ESC[). */
const CLEARS = '\u001b[2Jwiped';
const C1 = 'c1\u009b2J';
/** A config path the loader accepts: a right-to-left override reverses what follows it. */
const BIDI = '/srv/bidi\u202etxt.exe';
const RAW = /[\u0000-\u0009\u000b-\u001f\u007f-\u009f\u202e]/;

let bus: PrivateBus;
let daemon: Daemon;

const ctl = (...args: string[]) => ctlOnBus(bus, args);

beforeAll(async () => {
  const root = sandboxRoot({
    configName: `10-odd\u202e.toml`,
    config: `[persistence."/persistent"]\ndirectories = [${JSON.stringify(BIDI)}, ${JSON.stringify('/srv/entry\u009b2J')}]\n`,
    dirs: ['persistent'],
  });
  // Each folder in /srv (which holds persisted paths) is an item of its own.
  for (const name of [FORGED, CLEARS, C1]) {
    mkdirSync(join(root, 'srv', name), { recursive: true });
    writeFileSync(join(root, 'srv', name, 'data'), 'lost at reboot\n');
  }
  bus = await startBus();
  daemon = await startDaemon({ bus, root, args: ['--no-watch'] });
});

afterAll(async () => {
  await daemon?.stop();
  await bus?.stop();
});

describe('names in impermanencectl text output', () => {
  it('diff: a folder name forges no line and no heading, and sends no escape to the terminal', async () => {
    const r = await ctl('diff', '--since', 'all');
    expect(r.code).toBe(3);
    expect(r.stdout).not.toMatch(RAW);
    const lines = r.stdout.split('\n');
    expect(lines.filter((l) => l.startsWith('Not in place'))).toHaveLength(1); // the real one: the two entries
    expect(lines.some((l) => l.trim() === '/etc/shadow')).toBe(false);
    expect(r.stdout).toContain('/srv/x\\n\\nNot in place (writes there are lost at reboot):\\n  /etc/shadow');
    expect(r.stdout).toContain('/srv/\\u{1b}[2Jwiped');
    expect(r.stdout).toContain('/srv/c1\\u{9b}2J');
    // The suggestion, built from the name, is escaped too.
    // (as the TOML it is, on lines of their own, when one line would not fit in 100 columns)
    expect(r.stdout).toMatch(/to keep it:\s+\[persistence."\/persistent"\]\s+directories = \["\/srv\/c1\\u\{9b\}2J"\]/);
  });

  it('diff --json keeps every name as it is', async () => {
    const r = await ctl('diff', '--since', 'all', '--json');
    const paths = (JSON.parse(r.stdout) as { items: Array<{ path: string }> }).items.map((i) => i.path);
    expect(paths).toEqual(expect.arrayContaining([`/srv/${FORGED}`, `/srv/${CLEARS}`, `/srv/${C1}`, BIDI]));
  });

  it('list and status escape the config paths; their JSON does not', async () => {
    const list = await ctl('list');
    expect(list.code).toBe(0);
    expect(list.stdout).not.toMatch(RAW);
    expect(list.stdout).toMatch(/^\/srv\/bidi\\u\{202e\}txt\.exe +directory +unmounted +\/persistent$/m);
    expect(list.stdout).toMatch(/^\/srv\/entry\\u\{9b\}2J +directory/m);
    expect((JSON.parse((await ctl('list', '--json')).stdout).entries as Array<{ path: string }>).map((e) => e.path)).toContain(BIDI);

    const status = await ctl('status');
    expect(status.stdout).not.toMatch(RAW);
    expect(status.stdout).toContain('10-odd\\u{202e}.toml');
    expect((JSON.parse((await ctl('status', '--json')).stdout) as { config_files: string[] }).config_files[0]).toMatch(/10-odd\u202e\.toml$/);
  });
});
