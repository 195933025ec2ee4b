/**
 * The one fixture for tests of the real impermanenced: a sandbox root (the example user database,
 * a config in etc/impermanence/persist.d, folders), and the daemon over it on a private bus
 * (harness.ts), optionally in a private mount namespace where some entries are really
 * bind-mounted from the storage /persistent. Used by every integration test that drives the daemon.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { chmodSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { EXAMPLE_ROOT, REPO, tempDir } from '../helpers';
import { runOnBus, startSystemBus, waitForName, type ExecResult, type PrivateBus, type RunOptions } from './harness';

export const NAME = 'org.impermanence.Manager';
export const DAEMON = join(REPO, 'dist', 'impermanenced.js');
export const CTL = join(REPO, 'dist', 'impermanencectl.js');

/** A private system-like bus with the project's bus policy (dbus/). */
export function startBus(): Promise<PrivateBus> {
  return startSystemBus({ policyDirs: [join(REPO, 'dbus')] });
}

export interface SandboxOptions {
  /** The config file's text, written to etc/impermanence/persist.d/<configName>. */
  config: string;
  configName?: string;
  /** Folders to make below the root (storage folders included: `persistent/var/log`). */
  dirs?: string[];
  /** The temp folder's name prefix. */
  prefix?: string;
}

/** A root folder (mode 0755) with the example /etc/passwd and /etc/group, the config and the folders asked for. */
export function sandboxRoot(opts: SandboxOptions): string {
  const root = tempDir(opts.prefix);
  chmodSync(root, 0o755);
  const configDir = join(root, 'etc/impermanence/persist.d');
  mkdirSync(configDir, { recursive: true });
  for (const f of ['passwd', 'group']) writeFileSync(join(root, 'etc', f), readFileSync(join(EXAMPLE_ROOT, 'etc', f)));
  for (const d of opts.dirs ?? []) mkdirSync(join(root, d), { recursive: true });
  writeFileSync(join(configDir, opts.configName ?? '10-test.toml'), opts.config);
  return root;
}

export interface DaemonOptions {
  bus: PrivateBus;
  root: string;
  /** More arguments for impermanenced (`--no-watch`, `--ctl FILE`). */
  args?: string[];
  /**
   * Entry paths (relative to the root, e.g. `var/log`) bind-mounted from `persistent/<path>` in a
   * private mount namespace of the daemon's own (the storage is bind-mounted on itself first, so
   * that it is a mount). Without it the daemon runs in the host's namespace and mounts nothing.
   */
  bindMounts?: string[];
  env?: Record<string, string>;
  /** After the daemon took its name: wait until this holds for its log (e.g. the first scan done). */
  ready?: (log: string) => boolean;
}

export interface Daemon {
  /** The daemon's own process: unshare and sh exec into it, so `nsenter -t PID` finds its namespace. */
  child: ChildProcess;
  pid: number;
  /** What it wrote on stdout and stderr so far. */
  log(): string;
  /** SIGTERM, then waits for it to exit (nothing if it has exited). */
  stop(): Promise<void>;
}

const BIND_SCRIPT = 'r=$1; shift; mount --bind "$r/persistent" "$r/persistent" || exit 1; while [ "$1" != -- ]; do mount --bind "$r/persistent/$1" "$r/$1" || exit 1; shift; done; shift; exec "$@"';

/** Starts impermanenced on `bus` over `root` and waits until it has taken its name (and `ready`). */
export async function startDaemon(opts: DaemonOptions): Promise<Daemon> {
  const argv = [process.execPath, DAEMON, '--bus', opts.bus.address, '--root', opts.root, ...(opts.args ?? [])];
  const wrapped = opts.bindMounts
    ? ['unshare', '-m', '--propagation', 'private', 'sh', '-c', BIND_SCRIPT, 'sh', opts.root, ...opts.bindMounts, '--', ...argv]
    : argv;
  // setpriv --pdeathsig: the daemon dies with the test process, whatever ends it.
  const child = spawn('setpriv', ['--pdeathsig', 'KILL', '--', ...wrapped], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...opts.env } });
  let log = '';
  child.stdout!.on('data', (d) => (log += d));
  child.stderr!.on('data', (d) => (log += d));
  const daemon: Daemon = {
    child,
    pid: child.pid!,
    log: () => log,
    stop: async () => {
      if (child.exitCode !== null || child.signalCode !== null) return;
      const exited = new Promise((r) => child.once('exit', r));
      child.kill('SIGTERM');
      await exited;
    },
  };
  try {
    await waitForName(opts.bus, NAME, child, () => log);
    for (const start = Date.now(); opts.ready && !opts.ready(log); await new Promise((r) => setTimeout(r, 20))) {
      if (child.exitCode !== null) throw new Error(`impermanenced exited ${child.exitCode}:\n${log}`);
      if (Date.now() - start > 20_000) throw new Error(`impermanenced not ready in 20 s:\n${log}`);
    }
  } catch (err) {
    await daemon.stop();
    throw err;
  }
  return daemon;
}

/** impermanencectl on `bus` (as root unless opts.asUser), never throwing on a non-zero exit. */
export function ctlOnBus(bus: PrivateBus, args: string[], opts: RunOptions = {}): Promise<ExecResult> {
  return runOnBus(bus, [process.execPath, CTL, ...args], { timeoutMs: 20_000, ...opts });
}
