/**
 * D-Bus test harness: a private, system-like bus (Debian's system bus policy, enforced) and a
 * polkit mock on it, for tests that drive the real daemon over D-Bus.
 *
 *   const bus = await startSystemBus({ policyDirs: [path.join(REPO, 'dbus')] });   // or startBus() of ./daemon.ts
 *   const polkit = await startPolkitMock(bus);
 *   await polkit.setAllowed(['org.impermanence.reload']);          // ACTION_RELOAD, src/bus/names.ts
 *   const r = await runOnBus(bus, ['busctl', 'call', …], { asUser: 'nobody' });
 *   …
 *   await bus.stop();                       // also stops the polkit mock
 *
 * The bus: `dbus-daemon --config-file=TMP/bus.conf --nofork --print-address=1` where bus.conf is
 * the <policy> blocks of the installed /usr/share/dbus-1/system.conf (Debian's system bus policy:
 * default-deny owning names and method calls) plus <listen>unix:path=TMP/system_bus_socket</listen>,
 * an <includedir> for the harness's own policy folder (`bus.policyDir`, which holds the polkit
 * mock's policy) and one for each of `policyDirs`. No <user>, <fork>, <pidfile>, <syslog>, no
 * service directories (nothing is ever bus-activated, so a call to a name nobody owns fails at
 * once with ServiceUnknown instead of starting the host's real service). The daemon runs as root,
 * so `<policy user="…">` rules are enforced against each client's real uid. The temp dir is 0755
 * and the socket 0777 (dbus-daemon's own mode), so unprivileged users can connect.
 *
 * Every process the harness starts is spawned through `setpriv --pdeathsig KILL`, so it dies with
 * the test process even if jest is killed; `stop()` terminates it by PID, waits for it and removes
 * the temp dir. `stopAll()` stops whatever is still running (and an exit hook SIGKILLs leftovers).
 *
 * Requires root and: `apt-get install -y --no-install-recommends dbus-daemon dbus-system-bus-common
 * python3-dbusmock` (python3-dbusmock brings python3-dbus and python3-gi; busctl comes with
 * systemd; setpriv with util-linux). Python is always /usr/bin/python3: a python3 found first on
 * PATH (pyenv, venv) has no apt `dbus`/`gi` modules.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as fsp from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';

export const SYSTEM_CONF = '/usr/share/dbus-1/system.conf';
export const SYSTEM_PYTHON = '/usr/bin/python3';
export const POLKIT_NAME = 'org.freedesktop.PolicyKit1';
export const POLKIT_PATH = '/org/freedesktop/PolicyKit1/Authority';
export const POLKIT_IFACE = 'org.freedesktop.PolicyKit1.Authority';
export const MOCK_IFACE = 'org.freedesktop.DBus.Mock';
/** Prefix of every temp dir the harness creates. */
export const HARNESS_PREFIX = 'impermanence-dbus-';
/** polkit's CheckAuthorization flag AllowUserInteraction. */
export const ALLOW_USER_INTERACTION = 1;

const CLEAN_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';
const BASE_ENV: Record<string, string> = {
  PATH: CLEAN_PATH,
  LANG: 'C.UTF-8',
  SYSTEMD_PAGER: '',
  SYSTEMD_COLORS: '0',
  PYTHONDONTWRITEBYTECODE: '1',
};

export interface ExecResult {
  /** Exit code; 128+signal number if killed by a signal (124+… after a timeout, see timedOut). */
  code: number;
  stdout: string;
  stderr: string;
  signal: NodeJS.Signals | null;
  /** True if the command was SIGKILLed (with its process group) after timeoutMs. */
  timedOut: boolean;
}

export interface RunOptions {
  /** Run as this unprivileged user (name or uid): setpriv --reuid --regid --clear-groups. */
  asUser?: string | number;
  input?: string;
  /** Kill the command (and its process group) after this long; default 30 s. */
  timeoutMs?: number;
  /** Extra environment on top of a clean PATH/LANG/HOME and DBUS_SYSTEM_BUS_ADDRESS. */
  env?: Record<string, string>;
  cwd?: string;
}

