/**
 * impermanence-notify end to end: the real daemon (live drift) on a private system bus, and a
 * user's desktop — a private session bus, Xvfb and a real notification server, dunst — all as
 * uid 1000 ("bird" in the sandbox). Real writes cause drift; the test reads what dunst was asked
 * (busctl monitor) and what it kept (dunstctl history), and invokes actions through dunst.
 */
import type { ChildProcess } from 'node:child_process';
import { chmodSync, chownSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Message, sessionBus, type MessageBus } from '@jellybrick/dbus-next';
import { busctlCall, startPolkitMock, type PolkitMock, type PrivateBus } from '../dbus/harness';
import { sandboxRoot, startBus, startDaemon as startImpermanenced, type Daemon } from '../dbus/daemon';
import { startSystemdMock, type SystemdMock } from '../dbus/systemd-mock';
import { startDesktop, type Desktop, type NotifyCall } from '../dbus/desktop';
import { REPO, tempDir } from '../helpers';

jest.setTimeout(60_000);

const UID = 1000;
let bus: PrivateBus;
let polkit: PolkitMock;
let systemd: SystemdMock;
/** What the daemon has systemd run for Persist: a stand-in for impermanencectl that says what it was asked (see persist-dbus.test.ts). */
let fakeCtl: string;
let desktop: Desktop;
let daemon: Daemon | undefined;
let agent: ChildProcess;
let agentLog = '';
let root: string;
let configFile: string;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
async function until<T>(what: string, get: () => T | undefined | false, ms = 8000): Promise<T> {
  for (const start = Date.now(); ; await sleep(25)) {
    const v = get();
    if (v) return v;
    if (Date.now() - start > ms) throw new Error(`not within ${ms} ms: ${what}\n--- agent\n${agentLog}\n--- daemon\n${(daemon?.log() ?? '').slice(-2000)}`);
  }
}
const userEnv = () => ({ HOME: '/home/bird', XDG_CONFIG_HOME: join(desktop.dir, 'config') });
const notifies = () => desktop.notifyCalls().filter((c) => c.member === 'Notify');

async function startDaemon(): Promise<void> {
  daemon = await startImpermanenced({
    bus, root, args: ['--ctl', fakeCtl], bindMounts: ['var/log', 'home/bird/.ssh'], env: { RUNTIME_DIRECTORY: tempDir() },
    ready: (log) => log.includes('Watching'),
  });
}

async function stopDaemon(): Promise<void> {
  await daemon?.stop();
}

beforeAll(async () => {
  root = sandboxRoot({
    config: `[persistence."/persistent"]
directories = ["/var/log"]
[persistence."/persistent".users.bird]
directories = [".ssh"]
[drift]
ignore = ["/etc"] # the sandbox's own setup: the daemon's first scan would report it
`,
    dirs: ['var/log', 'persistent/var/log', 'home/bird/.ssh', 'persistent/home/bird/.ssh', 'root'],
  });
  chownSync(join(root, 'home/bird'), UID, UID);
  chmodSync(join(root, 'home/bird'), 0o700);
  chmodSync(join(root, 'root'), 0o700);
  chownSync(join(root, 'persistent/home/bird/.ssh'), UID, UID);
  chmodSync(join(root, 'persistent/home/bird/.ssh'), 0o700); // as a persisted .ssh is created by default
  fakeCtl = join(tempDir(), 'fake-impermanencectl.js');
  writeFileSync(fakeCtl, `process.stdout.write('added ' + process.argv.at(-1) + ' to 50-local.toml\\n');\n`);
  bus = await startBus();
  polkit = await startPolkitMock(bus);
  systemd = await startSystemdMock(bus);
  await startDaemon();
  desktop = await startDesktop(UID);
  // The agent's settings where it looks by default: $XDG_CONFIG_HOME/impermanence/notify.toml.
  mkdirSync(join(desktop.dir, 'config/impermanence'), { recursive: true });
  for (const d of ['config', 'config/impermanence']) chownSync(join(desktop.dir, d), UID, UID);
  configFile = join(desktop.dir, 'config/impermanence/notify.toml');
  // "Details" copies the report where the test can read it, instead of opening a viewer.
  writeFileSync(configFile, `# test settings\ndetails = ["sh", "-c", "cp \\"$1\\" \\"$0\\"", "${join(desktop.dir, 'details-opened.txt')}"]\n`);
  chownSync(configFile, UID, UID);
  agent = desktop.spawnAsUser([process.execPath, join(REPO, 'dist', 'impermanence-notify.js'), '--bus', bus.address], userEnv());
  agent.stdout!.on('data', (d) => (agentLog += d));
  agent.stderr!.on('data', (d) => (agentLog += d));
  await until('the agent following drift', () => agentLog.includes('Following drift'));
});

