/**
 * Persist and Unpersist on D-Bus: the real daemon on a private system-like bus with the
 * project's bus policy, polkit from python3-dbusmock's polkitd template, and systemd's transient
 * units from test/dbus/systemd-mock.ts (PID 1 is not systemd here). The daemon runs a stand-in
 * for impermanencectl (--ctl) that says what it was asked, so that nothing is persisted on this
 * machine; the real command, run by the real systemd, is driven in test/e2e/persist.test.ts.
 */
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { runOnBus, startPolkitMock, type PolkitMock, type PrivateBus } from '../dbus/harness';
import { ctlOnBus, sandboxRoot, startBus, startDaemon, type Daemon } from '../dbus/daemon';
import { startSystemdMock, type SystemdMock } from '../dbus/systemd-mock';
import { tempDir } from '../helpers';

jest.setTimeout(60_000);

const NAME = 'org.impermanence.Manager';
const PATH = '/org/impermanence/Manager';
const IFACE = 'org.impermanence.Manager';
const ACTION = 'org.impermanence.persist';

let bus: PrivateBus;
let polkit: PolkitMock;
let systemd: SystemdMock;
let daemon: Daemon;
let outputDir: string;
let fakeCtl: string;

const busctl = (args: string[], asUser?: string) => runOnBus(bus, ['busctl', '--system', ...args], { asUser, timeoutMs: 20_000 });
const ctl = (args: string[], asUser?: string) => ctlOnBus(bus, args, { asUser });
const persist = (path: string, storage = '', options: string[] = ['0'], asUser = 'nobody') =>
  busctl(['call', NAME, PATH, IFACE, 'Persist', 'ssa{sv}', path, storage, ...options], asUser);

beforeAll(async () => {
  const root = sandboxRoot({ config: '[persistence."/persistent"]\ndirectories = ["/var/log"]\n' });
  outputDir = tempDir();
  // What the daemon has systemd run: says its argv; refuses paths holding "refuse" as the real
  // command refuses (its message on stderr, exit 1).
  fakeCtl = join(tempDir(), 'fake-impermanencectl.js');
  writeFileSync(
    fakeCtl,
    `const args = process.argv.slice(2);
if (args.some((a) => a.includes('refuse'))) { process.stderr.write('impermanencectl persist: the storage /persistent is not a mounted filesystem\\n'); process.exit(1); }
process.stdout.write('ran ' + JSON.stringify(args) + '\\n');
`,
  );
  bus = await startBus();
  polkit = await startPolkitMock(bus);
  systemd = await startSystemdMock(bus);
  daemon = await startDaemon({ bus, root, args: ['--no-watch', '--ctl', fakeCtl], env: { RUNTIME_DIRECTORY: outputDir } });
});

afterAll(async () => {
  await daemon?.stop();
  await systemd?.stop();
  await polkit?.stop();
  await bus?.stop();
});

beforeEach(async () => {
  await polkit.setAllowed([]);
  await polkit.setChallenge([]);
});

const lastUnit = async () => (await systemd.transientUnits()).at(-1);