export interface PrivateBus {
  /** As printed by dbus-daemon, e.g. `unix:path=/tmp/impermanence-dbus-X/system_bus_socket,guid=…`. */
  address: string;
  socketPath: string;
  pid: number;
  /** The bus's temp dir (config, socket, mock logs); removed by stop(). */
  dir: string;
  configPath: string;
  /** The harness's own <includedir> (polkit mock policy); tests may add files with addPolicy(). */
  policyDir: string;
  /** Milliseconds from spawn to the printed address. */
  startupMs: number;
  /** Writes NAME.conf into policyDir and reloads the bus config. */
  addPolicy(name: string, xml: string): Promise<void>;
  /** org.freedesktop.DBus.ReloadConfig, which returns once the new policy is in force (the inotify
   * reload dbus-daemon does by itself is asynchronous). */
  reload(): Promise<void>;
  /** dbus-daemon's stderr so far. */
  stderr(): string;
  stop(): Promise<void>;
}

export interface PolkitCall {
  action: string;
  /** 1 = AllowUserInteraction. */
  flags: number;
  /** `KIND:ID`, e.g. `system-bus-name::1.42` or `unix-process:1234` (the pid). */
  subject: string;
  subjectKind: string;
  subjectDetails: Record<string, unknown>;
  details: Record<string, string>;
  cancellationId: string;
  /** Unix time in whole seconds (dbusmock's resolution). */
  time: number;
}

export interface PolkitMock {
  pid: number;
  /** Actions CheckAuthorization answers (true, false) for (the template's SetAllowed). */
  setAllowed(actions: string[]): Promise<void>;
  /** Answer (true, false) for every action not otherwise configured (the template's AllowUnknown). */
  allowUnknown(allow: boolean): Promise<void>;
  /**
   * Actions answered (false, true) — "not authorized, but a challenge is possible" — whatever the
   * flags (what real polkitd answers when authentication is required and no agent handles it).
   * The polkitd template always returns is_challenge=false; the first call of this (or of
   * setAuthorizedIfInteractive) replaces its CheckAuthorization through dbusmock's AddMethod.
   */
  setChallenge(actions: string[]): Promise<void>;
  /**
   * Actions authorized only if the call passed AllowUserInteraction (flag 1) — as if an agent
   * asked the user and they authenticated; without the flag they answer (false, true).
   */
  setAuthorizedIfInteractive(actions: string[]): Promise<void>;
  /** CheckAuthorization calls since start / clearCalls(), oldest first (dbusmock's call log). */
  calls(): Promise<PolkitCall[]>;
  clearCalls(): Promise<void>;
  /** The mock's log file (one line per method call). */
  log(): string;
  stop(): Promise<void>;
}

// ───────────────────────────── process bookkeeping ─────────────────────────────

interface Tracked {
  child: ChildProcess;
  exited: Promise<void>;
}

const live = new Set<{ stop(): Promise<void>; kill(): void }>();
let exitHookInstalled = false;
function track(item: { stop(): Promise<void>; kill(): void }): void {
  live.add(item);
  if (!exitHookInstalled) {
    exitHookInstalled = true;
    process.on('exit', () => {
      for (const i of live) i.kill();
    });
  }
}

/** Stops every bus and mock this process started and has not stopped yet. */
export async function stopAll(): Promise<void> {
  for (const i of [...live].reverse()) await i.stop();
}

function spawnTracked(argv: string[], env: Record<string, string>, stdio: 'pipe' | 'ignore'): Tracked {
  const [cmd, ...args] = ['setpriv', '--pdeathsig', 'KILL', '--', ...argv];
  const child = spawn(cmd!, args, { env, stdio: ['ignore', stdio, stdio], cwd: '/' });
  const exited = new Promise<void>((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) resolve();
    child.once('exit', () => resolve());
    child.once('error', () => resolve());
  });
  return { child, exited };
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** SIGTERM, then SIGKILL after graceMs; resolves once the process has been reaped. */
async function terminate(t: Tracked, graceMs = 2000): Promise<void> {
  const { child } = t;
  if (child.exitCode !== null || child.signalCode !== null || child.pid === undefined) return;
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
  await t.exited;
  clearTimeout(timer);
}

