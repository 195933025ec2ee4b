/**
 * End-to-end harness: boot a real systemd in a systemd-nspawn container whose root is a
 * fresh copy of a pristine Debian rootfs on every boot (like a root wiped at every boot).
 *
 * How a boot works (`--register=no --keep-unit`: there is no machined on a test host; a boot to
 * `systemctl is-system-running --wait` takes well under a second):
 *
 *   unshare -m --propagation private sh -c '
 *     mount -t tmpfs … TMP/root; cp -a PRISTINE/. TMP/root/      # the wiped root
 *     mount -t tmpfs … /run/systemd/nspawn                         # nspawn runtime state stays private
 *     echo ready >&3; read go                                      # host runs BootOptions.setup here
 *     echo $$ > CGROUP/cgroup.procs (v1 name=systemd and v2)       # own cgroup per container
 *     exec systemd-nspawn -D TMP/root --boot --register=no --keep-unit …'
 *
 * The tmpfs root lives only in that private mount namespace, so it disappears by itself when
 * nspawn exits (reboot, poweroff, crash, SIGKILL): nothing is ever mounted in the host's
 * namespace. While the container runs, its root is reachable from the host as
 * `/proc/NSPAWN_PID/root/TMP/root` (that is `Container.rootPath`).
 *
 * Requires root and, on a fresh Debian/Ubuntu host: `apt-get install -y --no-install-recommends
 * systemd-container debootstrap` (unshare, nsenter, setpriv come with util-linux). The rootfs is
 * cached in $IMPERMANENCE_E2E_CACHE (default /var/cache/impermanence-e2e); set
 * IMPERMANENCE_E2E_KEEP_LOGS=1 to keep each container's nspawn.log after stop().
 */
import { spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as fsp from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { createHash } from 'node:crypto';

export interface BindMount { host: string; container: string; readOnly?: boolean }
export interface ExecResult { code: number; stdout: string; stderr: string }

export interface ExecOptions {
  input?: string;
  /** Kill the host-side nsenter after this long and reject (default 120 s). */
  timeoutMs?: number;
  /** Extra environment variables for the command (on top of a clean PATH/HOME/LANG). */
  env?: Record<string, string>;
}

/** Prefix of every host-visible thing the harness creates (temp dirs, cgroup dirs, mount sources). */
export const HARNESS_PREFIX = 'impermanence-e2e';

const CONTAINER_ENV: Record<string, string> = {
  PATH: '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin',
  HOME: '/root',
  LANG: 'C.UTF-8',
  TERM: 'dumb',
  SYSTEMD_PAGER: '',
  SYSTEMD_COLORS: '0',
};
const HOST_ENV: Record<string, string> = { ...CONTAINER_ENV };

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** Run a host command, collect its output; never throws on a non-zero exit. */
export function runHost(cmd: string, args: string[], opts: ExecOptions = {}): Promise<ExecResult> {
  return collect(cmd, args, { ...HOST_ENV, ...opts.env }, opts);
}

function collect(cmd: string, args: string[], env: Record<string, string>, opts: ExecOptions): Promise<ExecResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { env, stdio: [opts.input === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout!.on('data', (b: Buffer) => out.push(b));
    child.stderr!.on('data', (b: Buffer) => err.push(b));
    const timeoutMs = opts.timeoutMs ?? 120_000;
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`timed out after ${timeoutMs} ms: ${cmd} ${args.join(' ')}\n${Buffer.concat(err).toString()}`));
    }, timeoutMs);
    child.on('error', (e) => { clearTimeout(timer); reject(e); });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({
        code: code ?? 128 + (signal ? (os.constants.signals[signal] ?? 0) : 0),
        stdout: Buffer.concat(out).toString(),
        stderr: Buffer.concat(err).toString(),
      });
    });
    if (opts.input !== undefined) {
      child.stdin!.on('error', () => { /* command exited without reading its input */ });
      child.stdin!.end(opts.input);
    }
  });
}

async function mustRun(cmd: string, args: string[], opts: ExecOptions = {}): Promise<ExecResult> {
  const r = await runHost(cmd, args, opts);
  if (r.code !== 0) throw new Error(`${cmd} ${args.join(' ')} exited ${r.code}\n${r.stdout}${r.stderr}`);
  return r;
}

function tail(text: string, lines = 60): string {
  return text.split('\n').slice(-lines).join('\n');
}

