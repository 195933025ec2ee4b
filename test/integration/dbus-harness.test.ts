/**
 * Self-test of test/dbus/harness.ts with real tools: a private system-like bus (dbus-daemon),
 * its enforced policy, the python3-dbusmock polkitd mock, and cleanup.
 * Needs root and `apt-get install -y dbus-daemon dbus-system-bus-common python3-dbusmock`.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import {
  type PolkitMock,
  type PrivateBus,
  HARNESS_PREFIX,
  SYSTEM_PYTHON,
  missingPrerequisites,
  runOnBus,
  startPolkitMock,
  startSystemBus,
  stopAll,
} from '../dbus/harness';

jest.setTimeout(30_000);

const CHECK = [
  'busctl', 'call', 'org.freedesktop.PolicyKit1', '/org/freedesktop/PolicyKit1/Authority',
  'org.freedesktop.PolicyKit1.Authority', 'CheckAuthorization', '(sa{sv})sa{ss}us',
  'system-bus-name', '1', 'name', 's', ':1.5',
];
const check = (action: string, flags: number) => [...CHECK, action, '0', String(flags), ''];

/** Requests a name with dbus-python on the bus in DBUS_SYSTEM_BUS_ADDRESS; prints the result or
 * the D-Bus error name. */
const OWN_NAME = `
import sys, dbus
bus = dbus.SystemBus()
try:
    print("reply", bus.request_name(sys.argv[1], dbus.bus.NAME_FLAG_DO_NOT_QUEUE))
except dbus.exceptions.DBusException as e:
    print("error", e.get_dbus_name())
    sys.exit(3)
`;

const alive = (pid: number) => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};

const policyTemp: string[] = [];
/** Every bus and mock this file started, for the cleanup check. */
const started: Array<{ pid: number; dir?: string }> = [];
const track = <T extends { pid: number; dir?: string }>(x: T): T => (started.push(x), x);
afterAll(async () => {
  await stopAll();
  for (const d of policyTemp) fs.rmSync(d, { recursive: true, force: true });
});

beforeAll(() => {
  const missing = missingPrerequisites();
  if (missing.length) throw new Error(`D-Bus harness prerequisites missing: ${missing.join(', ')}`);
});

describe('startSystemBus', () => {
  let bus: PrivateBus;
  afterAll(() => bus?.stop());

  it('starts in well under a second; busctl lists it as root and as nobody', async () => {
    const t0 = performance.now();
    bus = track(await startSystemBus({ policyDirs: [] }));
    const ms = performance.now() - t0;
    expect(ms).toBeLessThan(500);
    expect(bus.address).toMatch(/^unix:path=.*system_bus_socket,guid=[0-9a-f]{32}$/);
    expect(bus.socketPath.startsWith(os.tmpdir()) || bus.socketPath.startsWith('/tmp')).toBe(true);
    expect(fs.statSync(bus.socketPath).isSocket()).toBe(true);
    expect(alive(bus.pid)).toBe(true);

    const root = await runOnBus(bus, ['busctl', `--address=${bus.address}`, 'list', '--no-pager']);
    expect(root).toMatchObject({ code: 0 });
    expect(root.stdout).toMatch(/^org\.freedesktop\.DBus\s+\d+\s+dbus-daemon\s+root/m);
    // DBUS_SYSTEM_BUS_ADDRESS is honoured by sd-bus: plain `busctl --system`, as an unprivileged user.
    const nobody = await runOnBus(bus, ['busctl', '--system', 'list', '--no-pager'], { asUser: 'nobody' });
    expect(nobody).toMatchObject({ code: 0 });
    expect(nobody.stdout).toMatch(/^:1\.\d+\s+\d+\s+busctl\s+nobody/m);
    const whoami = await runOnBus(bus, ['id', '-u'], { asUser: 'nobody' });
    expect(whoami.stdout.trim()).toBe('65534');
    console.log(`private bus up in ${bus.startupMs.toFixed(1)} ms (startSystemBus ${ms.toFixed(1)} ms)`);
  });

  it('runOnBus never throws on failure and kills a command at its timeout', async () => {
    expect(await runOnBus(bus, ['sh', '-c', 'echo out; echo err >&2; exit 7'])).toMatchObject({
      code: 7, stdout: 'out\n', stderr: 'err\n', timedOut: false,
    });
    expect(await runOnBus(bus, ['cat'], { input: 'piped' })).toMatchObject({ code: 0, stdout: 'piped' });
    const t0 = Date.now();
    const slow = await runOnBus(bus, ['sleep', '10'], { timeoutMs: 200 });
    expect(slow).toMatchObject({ timedOut: true, signal: 'SIGKILL', code: 137 });
    expect(Date.now() - t0).toBeLessThan(2000);
  });
});