function killNow(t: Tracked): void {
  if (t.child.exitCode === null && t.child.signalCode === null) t.child.kill('SIGKILL');
}

/** Keeps the last `max` characters of a stream, so a chatty process can never block on a full pipe. */
function drain(stream: NodeJS.ReadableStream | null, max = 64 * 1024): () => string {
  let buf = '';
  stream?.setEncoding('utf8');
  stream?.on('data', (d: string) => {
    buf += d;
    if (buf.length > max) buf = buf.slice(-max);
  });
  return () => buf;
}

// ──────────────────────────────────── the bus ────────────────────────────────────

const xmlEscape = (s: string) =>
  s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');

const DOCTYPE =
  '<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"\n' +
  ' "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">';

/** The <policy> blocks of the installed system.conf (comments stripped), verbatim. */
export function systemPolicy(systemConf = SYSTEM_CONF): string {
  let text: string;
  try {
    text = fs.readFileSync(systemConf, 'utf8');
  } catch (e) {
    throw new Error(
      `${systemConf} is missing (${(e as Error).message}): apt-get install -y dbus-system-bus-common`,
    );
  }
  const blocks = text.replace(/<!--[\s\S]*?-->/g, '').match(/<policy\b[\s\S]*?<\/policy>/g);
  if (!blocks?.some((b) => /context="default"/.test(b))) {
    throw new Error(`no default <policy> found in ${systemConf}`);
  }
  return blocks.join('\n');
}

/** The bus.conf startSystemBus writes: system.conf's policy, one listen address, includedirs. */
export function busConfig(socketPath: string, includeDirs: string[]): string {
  return [
    '<?xml version="1.0" encoding="UTF-8"?>',
    DOCTYPE,
    '<busconfig>',
    '  <type>system</type>',
    '  <auth>EXTERNAL</auth>',
    `  <listen>unix:path=${xmlEscape(socketPath)}</listen>`,
    systemPolicy(),
    ...includeDirs.map((d) => `  <includedir>${xmlEscape(d)}</includedir>`),
    '</busconfig>',
    '',
  ].join('\n');
}

/**
 * What the polkit mock needs: root may own org.freedesktop.PolicyKit1 and use the mock's control
 * interface (org.freedesktop.DBus.Mock); everyone may call the Authority interface (like the real
 * /usr/share/dbus-1/system.d/org.freedesktop.PolicyKit1.conf, which grants ownership to user
 * polkitd instead). Unprivileged clients cannot flip the mock's answers.
 */
export const POLKIT_MOCK_POLICY = [
  '<?xml version="1.0" encoding="UTF-8"?>',
  DOCTYPE,
  '<busconfig>',
  '  <policy user="root">',
  `    <allow own="${POLKIT_NAME}"/>`,
  `    <allow send_destination="${POLKIT_NAME}" send_interface="${MOCK_IFACE}"/>`,
  '  </policy>',
  '  <policy context="default">',
  `    <allow send_destination="${POLKIT_NAME}" send_interface="${POLKIT_IFACE}"/>`,
  `    <allow send_destination="${POLKIT_NAME}" send_interface="org.freedesktop.DBus.Introspectable"/>`,
  `    <allow send_destination="${POLKIT_NAME}" send_interface="org.freedesktop.DBus.Properties"/>`,
  `    <allow send_destination="${POLKIT_NAME}" send_interface="org.freedesktop.DBus.Peer"/>`,
  '  </policy>',
  '</busconfig>',
  '',
].join('\n');

function makeTempDir(): string {
  // A unix socket path must fit in 108 bytes: fall back to /tmp if TMPDIR is long.
  const base = os.tmpdir().length <= 60 ? os.tmpdir() : '/tmp';
  const dir = fs.mkdtempSync(path.join(base, HARNESS_PREFIX));
  fs.chmodSync(dir, 0o755);
  return dir;
}