/** Host mount points at or below `dir` (deepest first), from /proc/self/mounts. */
function mountsUnder(dir: string): string[] {
  const unescape = (s: string) => s.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));
  return fs.readFileSync('/proc/self/mounts', 'utf8').split('\n')
    .map((l) => unescape(l.split(' ')[1] ?? ''))
    .filter((m) => m === dir || m.startsWith(dir + '/'))
    .sort((a, b) => b.length - a.length);
}

/** rm -rf that refuses to descend into anything still mounted (lazy-unmounts our own leftovers first). */
async function removeTree(dir: string): Promise<void> {
  for (const m of mountsUnder(dir)) await runHost('umount', ['-l', m]);
  if (mountsUnder(dir).length > 0) throw new Error(`refusing to remove ${dir}: still has mounts`);
  await fsp.rm(dir, { recursive: true, force: true });
}

// ---------------------------------------------------------------------------------------------
// Rootfs

export const ROOTFS_SUITE = 'bookworm';
export const ROOTFS_PACKAGES = ['systemd', 'systemd-sysv', 'dbus', 'libpam-systemd', 'iproute2', 'procps'];
/** Timers that fire at random times: masked so a long test never sees apt/fstrim/e2scrub run. */
const MASKED_UNITS = ['apt-daily.timer', 'apt-daily-upgrade.timer', 'dpkg-db-backup.timer', 'e2scrub_all.timer', 'fstrim.timer'];
/** Bump when the recipe in customizeRootfs changes: the cache key includes it. */
const ROOTFS_RECIPE_VERSION = 3;

/** Which Debian to debootstrap. The default is the bookworm image every boot test uses. */
export interface RootfsSpec {
  suite: string;
  packages: string[];
  /**
   * Keep apt's package lists and put these packages (with their dependencies) in apt's cache
   * without installing them: `apt-get install ./x.deb` in the container then resolves its
   * dependencies from the archive's real metadata with no network (the package test).
   */
  aptCache?: string[];
}

const DEFAULT_SPEC: RootfsSpec = { suite: ROOTFS_SUITE, packages: ROOTFS_PACKAGES };

export function cacheDir(): string {
  return process.env.IMPERMANENCE_E2E_CACHE ?? '/var/cache/impermanence-e2e';
}

function rootfsKey(spec: RootfsSpec): string {
  const recipe = JSON.stringify({ v: ROOTFS_RECIPE_VERSION, suite: spec.suite, pkgs: spec.packages, masked: MASKED_UNITS,
    ...(spec.aptCache ? { aptCache: spec.aptCache, aptRecipe: 3 } : {}) });
  return `rootfs-${spec.suite}-${createHash('sha256').update(recipe).digest('hex').slice(0, 12)}`;
}

const rootfsPromises = new Map<string, Promise<string>>();

/**
 * Debootstraps (once, cached) a Debian minbase rootfs with systemd (bookworm unless `spec` says
 * otherwise) and returns its path.
 * Adds users bird (1000:1000, /home/bird created) and alice (1001:1001, for the desktop example), system user+group colord, masks the random
 * timers (apt-daily*, dpkg-db-backup, e2scrub_all, fstrim), drops /etc/hostname (the machine name
 * becomes the hostname) and apt lists/docs/locales (smaller = faster copy per boot).
 * Built in `CACHE/.build-KEY-XXXX/rootfs` and renamed to `CACHE/KEY` when complete, so an
 * interrupted build never looks cached. Mirror: $IMPERMANENCE_E2E_MIRROR or deb.debian.org.
 */
export function ensureRootfs(spec: RootfsSpec = DEFAULT_SPEC): Promise<string> {
  const key = rootfsKey(spec);
  let p = rootfsPromises.get(key);
  if (!p) {
    p = buildRootfs(spec).catch((e: unknown) => { rootfsPromises.delete(key); throw e; });
    rootfsPromises.set(key, p);
  }
  return p;
}

function isCompleteRootfs(dir: string): boolean {
  return fs.existsSync(path.join(dir, 'usr/lib/systemd/systemd')) && fs.existsSync(path.join(dir, 'etc/impermanence-e2e-rootfs'));
}

function pidAlive(pid: number): boolean {
  try { process.kill(pid, 0); return true; } catch (e) { return (e as NodeJS.ErrnoException).code === 'EPERM'; }
}

async function buildRootfs(spec: RootfsSpec): Promise<string> {
  const cache = cacheDir();
  const key = rootfsKey(spec);
  const final = path.join(cache, key);
  if (isCompleteRootfs(final)) return final;

  await fsp.mkdir(cache, { recursive: true });
  return withBuildLock(path.join(cache, `.lock-${key}`), async () => {
    if (isCompleteRootfs(final)) return final; // built by another process while we waited
    return buildLocked(cache, key, final, spec);
  });
}