describe('policy enforcement', () => {
  let bus: PrivateBus;
  afterAll(() => bus?.stop());

  it('only root may own a name whose policy says so; nobody gets AccessDenied', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'impermanence-policy-'));
    policyTemp.push(dir);
    fs.writeFileSync(
      path.join(dir, 'org.example.Test.conf'),
      `<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <policy user="root">
    <allow own="org.example.Test"/>
  </policy>
  <policy context="default">
    <allow send_destination="org.example.Test"/>
  </policy>
</busconfig>
`,
    );
    bus = track(await startSystemBus({ policyDirs: [dir] }));

    const root = await runOnBus(bus, [SYSTEM_PYTHON, '-c', OWN_NAME, 'org.example.Test']);
    expect(root).toMatchObject({ code: 0, stdout: 'reply 1\n' }); // DBUS_REQUEST_NAME_REPLY_PRIMARY_OWNER

    const nobody = await runOnBus(bus, [SYSTEM_PYTHON, '-c', OWN_NAME, 'org.example.Test'], { asUser: 'nobody' });
    expect(nobody).toMatchObject({ code: 3, stdout: 'error org.freedesktop.DBus.Error.AccessDenied\n' });
    // And a name no policy mentions is refused to root too (system.conf: <deny own="*"/>).
    const other = await runOnBus(bus, [SYSTEM_PYTHON, '-c', OWN_NAME, 'org.example.Other']);
    expect(other.stdout).toBe('error org.freedesktop.DBus.Error.AccessDenied\n');
  });

  it('addPolicy takes effect at once (ReloadConfig)', async () => {
    const before = await runOnBus(bus, [SYSTEM_PYTHON, '-c', OWN_NAME, 'org.example.Later'], { asUser: 'nobody' });
    expect(before.stdout).toBe('error org.freedesktop.DBus.Error.AccessDenied\n');
    await bus.addPolicy('org.example.Later', `<busconfig><policy user="nobody"><allow own="org.example.Later"/></policy></busconfig>`);
    const after = await runOnBus(bus, [SYSTEM_PYTHON, '-c', OWN_NAME, 'org.example.Later'], { asUser: 'nobody' });
    expect(after).toMatchObject({ code: 0, stdout: 'reply 1\n' });
  });
});