const busMocks = new WeakMap<PrivateBus, Set<PolkitMock>>();

export interface SystemBusOptions {
  /** Folders of policy files (<busconfig> XML) to <includedir>, e.g. the project's dbus/. */
  policyDirs?: string[];
  /** Reject if the address is not printed within this time (default 5 s). */
  timeoutMs?: number;
}

export async function startSystemBus(opts: SystemBusOptions = {}): Promise<PrivateBus> {
  const dir = makeTempDir();
  const policyDir = path.join(dir, 'policy.d');
  fs.mkdirSync(policyDir, { mode: 0o755 });
  fs.writeFileSync(path.join(policyDir, 'polkit-mock.conf'), POLKIT_MOCK_POLICY);
  const socketPath = path.join(dir, 'system_bus_socket');
  const configPath = path.join(dir, 'bus.conf');
  try {
    const dirs = [policyDir, ...(opts.policyDirs ?? []).map((d) => path.resolve(d))];
    fs.writeFileSync(configPath, busConfig(socketPath, dirs));
  } catch (e) {
    fs.rmSync(dir, { recursive: true, force: true });
    throw e;
  }

  const started = performance.now();
  const t = spawnTracked(
    ['dbus-daemon', `--config-file=${configPath}`, '--nofork', '--print-address=1'],
    { ...BASE_ENV },
    'pipe',
  );
  const stderr = drain(t.child.stderr);
  let stopped: Promise<void> | undefined;
  const cleanup = async () => {
    await terminate(t);
    await fsp.rm(dir, { recursive: true, force: true });
  };

  let address: string;
  try {
    address = await new Promise<string>((resolve, reject) => {
      let out = '';
      const timer = setTimeout(
        () => reject(new Error(`dbus-daemon printed no address in ${opts.timeoutMs ?? 5000} ms: ${stderr()}`)),
        opts.timeoutMs ?? 5000,
      );
      t.child.stdout!.setEncoding('utf8');
      t.child.stdout!.on('data', (d: string) => {
        out += d;
        const nl = out.indexOf('\n');
        if (nl >= 0) {
          clearTimeout(timer);
          resolve(out.slice(0, nl).trim());
        }
      });
      t.child.once('error', (e) => {
        clearTimeout(timer);
        reject(new Error(`cannot start dbus-daemon (apt-get install -y dbus-daemon): ${e.message}`));
      });
      t.child.once('exit', (code, signal) => {
        clearTimeout(timer);
        reject(new Error(`dbus-daemon exited (${code ?? signal}) before printing its address: ${stderr()}`));
      });
    });
  } catch (e) {
    await cleanup();
    throw e;
  }
  const startupMs = performance.now() - started;
  // dbus-daemon creates the socket 0777 itself; make sure anyway (umask, future versions).
  if ((fs.statSync(socketPath).mode & 0o006) !== 0o006) fs.chmodSync(socketPath, 0o666);

  const mocks = new Set<PolkitMock>();
  const bus: PrivateBus = {
    address,
    socketPath,
    pid: t.child.pid!,
    dir,
    configPath,
    policyDir,
    startupMs,
    async addPolicy(name, xml) {
      await fsp.writeFile(path.join(policyDir, name.endsWith('.conf') ? name : `${name}.conf`), xml);
      await bus.reload();
    },
    async reload() {
      const r = await runOnBus(bus, [
        'busctl', 'call', 'org.freedesktop.DBus', '/org/freedesktop/DBus', 'org.freedesktop.DBus', 'ReloadConfig',
      ]);
      if (r.code !== 0) throw new Error(`ReloadConfig failed: ${r.stderr}`);
    },
    stderr,
    stop() {
      stopped ??= (async () => {
        for (const m of [...mocks]) await m.stop();
        await cleanup();
        live.delete(entry);
      })();
      return stopped;
    },
  };
  const entry = { stop: () => bus.stop(), kill: () => { killNow(t); fs.rmSync(dir, { recursive: true, force: true }); } };
  track(entry);
  busMocks.set(bus, mocks);
  return bus;
}