/** Cross-process lock (parallel jest workers): an atomic mkdir holding the owner's PID; a dead owner's lock is taken over. */
async function withBuildLock<T>(lock: string, fn: () => Promise<T>): Promise<T> {
  for (;;) {
    try {
      await fsp.mkdir(lock);
      break;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
    }
    const pid = Number(await fsp.readFile(path.join(lock, 'pid'), 'utf8').catch(() => '0'));
    const age = Date.now() - ((await fsp.stat(lock).catch(() => undefined))?.mtimeMs ?? 0);
    if ((pid > 0 && !pidAlive(pid)) || (pid === 0 && age > 30_000)) await fsp.rm(lock, { recursive: true, force: true });
    else await sleep(500);
  }
  try {
    await fsp.writeFile(path.join(lock, 'pid'), String(process.pid));
    return await fn();
  } finally {
    await fsp.rm(lock, { recursive: true, force: true });
  }
}

async function buildLocked(cache: string, key: string, final: string, spec: RootfsSpec): Promise<string> {
  // Interrupted builds of earlier runs: remove them if their builder is gone.
  for (const entry of await fsp.readdir(cache)) {
    if (!entry.startsWith('.build-')) continue;
    const dir = path.join(cache, entry);
    const pid = Number(await fsp.readFile(path.join(dir, 'builder.pid'), 'utf8').catch(() => '0'));
    if (pid > 0 && pidAlive(pid)) continue;
    await removeTree(dir);
  }

  const work = await fsp.mkdtemp(path.join(cache, `.build-${key}-`));
  await fsp.writeFile(path.join(work, 'builder.pid'), String(process.pid));
  const target = path.join(work, 'rootfs');
  try {
    const mirror = process.env.IMPERMANENCE_E2E_MIRROR ?? 'http://deb.debian.org/debian';
    // setpriv --pdeathsig: debootstrap dies with us instead of writing on into a dir we clean up later.
    const r = await runHost('setpriv', ['--pdeathsig', 'KILL', '--', 'debootstrap',
      '--variant=minbase', `--include=${spec.packages.join(',')}`, spec.suite, target, mirror,
    ], { timeoutMs: 15 * 60_000 });
    if (r.code !== 0) {
      let detail = '';
      try { detail = await fsp.readFile(path.join(target, 'debootstrap/debootstrap.log'), 'utf8'); } catch { /* none */ }
      throw new Error(`debootstrap failed (${r.code}):\n${tail(r.stdout + r.stderr)}\n${tail(detail)}`);
    }
    await customizeRootfs(target, spec);
    try {
      await fsp.rename(target, final);
    } catch (e) {
      // Another process finished the same build first: use theirs.
      if (!isCompleteRootfs(final)) throw e;
    }
    return final;
  } finally {
    await removeTree(work);
  }
}

async function customizeRootfs(root: string, spec: RootfsSpec): Promise<void> {
  const chroot = (...args: string[]) => mustRun('chroot', [root, ...args]);
  await chroot('groupadd', '-g', '1000', 'bird');
  await chroot('useradd', '-m', '-u', '1000', '-g', 'bird', '-d', '/home/bird', '-s', '/bin/bash', 'bird');
  await chroot('groupadd', '-g', '1001', 'alice');
  await chroot('useradd', '-m', '-u', '1001', '-g', 'alice', '-d', '/home/alice', '-s', '/bin/bash', 'alice');
  await chroot('groupadd', '--system', 'colord');
  await chroot('useradd', '--system', '-g', 'colord', '-d', '/var/lib/colord', '-M', '-s', '/usr/sbin/nologin', 'colord');
  await chroot('systemctl', 'mask', ...MASKED_UNITS);
  if (spec.aptCache) {
    // debootstrap leaves no package lists (and its own .debs): fetch the lists, and the packages into apt's cache.
    await chroot('apt-get', 'clean');
    await mustRun('chroot', [root, 'apt-get', 'update', '-q'], { timeoutMs: 10 * 60_000 });
    // With what they recommend: `apt-get install ./x.deb` installs recommends by default.
    await mustRun('chroot', [root, 'apt-get', 'install', '-y', '-q', '--download-only', ...spec.aptCache],
      { timeoutMs: 10 * 60_000, env: { DEBIAN_FRONTEND: 'noninteractive' } });
  } else {
    // Smaller image = faster cp into the tmpfs on every boot (256 MB -> ~115 MB).
    await chroot('apt-get', 'clean');
  }
  for (const d of [...(spec.aptCache ? [] : ['var/lib/apt/lists']), 'usr/share/doc', 'usr/share/man', 'usr/share/info', 'usr/share/locale']) {
    const dir = path.join(root, d);
    for (const e of await fsp.readdir(dir).catch(() => [] as string[])) {
      if (d === 'var/lib/apt/lists' && (e === 'partial' || e === 'lock')) continue;
      await fsp.rm(path.join(dir, e), { recursive: true, force: true });
    }
  }
  // debootstrap copies the build host's hostname and hosts: drop them, the machine name becomes the hostname.
  await fsp.rm(path.join(root, 'etc/hostname'), { force: true });
  await fsp.writeFile(path.join(root, 'etc/hosts'), '127.0.0.1\tlocalhost\n::1\t\tlocalhost ip6-localhost ip6-loopback\n');
  await fsp.writeFile(path.join(root, 'etc/impermanence-e2e-rootfs'),
    `${rootfsKey(spec)} built ${new Date().toISOString()} packages=${spec.packages.join(',')}\n`);
}