describe('Persist and Unpersist on D-Bus', () => {
  it('when polkit says yes: has systemd run impermanencectl persist with exactly the arguments, and replies with what it said', async () => {
    await polkit.setAllowed([ACTION]);
    const before = (await systemd.transientUnits()).length;
    const r = await persist('/home/bird/.local/share/game saves', '/persistent', ['1', 'user', 's', 'bird']);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    const units = await systemd.transientUnits();
    expect(units.length).toBe(before + 1);
    const [name, argv] = units.at(-1)!;
    expect(name).toMatch(/^impermanence-persist-[0-9a-f]{12}\.service$/);
    expect(argv).toEqual([process.execPath, fakeCtl, 'persist', '--storage', '/persistent', '--user', 'bird', '--', '/home/bird/.local/share/game saves']);
    expect(r.stdout).toContain('ran [\\"persist\\"');
    // The output file is read and removed.
    expect(readdirSync(outputDir)).toEqual([]);
    const [call] = (await polkit.calls()).slice(-1);
    expect(call!.action).toBe(ACTION);
    expect(call!.flags).toBe(1); // busctl allows interactive authorization by default
  });

  it('Unpersist goes the same way; a path starting with "-" stays a path', async () => {
    await polkit.setAllowed([ACTION]);
    const r = await busctl(['call', NAME, PATH, IFACE, 'Unpersist', 'sa{sv}', '/srv/-rf', '0'], 'nobody');
    expect(r.code).toBe(0);
    expect((await lastUnit())![1].slice(2)).toEqual(['unpersist', '--', '/srv/-rf']);
  });

  it('when polkit says no: NotAuthorized, and nothing is run', async () => {
    const before = (await systemd.transientUnits()).length;
    const r = await persist('/srv/new');
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/not allowed/);
    const raw = await busctl(['--json=short', 'call', NAME, PATH, IFACE, 'Persist', 'ssa{sv}', '/srv/new', '', '0'], 'nobody');
    expect(raw.stderr).toMatch(/not allowed to org.impermanence.persist/);
    await polkit.setChallenge([ACTION]);
    const noAsk = await busctl(['--allow-interactive-authorization=no', 'call', NAME, PATH, IFACE, 'Persist', 'ssa{sv}', '/srv/new', '', '0'], 'nobody');
    expect(noAsk.stderr).toMatch(/needs authentication/);
    expect((await systemd.transientUnits()).length).toBe(before);
  });

  it.each([
    ['a relative path', ['srv/new', '', '0'], /relative/],
    ['a path with ..', ['/srv/../etc', '', '0'], /path/],
    ['a relative storage', ['/srv/new', 'persistent', '0'], /storage/],
    ['an unknown option', ['/srv/new', '', '1', 'force', 'b', 'true'], /unknown option "force"/],
    ['a user of the wrong type', ['/srv/new', '', '1', 'user', 'u', '1000'], /option "user" takes an s/],
    ['a user name that is not one', ['/srv/new', '', '1', 'user', 's', '../root'], /user/],
  ])('refuses %s with InvalidArgument before asking polkit or running anything', async (_what, args, message) => {
    await polkit.setAllowed([ACTION]);
    await polkit.clearCalls();
    const before = (await systemd.transientUnits()).length;
    const r = await busctl(['call', NAME, PATH, IFACE, 'Persist', 'ssa{sv}', ...args], 'nobody');
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(message);
    expect(await polkit.calls()).toEqual([]);
    expect((await systemd.transientUnits()).length).toBe(before);
    // Still serving.
    expect((await busctl(['get-property', NAME, PATH, IFACE, 'Version'], 'nobody')).code).toBe(0);
  });

  it('a refused or failed run is PersistFailed with what impermanencectl said; the daemon goes on serving', async () => {
    await polkit.setAllowed([ACTION]);
    const r = await busctl(['--json=short', 'call', NAME, PATH, IFACE, 'Persist', 'ssa{sv}', '/srv/refuse', '', '0'], 'nobody');
    expect(r.code).not.toBe(0);
    expect(r.stderr).toContain('the storage /persistent is not a mounted filesystem');
    expect(r.stderr).not.toContain('impermanencectl persist:'); // the message, not the CLI's prefix
    expect(readdirSync(outputDir)).toEqual([]);
    expect((await busctl(['call', NAME, PATH, IFACE, 'ListEntries', 'a{sv}', '0'], 'nobody')).code).toBe(0);
  });

  it('impermanencectl persist, not as root, goes through the daemon (polkit decides)', async () => {
    await polkit.setAllowed([ACTION]);
    const ok = await ctl(['persist', '--user', 'bird', '/home/bird/notes'], 'nobody');
    expect(ok.stderr).toBe('');
    expect(ok.code).toBe(0);
    expect(ok.stdout).toContain('ran ["persist","--user","bird","--","/home/bird/notes"]');
    await polkit.setAllowed([]);
    const refused = await ctl(['unpersist', '/home/bird/notes'], 'nobody');
    expect(refused.code).toBe(1);
    expect(refused.stderr).toMatch(/impermanencectl unpersist: .*not allowed.*\(run it as root\)/);
  });
});
