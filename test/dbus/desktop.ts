/**
 * A user's desktop for tests: a private session bus, an X server (Xvfb) and a real notification
 * server (dunst) on them, all running as an unprivileged uid, plus a `busctl monitor` recording
 * every Notify and CloseNotification call on that session bus.
 *
 *   const desktop = await startDesktop(1000);
 *   … run something with desktop.env …
 *   desktop.notifyCalls();            // what was asked of the server, in order
 *   await desktop.dunstctl('close-all'); (await desktop.history())[0].summary
 *   await desktop.stop();
 *
 * dunst's context menu ("dunstctl context") runs desktop.menuScript as its dmenu: it records
 * the menu in desktop.dir/menu.txt and picks the first line matching desktop.dir/pick (a regex;
 * empty: nothing). Requires `apt-get install dunst xvfb libnotify-bin xauth` (dunstctl, busctl).
 * Every process is spawned with `setpriv --pdeathsig KILL` and stopped by PID.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { chownSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export interface NotifyCall {
  member: 'Notify' | 'CloseNotification';
  appName: string;
  replacesId: number;
  icon: string;
  summary: string;
  body: string;
  actions: string[];
  hints: Record<string, unknown>;
  /** CloseNotification's id. */
  id: number;
}

export interface HistoryEntry {
  id: number;
  summary: string;
  body: string;
  appname: string;
  icon: string;
  defaultAction: string;
}

export interface Desktop {
  uid: number;
  dir: string;
  address: string;
  display: string;
  /** Environment for a process of this desktop (session bus, display, runtime dir). */
  env: Record<string, string>;
  notifyCalls(): NotifyCall[];
  dunstctl(...args: string[]): string;
  /** dunst's history (closed notifications), newest first. */
  history(): HistoryEntry[];
  /** Sets what the context menu picks (a regex over its lines). */
  pick(pattern: string): void;
  startDunst(): Promise<void>;
  stopDunst(): Promise<void>;
  /** Spawns a process of this user on this desktop. */
  spawnAsUser(argv: string[], env?: Record<string, string>): ChildProcess;
  stop(): Promise<void>;
}

const CLEAN_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';