// ---------------------------------------------------------------------------------------------
// Cgroups (hybrid v1 name=systemd + v2 "unified", as on this VM; or pure v2)

interface CgroupDirs { v1?: string; v2: string }

function cgroupDirsFor(name: string): CgroupDirs {
  const leaf = `${HARNESS_PREFIX}-${name}`;
  if (fs.existsSync('/sys/fs/cgroup/unified/cgroup.procs')) {
    return { v1: `/sys/fs/cgroup/systemd/${leaf}`, v2: `/sys/fs/cgroup/unified/${leaf}` };
  }
  return { v2: `/sys/fs/cgroup/${leaf}` };
}

function cgroupProcs(dir: string): number[] {
  const pids: number[] = [];
  const walk = (d: string) => {
    let entries: fs.Dirent[];
    try { entries = fs.readdirSync(d, { withFileTypes: true }); } catch { return; }
    try {
      for (const l of fs.readFileSync(path.join(d, 'cgroup.procs'), 'utf8').split('\n')) if (l) pids.push(Number(l));
    } catch { /* gone */ }
    for (const e of entries) if (e.isDirectory()) walk(path.join(d, e.name));
  };
  walk(dir);
  return pids;
}

/** SIGKILL every process in our own cgroup tree (only ever processes this harness started). */
function killCgroup(dirs: CgroupDirs): void {
  try { fs.writeFileSync(path.join(dirs.v2, 'cgroup.kill'), '1'); } catch { /* no cgroup.kill or gone */ }
  for (const d of [dirs.v2, dirs.v1]) {
    if (!d) continue;
    for (const pid of cgroupProcs(d)) { try { process.kill(pid, 'SIGKILL'); } catch { /* gone */ } }
  }
}

function removeCgroupTree(dir: string): void {
  let entries: fs.Dirent[];
  try { entries = fs.readdirSync(dir, { withFileTypes: true }); } catch { return; }
  for (const e of entries) if (e.isDirectory()) removeCgroupTree(path.join(dir, e.name));
  try { fs.rmdirSync(dir); } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
  }
}

async function removeCgroups(dirs: CgroupDirs, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      for (const d of [dirs.v1, dirs.v2]) if (d) removeCgroupTree(d);
      return;
    } catch (e) {
      // EBUSY: dying processes are still being reaped.
      if (Date.now() > deadline) throw new Error(`cannot remove cgroup dirs ${JSON.stringify(dirs)}: ${String(e)}`);
      await sleep(50);
    }
  }
}

/** Other harness containers currently alive on this host (by their cgroup dirs). */
function otherHarnessCgroups(mine: CgroupDirs): string[] {
  const parent = path.dirname(mine.v2);
  return fs.readdirSync(parent).filter((e) => e.startsWith(`${HARNESS_PREFIX}-`) && path.join(parent, e) !== mine.v2);
}

// ---------------------------------------------------------------------------------------------
// /run/systemd/nspawn: nspawn keeps runtime state there; we over-mount it with a tmpfs inside the
// private namespace. The host only ever sees the (empty) mount point, removed again if we made it.

const NSPAWN_RUN = '/run/systemd/nspawn';
const createdHostDirs: string[] = [];
function ensureHostDir(dir: string): void {
  if (fs.existsSync(dir)) return;
  ensureHostDir(path.dirname(dir));
  fs.mkdirSync(dir);
  createdHostDirs.push(dir);
}
function removeCreatedHostDirs(): void {
  while (createdHostDirs.length > 0) {
    const d = createdHostDirs.pop()!;
    try { fs.rmdirSync(d); } catch { createdHostDirs.push(d); return; }
  }
}