describe('startPolkitMock', () => {
  let bus: PrivateBus;
  let polkit: PolkitMock;
  afterAll(() => bus?.stop());

  it('answers CheckAuthorization false, then true after setAllowed; calls() shows the flags', async () => {
    bus = track(await startSystemBus({ policyDirs: [] }));
    const t0 = performance.now();
    polkit = track(await startPolkitMock(bus));
    console.log(`polkit mock up in ${(performance.now() - t0).toFixed(0)} ms`);

    // The exact call from the brief, with an explicit --address.
    const [busctl, ...rest] = check('org.example.act', 1);
    const denied = await runOnBus(bus, [busctl!, `--address=${bus.address}`, ...rest]);
    expect(denied).toMatchObject({ code: 0, stdout: '(bba{ss}) false false 1 "test" "test"\n' });

    await polkit.setAllowed(['org.example.act']);
    const allowed = await runOnBus(bus, check('org.example.act', 0));
    expect(allowed.stdout).toBe('(bba{ss}) true false 1 "test" "test"\n');

    // Any user may ask (like the real polkit policy) …
    const asNobody = await runOnBus(bus, check('org.example.act', 1), { asUser: 'nobody' });
    expect(asNobody.stdout).toBe('(bba{ss}) true false 1 "test" "test"\n');
    // … but only root may drive the mock.
    const tamper = await runOnBus(
      bus,
      ['busctl', 'call', 'org.freedesktop.PolicyKit1', '/org/freedesktop/PolicyKit1/Authority',
        'org.freedesktop.DBus.Mock', 'AllowUnknown', 'b', 'true'],
      { asUser: 'nobody' },
    );
    expect(tamper.code).not.toBe(0);
    expect(tamper.stderr).toMatch(/Access denied/i);

    const calls = await polkit.calls();
    expect(calls.map(({ action, flags, subject }) => ({ action, flags, subject }))).toEqual([
      { action: 'org.example.act', flags: 1, subject: 'system-bus-name::1.5' },
      { action: 'org.example.act', flags: 0, subject: 'system-bus-name::1.5' },
      { action: 'org.example.act', flags: 1, subject: 'system-bus-name::1.5' },
    ]);
    expect(calls[0]).toMatchObject({ subjectKind: 'system-bus-name', subjectDetails: { name: ':1.5' }, details: {}, cancellationId: '' });
    expect(polkit.log()).toMatch(/CheckAuthorization/);
    await polkit.clearCalls();
    expect(await polkit.calls()).toEqual([]);
  });

  it('can answer "not authorized, challenge possible", and authorize only interactive calls', async () => {
    await polkit.setChallenge(['org.example.challenge']);
    await polkit.setAuthorizedIfInteractive(['org.example.interactive']);
    const answer = async (action: string, flags: number) => (await runOnBus(bus, check(action, flags))).stdout.trim();
    expect(await answer('org.example.challenge', 0)).toBe('(bba{ss}) false true 1 "test" "test"');
    expect(await answer('org.example.challenge', 1)).toBe('(bba{ss}) false true 1 "test" "test"');
    expect(await answer('org.example.interactive', 0)).toBe('(bba{ss}) false true 1 "test" "test"');
    expect(await answer('org.example.interactive', 1)).toBe('(bba{ss}) true false 1 "test" "test"');
    // SetAllowed still counts, and unknown actions are still refused without a challenge.
    expect(await answer('org.example.act', 0)).toBe('(bba{ss}) true false 1 "test" "test"');
    expect(await answer('org.example.unknown', 1)).toBe('(bba{ss}) false false 1 "test" "test"');
    expect((await polkit.calls()).map((c) => [c.action, c.flags])).toEqual([
      ['org.example.challenge', 0], ['org.example.challenge', 1], ['org.example.interactive', 0],
      ['org.example.interactive', 1], ['org.example.act', 0], ['org.example.unknown', 1],
    ]);
  });
});

describe('cleanup', () => {
  it('stop() ends every process and removes every temp dir', async () => {
    const bus = track(await startSystemBus({ policyDirs: [] }));
    const polkit = track(await startPolkitMock(bus));
    const pids = [bus.pid, polkit.pid];
    expect(pids.every(alive)).toBe(true);
    expect(fs.existsSync(bus.dir)).toBe(true);

    await bus.stop(); // stops the mock first
    await bus.stop(); // idempotent
    expect(pids.filter(alive)).toEqual([]);
    expect(fs.existsSync(bus.dir)).toBe(false);

    // Nothing of ours is left anywhere: no dbus-daemon/python child of this process, no temp dir.
    await stopAll();
    const children = fs
      .readdirSync('/proc')
      .filter((p) => /^\d+$/.test(p))
      .filter((p) => {
        try {
          const stat = fs.readFileSync(`/proc/${p}/stat`, 'utf8');
          return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]) === process.pid;
        } catch {
          return false;
        }
      })
      .map((p) => fs.readFileSync(`/proc/${p}/comm`, 'utf8').trim());
    expect(children.filter((c) => /dbus|python/.test(c))).toEqual([]);
    // Including the buses and mocks of the tests above (stopped by their describe's afterAll).
    expect(started.length).toBeGreaterThanOrEqual(5);
    expect(started.filter((s) => alive(s.pid)).map((s) => s.pid)).toEqual([]);
    expect(started.filter((s) => s.dir !== undefined && fs.existsSync(s.dir))).toEqual([]);
    expect(started.every((s) => s.dir === undefined || path.basename(s.dir).startsWith(HARNESS_PREFIX))).toBe(true);
  });
});