// ──────────────────────────────────── running clients ────────────────────────────────────

interface Identity { uid: number; gid: number; home: string }

/** uid, primary gid and home of a user name or uid (an unknown uid gets gid = uid, home /). */
export function resolveUser(user: string | number): Identity {
  const r = spawnSync('getent', ['passwd', String(user)], { encoding: 'utf8' });
  const f = r.status === 0 ? r.stdout.trim().split('\n')[0]!.split(':') : undefined;
  if (f && f.length >= 6) return { uid: Number(f[2]), gid: Number(f[3]), home: f[5] || '/' };
  if (typeof user === 'number' || /^\d+$/.test(user)) return { uid: Number(user), gid: Number(user), home: '/' };
  throw new Error(`unknown user ${user}`);
}

/** Runs argv with DBUS_SYSTEM_BUS_ADDRESS set to the bus (so `busctl --system`, sd-bus, dbus-python,
 * dbus-next … all use it); as root unless asUser. Never throws on a non-zero exit. */
export function runOnBus(bus: Pick<PrivateBus, 'address'>, argv: string[], opts: RunOptions = {}): Promise<ExecResult> {
  const id = opts.asUser !== undefined ? resolveUser(opts.asUser) : undefined;
  const prefix = id
    ? ['setpriv', '--pdeathsig', 'KILL', `--reuid=${id.uid}`, `--regid=${id.gid}`, '--clear-groups', '--']
    : ['setpriv', '--pdeathsig', 'KILL', '--'];
  const env = {
    ...BASE_ENV,
    HOME: id ? (fs.existsSync(id.home) ? id.home : '/') : '/root',
    DBUS_SYSTEM_BUS_ADDRESS: bus.address,
    ...opts.env,
  };
  return collect([...prefix, ...argv], env, opts);
}

