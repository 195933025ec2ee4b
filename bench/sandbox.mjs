// What the daemon benchmarks share: a scratch folder, a sandbox root, a private system-like bus
// with the project's policy, the daemon on it, and re-running a benchmark in a mount namespace of
// its own (so that what it mounts is never the host's).
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

export const REPO = join(import.meta.dirname ?? new URL('.', import.meta.url).pathname, '..');
export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** A new folder on tmpfs (/dev/shm) when there is one. */
export const scratchDir = (name) => mkdtempSync(join(existsSync('/dev/shm') ? '/dev/shm' : '/tmp', `impermanence-bench-${name}-`));

/**
 * Re-runs the calling script under `unshare -m` (private mounts) with env[flag]=1 and exits with
 * its status; in that run (flag set) it returns at once.
 */
export function inMountNamespace(script, flag, env = {}) {
  if (process.env[flag] === '1') return;
  const r = spawnSync('unshare', ['-m', '--propagation', 'private', process.execPath, new URL(script).pathname], {
    stdio: 'inherit',
    env: { ...process.env, ...env, [flag]: '1' },
  });
  process.exit(r.status ?? 1);
}

/** The sandbox root's /etc: users (passwd and group text; root alone by default) and the config. */
export function writeSandbox(root, toml, users = { passwd: 'root:x:0:0:root:/root:/bin/sh\n', group: 'root:x:0:\n' }) {
  mkdirSync(join(root, 'etc/impermanence/persist.d'), { recursive: true });
  writeFileSync(join(root, 'etc/passwd'), users.passwd);
  writeFileSync(join(root, 'etc/group'), users.group);
  writeFileSync(join(root, 'etc/impermanence/persist.d/a.toml'), toml);
}

/** dbus-daemon with the system policy and ours (dbus/), listening on scratch/bus; resolves once it listens. */
export async function startBus(scratch) {
  const policy = readFileSync('/usr/share/dbus-1/system.conf', 'utf8').match(/<policy[\s\S]*?<\/policy>/g).join('\n');
  writeFileSync(join(scratch, 'bus.conf'), `<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN" "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig><type>system</type><listen>unix:path=${scratch}/bus</listen><auth>EXTERNAL</auth>${policy}<includedir>${REPO}/dbus</includedir></busconfig>`);
  const child = spawn('dbus-daemon', [`--config-file=${scratch}/bus.conf`, '--nofork', '--print-address=1'], { stdio: ['ignore', 'pipe', 'ignore'] });
  await new Promise((r) => child.stdout.once('data', r));
  return { child, address: `unix:path=${scratch}/bus` };
}

/**
 * impermanenced (from dist, or another build's folder) over root on the bus; log() is its stderr
 * (the last maxLog characters). Started as systemd starts it: the file itself, whose first line
 * gives node its flags.
 */
export function startDaemon(root, address, { dist = join(REPO, 'dist'), maxLog = Infinity } = {}) {
  const child = spawn(join(dist, 'impermanenced.js'), ['--root', root, '--bus', address], { stdio: ['ignore', 'ignore', 'pipe'] });
  let log = '';
  child.stderr.on('data', (d) => {
    log += d;
    if (log.length > maxLog) log = log.slice(-maxLog);
  });
  return { child, pid: child.pid, log: () => log };
}