// ---------------------------------------------------------------------------------------------
// Container

export interface BootOptions {
  name: string;              // machine name, unique per test
  rootfs: string;            // pristine rootfs (from ensureRootfs); NEVER modified by booting
  binds: BindMount[];        // e.g. { host: persistDir, container: '/persist' }, the generator file, node
  initArgs?: string[];       // extra arguments passed to systemd in the container
  setup?: (root: string) => void | Promise<void>; // called on every boot with the fresh root path before nspawn starts
  /** Boot must reach a final is-system-running state within this (default 120 s). */
  bootTimeoutMs?: number;
  /** How long poweroff/reboot may take before nspawn is SIGKILLed (default 60 s). */
  shutdownTimeoutMs?: number;
  /** More systemd-nspawn options (e.g. '--setenv=X=Y'). Default network is --private-network (loopback only). */
  extraNspawnArgs?: string[];
  /** Share the host's network namespace instead of --private-network. */
  hostNetwork?: boolean;
  /** tmpfs size limit for the root (default '2G'); with rootOn 'btrfs-subvolume', the image's size. */
  tmpfsSize?: string;
  /**
   * What the fresh root of each boot is: a tmpfs (default), or the subvolume @root of a new btrfs
   * image (a loop device), mounted with subvol=@root as seeds 001 and 002 lay the root out. The
   * image lives only in the private namespace (unlinked once mounted; the loop device goes with it).
   */
  rootOn?: 'tmpfs' | 'btrfs-subvolume';
  /**
   * Boot `rootfs` itself instead of a fresh tmpfs copy: changes (a package installed) survive a
   * reboot, as on a machine with a persistent root. Only for a disposable copy of a cached rootfs.
   */
  inPlace?: boolean;
  /** Bind the host's node over /usr/bin/node (default true; false when the image installs its own). */
  hostNode?: boolean;
}

/** What is-system-running may print once boot is finished; boot() returns on any of these. */
export const FINAL_STATES = ['running', 'degraded', 'maintenance'] as const;
const ALL_STATES = new Set(['initializing', 'starting', 'running', 'degraded', 'maintenance', 'stopping', 'offline', 'unknown']);

interface Live {
  child: ReturnType<typeof spawn>;
  pid: number;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  hasExited: boolean;
}

const liveContainers = new Set<Container>();
let exitHookInstalled = false;
function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  // Last resort if a test forgets stop(): kill what we started, synchronously.
  process.once('exit', () => { for (const c of liveContainers) c.killNow(); });
}

export class Container {
  /** What `systemctl is-system-running --wait` printed on the last boot. */
  state = '';
  /** Host path of the current container root (the fresh tmpfs copy, without the container's own mounts). */
  rootPath = '';
  /** PID (host namespace) of the container's systemd. */
  leader = 0;
  /** Temp dir of this container: nspawn.log, root mount point. */
  readonly tempDir: string;
  /** Wall-clock milliseconds: each boot (cp + nspawn + is-system-running --wait) and each reboot (reboot request -> booted again). */
  readonly timings = { boots: [] as Array<{ copyMs: number; bootMs: number; totalMs: number }>, rebootsMs: [] as number[], stopsMs: [] as number[] };

  private readonly opts: BootOptions;
  private readonly cg: CgroupDirs;
  private live: Live | undefined;
  private bootCount = 0;
  private stopping: Promise<void> | undefined;

  private constructor(opts: BootOptions, tempDir: string) {
    this.opts = opts;
    this.tempDir = tempDir;
    this.cg = cgroupDirsFor(opts.name);
  }

  get logPath(): string { return path.join(this.tempDir, 'nspawn.log'); }
  get nspawnPid(): number { return this.live?.pid ?? 0; }
  /** Whether the container is currently booted. */
  get running(): boolean { return !!this.live && !this.live.hasExited; }