function collect(argv: string[], env: Record<string, string>, opts: RunOptions): Promise<ExecResult> {
  return new Promise((resolve, reject) => {
    const [cmd, ...args] = argv;
    // detached: own process group, so a timeout kills the command and everything it started.
    const child = spawn(cmd!, args, { env, cwd: opts.cwd ?? '/', detached: true, stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    let timedOut = false;
    child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    child.stdin.on('error', () => undefined); // EPIPE if the command does not read its input
    child.stdin.end(opts.input ?? '');
    const timer = setTimeout(() => {
      timedOut = true;
      try {
        process.kill(-child.pid!, 'SIGKILL');
      } catch {
        child.kill('SIGKILL');
      }
    }, opts.timeoutMs ?? 30_000);
    child.once('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    child.once('close', (code, signal) => {
      clearTimeout(timer);
      const signo = signal ? (os.constants.signals[signal] ?? 0) : 0;
      if (timedOut) stderr += `\n[harness] killed after ${opts.timeoutMs ?? 30_000} ms\n`;
      resolve({ code: code ?? 128 + signo, stdout, stderr, signal, timedOut });
    });
  });
}

// ──────────────────────────────────── busctl helpers ────────────────────────────────────

interface Variant { type: string; data: unknown }

/** `busctl --json=short call …` as root; returns the reply's `data` array. */
export async function busctlCall(
  bus: Pick<PrivateBus, 'address'>,
  dest: string,
  objectPath: string,
  iface: string,
  member: string,
  signature = '',
  ...args: string[]
): Promise<unknown[]> {
  const argv = ['busctl', '--json=short', 'call', dest, objectPath, iface, member];
  if (signature) argv.push(signature, ...args);
  const r = await runOnBus(bus, argv, { timeoutMs: 10_000 });
  if (r.code !== 0) throw new Error(`${iface}.${member} failed (${r.code}): ${r.stderr.trim()}`);
  if (!r.stdout.trim()) return [];
  return (JSON.parse(r.stdout) as { data: unknown[] }).data;
}

/** busctl's `as` argument form: count then items. */
const strv = (items: string[]) => [String(items.length), ...items];

async function nameOwnerPid(bus: PrivateBus, name: string): Promise<number | undefined> {
  const r = await runOnBus(
    bus,
    ['busctl', '--json=short', 'call', 'org.freedesktop.DBus', '/org/freedesktop/DBus', 'org.freedesktop.DBus',
      'GetConnectionUnixProcessID', 's', name],
    { timeoutMs: 5000 },
  );
  if (r.code !== 0) return undefined; // NameHasNoOwner
  return (JSON.parse(r.stdout) as { data: [number] }).data[0];
}

// ──────────────────────────────────── the polkit mock ────────────────────────────────────

/**
 * Replacement CheckAuthorization (python, run by dbusmock's mock_method, which also puts the call
 * in the call log): the template's allowed/allow_unknown, plus challenge and interactive lists.
 */
const CHECK_AUTHORIZATION_CODE = `
action = str(args[1])
flags = int(args[3])
ok = action in self.allowed or bool(self.allow_unknown)
challenge = False
if not ok and action in getattr(self, 'impermanence_interactive', ()):
    ok = (flags & 1) == 1
    challenge = not ok
if not ok and action in getattr(self, 'impermanence_challenge', ()):
    challenge = True
ret = (ok, challenge, dbus.Dictionary({'test': 'test'}, signature='ss'))
`;

export interface PolkitMockOptions {
  /** Reject if the mock does not own org.freedesktop.PolicyKit1 within this time (default 10 s). */
  timeoutMs?: number;
}

export async function startPolkitMock(bus: PrivateBus, opts: PolkitMockOptions = {}): Promise<PolkitMock> {
  const mocks = busMocks.get(bus);
  const logPath = fs.mkdtempSync(path.join(bus.dir, 'polkit-')) + '/mock.log';
  const t = spawnTracked(
    [SYSTEM_PYTHON, '-m', 'dbusmock', '--system', '--template', 'polkitd', '--logfile', logPath],
    { ...BASE_ENV, HOME: '/root', DBUS_SYSTEM_BUS_ADDRESS: bus.address },
    'pipe',
  );
  const output = drain(t.child.stderr);
  drain(t.child.stdout);
  let spawnError: Error | undefined;
  t.child.once('error', (e) => (spawnError = e));

  // dbusmock has no readiness signal: wait until the name is owned by this very process.
  const deadline = Date.now() + (opts.timeoutMs ?? 10_000);
  for (;;) {
    if (spawnError || t.child.exitCode !== null || t.child.signalCode !== null) {
      await t.exited;
      throw new Error(
        `polkit mock exited (${spawnError?.message ?? t.child.exitCode ?? t.child.signalCode}); ` +
          `apt-get install -y python3-dbusmock? ${output()}`,
      );
    }
    if ((await nameOwnerPid(bus, POLKIT_NAME)) === t.child.pid) break;
    if (Date.now() > deadline) {
      await terminate(t);
      throw new Error(`polkit mock did not own ${POLKIT_NAME} in time: ${output()}`);
    }
    await sleep(20);
  }

  const mockCall = (member: string, signature = '', ...args: string[]) =>
    busctlCall(bus, POLKIT_NAME, POLKIT_PATH, MOCK_IFACE, member, signature, ...args);
  let overridden = false;
  const override = async () => {
    if (overridden) return;
    await mockCall('AddMethod', 'sssss', POLKIT_IFACE, 'CheckAuthorization', '(sa{sv})sa{ss}us', '(bba{ss})',
      CHECK_AUTHORIZATION_CODE);
    await mockCall('AddMethod', 'sssss', MOCK_IFACE, 'SetChallenge', 'as', '', 'self.impermanence_challenge = list(args[0])');
    await mockCall('AddMethod', 'sssss', MOCK_IFACE, 'SetAuthorizedIfInteractive', 'as', '',
      'self.impermanence_interactive = list(args[0])');
    overridden = true;
  };

  let stopped: Promise<void> | undefined;
  const mock: PolkitMock = {
    pid: t.child.pid!,
    setAllowed: async (actions) => void (await mockCall('SetAllowed', 'as', ...strv(actions))),
    allowUnknown: async (allow) => void (await mockCall('AllowUnknown', 'b', String(allow))),
    async setChallenge(actions) {
      await override();
      await mockCall('SetChallenge', 'as', ...strv(actions));
    },
    async setAuthorizedIfInteractive(actions) {
      await override();
      await mockCall('SetAuthorizedIfInteractive', 'as', ...strv(actions));
    },
    async calls() {
      const [log] = (await mockCall('GetCalls')) as [Array<[number, string, Variant[]]>];
      return log.filter(([, name]) => name === 'CheckAuthorization').map(([time, , a]) => parseCall(time, a));
    },
    clearCalls: async () => void (await mockCall('ClearCalls')),
    log: () => {
      try {
        return fs.readFileSync(logPath, 'utf8');
      } catch {
        return '';
      }
    },
    stop() {
      stopped ??= (async () => {
        await terminate(t);
        mocks?.delete(mock);
        live.delete(entry);
      })();
      return stopped;
    },
  };
  const entry = { stop: () => mock.stop(), kill: () => killNow(t) };
  track(entry);
  mocks?.add(mock);
  return mock;
}

/** One GetCalls entry of CheckAuthorization: args are variants of (sa{sv}), s, a{ss}, u, s. */
function parseCall(time: number, a: Variant[]): PolkitCall {
  const [kind, raw] = (a[0]?.data ?? ['', {}]) as [string, Record<string, Variant>];
  const subjectDetails = Object.fromEntries(Object.entries(raw).map(([k, v]) => [k, v.data]));
  const id =
    kind === 'system-bus-name' ? subjectDetails.name
    : kind === 'unix-process' ? subjectDetails.pid
    : kind === 'unix-session' ? subjectDetails['session-id']
    : JSON.stringify(subjectDetails);
  return {
    action: String(a[1]?.data ?? ''),
    flags: Number(a[3]?.data ?? NaN),
    subject: `${kind}:${String(id)}`,
    subjectKind: kind,
    subjectDetails,
    details: (a[2]?.data ?? {}) as Record<string, string>,
    cancellationId: String(a[4]?.data ?? ''),
    time,
  };
}

/** Prerequisites that are missing on this machine (empty when the harness can run). */
export function missingPrerequisites(): string[] {
  const missing: string[] = [];
  if (process.getuid?.() !== 0) missing.push('must run as root');
  const has = (argv: string[]) => spawnSync(argv[0]!, argv.slice(1), { stdio: 'ignore' }).status === 0;
  if (!has(['dbus-daemon', '--version'])) missing.push('dbus-daemon (apt: dbus-daemon)');
  if (!fs.existsSync(SYSTEM_CONF)) missing.push(`${SYSTEM_CONF} (apt: dbus-system-bus-common)`);
  if (!has(['busctl', '--version'])) missing.push('busctl (apt: systemd)');
  if (!has(['setpriv', '--version'])) missing.push('setpriv (apt: util-linux)');
  if (!has([SYSTEM_PYTHON, '-c', 'import dbusmock, dbus, gi'])) missing.push('python3-dbusmock (apt)');
  return missing;
}

/**
 * Waits until `name` has an owner on `bus` (a daemon we started took its name). Fails, with what
 * `log()` returns, when `child` exits first or after `tries` looks 25 ms apart.
 */
export async function waitForName(bus: PrivateBus, name: string, child: { exitCode: number | null }, log: () => string = () => '', tries = 400): Promise<void> {
  for (let i = 0; i < tries; i++) {
    const [has] = (await busctlCall(bus, 'org.freedesktop.DBus', '/org/freedesktop/DBus', 'org.freedesktop.DBus', 'NameHasOwner', 's', name)) as [boolean];
    if (has) return;
    if (child.exitCode !== null) throw new Error(`${name}: its process exited ${child.exitCode}:\n${log()}`);
    await new Promise((r) => setTimeout(r, 25));
  }
  throw new Error(`${name} was not taken:\n${log()}`);
}