export async function startDesktop(uid: number): Promise<Desktop> {
  const missing = ['dunst', 'dunstctl', 'Xvfb', 'busctl', 'setpriv'].filter((p) => spawnSync('sh', ['-c', `command -v ${p}`], { stdio: 'ignore' }).status !== 0);
  if (missing.length) throw new Error(`a test desktop needs ${missing.join(', ')}: apt-get install dunst xvfb`);
  const dir = mkdtempSync(join(tmpdir(), 'impermanence-desktop-'));
  chownSync(dir, uid, uid);
  const socket = join(dir, 'session_bus');
  writeFileSync(
    join(dir, 'session.conf'),
    `<busconfig><type>session</type><listen>unix:path=${socket}</listen><auth>EXTERNAL</auth>
<policy context="default"><allow send_destination="*" eavesdrop="true"/><allow eavesdrop="true"/><allow own="*"/></policy></busconfig>\n`,
  );
  const menuScript = join(dir, 'menu.sh');
  writeFileSync(menuScript, `#!/bin/sh\ncat > '${dir}/menu.txt'\n[ -s '${dir}/pick' ] && grep -E -m1 -f '${dir}/pick' '${dir}/menu.txt'\nexit 0\n`, { mode: 0o755 });
  writeFileSync(join(dir, 'dunstrc'), `[global]\n    dmenu = ${menuScript}\n`);
  writeFileSync(join(dir, 'pick'), '');
  chownSync(join(dir, 'pick'), uid, uid);

  const children: ChildProcess[] = [];
  const display = `:${(process.pid % 400) + 100}`;
  const env: Record<string, string> = {
    PATH: CLEAN_PATH,
    LANG: 'C.UTF-8',
    HOME: dir,
    DISPLAY: display,
    DBUS_SESSION_BUS_ADDRESS: `unix:path=${socket}`,
    XDG_RUNTIME_DIR: dir,
  };
  const asUser = ['--reuid', String(uid), '--regid', String(uid), '--clear-groups'];
  const spawnAsUser = (argv: string[], extra: Record<string, string> = {}) => {
    const child = spawn('setpriv', [...asUser, '--pdeathsig', 'KILL', ...argv], {
      env: { ...env, ...extra },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    children.push(child);
    return child;
  };
  const stopChild = async (child: ChildProcess | undefined) => {
    if (!child || child.exitCode !== null || child.signalCode !== null) return;
    child.kill('SIGTERM');
    const exited = new Promise((r) => child.once('exit', r));
    const timer = setTimeout(() => child.kill('SIGKILL'), 2000);
    await exited;
    clearTimeout(timer);
  };
  const waitFor = async (what: string, ok: () => boolean) => {
    for (const start = Date.now(); !ok(); await new Promise((r) => setTimeout(r, 20))) {
      if (Date.now() - start > 5000) throw new Error(`desktop: ${what} did not come up in 5 s`);
    }
  };
  const run = (argv: string[]) => {
    const r = spawnSync('setpriv', [...asUser, ...argv], { env, encoding: 'utf8', timeout: 10_000 });
    if (r.status !== 0) throw new Error(`${argv.join(' ')} failed (${r.status}): ${r.stderr}`);
    return r.stdout;
  };


  let monitorOut = '';
  let monitorErr = '';
  let dunst: ChildProcess | undefined;
  const desktop: Desktop = {
    uid,
    dir,
    address: env.DBUS_SESSION_BUS_ADDRESS!,
    display,
    env,
    notifyCalls() {
      const calls: NotifyCall[] = [];
      for (const line of monitorOut.split('\n')) {
        if (!line.includes('"org.freedesktop.Notifications"')) continue;
        const m = JSON.parse(line) as { type: string; member?: string; payload: { data: unknown[] } };
        if (m.type !== 'method_call') continue;
        const d = m.payload.data;
        if (m.member === 'Notify') {
          const hints = Object.fromEntries(Object.entries(d[6] as Record<string, { data: unknown }>).map(([k, v]) => [k, v.data]));
          calls.push({ member: 'Notify', appName: d[0] as string, replacesId: d[1] as number, icon: d[2] as string, summary: d[3] as string, body: d[4] as string, actions: d[5] as string[], hints, id: 0 });
        } else if (m.member === 'CloseNotification') {
          calls.push({ member: 'CloseNotification', appName: '', replacesId: 0, icon: '', summary: '', body: '', actions: [], hints: {}, id: d[0] as number });
        }
      }
      return calls;
    },
    dunstctl: (...args) => run(['dunstctl', ...args]),
    history() {
      const json = JSON.parse(run(['dunstctl', 'history'])) as { data: Array<Array<Record<string, { data: unknown }>>> };
      return (json.data[0] ?? []).map((n) => ({
        id: n.id!.data as number,
        summary: n.summary!.data as string,
        body: n.body!.data as string,
        appname: n.appname!.data as string,
        icon: n.icon_path?.data as string,
        defaultAction: n.default_action_name?.data as string,
      }));
    },
    pick(pattern) {
      writeFileSync(join(dir, 'pick'), pattern ? pattern + '\n' : '');
    },
    async startDunst() {
      dunst = spawnAsUser(['dunst', '-config', join(dir, 'dunstrc')]);
      await waitFor('dunst', () => {
        return spawnSync('setpriv', [...asUser, 'dunstctl', 'is-paused'], { env, encoding: 'utf8' }).status === 0;
      });
    },
    async stopDunst() {
      await stopChild(dunst);
      dunst = undefined;
    },
    spawnAsUser,
    async stop() {
      for (const child of [...children].reverse()) await stopChild(child);
      rmSync(dir, { recursive: true, force: true });
    },
  };
  try {
    spawnAsUser(['dbus-daemon', `--config-file=${join(dir, 'session.conf')}`, '--nofork', '--print-address=1']);
    await waitFor('the session bus', () => existsSync(socket));
    spawnAsUser(['Xvfb', display, '-nolisten', 'tcp']);
    await waitFor('Xvfb', () => existsSync(`/tmp/.X11-unix/X${display.slice(1)}`));
    const monitor = spawnAsUser(['busctl', `--address=${env.DBUS_SESSION_BUS_ADDRESS}`, 'monitor', '--json=short', 'org.freedesktop.Notifications']);
    monitor.stdout!.on('data', (d) => (monitorOut += d));
    monitor.stderr!.on('data', (d) => (monitorErr += d));
    await waitFor('busctl monitor', () => monitorErr.includes('Monitoring'));
    await desktop.startDunst();
  } catch (err) {
    await desktop.stop();
    throw err;
  }
  return desktop;
}