  static async boot(opts: BootOptions): Promise<Container> {
    if (!/^[a-zA-Z0-9][a-zA-Z0-9-]{0,40}$/.test(opts.name)) throw new Error(`bad machine name ${JSON.stringify(opts.name)}`);
    if (process.getuid?.() !== 0) throw new Error('the nspawn harness needs root');
    if (!fs.existsSync(path.join(opts.rootfs, 'usr/lib/systemd/systemd'))) throw new Error(`${opts.rootfs} is not a systemd rootfs`);
    for (const b of opts.binds) if (!fs.existsSync(b.host)) throw new Error(`bind source ${b.host} does not exist`);
    const tempDir = await fsp.mkdtemp(path.join(os.tmpdir(), `${HARNESS_PREFIX}-${opts.name}-`));
    const c = new Container(opts, tempDir);
    liveContainers.add(c);
    installExitHook();
    try {
      await c.start();
    } catch (e) {
      await c.stop().catch(() => { /* report the boot error */ });
      throw e;
    }
    return c;
  }

  /** The nspawn console output of all boots so far. */
  log(): string {
    try { return fs.readFileSync(this.logPath, 'utf8'); } catch { return ''; }
  }

  private nspawnArgs(root: string): string[] {
    const esc = (p: string) => p.replace(/\\/g, '\\\\').replace(/:/g, '\\:');
    const hostNode: BindMount[] = this.opts.hostNode === false ? [] : [{ host: fs.realpathSync('/usr/bin/node'), container: '/usr/bin/node', readOnly: true }];
    const binds: BindMount[] = [...hostNode, ...this.opts.binds];
    return [
      '-D', root, '-M', this.opts.name, '--boot',
      '--register=no', '--keep-unit', '--console=read-only', '--link-journal=no',
      ...(this.opts.hostNetwork ? [] : ['--private-network']),
      ...binds.map((b) => `${b.readOnly ? '--bind-ro' : '--bind'}=${esc(b.host)}:${esc(b.container)}`),
      ...(this.opts.extraNspawnArgs ?? []),
      '--', ...(this.opts.initArgs ?? []),
    ];
  }