afterAll(async () => {
  if (agent && agent.exitCode === null) {
    agent.kill('SIGTERM');
    await new Promise((r) => agent.once('exit', r));
  }
  await desktop?.stop();
  await stopDaemon();
  await systemd?.stop();
  await polkit?.stop();
  await bus?.stop();
});

describe('impermanence-notify', () => {
  let first: NotifyCall;

  it('turns a write in the home into one notification: summary, body with the config line, urgency, icon, actions', async () => {
    mkdirSync(join(root, 'home/bird/.config/foo'), { recursive: true });
    for (let i = 0; i < 12; i++) writeFileSync(join(root, 'home/bird/.config/foo', `f${i}.conf`), 'x'.repeat(100));
    first = await until('a Notify for ~/.config/foo', () => notifies().find((c) => c.summary.includes('~/.config/foo')));
    // The burst of 12 settles before it is shown: the first notification already counts them all.
    expect(first.summary).toBe('12 files in ~/.config/foo will be lost at reboot');
    expect(first.body).toContain('[persistence."/persistent".users.bird]\ndirectories = [".config/foo"]');
    expect(first.body).toContain('12 files, 1.2 kB');
    expect(first.appName).toBe('impermanence');
    expect(first.replacesId).toBe(0);
    expect(first.hints.urgency).toBe(1);
    expect(first.hints['desktop-entry']).toBe('impermanence-notify');
    expect(first.icon).toBe('dialog-warning');
    // dunst shows actions: Persist is offered.
    expect(first.actions).toEqual(['default', 'Details', 'ignore', 'Ignore ~/.config/foo', 'persist', 'Persist ~/.config/foo']);
    await until('dunst showing it', () => desktop.dunstctl('count', 'displayed').trim() === '1');
    desktop.dunstctl('close-all');
    const kept = desktop.history()[0]!;
    expect(kept).toMatchObject({ summary: first.summary, body: first.body, appname: 'impermanence', defaultAction: 'default' });
    console.log(`A notification as dunst received it:\nsummary: ${kept.summary}\nbody:\n${kept.body}\nactions: ${first.actions.join(' | ')}`);
  });

  it('coalesces a burst of 1,000 files into one notification, updated in place, never a storm', async () => {
    const before = notifies().length;
    mkdirSync(join(root, 'home/bird/burst'), { recursive: true });
    for (let i = 0; i < 1000; i++) writeFileSync(join(root, 'home/bird/burst', `f${i}`), 'x');
    await until('the burst counted', () => notifies().slice(before).some((c) => c.summary === '1,000 files in ~/burst will be lost at reboot'));
    await sleep(2000); // anything still to come would come now
    const calls = notifies().slice(before);
    console.log(`1,000-file burst: ${calls.length} Notify call(s): ${calls.map((c) => `"${c.summary}" (replaces ${c.replacesId})`).join(', ')}`);
    expect(calls.length).toBeLessThanOrEqual(3);
    expect(calls[0]!.replacesId).toBe(0);
    for (const later of calls.slice(1)) expect(later.replacesId).not.toBe(0); // in place
    expect(desktop.dunstctl('count', 'displayed').trim()).toBe('1');
    // ~/.config/foo was dismissed: it is not shown again.
    expect(calls.every((c) => !c.body.includes('.config/foo') && !c.summary.includes('.config/foo'))).toBe(true);
  });

  it('Details opens the full report; Ignore remembers the path in the user config and stops showing it', async () => {
    desktop.dunstctl('action', '0'); // the default action: Details
    const opened = await until('the report opened', () => {
      try {
        return readFileSync(join(desktop.dir, 'details-opened.txt'), 'utf8');
      } catch {
        return undefined;
      }
    });
    expect(opened).toContain('ephemeral  ~/burst');
    expect(opened).toContain('directories = ["burst"]');

    // The user dismisses it; a new write shows a new one, which they ignore.
    desktop.dunstctl('close-all');
    mkdirSync(join(root, 'home/bird/.local/share/noisy'), { recursive: true });
    writeFileSync(join(root, 'home/bird/.local/share/noisy/log'), 'x');
    const shown = await until('a notification for noisy', () => notifies().find((c) => c.summary.includes('~/.local/share/noisy')));
    await until('dunst showing it', () => desktop.dunstctl('count', 'displayed').trim() === '1');
    desktop.pick('Ignore ~/.local/share/noisy');
    desktop.dunstctl('context');
    await until('the ignore remembered', () => readFileSync(configFile, 'utf8').includes('path = "~/.local/share/noisy"'));
    expect(readFileSync(configFile, 'utf8')).toMatch(/^# test settings\n/); // the user's own lines stay
    const after = notifies().length;
    writeFileSync(join(root, 'home/bird/.local/share/noisy/log2'), 'y');
    await sleep(1500);
    expect(notifies().slice(after).filter((c) => c.summary.includes('noisy'))).toEqual([]);
    void shown;
  });

  /**
   * Writes bird's ~/FILE, waits for the notification (among those from `from` on) offering to
   * persist its folder and for dunst to show it, and picks that action. Returns how many
   * notifications there were before the pick.
   */
  const pickPersist = async (file: string, from: number) => {
    const folder = file.slice(0, file.indexOf('/'));
    mkdirSync(join(root, 'home/bird', folder), { recursive: true });
    writeFileSync(join(root, 'home/bird', file), 'x');
    await until(`a notification for ${folder}`, () => notifies().slice(from).find((c) => c.actions.includes(`Persist ~/${folder}`)));
    await until('dunst showing it', () => desktop.dunstctl('count', 'displayed').trim() === '1');
    const mark = notifies().length;
    desktop.pick(`Persist ~/${folder}`);
    desktop.dunstctl('context');
    return mark;
  };

  it('Persist asks the daemon (polkit decides, and may ask the user), and says how it went in a notification of its own', async () => {
    desktop.dunstctl('close-all');
    await polkit.setAllowed([]);
    await polkit.setAuthorizedIfInteractive(['org.impermanence.persist']); // as if an agent asked, and the user authenticated
    const before = await pickPersist('Games/slot1', 0);
    const done = await until('the result shown', () => notifies().slice(before).find((c) => c.summary.includes('persisted')));
    expect(done.summary).toBe('~/Games is persisted');
    expect(done.body).toBe('added /home/bird/Games to 50-local.toml');
    const [unit] = (await systemd.transientUnits()).slice(-1);
    expect(unit![1].slice(2)).toEqual(['persist', '--', '/home/bird/Games']);
    const [check] = (await polkit.calls()).slice(-1);
    expect(check).toMatchObject({ action: 'org.impermanence.persist', flags: 1 }); // interactive: polkit may ask

    // polkit says no: nothing runs, and the user is told why.
    await polkit.setAuthorizedIfInteractive([]);
    const units = (await systemd.transientUnits()).length;
    desktop.dunstctl('close-all');
    const mark = await pickPersist('Music/song', before);
    const refused = await until('the refusal shown', () => notifies().slice(mark).find((c) => c.summary.startsWith('Could not persist')));
    expect(refused.summary).toBe('Could not persist ~/Music');
    expect(refused.body).toMatch(/not allowed to org\.impermanence\.persist/);
    expect((await systemd.transientUnits()).length).toBe(units);
    desktop.dunstctl('close-all');
  });

  it('shows a user nothing of paths they may not see, and believes no one but the daemon', async () => {
    const before = notifies().length;
    writeFileSync(join(root, 'root/.bash_history'), 'secret');
    // Another connection sends the agent a forged DriftChanged, addressed to it.
    const forger: MessageBus = sessionBus({ busAddress: bus.address });
    await new Promise<void>((r) => forger.once('connect', () => r()));
    let sent = 0;
    const [names] = (await busctlCall(bus, 'org.freedesktop.DBus', '/org/freedesktop/DBus', 'org.freedesktop.DBus', 'ListNames', '')) as [string[]];
    for (const name of names.filter((n) => n.startsWith(':'))) {
      const uid = await busctlCall(bus, 'org.freedesktop.DBus', '/org/freedesktop/DBus', 'org.freedesktop.DBus', 'GetConnectionUnixUser', 's', name).then(([u]) => u, () => undefined);
      if (uid !== UID) continue;
      const forged = Message.newSignal('/org/impermanence/Manager', 'org.impermanence.Manager', 'DriftChanged', 'a(sssutss)', [
        [['ephemeral', '/home/bird/forged', 'forged', 1, 1n, 'run evil-command', '']],
      ]);
      forged.destination = name;
      forger.send(forged);
      sent++;
    }
    expect(sent).toBe(1); // the agent's own connection, the only one of its user
    await sleep(1500);
    forger.disconnect();
    const calls = notifies().slice(before);
    expect(calls.filter((c) => c.body.includes('forged') || c.summary.includes('forged') || c.body.includes('/root') || c.summary.includes('/root'))).toEqual([]);
  });

  it('comes back after the daemon restarts, and after the notification server restarts', async () => {
    await stopDaemon();
    await until('the agent seeing the daemon go', () => agentLog.includes('impermanenced left the bus'));
    await startDaemon();
    await until('the agent subscribed again', () => (agentLog.match(/Following drift/g) ?? []).length >= 2);
    const before = notifies().length;
    writeFileSync(join(root, 'home/bird/after-restart.txt'), 'x');
    const c = await until('a notification after the daemon restart', () => notifies().slice(before).find((n) => n.summary.includes('after-restart')));
    expect(c.summary).toBe('~/after-restart.txt will be lost at reboot');

    // The notification server goes away; drift meanwhile is shown when one is back.
    await desktop.stopDunst();
    writeFileSync(join(root, 'home/bird/while-no-server.txt'), 'x');
    await sleep(1000);
    const mark = notifies().length;
    await desktop.startDunst();
    const again = await until('a notification from the new server', () => notifies().slice(mark).find((n) => n.body.includes('while-no-server') || n.summary.includes('while-no-server')));
    expect(again.replacesId).toBe(0); // the old server's id means nothing to the new one
    await until('dunst showing it', () => desktop.dunstctl('count', 'displayed').trim() === '1');
  });

  it('impermanencectl notify off stops it; it stays off', async () => {
    const r = desktop.spawnAsUser([process.execPath, join(REPO, 'dist', 'impermanencectl.js'), 'notify', 'off'], userEnv());
    await new Promise((res) => r.once('exit', res));
    expect(r.exitCode).toBe(0);
    expect(readFileSync(configFile, 'utf8')).toMatch(/^enable = false\n# test settings/);
    await until('the agent exits', () => agent.exitCode !== null);
    expect(agent.exitCode).toBe(0);
    const again = desktop.spawnAsUser([process.execPath, join(REPO, 'dist', 'impermanence-notify.js'), '--bus', bus.address], userEnv());
    let out = '';
    again.stderr!.on('data', (d) => (out += d));
    await new Promise((res) => again.once('exit', res));
    expect(again.exitCode).toBe(0);
    expect(out).toMatch(/Disabled in .*notify.toml/);
  });
});
