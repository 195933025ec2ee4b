// Benchmark: the daemon under hostile load from an unprivileged user (issue 13). The real daemon
// on a private bus over a sandbox root on tmpfs; the hostile client is test/dbus/flood.cjs run as
// `nobody`. Three parts (PARTS=props,scans,files to choose):
// - props (13.6): a 10,000-entry config (ENTRIES); nobody fires 1,000 Get Version at once (GETS);
//   meanwhile root pings. Prints the daemon's CPU time for the flood and root's Ping latency.
// - scans (13.5): a tree of SCAN_FILES files; nobody fires 400 Scans with distinct "since" (SCANS),
//   then root scans. Prints how long root's Scan took and what nobody's calls got.
// - files (13.8): FILES (1,000,000) empty files written right inside a folder that holds a persisted
//   path (a home with a persisted ~/.ssh), watched live. Prints the daemon's RSS before, at peak,
//   and once the drift is settled.
//   npm run bench:dos   (root; needs dbus-daemon and setpriv)
import { spawn, spawnSync } from 'node:child_process';
import { chmodSync, chownSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Message, MessageType, sessionBus } from '@jellybrick/dbus-next';
import { REPO, scratchDir, sleep, startBus, startDaemon, writeSandbox } from './sandbox.mjs';

/** The build to measure (DIST=folder: another build, e.g. an older one, for before/after figures). */
const DIST = process.env.DIST ?? join(REPO, 'dist');
const PARTS = (process.env.PARTS ?? 'props,scans,files').split(',');
const ENTRIES = Number(process.env.ENTRIES ?? 10_000);
const GETS = Number(process.env.GETS ?? 1000);
const SCANS = Number(process.env.SCANS ?? 400);
const SCAN_FILES = Number(process.env.SCAN_FILES ?? 30_000);
const FILES = Number(process.env.FILES ?? 1_000_000);
const ROOT_WAIT_MS = Number(process.env.ROOT_WAIT_MS ?? 180_000);
const pct = (xs, p) => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor((xs.length * p) / 100))];
const MANAGER = { destination: 'org.impermanence.Manager', path: '/org/impermanence/Manager' };

/** CPU seconds (user + system) the process has used so far. */
function cpuSeconds(pid) {
  const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
  return (Number(f[11]) + Number(f[12])) / 100; // utime, stime in clock ticks (USER_HZ = 100)
}
/** The resident memory of a process in MiB; 0 once it is gone (or a zombie). */
function rssMiB(pid) {
  try {
    return Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? 0) / 1024;
  } catch {
    return 0;
  }
}

/** A sandbox root with `toml` as its config, a private bus, the daemon on it, and a root client. */
async function start(name, toml, prepare = () => undefined) {
  const scratch = scratchDir(`dos-${name}`);
  chmodSync(scratch, 0o755);
  const root = join(scratch, 'root');
  writeSandbox(root, toml, {
    passwd: 'root:x:0:0:root:/root:/bin/sh\nbird:x:1000:1000::/home/bird:/bin/sh\nnobody:x:65534:65534::/nonexistent:/bin/sh\n',
    group: 'root:x:0:\nbird:x:1000:\nnogroup:x:65534:\n',
  });
  mkdirSync(join(root, 'persistent'), { recursive: true });
  prepare(root);
  const procs = [];
  const { child: bus, address } = await startBus(scratch);
  procs.push(bus);
  chmodSync(`${scratch}/bus`, 0o777);
  const { child: daemon, log } = startDaemon(root, address, { dist: DIST, maxLog: 100_000 });
  procs.push(daemon);
  const client = sessionBus({ busAddress: address });
  await new Promise((r) => client.once('connect', r));
  for (let i = 0; i < 2000; i++) {
    const reply = await client.call(new Message({ destination: 'org.freedesktop.DBus', path: '/org/freedesktop/DBus', interface: 'org.freedesktop.DBus', member: 'NameHasOwner', signature: 's', body: ['org.impermanence.Manager'] }));
    if (reply.body[0]) break;
    if (daemon.exitCode !== null) throw new Error(`the daemon exited:\n${log()}`);
    await sleep(25);
  }
  const call = (member, iface = 'org.impermanence.Manager', signature = '', body = []) => client.call(new Message({ ...MANAGER, interface: iface, member, signature, body }));
  const stop = async () => {
    client.disconnect();
    for (const p of procs.reverse()) p.kill('SIGTERM');
    await sleep(200);
    rmSync(scratch, { recursive: true, force: true });
  };
  return { root, address, daemon, call, stop, log };
}