  private async start(): Promise<void> {
    if (this.stopping) throw new Error('container was stopped');
    const t0 = Date.now();
    this.bootCount++;
    this.state = '';
    this.leader = 0;

    // Our cgroup dirs; a leftover one from a crashed run is removed only if empty.
    for (const d of [this.cg.v1, this.cg.v2]) {
      if (!d || !fs.existsSync(d)) continue;
      const procs = cgroupProcs(d);
      if (procs.length > 0) throw new Error(`cgroup ${d} still has processes ${procs.join(' ')} (another run of ${this.opts.name}?)`);
      removeCgroupTree(d);
    }
    for (const d of [this.cg.v1, this.cg.v2]) if (d) fs.mkdirSync(d);

    ensureHostDir(NSPAWN_RUN);
    const root = path.join(this.tempDir, 'root');
    fs.mkdirSync(root, { recursive: true });
    const logFd = fs.openSync(this.logPath, 'a');
    fs.writeSync(logFd, `\n===== ${HARNESS_PREFIX}: boot ${this.bootCount} of ${this.opts.name} at ${new Date().toISOString()} =====\n`);

    const script = [
      'set -eu',
      'root=$1 pristine=$2 size=$3 cg1=$4 cg2=$5 rooton=$6; shift 6',
      ...(this.opts.inPlace ? [] : [
        'if [ "$rooton" = btrfs-subvolume ]; then',
        '  img="$root.btrfs"; truncate -s "$size" "$img"; mkfs.btrfs -q -f "$img" >/dev/null',
        '  mount -o loop "$img" "$root"; btrfs -q subvolume create "$root/@root"; umount "$root"',
        '  mount -o loop,subvol=@root "$img" "$root"; rm "$img"; chmod 0755 "$root"',
        'else',
        `  mount -t tmpfs -o mode=0755,size="$size" ${HARNESS_PREFIX}-root "$root"`,
        'fi',
        'cp -a "$pristine/." "$root/"',
      ]),
      `mount -t tmpfs -o mode=0755,size=16M ${HARNESS_PREFIX}-nspawn-run ${NSPAWN_RUN}`,
      'echo ready >&3',
      'read -r go',
      '[ "$go" = go ] || exit 97',
      '[ -z "$cg1" ] || echo $$ > "$cg1/cgroup.procs"',
      'echo $$ > "$cg2/cgroup.procs"',
      'exec systemd-nspawn "$@" </dev/null 3>&-',
    ].join('\n');
    let child: ReturnType<typeof spawn>;
    try {
      child = spawn('unshare', ['-m', '--propagation', 'private', 'sh', '-c', script, 'sh',
        root, this.opts.rootfs, this.opts.tmpfsSize ?? '2G', this.cg.v1 ?? '', this.cg.v2, this.opts.rootOn ?? 'tmpfs', ...this.nspawnArgs(this.opts.inPlace ? this.opts.rootfs : root)],
      { stdio: ['pipe', logFd, logFd, 'pipe'], env: HOST_ENV });
    } finally {
      fs.closeSync(logFd);
    }
    const live: Live = {
      child,
      pid: child.pid ?? 0,
      hasExited: false,
      exited: new Promise((resolve) => child.on('exit', (code, signal) => { live.hasExited = true; resolve({ code, signal }); })),
    };
    this.live = live;
    child.stdin!.on('error', () => { /* died before reading "go" */ });
    const early = live.exited.then(({ code, signal }): never => {
      throw new Error(`systemd-nspawn for ${this.opts.name} exited (${code ?? signal}) during boot ${this.bootCount}:\n${tail(this.log())}`);
    });
    early.catch(() => { /* only matters while racing below; a later exit (reboot, stop) is expected */ });

    // 1. fresh root copied
    const ready = new Promise<void>((resolve) => {
      let buf = '';
      const fd3 = child.stdio[3] as NodeJS.ReadableStream;
      fd3.on('data', (b: Buffer) => { buf += b.toString(); if (buf.includes('ready\n')) resolve(); });
    });
    await Promise.race([ready, early]);
    const tCopied = Date.now();
    this.rootPath = this.opts.inPlace ? this.opts.rootfs : `/proc/${live.pid}/root${root}`;

    // 2. caller drops files into the fresh root
    if (this.opts.setup) {
      try {
        await this.opts.setup(this.rootPath);
      } catch (e) {
        child.stdin!.end('abort\n');
        await live.exited;
        throw e;
      }
    }
    child.stdin!.end('go\n');

    // 3. container systemd appears as nspawn's child
    const deadline = Date.now() + (this.opts.bootTimeoutMs ?? 120_000);
    const findLeader = async (): Promise<number> => {
      for (;;) {
        if (live.hasExited) return 0;
        try {
          const kids = fs.readFileSync(`/proc/${live.pid}/task/${live.pid}/children`, 'utf8').trim().split(/\s+/).filter(Boolean).map(Number);
          for (const k of kids) {
            const comm = fs.readFileSync(`/proc/${k}/comm`, 'utf8').trim();
            if (comm === 'systemd' || comm === 'init') return k;
          }
        } catch { /* racing with process creation */ }
        if (Date.now() > deadline) throw new Error(`no systemd in ${this.opts.name} after ${this.opts.bootTimeoutMs ?? 120_000} ms:\n${tail(this.log())}`);
        await sleep(20);
      }
    };
    this.leader = await Promise.race([findLeader(), early]);

    // 4. boot finished
    const waitBooted = async (): Promise<string> => {
      for (;;) {
        const left = deadline - Date.now();
        if (left <= 0) throw new Error(`${this.opts.name} did not finish booting:\n${tail(this.log())}`);
        const r = await this.exec(['systemctl', 'is-system-running', '--wait'], { timeoutMs: left });
        const s = r.stdout.trim();
        if ((FINAL_STATES as readonly string[]).includes(s)) return s;
        if (!ALL_STATES.has(s) || s === 'offline' || s === 'initializing' || s === 'starting') { await sleep(50); continue; }
        throw new Error(`${this.opts.name} is ${s} after boot:\n${tail(await this.journal().catch(() => ''))}\n${tail(this.log())}`);
      }
    };
    this.state = await Promise.race([waitBooted(), early]);
    const t1 = Date.now();
    this.timings.boots.push({ copyMs: tCopied - t0, bootMs: t1 - tCopied, totalMs: t1 - t0 });
  }

  /** Run argv inside the container (all its namespaces, via nsenter). Never throws on a non-zero exit. */
  exec(argv: string[], opts: ExecOptions = {}): Promise<ExecResult> {
    if (!this.running || !this.leader) return Promise.reject(new Error(`container ${this.opts.name} is not running`));
    return collect('nsenter', ['-t', String(this.leader), '-a', '--', ...argv], { ...CONTAINER_ENV, ...opts.env }, opts);
  }

  sh(script: string, opts: ExecOptions = {}): Promise<ExecResult> {
    return this.exec(['/bin/sh', '-c', script], opts);
  }

  /** `journalctl -b --no-pager` inside the container. */
  async journal(): Promise<string> {
    const r = await this.exec(['journalctl', '-b', '--no-pager']);
    return r.stdout + r.stderr;
  }