/** test/dbus/flood.cjs as nobody; resolves its final line; `onSent` when its calls are on their way. */
function hostile(address, kind, count, onSent) {
  const child = spawn('setpriv', ['--reuid=65534', '--regid=65534', '--clear-groups', process.execPath, join(REPO, 'test/dbus/flood.cjs'), address, kind, String(count)], { cwd: REPO, stdio: ['ignore', 'pipe', 'inherit'] });
  let out = '';
  return new Promise((resolve, reject) => {
    child.stdout.on('data', (d) => {
      out += d;
      let nl;
      while ((nl = out.indexOf('\n')) >= 0) {
        const line = JSON.parse(out.slice(0, nl));
        out = out.slice(nl + 1);
        if (line.sent) onSent?.();
        else resolve(line);
      }
    });
    child.once('exit', (code) => code && reject(new Error(`flood.cjs exited ${code}`)));
  });
}

async function ping(call) {
  const t = performance.now();
  await call('Ping', 'org.freedesktop.DBus.Peer');
  return performance.now() - t;
}

if (PARTS.includes('props')) {
  const dirs = Array.from({ length: ENTRIES }, (_, i) => `"/srv/app${Math.floor(i / 100)}/d${i}"`);
  const d = await start('props', `[persistence."/persistent"]\ndirectories = [${dirs.join(', ')}]\n`);
  try {
    const idle = [];
    for (let i = 0; i < 20; i++) idle.push(await ping(d.call));
    const cpu0 = cpuSeconds(d.daemon.pid);
    const t0 = performance.now();
    let flooding = true;
    const pings = [];
    const pinging = (async () => {
      await new Promise((r) => setImmediate(r));
      while (flooding) {
        pings.push(await ping(d.call));
        await sleep(20);
      }
    })();
    const result = await hostile(d.address, 'version', GETS);
    flooding = false;
    await pinging;
    const wall = (performance.now() - t0) / 1000;
    const cpu = cpuSeconds(d.daemon.pid) - cpu0;
    console.log(`props: ${ENTRIES.toLocaleString('en')} entries, ${GETS.toLocaleString('en')} Get Version by nobody at once: ${JSON.stringify(result.outcomes)} in ${wall.toFixed(2)} s, daemon CPU ${cpu.toFixed(2)} s (${((cpu / GETS) * 1000).toFixed(2)} ms a call); root Ping idle p50 ${pct(idle, 50).toFixed(1)} ms, during the flood p50 ${pct(pings, 50).toFixed(1)} ms, max ${Math.max(...pings).toFixed(1)} ms (${pings.length} pings)`);
  } finally {
    await d.stop();
  }
}

if (PARTS.includes('scans')) {
  const d = await start('scans', '[persistence."/persistent"]\ndirectories = ["/var/log"]\n', (root) => {
    mkdirSync(join(root, 'var/log'), { recursive: true });
    for (let k = 0; k < SCAN_FILES / 1000; k++) {
      mkdirSync(join(root, `srv/tree/d${k}`), { recursive: true });
      for (let f = 0; f < 1000; f++) writeFileSync(join(root, `srv/tree/d${k}/f${f}`), '');
    }
  });
  try {
    await d.call('Scan', 'org.impermanence.Manager', 'a{sv}', [{}]); // the first look is done
    const t1 = performance.now();
    await d.call('Scan', 'org.impermanence.Manager', 'a{sv}', [{}]);
    const one = performance.now() - t1;
    let rootMs;
    let rootTimedOut = false;
    const flood = hostile(d.address, 'scan', SCANS, () => {
      // Once nobody's scans are on their way, root asks for one.
      const t = performance.now();
      const rootScan = d.call('Scan', 'org.impermanence.Manager', 'a{sv}', [{}]).then(() => (rootMs = performance.now() - t));
      Promise.race([rootScan, sleep(ROOT_WAIT_MS).then(() => (rootTimedOut = true))]).then(() => undefined);
    });
    const result = await flood;
    for (let i = 0; rootMs === undefined && !rootTimedOut; i++) await sleep(50);
    console.log(`scans: ${SCAN_FILES.toLocaleString('en')} files, one scan ${one.toFixed(0)} ms; ${SCANS} Scans by nobody at once: ${JSON.stringify(result.outcomes)} in ${(result.ms / 1000).toFixed(1)} s; root's Scan meanwhile took ${rootTimedOut ? `more than ${ROOT_WAIT_MS / 1000} s` : `${(rootMs / 1000).toFixed(2)} s`} (busctl gives up at 25 s)`);
  } finally {
    await d.stop();
  }
}