  /** Ask the container to shut down (reboot|poweroff), wait for nspawn to exit; SIGKILL after the timeout. */
  private async shutdown(verb: 'reboot' | 'poweroff'): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
    const live = this.live;
    if (!live) return { code: null, signal: null };
    if (live.hasExited) return live.exited;
    if (!this.leader) {
      // Never got as far as a running systemd (failed boot): nothing to shut down cleanly.
      this.killNow();
      return live.exited;
    }
    // Returns once the job is queued; the connection may drop while the system goes down.
    await this.exec(['systemctl', verb, '--no-block'], { timeoutMs: 10_000 }).catch(() => undefined);
    const timeoutMs = this.opts.shutdownTimeoutMs ?? 60_000;
    const timedOut = Symbol('timeout');
    let timer: NodeJS.Timeout | undefined;
    const res = await Promise.race([live.exited, new Promise<typeof timedOut>((r) => { timer = setTimeout(() => r(timedOut), timeoutMs); })]);
    clearTimeout(timer);
    if (res !== timedOut) return res;
    this.killNow();
    return { ...(await live.exited), code: null };
  }

  /** SIGKILL our nspawn process (by PID) and everything in our cgroup. Synchronous (used from the exit hook). */
  killNow(): void {
    const live = this.live;
    if (live && !live.hasExited) { try { process.kill(live.pid, 'SIGKILL'); } catch { /* gone */ } }
    killCgroup(this.cg);
  }

  private async afterExit(): Promise<void> {
    // If nspawn died abnormally its payload could survive: kill what is left in our cgroup.
    if (cgroupProcs(this.cg.v2).length > 0) killCgroup(this.cg);
    await removeCgroups(this.cg);
    this.leader = 0;
  }

  /** `systemctl reboot` inside, wait for nspawn to exit, boot again on a new fresh copy of the pristine rootfs. */
  async reboot(): Promise<void> {
    if (!this.running) throw new Error(`container ${this.opts.name} is not running`);
    const t0 = Date.now();
    const res = await this.shutdown('reboot');
    await this.afterExit();
    // systemd-nspawn exits 133 when the container asked for a reboot.
    if (res.code !== 133) throw new Error(`reboot of ${this.opts.name}: nspawn exited ${res.code ?? res.signal}, expected 133:\n${tail(this.log())}`);
    await this.start();
    this.timings.rebootsMs.push(Date.now() - t0);
  }

  /** Power off (SIGKILL after the timeout), remove cgroup dirs and temp dirs. Idempotent. */
  stop(): Promise<void> {
    this.stopping ??= (async () => {
      const t0 = Date.now();
      try {
        await this.shutdown('poweroff');
        await this.afterExit();
      } finally {
        liveContainers.delete(this);
        if (process.env.IMPERMANENCE_E2E_KEEP_LOGS) {
          try { fs.rmdirSync(path.join(this.tempDir, 'root')); } catch { /* not there */ }
        } else {
          await removeTree(this.tempDir);
        }
        if (liveContainers.size === 0 && otherHarnessCgroups(this.cg).length === 0) removeCreatedHostDirs();
        this.timings.stopsMs.push(Date.now() - t0);
      }
    })();
    return this.stopping;
  }
}

/**
 * Anything the harness could have left on the host: mounts with the harness prefix, cgroup dirs,
 * temp dirs, nspawn processes. Pass a container name to look only for that one. For afterAll checks.
 */
export function leftovers(name?: string): string[] {
  const tag = name ? `${HARNESS_PREFIX}-${name}` : HARNESS_PREFIX;
  const found: string[] = [];
  for (const l of fs.readFileSync('/proc/self/mounts', 'utf8').split('\n')) if (l.includes(tag)) found.push(`mount: ${l}`);
  for (const parent of ['/sys/fs/cgroup/systemd', '/sys/fs/cgroup/unified', '/sys/fs/cgroup']) {
    for (const e of fs.readdirSync(parent).filter((x) => x.startsWith(tag))) found.push(`cgroup: ${path.join(parent, e)}`);
  }
  for (const e of fs.readdirSync(os.tmpdir()).filter((x) => x.startsWith(tag))) found.push(`temp dir: ${path.join(os.tmpdir(), e)}`);
  const ps = spawnSync('ps', ['-eo', 'pid=,args='], { encoding: 'utf8' }).stdout ?? '';
  for (const l of ps.split('\n')) {
    if (!l.includes('systemd-nspawn')) continue;
    if (name ? l.includes(` -M ${name} `) : l.includes(`/${HARNESS_PREFIX}-`)) found.push(`process: ${l.trim()}`);
  }
  return found;
}