if (PARTS.includes('files')) {
  const d = await start('files', '[persistence."/persistent".users.bird]\ndirectories = [".ssh"]\n', (root) => {
    mkdirSync(join(root, 'home/bird/.ssh'), { recursive: true });
    mkdirSync(join(root, 'persistent/home/bird/.ssh'), { recursive: true });
    chownSync(join(root, 'home/bird'), 1000, 1000);
  });
  try {
    for (let i = 0; i < 200 && !d.log().includes('for drift as it happens'); i++) await sleep(25);
    if (!d.log().includes('for drift as it happens')) throw new Error(`the daemon is not watching live:\n${d.log()}`);
    await sleep(500);
    const before = rssMiB(d.daemon.pid);
    let peak = before;
    const sample = setInterval(() => (peak = Math.max(peak, rssMiB(d.daemon.pid))), 50);
    const t0 = performance.now();
    // As the user: FILES empty files right inside their home, which holds a persisted path.
    const writer = spawnSync('setpriv', ['--reuid=1000', '--regid=1000', '--clear-groups', 'sh', '-c', `cd "$1" && seq -f 'f%.0f' 1 ${FILES} | xargs touch`, 'sh', join(d.root, 'home/bird')]);
    if (writer.status !== 0) throw new Error(`the writer failed: ${writer.stderr}`);
    const written = (performance.now() - t0) / 1000;
    // Settled: the drift counts every file (in one item or many), or nothing changed for 10 s.
    let counted = 0;
    let items = 0;
    let lastChange = performance.now();
    for (let last = -1; performance.now() - lastChange < 10_000 && d.daemon.exitCode === null && d.daemon.signalCode === null; await sleep(500)) {
      const reply = await d.call('GetDrift', 'org.impermanence.Manager', 'a{sv}', [{}]).catch(() => undefined);
      if (!reply) break; // the daemon is gone
      const rows = reply.body[0].filter((r) => r[1].startsWith('/home/bird'));
      counted = rows.reduce((n, r) => n + r[3], 0);
      items = rows.length;
      if (counted !== last) lastChange = performance.now();
      last = counted;
      if (counted === FILES) break;
    }
    const settledAt = (performance.now() - t0) / 1000;
    await sleep(2000);
    clearInterval(sample);
    const settled = rssMiB(d.daemon.pid);
    if (d.daemon.exitCode !== null || d.daemon.signalCode !== null) console.log(`files: the daemon DIED (${d.daemon.exitCode ?? d.daemon.signalCode}) after ${settledAt.toFixed(1)} s, peak RSS ${peak.toFixed(0)} MiB:\n${d.log().slice(-2000)}`);
    else console.log(`files: ${FILES.toLocaleString('en')} empty files in a home, written in ${written.toFixed(1)} s; drift counts ${counted.toLocaleString('en')} of them in ${items.toLocaleString('en')} item(s) after ${settledAt.toFixed(1)} s; daemon RSS ${before.toFixed(0)} MiB before, peak ${peak.toFixed(0)} MiB, ${settled.toFixed(0)} MiB after`);
  } finally {
    await d.stop();
  }
}
